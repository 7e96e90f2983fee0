"""A3D (Yang et al. 2021): asymmetric 3D context fusion, then the 'none' conv.

Fusion: Xf[b, c, k] = sum_d P[d, k, c] * X[b, c, d] with a learnable P of shape (D, D, Ci).

Formulation. The paper's ``einsum("bcdhw,dkc->bckhw")`` makes PyTorch permute X into a
(c, b*h*w, d) layout and the result back (two full copies plus a badly shaped GEMM), 6-15x a plain
copy on CPU. Here the contiguous X is viewed, without a copy, as B*C matrices of shape (D, H*W)
and the fusion is one batched matmul ``P[:, :, c]^T @ X[b, c]`` (``torch.matmul`` with P^T of shape
(C, D, D) broadcast over the batch): one read of X, one write of Xf, the same in backward
(dX = P @ dXf, dP = sum_b dXf @ X^T, a custom autograd Function). Folding P into the following convolution is never cheaper:
the folded kernel differs per output slice, i.e. a conv with Ci*D inputs and Co*D outputs, D times
the MACs of the conv itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from a3d.errors import ConversionError
from a3d.ops.base import Operator, copy_bias, plane_weight


class _Fuse(torch.autograd.Function):
    """Batched (D x D) @ (D x H*W) matmuls over the B*C (sample, channel) pairs, no layout copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        b, c, d = x.shape[:3]
        xm = x.reshape(b * c, d, -1)  # a view for a contiguous x
        pt = p.permute(2, 1, 0).unsqueeze(0).expand(b, c, d, d).contiguous().view(b * c, d, d)  # tiny copy
        ctx.save_for_backward(xm, pt)
        ctx.bcd = (b, c, d)
        return torch.bmm(pt, xm).view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        xm, pt = ctx.saved_tensors
        b, c, d = ctx.bcd
        gm = g.reshape(b * c, d, -1)
        gx = gp = None
        if ctx.needs_input_grad[0]:  # dX[b, c] = P[:, :, c] @ dXf[b, c]
            gx = torch.bmm(pt.transpose(1, 2).to(gm.dtype), gm).to(xm.dtype).view(g.shape)
        if ctx.needs_input_grad[1]:  # dP[d, k, c] = sum_b,n X[b, c, d, n] dXf[b, c, k, n]
            gkd = torch.bmm(gm, xm.transpose(1, 2).to(gm.dtype)).view(b, c, d, d).sum(0)
            gp = gkd.permute(2, 1, 0).to(pt.dtype)
        return gx, gp


def a3d_fuse(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Xf[b, c, k] = sum_d p[d, k, c] * x[b, c, d] for x (B, C, D, *spatial), p (D, D, C)."""
    return _Fuse.apply(x, p)


def a3d_fuse_reference(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 1 (einsum), for comparison."""
    return torch.einsum("bcdhw,dkc->bckhw", x, p)


class A3D(Operator):
    """Asymmetric fusion with P (D, D, Ci), initialised per channel to identity + U(-0.1, 0.1)."""

    name = "a3d"

    def __init__(self, conv2d: nn.Conv2d, depth: int, noise: float = 0.1):
        super().__init__(conv2d, depth)
        self.weight = plane_weight(conv2d)
        self.bias = copy_bias(conv2d)
        d, ci = self.depth, self.in_channels
        dev, dt = conv2d.weight.device, conv2d.weight.dtype
        p = torch.eye(d, device=dev, dtype=dt).unsqueeze(2).repeat(1, 1, ci)
        p += torch.empty_like(p).uniform_(-noise, noise)
        self.P = nn.Parameter(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if x.shape[2] != self.depth:
            raise ConversionError(
                f"{self._where()}: A3D was built for D={self.depth} slices (P is {tuple(self.P.shape)}), "
                f"got an input with D={x.shape[2]}; rebuild the model with depth={x.shape[2]}"
            )
        return self._plane_conv(a3d_fuse(x, self.P), self.weight, self.bias)
