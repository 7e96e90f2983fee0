"""A3D (Yang et al. 2021): asymmetric 3D context fusion, then the 'none' conv.

Fusion: Xf[b, c, k] = sum_d P[d, k, c] * X[b, c, d] with a learnable P of shape (D, D, Ci). The
fusion's kernels live in ``a3d.ops.fusion``: with gradients a custom autograd node, without
(inference) and when tracing, exporting (TorchScript, ONNX), compiling or under autocast plain
tensor ops, with the same forward bits.
"""

from __future__ import annotations

import torch
from torch import nn

from a3d.errors import ConversionError
from a3d.ops.base import Operator, copy_bias, plane_weight
from a3d.ops.fusion import a3d_fuse, a3d_fuse_reference

__all__ = ["A3D", "a3d_fuse", "a3d_fuse_reference"]


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
