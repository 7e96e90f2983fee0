"""Convert a 2D (torchvision-style) network into a 3D one with a chosen context fusion operator.

``convert(model, name, depth, ...)`` returns a converted deep copy; the 2D weights carry over (the
3D state dict is the 2D one with a depth axis of size 1 inserted into conv weights, plus the
operator's own parameters such as A3D's ``P`` or P3D's ``weight_depth``).

Rules (depth is never pooled, strided or resized):

============================  ===============================================================
2D module                     3D module
============================  ===============================================================
Conv2d                        the chosen operator where ``fuse`` selects it, else ``none``
ConvTranspose2d               ConvTranspose3d, kernel (1, K, K), no fusion
BatchNorm2d / InstanceNorm2d  BatchNorm3d / InstanceNorm3d with the same statistics and affine
MaxPool2d / AvgPool2d         3D pools with depth kernel 1, stride 1, padding 0
MaxUnpool2d                   MaxUnpool3d, depth kernel 1
AdaptiveAvg/MaxPool2d (h, w)  AdaptiveAvg/MaxPool3d (None, h, w): depth untouched
Upsample (size or scale)      depth kept: nearest stays nearest, bilinear becomes trilinear with
                              depth scale 1 (identical per slice), bicubic runs slice by slice
Dropout2d                     Dropout3d
Reflection/ReplicationPad2d   the 3D pads with zero depth padding
PixelShuffle/PixelUnshuffle   run slice by slice
Linear                        SliceLinear (an nn.Linear, same weights): see below
Sequential, ModuleList, ...   converted recursively; parameter-free leaves (ReLU, Dropout,
                              Identity, Flatten, ZeroPad2d ...) and GroupNorm, PReLU,
                              SyncBatchNorm, LocalResponseNorm work on 5D as they are
============================  ===============================================================

Anything else raises :class:`a3d.errors.ConversionError` naming the layer's qualified name and type:
1D/3D layers (Conv1d, BatchNorm1d, Conv3d ...), LayerNorm (it would normalise over W, not channels)
and custom modules that hold parameters or buffers of their own. ``keep`` patterns leave matching
modules untouched (your responsibility).

Functional code in a model's own ``forward``: ``torch.cat``/``+`` on channels,
``F.relu``, ``F.adaptive_avg_pool2d`` (pools the last two axes, so depth is kept) work on 5D as they
are. Classifiers flatten a (B, C, D, h, w) map into C*D*h*w features: the first ``SliceLinear``
sees D times its ``in_features``, un-flattens them as (C, D, h*w) (h*w taken from the nearest
adaptive pool before it in module order, 1 if none), averages the slices and applies the 2D
weights. Since the linear layer commutes with the mean, a converted ResNet/DenseNet classifier
outputs the mean of its per-slice logits, and any converted classifier reproduces the 2D output
on a depth-constant input (with a depth-preserving operator).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from a3d.errors import ConversionError
from a3d.ops import OPERATORS, Operator, from_conv2d

FusePredicate = Callable[[str, nn.Conv2d], bool]


# -- helper modules --------------------------------------------------------------------------------
class SliceLinear(nn.Linear):
    """An ``nn.Linear`` that also accepts the flattened features of a (B, C, D, h, w) map.

    With ``in_features * D`` inputs it un-flattens them as (C, D, spatial), averages the D slices and
    applies the 2D weights; with ``in_features`` inputs it is a plain linear layer.
    """

    def __init__(self, linear: nn.Linear, spatial: int = 1):
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.load_state_dict(linear.state_dict())
        self.spatial = int(spatial) if linear.in_features % max(int(spatial), 1) == 0 else 1
        self.layer_name: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        if n != self.in_features:
            if x.dim() != 2 or n % self.in_features:
                raise ConversionError(
                    f"layer {self.layer_name!r} (SliceLinear): expected {self.in_features} features or a "
                    f"multiple of them (flattened slices), got input of shape {tuple(x.shape)}"
                )
            d = n // self.in_features
            c = self.in_features // self.spatial
            x = x.view(x.shape[0], c, d, self.spatial).mean(2).reshape(x.shape[0], self.in_features)
        return super().forward(x)


class DepthKeepingUpsample(nn.Module):
    """``nn.Upsample`` on (B, C, D, H, W) resizing H, W only (depth size and positions kept)."""

    def __init__(self, up: nn.Upsample):
        super().__init__()
        self.size = None if up.size is None else _pair(up.size)
        sf = up.scale_factor
        self.scale_factor = None if sf is None else _pair(sf)
        self.mode = {"bilinear": "trilinear", "linear": "trilinear"}.get(up.mode, up.mode)
        self.align_corners = up.align_corners
        self.recompute_scale_factor = getattr(up, "recompute_scale_factor", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            return F.interpolate(x, size=(x.shape[2], *self.size), mode=self.mode,
                                 align_corners=self.align_corners)
        return F.interpolate(x, scale_factor=(1.0, *map(float, self.scale_factor)), mode=self.mode,
                             align_corners=self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode!r}"


class PerSlice(nn.Module):
    """Runs a parameter-free 2D module on every slice: (B, C, D, H, W) -> (B*D, C, H, W) and back."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        y = self.module(x.transpose(1, 2).reshape(b * d, c, h, w))
        return y.reshape(b, d, *y.shape[1:]).transpose(1, 2)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _d1(v):
    """(1, a, b) for a 2D kernel / stride / dilation given as int or pair."""
    return (1, *_pair(v))


def _d0(v):
    """(0, a, b) for a 2D padding."""
    return (0, *_pair(v))


# -- selection -------------------------------------------------------------------------------------
def _fuse_predicate(fuse) -> FusePredicate:
    if fuse is True or fuse is None:
        return lambda q, c: True
    if fuse is False:
        return lambda q, c: False
    if callable(fuse):
        return fuse
    pats = [fuse] if isinstance(fuse, str) else list(fuse)
    if not all(isinstance(p, str) for p in pats):
        raise ConversionError(
            "convert: fuse must be True/False, a callable (qualified_name, conv2d) -> bool, "
            f"or fnmatch pattern(s) on qualified names; got {fuse!r}"
        )
    return lambda q, c: any(fnmatch.fnmatchcase(q, p) for p in pats)


_KEEP_TYPES = (nn.GroupNorm, nn.PReLU, nn.SyncBatchNorm, nn.LocalResponseNorm, nn.ZeroPad2d,
               nn.ConstantPad2d, nn.Flatten, nn.Unflatten, nn.Identity)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_WRONG_DIM = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm3d,
              nn.InstanceNorm1d, nn.InstanceNorm3d, nn.MaxPool1d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool3d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool3d,
              nn.Dropout1d, nn.Dropout3d, nn.LayerNorm, nn.Embedding, nn.RNNBase, nn.MultiheadAttention)
_ACTIVATION_MODULE = nn.modules.activation.__name__


def _conv_transpose_3d(m: nn.ConvTranspose2d, q: str) -> nn.ConvTranspose3d:
    """The (1, k, k) ConvTranspose3d with the same weights (depth untouched)."""
    if m.padding_mode != "zeros":
        raise ConversionError(f"layer {q!r} ({type(m).__name__}): expected padding_mode='zeros'")
    new = nn.ConvTranspose3d(m.in_channels, m.out_channels, _d1(m.kernel_size), _d1(m.stride),
                             _d0(m.padding), _d0(m.output_padding), m.groups, m.bias is not None,
                             _d1(m.dilation), device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight.unsqueeze(2))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new


class _Converter:
    def __init__(self, name, depth, fuse, first_conv, keep):
        self.name = str(name).lower()
        self.depth = int(depth)
        self.fuse = _fuse_predicate(fuse)
        self.first_conv = first_conv
        self.first_done = first_conv is None
        self.keep = [keep] if isinstance(keep, str) else list(keep or ())
        self.last_spatial = 1  # h*w of the latest adaptive pool seen (for SliceLinear)

    # returns the replacement, or None to keep (after recursing)
    def convert(self, m: nn.Module, q: str) -> nn.Module | None:
        t = type(m).__name__
        if any(fnmatch.fnmatchcase(q, p) for p in self.keep):
            return None
        if isinstance(m, nn.Conv2d):
            return self._conv(m, q)
        if isinstance(m, Operator):
            raise ConversionError(f"layer {q!r} ({t}): already a 3D operator; expected a 2D model")
        new = self._layer(m, q)
        if new is not None:
            return new
        if isinstance(m, _WRONG_DIM):
            raise ConversionError(
                f"layer {q!r} ({t}): cannot convert; expected 2D layers (Conv2d, BatchNorm2d, pools ...) "
                "or layers that work on (B, C, D, H, W) unchanged"
            )
        if isinstance(m, _KEEP_TYPES) or type(m).__module__ == _ACTIVATION_MODULE:
            return None
        own = [n for n, _ in m.named_parameters(recurse=False)] + [n for n, _ in m.named_buffers(recurse=False)]
        if own and not isinstance(m, _CONTAINERS):
            raise ConversionError(
                f"layer {q!r} ({t}): unknown module with its own parameters/buffers {own}; expected "
                "standard 2D layers (Conv2d, BatchNorm2d, pools, Linear ...) or containers of them; "
                "pass keep=[pattern] to leave it untouched"
            )
        for child_name, child in list(m.named_children()):
            cq = f"{q}.{child_name}" if q else child_name
            new = self.convert(child, cq)
            if new is not None:
                new.train(child.training)
                setattr(m, child_name, new)
        return None

    def _layer(self, m: nn.Module, q: str) -> nn.Module | None:
        """The 3D form of a 2D layer other than Conv2d, or None when ``m`` is none of those."""
        if isinstance(m, nn.ConvTranspose2d):
            return _conv_transpose_3d(m, q)
        if isinstance(m, nn.BatchNorm2d) and not isinstance(m, nn.SyncBatchNorm):
            return self._norm(nn.BatchNorm3d, m)
        if isinstance(m, nn.InstanceNorm2d):
            return self._norm(nn.InstanceNorm3d, m)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.MaxUnpool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return self._pool(m)
        if isinstance(m, nn.Upsample):
            if m.mode == "bicubic":
                return PerSlice(m)
            if m.mode not in ("nearest", "nearest-exact", "bilinear", "trilinear"):
                raise ConversionError(f"layer {q!r} ({type(m).__name__}): mode {m.mode!r} has no depth-keeping 3D form")
            return DepthKeepingUpsample(m)
        if isinstance(m, (nn.PixelShuffle, nn.PixelUnshuffle)):
            return PerSlice(m)
        if isinstance(m, nn.Dropout2d):
            return nn.Dropout3d(m.p, m.inplace)
        if isinstance(m, nn.ReflectionPad2d):
            return nn.ReflectionPad3d((*m.padding, 0, 0))
        if isinstance(m, nn.ReplicationPad2d):
            return nn.ReplicationPad3d((*m.padding, 0, 0))
        if isinstance(m, nn.Linear):
            new = SliceLinear(m, self.last_spatial)
            new.layer_name = q
            return new
        return None

    def _pool(self, m: nn.Module) -> nn.Module:
        if isinstance(m, nn.MaxPool2d):
            return nn.MaxPool3d(_d1(m.kernel_size), _d1(m.stride), _d0(m.padding), _d1(m.dilation),
                                m.return_indices, m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            return nn.AvgPool3d(_d1(m.kernel_size), _d1(m.stride), _d0(m.padding), m.ceil_mode,
                                m.count_include_pad, m.divisor_override)
        if isinstance(m, nn.MaxUnpool2d):
            return nn.MaxUnpool3d(_d1(m.kernel_size), _d1(m.stride), _d0(m.padding))
        h, w = _pair(m.output_size)  # adaptive pools
        self.last_spatial = (h or 0) * (w or 0) or 1
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return nn.AdaptiveAvgPool3d((None, h, w))
        return nn.AdaptiveMaxPool3d((None, h, w), m.return_indices)

    def _norm(self, cls, m):
        new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                  device=_device_of(m), dtype=_dtype_of(m))
        new.load_state_dict(m.state_dict())
        return new

    def _conv(self, m: nn.Conv2d, q: str) -> Operator:
        if not self.first_done:
            self.first_done = True
            m = _grey_conv(m, q, self.first_conv)
        op_name = self.name if self.fuse(q, m) else "none"
        try:
            op = from_conv2d(op_name, m, self.depth)
        except ConversionError as e:
            raise ConversionError(f"layer {q!r} (Conv2d): {e}") from None
        op.layer_name = q
        return op


def _device_of(m):
    for t in list(m.parameters()) + list(m.buffers()):
        return t.device
    return None


def _dtype_of(m):
    for t in m.parameters():
        return t.dtype
    return None


def _grey_conv(conv: nn.Conv2d, q: str, how: str) -> nn.Conv2d:
    """A 1-input-channel copy of the RGB first conv: green channel (W[:, 1:2]) or RGB sum."""
    if how not in ("green", "sum"):
        raise ConversionError(f"convert: first_conv must be 'green', 'sum' or None, got {how!r}")
    if conv.in_channels != 3 or conv.groups != 1:
        raise ConversionError(
            f"layer {q!r} (Conv2d): first_conv={how!r} expects the first conv to take 3 (RGB) channels "
            f"with groups=1, got in_channels={conv.in_channels}, groups={conv.groups}"
        )
    w = conv.weight.detach()
    w = w[:, 1:2].clone() if how == "green" else w.sum(1, keepdim=True)
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    1, conv.bias is not None, conv.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    new.train(conv.training)
    return new


def convert(
    model: nn.Module,
    name: str,
    depth: int,
    *,
    fuse: bool | str | Sequence[str] | FusePredicate = True,
    first_conv: str | None = None,
    keep: str | Sequence[str] = (),
    inplace: bool = False,
) -> nn.Module:
    """A 3D copy of the 2D ``model`` using operator ``name`` (one of ``a3d.ops.OPERATORS``).

    - ``depth``: number of slices D the model will see (A3D's P is D x D; others only record it).
    - ``fuse``: which Conv2d layers get the operator (the others get ``none``): True (all), False
      (none), fnmatch pattern(s) on the qualified module name (``"features.denseblock*"``), or a
      callable ``(qualified_name, conv2d) -> bool``.
    - ``first_conv``: ``"green"`` (keep ImageNet's green channel, W[:, 1:2]) or ``"sum"`` (sum over
      RGB) turns the first Conv2d (in module registration order) into a 1-channel conv; None keeps it.
    - ``keep``: fnmatch pattern(s) of modules to leave untouched.
    - ``inplace``: convert ``model`` itself instead of a deep copy.

    Raises :class:`ConversionError` naming the first layer that cannot be converted.
    """
    key = str(name).lower()
    if key not in OPERATORS:
        raise ConversionError(f"convert: unknown operator {name!r}; expected one of {', '.join(OPERATORS)}")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert: expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    conv = _Converter(key, depth, fuse, first_conv, keep)
    new = conv.convert(model, "")
    if new is not None:
        new.train(model.training)
        model = new
    if not conv.first_done:
        raise ConversionError(f"convert: first_conv={first_conv!r} given but the model has no Conv2d")
    return model
