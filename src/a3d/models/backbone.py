"""The 3D backbone: DenseNet-121 truncated after dense block 3, converted to 3D (spec section 3).

Built by converting ``torchvision.models.densenet121(weights=None).features`` with
:func:`a3d.convert` (fusion in both convs of every dense layer; stem and transition convs use
``none``; conv0 keeps ImageNet's green channel), then adding the depth-squeezing (D, 1, 1) convs,
the 1x1 laterals to 512 channels and the top-down nearest x2 upsample-add. Output: 512 channels at
stride 4.
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from a3d.converter import convert
from a3d.errors import A3DError
from a3d.models.weights import resolve_pretrained

OUT_CHANNELS = 512
_KEEP = ("conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2",
         "denseblock3")
_STAGE_CHANNELS = (256, 512, 1024)  # after dense blocks 1, 2, 3
# torchvision's own fix-up for the old-style key names of its released checkpoints ("norm.1" -> "norm1")
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _fuse_dense_layers(qualified_name: str, conv: nn.Conv2d) -> bool:
    return ".denselayer" in qualified_name


class DenseNet3dBackbone(nn.Module):
    """(B, 1, D, H, W) -> (B, 512, H/4, W/4).

    With the ``alignshift`` operator the per-sample thickness must first be stored on its layers with
    :func:`a3d.ops.set_thickness` (the detector does that from its ``thickness`` argument); ``forward``
    takes only the volume, as any converted model's does.

    ``features``: the converted 3D stem, dense blocks 1-3 and transitions 1-2 (torchvision names,
    so its state dict keys are torchvision's with 3D-shaped conv weights). ``squeeze``: the three
    (D, 1, 1) convs, ``lateral``: the three 1x1 convs to 512 channels.
    """

    out_channels = OUT_CHANNELS

    def __init__(self, features: nn.Sequential, operator: str, slices: int):
        super().__init__()
        self.operator = operator
        self.slices = slices
        self.features = features
        self.squeeze = nn.ModuleList(nn.Conv3d(c, c, (slices, 1, 1), bias=False) for c in _STAGE_CHANNELS)
        self.lateral = nn.ModuleList(nn.Conv2d(c, OUT_CHANNELS, 1) for c in _STAGE_CHANNELS)
        for m in self.squeeze:
            nn.init.kaiming_normal_(m.weight)
        for m in self.lateral:
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)

    def set_checkpointing(self, enabled: bool = True) -> None:
        """Gradient checkpointing of every dense layer's bottleneck (concat, BN, ReLU, 1x1 conv),
        torchvision's ``memory_efficient`` mechanism (non-reentrant ``torch.utils.checkpoint``)."""
        for m in self.features.modules():
            if hasattr(m, "memory_efficient"):
                m.memory_efficient = bool(enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1 or x.shape[2] != self.slices:
            raise A3DError(
                f"densenet121_3d({self.operator!r}, slices={self.slices}): expected input (B, 1, {self.slices}, H, W), "
                f"got {tuple(x.shape)}"
            )
        stages = []
        for name, module in self.features.named_children():
            x = module(x)
            if name.startswith("denseblock"):
                stages.append(x)
        c4, c8, c16 = (sq(s).squeeze(2) for sq, s in zip(self.squeeze, stages))
        p = self.lateral[2](c16)
        p = self.lateral[1](c8) + F.interpolate(p, size=c8.shape[-2:], mode="nearest")
        p = self.lateral[0](c4) + F.interpolate(p, size=c4.shape[-2:], mode="nearest")
        return p


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise A3DError(f"pretrained weights {path!r}: file not found") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise A3DError(f"pretrained weights {path!r}: not a readable torch state dict ({e})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise A3DError(f"pretrained weights {path!r}: expected a state dict, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        m = _OLD_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _load_2d(tv_model: nn.Module, path: str) -> None:
    sd = _read_state_dict(path)
    if not any(k.startswith("features.") for k in sd):  # a bare features state dict
        sd = {f"features.{k}": v for k, v in sd.items()}
    # the released checkpoints predate BatchNorm's num_batches_tracked: not required
    wanted = {k for k in tv_model.state_dict()
              if k.split(".")[1] in _KEEP and (k in sd or not k.endswith("num_batches_tracked"))}
    missing = sorted(wanted - set(sd))
    if missing:
        raise A3DError(
            f"pretrained weights {path!r}: not a torchvision DenseNet-121 state dict; missing {len(missing)} "
            f"keys such as {missing[:3]}"
        )
    own = tv_model.state_dict()
    for k in wanted:
        if tuple(sd[k].shape) != tuple(own[k].shape):
            raise A3DError(
                f"pretrained weights {path!r}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(own[k].shape)}"
            )
    tv_model.load_state_dict({k: sd[k] for k in wanted}, strict=False)


def densenet121_3d(name: str, slices: int, pretrained: str | os.PathLike | None = None,
                   checkpoint: bool = False) -> DenseNet3dBackbone:
    """The 3D DenseNet-121 backbone with operator ``name`` for ``slices`` context slices.

    ``pretrained`` (see :func:`a3d.models.weights.resolve_pretrained`): None or "none" (random init),
    "imagenet" / "hub" for torchvision's ``densenet121-a639ec97.pth`` in the torch hub cache, or the
    path of a torchvision DenseNet-121 state dict (old-style "norm.1" key names are fixed as
    torchvision does). ``checkpoint``: gradient checkpointing of the dense layers (AlignShift's
    thickness, stored by ``set_thickness``, is seen by the recomputation).
    """
    tv = torchvision.models.densenet121(weights=None)
    weights = resolve_pretrained(pretrained)
    if weights is not None:
        _load_2d(tv, weights)
    features = nn.Sequential()
    for k in _KEEP:
        features.add_module(k, getattr(tv.features, k))
    features3d = convert(features, name, slices, fuse=_fuse_dense_layers, first_conv="green", inplace=True)
    model = DenseNet3dBackbone(features3d, str(name).lower(), int(slices))
    model.set_checkpointing(checkpoint)
    return model
