"""The seven 3D context fusion operators, each built from an ``nn.Conv2d``.

``from_conv2d(name, conv2d, depth)`` returns a module mapping (B, Ci, D, H, W) to (B, Co, D, H', W')
carrying the 2D weights; ``set_thickness(module, thickness)`` feeds AlignShift its per-sample
slice thickness. Only torch is imported here.
"""

from __future__ import annotations

from torch import nn

from a3d.errors import ConversionError
from a3d.ops.a3d import A3D, a3d_fuse, a3d_fuse_reference
from a3d.ops.acs import ACS, acs_split
from a3d.ops.base import Operator
from a3d.ops.i3d import I3D
from a3d.ops.none import NoFusion
from a3d.ops.p3d import P3D
from a3d.ops.shift import TSM, AlignShift, alignshift_shift, set_thickness, shift_weight, tsm_shift

OPERATORS = ("none", "i3d", "p3d", "acs", "tsm", "alignshift", "a3d")

OPERATOR_CLASSES: dict[str, type[Operator]] = {
    "none": NoFusion,
    "i3d": I3D,
    "p3d": P3D,
    "acs": ACS,
    "tsm": TSM,
    "alignshift": AlignShift,
    "a3d": A3D,
}


def from_conv2d(name: str, conv2d: nn.Conv2d, depth: int) -> Operator:
    """The operator ``name`` (one of OPERATORS) built from ``conv2d`` for inputs with ``depth`` slices."""
    key = str(name).lower()
    if key not in OPERATOR_CLASSES:
        raise ConversionError(f"unknown operator {name!r}; expected one of {', '.join(OPERATORS)}")
    if not isinstance(conv2d, nn.Conv2d):
        raise ConversionError(
            f"from_conv2d: expected an nn.Conv2d to build {key!r}, got {type(conv2d).__name__}"
        )
    op = OPERATOR_CLASSES[key](conv2d, depth)
    op.train(conv2d.training)
    return op


__all__ = [
    "OPERATORS", "OPERATOR_CLASSES", "Operator", "from_conv2d", "set_thickness",
    "NoFusion", "I3D", "P3D", "ACS", "TSM", "AlignShift", "A3D",
    "a3d_fuse", "a3d_fuse_reference", "tsm_shift", "alignshift_shift", "shift_weight", "acs_split",
]
