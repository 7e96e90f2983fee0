"""Shared machinery of the operators: the 2D geometry every operator is built from.

Every operator keeps the 2D convolution's geometry (``kernel_size``, ``stride``, ``padding``,
``dilation``, ``groups`` as 2-tuples for the in-plane axes) and its ``depth`` (number of slices it
was built for). Depth is never strided. Weights are stored as 3D convolution weights so that a
converted model's state dict is the 2D one with a depth axis inserted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from a3d.errors import ConversionError

_PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _numeric_padding(conv: nn.Conv2d, where: str) -> tuple[int, int]:
    """The 2D conv's padding as two ints ('valid' -> 0, 'same' -> centred for odd kernels)."""
    p = conv.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        # 'same' (stride 1 only, enforced by Conv2d itself)
        out = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            if total % 2:
                raise ConversionError(
                    f"{where}: padding='same' with an even effective kernel {conv.kernel_size} "
                    "(dilation {conv.dilation}) pads asymmetrically; expected an odd kernel or numeric padding"
                )
            out.append(total // 2)
        return tuple(out)  # type: ignore[return-value]
    return (int(p[0]), int(p[1]))


class Operator(nn.Module):
    """Base class: (B, Ci, D, H, W) -> (B, Co, D, H', W') built from an ``nn.Conv2d``.

    Subclasses set ``name`` and implement ``forward``. ``layer_name`` (the qualified name inside a
    converted model, set by the converter) is used in error messages.
    """

    name = ""

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__()
        where = type(conv2d).__name__
        if not isinstance(conv2d, nn.Conv2d):
            raise ConversionError(f"{where}: expected an nn.Conv2d to build operator {self.name!r}")
        if int(depth) < 1:
            raise ConversionError(f"{where}: depth must be a positive number of slices, got {depth}")
        self.in_channels = conv2d.in_channels
        self.out_channels = conv2d.out_channels
        self.kernel_size = tuple(conv2d.kernel_size)
        self.stride = tuple(conv2d.stride)
        self.padding = _numeric_padding(conv2d, where)
        self.dilation = tuple(conv2d.dilation)
        self.groups = conv2d.groups
        self.padding_mode = conv2d.padding_mode
        self.depth = int(depth)
        self.layer_name: str | None = None

    # -- helpers -----------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"layer {self.layer_name!r} ({type(self).__name__})" if self.layer_name else type(self).__name__

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ConversionError(
                f"{self._where()}: expected a 5D input (B, C, D, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ConversionError(
                f"{self._where()}: expected {self.in_channels} input channels, got {x.shape[1]}"
            )

    def _spatial_prepad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Apply a non-zero padding mode in-plane explicitly; returns (x, padding left for the conv)."""
        if self.padding_mode == "zeros" or self.padding == (0, 0):
            return x, self.padding
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph, 0, 0), mode=_PAD_MODES[self.padding_mode]), (0, 0)

    def _plane_conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Per-slice 2D convolution as a (1, K, K) 3D convolution."""
        x, (ph, pw) = self._spatial_prepad(x)
        return F.conv3d(
            x, weight, bias, (1, *self.stride), (0, ph, pw), (1, *self.dilation), self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, depth={self.depth}"
        )


def plane_weight(conv2d: nn.Conv2d) -> nn.Parameter:
    """W2d.unsqueeze(2): the (Co, Ci/g, 1, K, K) weight of the 'none' convolution."""
    return nn.Parameter(conv2d.weight.detach().clone().unsqueeze(2))


def copy_bias(conv2d: nn.Conv2d) -> nn.Parameter | None:
    return None if conv2d.bias is None else nn.Parameter(conv2d.bias.detach().clone())
