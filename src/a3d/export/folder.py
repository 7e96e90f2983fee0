"""``export_checkpoint``: a checkpoint -> one folder in the Hugging Face layout (+ deployment graphs).

Every export writes the hub files, which ``a3d predict``/``a3d eval`` load as a checkpoint
(:func:`a3d.engine.checkpoint.read_export`): ``model.safetensors`` (weights), ``config.json``
(``model_type``, the a3d config and the run's record: everything in the checkpoint but the
weights and the training state) and ``README.md`` (the model card). ``torchscript`` and ``onnx`` add
``model.torchscript.pt`` / ``model.onnx``, each checked against PyTorch before the folder appears
(:mod:`a3d.export.deploy`); a failed check leaves no folder behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import safetensors.torch

from a3d import __version__
from a3d.config import Config, config_from_dict
from a3d.engine.checkpoint import (
    EXPORT_CONFIG,
    EXPORT_WEIGHTS,
    MODEL_TYPE,
    load_checkpoint,
    load_model_state,
    weights_only,
)
from a3d.errors import A3DError
from a3d.export.card import model_card
from a3d.export.deploy import Parity, check_export, export_onnx, export_torchscript
from a3d.io import atomic_dir
from a3d.models.detector import build_detector

FORMATS = ("safetensors", "torchscript", "onnx")
DEPLOY_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    parity: list[Parity] = field(default_factory=list)


def check_export_args(checkpoint: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str],
                      overwrite: bool) -> None:
    """A3DError for anything that would stop the export, before any work."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise A3DError(f"--format: unknown {', '.join(bad)}; expected some of {', '.join(FORMATS)}")
    if not Path(checkpoint).exists():
        raise A3DError(f"{checkpoint}: checkpoint not found (expected an 'a3d train' checkpoint file or an "
                       "'a3d export' folder)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise A3DError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
    if out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise A3DError(f"--out {out}: is the checkpoint folder being exported; choose another --out")
    if "onnx" in formats and importlib.util.find_spec("onnxruntime") is None:
        raise A3DError("--format onnx: needs onnx and onnxruntime (the export extra: pip install 'a3d[export]')")


def _run_metrics(ckpt: dict) -> dict | None:
    """The validation record of these weights: best.pt's ``metrics``, or a last.pt's final record
    when its last iteration was validated."""
    if "metrics" in ckpt:
        return ckpt["metrics"]
    last = (ckpt.get("history") or [None])[-1]
    return last if last and last.get("iteration") == ckpt.get("iteration") and "val_average" in last else None


def _config_json(ckpt: dict) -> str:
    record = weights_only(ckpt, _run_metrics(ckpt))
    record.pop("model")
    return json.dumps({"model_type": MODEL_TYPE, **record, "exported_by": __version__}, indent=1) + "\n"


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str] = ("safetensors",),
                      overwrite: bool = False, log: Callable[[str], None] = print) -> ExportResult:
    """Export ``checkpoint`` (an ``a3d train`` file or an export folder) into the folder ``out``."""
    check_export_args(checkpoint, out, formats, overwrite)
    ckpt = load_checkpoint(checkpoint)
    cfg: Config = config_from_dict(ckpt["config"], f"{checkpoint} (stored config)")
    model = build_detector(cfg.model, pretrained=False)
    load_model_state(model, ckpt["model"], str(checkpoint))
    model.eval()
    deploy = [f for f in FORMATS if f in formats and f in DEPLOY_FILES]
    files = [EXPORT_WEIGHTS, EXPORT_CONFIG, "README.md", *(DEPLOY_FILES[f] for f in deploy)]
    parity: list[Parity] = []
    with atomic_dir(out) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        # bytes, then a plain write: safetensors' own file writer makes the file private (0600)
        (tmp / EXPORT_WEIGHTS).write_bytes(safetensors.torch.save(state, metadata={"format": "pt"}))
        (tmp / EXPORT_CONFIG).write_text(_config_json(ckpt))
        for fmt in deploy:
            path = tmp / DEPLOY_FILES[fmt]
            log(f"export: tracing the detector for {fmt} ({cfg.model.slices} x {cfg.data.size} x {cfg.data.size})")
            (export_torchscript if fmt == "torchscript" else export_onnx)(model, cfg, path)
            p = check_export(model, cfg, fmt, path)
            if not p.ok:
                raise A3DError(f"export: the {fmt} graph does not reproduce PyTorch ({p.describe()}); nothing written")
            log(f"export: checked {p.describe()}")
            parity.append(p)
        params = sum(p.numel() for p in model.parameters())
        (tmp / "README.md").write_text(model_card(cfg, {**ckpt, "metrics": _run_metrics(ckpt)}, params, files, parity))
    return ExportResult(Path(out), files, parity)
