"""A3D's depth fusion Xf[b, c, k] = sum_d P[d, k, c] X[b, c, d] as stock PyTorch ops.

Three entry points, one forward formula (``fuse``), so every path gives the same bits:

- ``fuse(x, pt)``: plain tensor ops (one broadcast ``matmul``: the contiguous X viewed as B*C
  matrices (D, H*W), each multiplied by its channel's (D, D) block of ``pt``). Autograd, tracing,
  TorchScript and ONNX export all see ordinary ops. ``pt`` is P laid out (C, D_out, D_in).
- ``a3d_fuse(x, p)``: the fusion alone with a hand-written backward (``_Fuse``).
- ``fused_conv3d(x, p, weight, ...)``: the fusion followed by ``F.conv3d`` as ONE autograd node
  (``_FusedConv``). Its backward gets dXf from ``aten.convolution_backward``, then per block of
  channels accumulates dP and computes dX = P @ dXf from the same cache-resident block (one pass
  over dXf instead of two); on large tensors dX overwrites dXf's block (one full-size gradient
  allocation instead of two).

Why not fold P into the convolution: the folded kernel differs for every output slice, a conv with
Ci*D inputs and Co*D outputs, D times the MACs of the conv. Why not channels-last: the mixing is
per channel along depth, a (D, D) matrix per channel, in no layout a single GEMM (measured in
docs/ops.md). The backward is ``once_differentiable`` (no double backward), as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Bytes of dXf processed per step of the blocked backward: a block and its dX stay in L3 between
# the dP reduction and the dX product (32 MiB L3 on the reference machine); fewer steps, less Python.
BLOCK_BYTES = 1 << 22
# From this size on, dX overwrites dXf block by block instead of getting a tensor of its own: glibc
# serves allocations above its mmap threshold (at most 32 MiB) with fresh pages, faulted in at 2-3x
# the cost of a copy; below, a new tensor comes from the heap and skips the in-place copy back.
INPLACE_BYTES = 1 << 25


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
    """True where the custom autograd nodes must not (tracing, export, torch.compile, autocast) or need
    not (no grad) run."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return True
    if torch.compiler.is_compiling():
        return True
    dev = x.device.type  # the meta device (cost counting) has no autocast state
    if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
        return True
    return not _needs_autograd(x, *params)


def _backward_in_blocks(x: torch.Tensor, pt: torch.Tensor, g: torch.Tensor, gx: torch.Tensor | None) -> torch.Tensor:
    """gx[b, c] = pt[c]^T @ g[b, c] (into ``g`` itself when ``gx`` is None); returns
    dpt[c] = sum_b g[b, c] @ x[b, c]^T.

    x, g, gx: (B, C, D, N) contiguous; pt: (C, D, D). Works over blocks of channels so that each block
    of g is read from memory once for both products.
    """
    b_, c_, d_, n_ = x.shape
    ptt = pt.transpose(1, 2)
    dpt = x.new_zeros(c_, d_, d_)
    step = max(1, min(c_, BLOCK_BYTES // max(1, d_ * n_ * x.element_size())))
    for b in range(b_):
        for c0 in range(0, c_, step):
            c1 = min(c_, c0 + step)
            gb = g[b, c0:c1]
            dpt[c0:c1].baddbmm_(gb, x[b, c0:c1].transpose(1, 2))
            if gx is None:
                gb.copy_(torch.bmm(ptt[c0:c1], gb))
            else:
                torch.bmm(ptt[c0:c1], gb, out=gx[b, c0:c1])
    return dpt


class _Fuse(torch.autograd.Function):
    """The fusion alone: forward ``fuse``, backward one blocked pass (dX written into a new tensor)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x, p)
        return fuse(x, p_layout(p))

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x, p = ctx.saved_tensors
        g = g.contiguous()
        gx = torch.empty_like(x)
        dpt = _backward_in_blocks(x.flatten(3), p_layout(p).to(x.dtype), g.flatten(3), gx.flatten(3))
        return gx, dpt.permute(2, 1, 0).to(p.dtype)


def a3d_fuse(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Xf[b, c, k] = sum_d p[d, k, c] * x[b, c, d] for x (B, C, D, *spatial), p (D, D, C)."""
    if use_plain_ops(x, p):
        return fuse(x.contiguous(), p_layout(p))
    return _Fuse.apply(x, p)


class _FusedConv(torch.autograd.Function):
    """conv3d(fuse(x), weight, ...) as one node: saves x and Xf (what two nodes would save)."""

    @staticmethod
    def forward(ctx, x, p, weight, bias, stride, padding, dilation, groups):
        x = x.contiguous()
        xf = fuse(x, p_layout(p))
        ctx.save_for_backward(x, xf, p, weight)
        ctx.conv = (list(stride), list(padding), list(dilation), groups, bias is not None)
        return F.conv3d(xf, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor):
        x, xf, p, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conv
        need_x, need_p, need_w, need_b = ctx.needs_input_grad[:4]
        gxf, gw, gb = torch.ops.aten.convolution_backward(
            gy, xf, weight, [weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0, 0], groups, [need_x or need_p, need_w, need_b and has_bias],
        )
        gx = dp = None
        if need_x or need_p:
            gxf = gxf.contiguous()
            inplace = gxf.numel() * gxf.element_size() >= INPLACE_BYTES
            gx = gxf if inplace else torch.empty_like(gxf)
            dpt = _backward_in_blocks(
                x.flatten(3), p_layout(p).to(x.dtype), gxf.flatten(3), None if inplace else gx.flatten(3)
            )
            gx = gx if need_x else None
            dp = dpt.permute(2, 1, 0).to(p.dtype) if need_p else None
        return gx, dp, gw, gb, None, None, None, None


def fused_conv3d(x, p, weight, bias=None, stride=(1, 1, 1), padding=(0, 0, 0), dilation=(1, 1, 1), groups=1):
    """``F.conv3d(a3d_fuse(x, p), weight, bias, stride, padding, dilation, groups)``, fused in backward.

    x (B, Ci, D, H, W), p (D, D, Ci), weight (Co, Ci/groups, kd, kh, kw). Same forward bits as the
    two-step form; gradients equal to float rounding.
    """
    if use_plain_ops(x, p, weight, bias):
        return F.conv3d(fuse(x.contiguous(), p_layout(p)), weight, bias, stride, padding, dilation, groups)
    return _FusedConv.apply(x, p, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups)
