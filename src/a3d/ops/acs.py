"""ACS convolution (Yang et al. 2021): the 2D kernel split by output channel into three views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a3d.errors import ConversionError
from a3d.ops.base import Operator, copy_bias


def acs_split(n: int) -> tuple[int, int, int]:
    """ACSConv's split of n units: as even as possible, the remainder to the first views."""
    q, r = divmod(n, 3)
    return (q + (r > 0), q + (r > 1), q)


class ACS(Operator):
    """Axial (1, K, K), coronal (K, 1, K) and sagittal (K, K, 1) kernels, each the matching slice of W2d.

    Conventions (ACSConv's): output channels split as evenly as possible, remainder to axial then
    coronal; the coronal kernel is ``W2d.unsqueeze(3)`` (2D rows -> depth, 2D columns -> W), the
    sagittal one ``W2d.unsqueeze(4)`` (2D rows -> depth, 2D columns -> H). Each view pads every
    axis where it has the K-tap kernel by the 2D padding p (so depth is padded by p where the
    kernel extends in depth), and the axis where its kernel is 1 by nothing: the kernel-1 tap sits
    at the centre of the K-tap window, so the three views sample the same positions. Where the 2D
    padding is not the centred 'same' padding (2p != d(K-1)), depth is padded by d(K-1)/2 instead so
    that D is preserved, and the kernel-1 axes are offset to the window centre. Depth is not strided.
    With groups > 1 the split is done in whole groups. The kernel must be square with equal
    padding and dilation on both axes.
    """

    name = "acs"

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        kh, kw = self.kernel_size
        if kh != kw or self.padding[0] != self.padding[1] or self.dilation[0] != self.dilation[1]:
            raise ConversionError(
                f"{type(conv2d).__name__}: ACS expects a square kernel with equal padding and dilation on "
                f"both axes, got kernel {self.kernel_size}, padding {self.padding}, dilation {self.dilation}"
            )
        self.weight = nn.Parameter(conv2d.weight.detach().clone())  # 2D-shaped, as in ACSConv
        self.bias = copy_bias(conv2d)
        if self.groups == 1:
            self.acs_kernel_split = acs_split(self.out_channels)
        else:
            opg = self.out_channels // self.groups
            self.acs_kernel_split = tuple(u * opg for u in acs_split(self.groups))

    def _views(self):
        """(view, input channel slice, output channel slice, groups) of each non-empty view."""
        o0 = 0
        ipg = self.in_channels // self.groups
        opg = self.out_channels // self.groups
        for view, n in zip(("axial", "coronal", "sagittal"), self.acs_kernel_split):
            if n:
                if self.groups == 1:
                    yield view, slice(None), slice(o0, o0 + n), 1
                else:
                    g0, ng = o0 // opg, n // opg
                    yield view, slice(g0 * ipg, (g0 + ng) * ipg), slice(o0, o0 + n), ng
            o0 += n

    @staticmethod
    def _centre(x: torch.Tensor, dim: int, k: int, p: int, d: int, s: int, length: int) -> torch.Tensor:
        """Input along ``dim`` sampled by a kernel-1 tap at the centre of each K-tap window."""
        n_out = (length + 2 * p - d * (k - 1) - 1) // s + 1
        c = d * (k - 1) // 2 - p
        need = (n_out - 1) * s + 1
        if c == 0 and (length - 1) // s + 1 == n_out:
            return x
        if c < 0:
            pad = [0] * (2 * (x.dim() - 2))
            pad[2 * (x.dim() - 1 - dim)] = -c
            x = F.pad(x, pad)
            c = 0
        avail = x.shape[dim] - c
        if avail < need:
            pad = [0] * (2 * (x.dim() - 2))
            pad[2 * (x.dim() - 1 - dim) + 1] = need - avail
            x = F.pad(x, pad)
        return x.narrow(dim, c, need)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        k = self.kernel_size[0]
        s = self.stride
        d = self.dilation[0]
        p_orig = self.padding[0]
        x, (p, _) = self._spatial_prepad(x)
        D, H, W = x.shape[2:]
        t = d * (k - 1)
        same_depth = 2 * p_orig == t
        outs = []
        for view, ci, co, ng in self._views():
            xi = x if ci == slice(None) or ng == self.groups else x[:, ci]
            w = self.weight[co]
            b = None if self.bias is None else self.bias[co]
            if view == "axial":
                outs.append(F.conv3d(xi, w.unsqueeze(2), b, (1, *s), (0, p, p), (1, d, d), ng))
                continue
            if same_depth:
                pd = p_orig
            else:
                xi = F.pad(xi, (0, 0, 0, 0, t // 2, t - t // 2))
                pd = 0
            if view == "coronal":  # kernel (K, 1, K): H is the kernel-1 axis
                xi = self._centre(xi, 3, k, p, d, s[0], H)
                outs.append(F.conv3d(xi, w.unsqueeze(3), b, (1, s[0], s[1]), (pd, 0, p), (d, 1, d), ng))
            else:  # sagittal, kernel (K, K, 1): W is the kernel-1 axis
                xi = self._centre(xi, 4, k, p, d, s[1], W)
                outs.append(F.conv3d(xi, w.unsqueeze(4), b, (1, s[0], s[1]), (pd, p, 0), (d, d, 1), ng))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
