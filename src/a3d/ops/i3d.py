"""I3D (Carreira & Zisserman 2017): a full (K, K, K) kernel inflated from the 2D one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a3d.ops.base import Operator, copy_bias


class I3D(Operator):
    """Conv3d with kernel (K, K, K): K copies of W2d / K along depth.

    The depth kernel is the 2D kernel's first (row) size K with the 2D row dilation d; depth is
    zero-padded by d * (K // 2) on each side so D is preserved (for an even K the padding is
    d*(K-1)//2 before and the rest after).
    """

    name = "i3d"

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        k = self.kernel_size[0]
        w = conv2d.weight.detach().clone().unsqueeze(2).repeat(1, 1, k, 1, 1) / k
        self.weight = nn.Parameter(w)
        self.bias = copy_bias(conv2d)
        self.depth_kernel = k
        self.depth_dilation = self.dilation[0]
        total = self.depth_dilation * (k - 1)
        self.depth_padding = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x, (ph, pw) = self._spatial_prepad(x)
        front, back = self.depth_padding
        if front == back:
            pd = front
        else:
            x = F.pad(x, (0, 0, 0, 0, front, back))
            pd = 0
        return F.conv3d(
            x, self.weight, self.bias, (1, *self.stride), (pd, ph, pw),
            (self.depth_dilation, *self.dilation), self.groups,
        )
