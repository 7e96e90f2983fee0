"""Where pretrained weights come from: the one resolver of ``pretrained`` values.

Used by :func:`a3d.models.densenet121_3d` and :func:`a3d.models.build_detector` alike, so that
"imagenet" (or its alias "hub") means one file whatever the entry point: torchvision's
``densenet121-a639ec97.pth`` (``DenseNet121_Weights.IMAGENET1K_V1``) in the torch hub cache. Never
downloads: a missing file is an :class:`a3d.errors.A3DError` saying where to put it.

Fine-tuning: a ``pretrained`` path may also name an a3d checkpoint (a file written by ``a3d train``):
:func:`detector_checkpoint` recognises it (operator and slices must be the model's) and
:func:`load_detector_weights` puts its whole detector (backbone and heads) into the new model.
Files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from a3d.config import ModelConfig
from a3d.errors import A3DError

# torchvision's ImageNet DenseNet-121 file name in the torch hub cache (<hub dir>/checkpoints/).
IMAGENET_DENSENET121 = "densenet121-a639ec97.pth"
_RANDOM = ("none", "", "random")
_IMAGENET = ("imagenet", "hub")

__all__ = ["IMAGENET_DENSENET121", "DetectorCheckpoint", "detector_checkpoint", "imagenet_densenet121_path", "load_detector_weights",
           "resolve_pretrained"]


def imagenet_densenet121_path() -> Path:
    """Where torchvision keeps its ImageNet DenseNet-121 weights: ``<torch hub dir>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_DENSENET121


def resolve_pretrained(value: str | os.PathLike | None) -> str | None:
    """A ``pretrained`` value -> None (random init) or the path of an existing state-dict file.

    None, "none", "random" or "": random init. "imagenet" or "hub": torchvision's
    ``densenet121-a639ec97.pth`` in the torch hub cache. Anything else: a file path (``~`` expanded).
    """
    if value is None:
        return None
    text = os.fspath(value).strip()
    if text.lower() in _RANDOM:
        return None
    if text.lower() in _IMAGENET:
        path = imagenet_densenet121_path()
        if not path.is_file():
            raise A3DError(
                f"pretrained weights {text!r}: torchvision's ImageNet DenseNet-121 ({IMAGENET_DENSENET121}) is not "
                f"in the torch hub cache ({path}); put it there (or set TORCH_HOME), give its path instead "
                "(model.pretrained=/path/to/file.pth), or use random init (model.pretrained=none)"
            )
        return str(path)
    path = Path(text).expanduser()
    if not path.is_file():
        raise A3DError(f"pretrained weights {text!r}: file not found (no such file; expected a torchvision "
                       "DenseNet-121 state-dict file, an a3d checkpoint, 'imagenet' or 'none')")
    return str(path)


@dataclass(frozen=True)
class DetectorCheckpoint:
    """The detector weights of an a3d checkpoint used as ``pretrained``."""

    path: str
    state: dict  # the detector's state dict (checkpoint key ``model``)
    model_config: dict  # the checkpoint's ``config["model"]``


def _is_a3d_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and "format" in obj and isinstance(obj.get("model"), dict) and \
        isinstance(obj.get("config"), dict) and isinstance(obj["config"].get("model"), dict)


def detector_checkpoint(value: str | os.PathLike | None, model_cfg: ModelConfig) -> DetectorCheckpoint | None:
    """The detector weights when the ``pretrained`` value names an a3d checkpoint, else None
    (random init, ImageNet, or a DenseNet-121 state dict: the backbone loads those).

    A3DError when the checkpoint's operator or slice count differs from ``model_cfg``'s.
    """
    path = resolve_pretrained(value)
    if path is None or os.fspath(value).strip().lower() in _IMAGENET:
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not readable here; the DenseNet-121 loader reports why
        return None
    if not _is_a3d_checkpoint(obj):
        return None
    stored = obj["config"]["model"]
    for key in ("operator", "slices"):
        if stored.get(key) != getattr(model_cfg, key):
            raise A3DError(f"pretrained checkpoint {path}: trained with model.{key}={stored.get(key)!r}, this model has "
                           f"model.{key}={getattr(model_cfg, key)!r}; fine-tuning needs the same {key} (set "
                           f"model.{key}={stored.get(key)})")
    return DetectorCheckpoint(path, obj["model"], stored)


def load_detector_weights(model: torch.nn.Module, model_cfg: ModelConfig, ckpt: DetectorCheckpoint) -> None:
    """Load the checkpoint's detector state strictly into ``model`` (built from ``model_cfg``); a
    mismatch names the keys and the ``model.*`` settings that differ from the checkpoint's."""
    state = ckpt.state
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        differ = [f"model.{k}" for k, v in ckpt.model_config.items() if hasattr(model_cfg, k)
                  and k not in ("pretrained", "checkpointing") and _plain(getattr(model_cfg, k)) != _plain(v)]
        what = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} of another shape "
                f"(e.g. {(missing or unexpected or shapes)[0]})")
        raise A3DError(f"pretrained checkpoint {ckpt.path}: its detector weights do not fit this model ({what}); the "
                       f"checkpoint's config differs in {', '.join(differ) or 'no model.* key'}")
    model.load_state_dict(state)


def _plain(v):
    return list(v) if isinstance(v, (tuple, list)) else v
