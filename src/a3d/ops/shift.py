"""Shift operators: TSM (Lin et al. 2019) and AlignShift (Yang et al. 2020), then the 'none' conv."""

from __future__ import annotations

import torch
from torch import nn

from a3d.errors import ConversionError
from a3d.ops.base import Operator, copy_bias, plane_weight


def shift_fold(channels: int) -> int:
    """Channels per shifted group: 1/8 of the input channels (rounded down)."""
    return channels // 8


def tsm_shift(x: torch.Tensor, fold: int) -> torch.Tensor:
    """Channels [0, fold) take slice d+1, [fold, 2 fold) take slice d-1 (zeros at the borders)."""
    if fold == 0 or x.shape[2] == 0:
        return x
    up = x[:, :fold]
    down = x[:, fold : 2 * fold]
    zu = up.new_zeros(up.shape[0], fold, 1, *up.shape[3:])
    up = torch.cat([up[:, :, 1:], zu], dim=2)
    down = torch.cat([zu, down[:, :, :-1]], dim=2)
    return torch.cat([up, down, x[:, 2 * fold :]], dim=1)


def shift_weight(thickness: torch.Tensor) -> torch.Tensor:
    """AlignShift's keep weight a = 1 - clamp(2 / t, 0, 1) (t in mm): a = 0 is a full shift."""
    return 1.0 - torch.clamp(2.0 / thickness, 0.0, 1.0)


def alignshift_shift(x: torch.Tensor, fold: int, thickness: torch.Tensor) -> torch.Tensor:
    """Shifted channels become a*x[d] + (1-a)*x[d+-1]; the border slice of each group is unchanged."""
    if fold == 0 or x.shape[2] < 2:
        return x
    a = shift_weight(thickness.to(device=x.device, dtype=x.dtype)).view(-1, 1, 1, 1, 1)
    up = x[:, :fold]
    down = x[:, fold : 2 * fold]
    up = torch.cat([a * up[:, :, :-1] + (1 - a) * up[:, :, 1:], up[:, :, -1:]], dim=2)
    down = torch.cat([down[:, :, :1], a * down[:, :, 1:] + (1 - a) * down[:, :, :-1]], dim=2)
    return torch.cat([up, down, x[:, 2 * fold :]], dim=1)


class TSM(Operator):
    """Temporal shift of 1/8 + 1/8 of the input channels along depth, then the 'none' conv."""

    name = "tsm"

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        self.weight = plane_weight(conv2d)
        self.bias = copy_bias(conv2d)
        self.fold = shift_fold(self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._plane_conv(tsm_shift(x, self.fold), self.weight, self.bias)


class AlignShift(Operator):
    """TSM whose shift is blended by each sample's slice thickness t (mm).

    The thickness is not an input of ``forward`` (it could not reach layers deep inside a converted
    model): :func:`set_thickness` stores it as the plain attribute ``thickness`` (float tensor (B,),
    or one value for the whole batch) on every AlignShift layer. It stays there until the next call,
    so gradient checkpointing's recomputation sees the same value. Not a buffer: it is not saved in
    state dicts.

    Two levels, one mechanism: a user's own converted model calls :func:`set_thickness` before its
    forward; a3d's detector takes ``forward(images, thickness=...)`` and calls :func:`set_thickness`
    on its backbone itself (callers of the detector never call it).
    """

    name = "alignshift"

    def __init__(self, conv2d: nn.Conv2d, depth: int):
        super().__init__(conv2d, depth)
        self.weight = plane_weight(conv2d)
        self.bias = copy_bias(conv2d)
        self.fold = shift_fold(self.in_channels)
        self.thickness: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        t = self.thickness
        if t is None:
            raise ConversionError(
                f"{self._where()}: AlignShift needs each sample's slice thickness; call "
                "a3d.ops.set_thickness(model, thickness) with a (B,) tensor in mm before forward"
            )
        if t.numel() not in (1, x.shape[0]):
            raise ConversionError(
                f"{self._where()}: thickness has {t.numel()} values for a batch of {x.shape[0]}; "
                "expected one per sample (or one for all)"
            )
        return self._plane_conv(alignshift_shift(x, self.fold, t), self.weight, self.bias)


def set_thickness(module: nn.Module, thickness) -> int:
    """Store the per-sample slice thickness (mm) on every AlignShift layer inside ``module``.

    The ops-level door, for any model converted with :func:`a3d.convert`; a3d's detector is fed
    through its ``forward(images, thickness=...)`` instead, which calls this on its backbone.

    ``thickness``: float tensor (B,) (a number or sequence is turned into one), or None to clear.
    The value persists until the next call (checkpoint recomputation sees it). Returns the number of
    AlignShift layers set (0 for a model without AlignShift: harmless).
    """
    if thickness is not None:
        t = torch.as_tensor(thickness)
        if not t.is_floating_point():
            t = t.float()
        t = t.detach().reshape(-1)
        if t.numel() == 0:
            raise ConversionError("set_thickness: expected at least one thickness value (mm), got none")
    else:
        t = None
    n = 0
    for m in module.modules():
        if isinstance(m, AlignShift):
            m.thickness = t
            n += 1
    return n
