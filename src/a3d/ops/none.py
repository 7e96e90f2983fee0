"""'none': no 3D context fusion, the 2D kernel applied to every slice ((1, K, K) 3D convolution)."""

from __future__ import annotations

import torch
from torch import nn

from a3d.ops.base import Operator, copy_bias, plane_weight


class NoFusion(Operator):
    """Conv3d with kernel (1, K, K), weight W2d.unsqueeze(2)."""

    name = "none"

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        self.weight = plane_weight(conv2d)
        self.bias = copy_bias(conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._plane_conv(x, self.weight, self.bias)
