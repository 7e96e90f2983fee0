"""A3D's depth fusion Xf[b, c, k] = sum_d P[d, k, c] X[b, c, d] as stock PyTorch ops.

One forward formula, ``fuse(x, pt)``: the contiguous X viewed as B*C matrices (D, H*W), each
multiplied by its channel's (D, D) block of ``pt`` (P laid out (C, D_out, D_in)) in one broadcast
``matmul``. ``a3d_fuse(x, p)`` runs it

- as plain ops where the custom autograd node must not (tracing, TorchScript, ONNX export,
  ``torch.compile``, autocast) or need not (no gradient) run: exportable, same bits;
- otherwise through ``_Fuse``, whose backward computes dP and dX = P @ dXf per block of channels,
  so each block of dXf is read from memory once for both (``once_differentiable``).

Why not fold P into the convolution: the folded kernel differs for every output slice, a conv with
Ci*D inputs and Co*D outputs, D times the MACs of the conv. Why not channels-last: the mixing is a
(D, D) matrix per channel along depth, in no layout a single GEMM. Why the fusion stays its own
autograd node rather than one node with the conv: measured in docs/ops.md (more page faults).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Bytes of dXf processed per step of the blocked backward: a block and its dX stay in L3 between
# the dP reduction and the dX product (32 MiB L3 on the reference machine); fewer steps, less Python.
BLOCK_BYTES = 1 << 22


def p_layout(p: torch.Tensor) -> torch.Tensor:
    """P (D_in, D_out, C) -> pt (C, D_out, D_in) contiguous, pt[c, k, d] = P[d, k, c].

    Contiguous on purpose: a strided (D, D) block sends ``bmm`` down a per-element path, 20-100x slower.
    """
    return p.permute(2, 1, 0).contiguous()


def fuse(x: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """Xf = pt[c] @ X[b, c] for x (B, C, D, *spatial) contiguous, pt (C, D, D); plain, traceable ops."""
    return torch.matmul(pt, x.flatten(3)).view_as(x)


def a3d_fuse_reference(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 1 (einsum), kept as the independent reference."""
    return torch.einsum("bcdhw,dkc->bckhw", x, p)


def _needs_autograd(*tensors: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


def use_plain_ops(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """True where the custom autograd node must not (tracing, export, torch.compile, autocast) or need
    not (no gradient) run."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return True
    if torch.compiler.is_compiling():
        return True
    dev = x.device.type  # the meta device (cost counting) has no autocast state
    if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
        return True
    return not _needs_autograd(x, *params)


def _backward_in_blocks(x, pt, g, gx: torch.Tensor | None, need_p: bool) -> torch.Tensor | None:
    """gx[b, c] = pt[c]^T @ g[b, c] (unless ``gx`` is None); returns dpt[c] = sum_b g[b, c] @ x[b, c]^T
    (None unless ``need_p``).

    x, g, gx: (B, C, D, N) contiguous; pt: (C, D, D). Works over blocks of channels so that each block
    of g is read from memory once for both products.
    """
    b_, c_, d_, n_ = x.shape
    ptt = pt.transpose(1, 2)
    dpt = x.new_zeros(c_, d_, d_) if need_p else None
    step = max(1, min(c_, BLOCK_BYTES // max(1, d_ * n_ * x.element_size())))
    for b in range(b_):
        for c0 in range(0, c_, step):
            c1 = min(c_, c0 + step)
            gb = g[b, c0:c1]
            if dpt is not None:
                dpt[c0:c1].baddbmm_(gb, x[b, c0:c1].transpose(1, 2))
            if gx is not None:
                torch.bmm(ptt[c0:c1], gb, out=gx[b, c0:c1])
    return dpt


class _Fuse(torch.autograd.Function):
    """The fusion's autograd node: forward ``fuse``, backward one blocked pass over dXf."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x, p)
        return fuse(x, p_layout(p))

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x, p = ctx.saved_tensors
        need_x, need_p = ctx.needs_input_grad
        gx = torch.empty_like(x) if need_x else None
        dpt = _backward_in_blocks(
            x.flatten(3), p_layout(p).to(x.dtype), g.contiguous().flatten(3), gx.flatten(3) if need_x else None, need_p
        )
        return gx, dpt.permute(2, 1, 0).to(p.dtype) if need_p else None


def a3d_fuse(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Xf[b, c, k] = sum_d p[d, k, c] * x[b, c, d] for x (B, C, D, *spatial), p (D, D, C)."""
    if use_plain_ops(x, p):
        return fuse(x.contiguous(), p_layout(p))
    return _Fuse.apply(x, p)
