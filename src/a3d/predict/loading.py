"""Checkpoint -> (model, Config) for prediction, with one-line errors for anything unusable."""

from __future__ import annotations

import os

import torch
from torch import nn

from a3d.config import Config
from a3d.engine.evaluate import load_model
from a3d.errors import A3DError


def resolve_device_name(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu`` (the default of every command); others unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_device(device: str) -> None:
    """A3DError unless ``device`` is a torch device this machine has (cpu, mps, cuda[:N])."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise A3DError(f"--device {device!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise A3DError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise A3DError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise A3DError(f"--device {device!r}: expected cpu or cuda[:N]")


def check_checkpoint_exists(checkpoint: str | os.PathLike) -> None:
    if not os.path.exists(checkpoint):
        raise A3DError(f"{checkpoint}: checkpoint not found (expected an 'a3d train' checkpoint file or an "
                       "'a3d export' folder)")


def load_predictor(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Config]:
    """(detector in eval mode on ``device``, its training Config) from an ``a3d train`` checkpoint
    file or an ``a3d export`` folder (:func:`a3d.engine.evaluate.load_model`: ``torch.load(weights_only=True)``
    or safetensors)."""
    check_checkpoint_exists(checkpoint)
    try:
        return load_model(checkpoint, device)
    except A3DError:
        raise
    except Exception as e:  # unreadable zip, unsupported pickle content, state-dict mismatch
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise A3DError(f"{checkpoint}: not a compatible a3d checkpoint ({type(e).__name__}: {msg[:160]})") from e
