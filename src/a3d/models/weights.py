"""Where the ImageNet DenseNet-121 weights come from: the one resolver of ``pretrained`` values.

Used by :func:`a3d.models.densenet121_3d` and :func:`a3d.models.build_detector` alike, so that
"imagenet" (or its alias "hub") means one file whatever the entry point: torchvision's
``densenet121-a639ec97.pth`` (``DenseNet121_Weights.IMAGENET1K_V1``) in the torch hub cache. Never
downloads: a missing file is an :class:`a3d.errors.A3DError` saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from a3d.errors import A3DError

# torchvision's ImageNet DenseNet-121 file name in the torch hub cache (<hub dir>/checkpoints/).
IMAGENET_DENSENET121 = "densenet121-a639ec97.pth"
_RANDOM = ("none", "", "random")
_IMAGENET = ("imagenet", "hub")

__all__ = ["IMAGENET_DENSENET121", "imagenet_densenet121_path", "resolve_pretrained"]


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
                       "DenseNet-121 state-dict file, 'imagenet' or 'none')")
    return str(path)
