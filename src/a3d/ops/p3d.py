"""P3D (Qiu et al. 2017): a (1, K, K) convolution followed by a (3, 1, 1) depth convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a3d.ops.base import Operator, copy_bias, plane_weight


class P3D(Operator):
    """(1, K, K) conv from W2d (with its bias), then a (3, 1, 1) conv Co -> Co, depth padding 1, no
    bias, initialised to identity (centre tap 1, others 0), so it starts equal to 'none'."""

    name = "p3d"
    depth_kernel = 3

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        self.weight = plane_weight(conv2d)
        self.bias = copy_bias(conv2d)
        co = self.out_channels
        wd = torch.zeros(co, co, self.depth_kernel, 1, 1, dtype=conv2d.weight.dtype, device=conv2d.weight.device)
        idx = torch.arange(co, device=wd.device)
        wd[idx, idx, self.depth_kernel // 2] = 1.0
        self.weight_depth = nn.Parameter(wd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = self._plane_conv(x, self.weight, self.bias)
        return F.conv3d(y, self.weight_depth, None, 1, (self.depth_kernel // 2, 0, 0))
