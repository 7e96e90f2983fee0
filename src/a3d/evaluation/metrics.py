"""Predictions + ground truth -> the metrics dict, and its Markdown / JSON forms.

metrics.json (``"format": "a3d-metrics", "version": 1``)::

    {"format": "a3d-metrics", "version": 1, "a3d_version": "0.1.0", "created": "<UTC ISO time>",
     "split": "test" | "val" | "train" | null, "iou_threshold": 0.5,
     "fps": [0.5, 1, 2, 4, 8, 16],
     "sensitivity": [6 numbers in 0..1], "average": number,        # mean of the first four
     "n_images": int, "n_lesions": int, "n_predictions": int, "n_hits": int, "n_false_positives": int,
     "max_per_image": 50 | null, "n_predictions_dropped": int,      # over the per-image cap, left out
     "ci": {"level": 0.95, "n_bootstrap": 1000, "seed": 0,
            "average": [low, high], "sensitivity": [[low, high] x 6]} | null,
     "curve": {"fps": [...], "sensitivity": [...], "note": "..."},    # sampled on a log grid
     "breakdowns": {"slice_interval": [entry...], "diameter": [entry...], "lesion_type": [entry...]},
     "run": {"operator": str, "slices": int, "name": str, ...}         # optional, filled by the trainer
    }

A breakdown entry: {"name", "kind": "image" | "lesion", "n_images", "n_lesions", "sensitivity",
"average"} (lesion-type entries add "type"). Numbers that are undefined (a subset with no lesion)
are null. Sensitivities are fractions; Markdown shows percentages.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from a3d import __version__
from a3d.errors import A3DError
from a3d.evaluation.breakdown import (
    DEFAULT_DIAMETER_THRESHOLDS,
    DEFAULT_INTERVAL_BINS,
    LESION_TYPES,
    breakdowns,
)
from a3d.evaluation.bootstrap import bootstrap_ci
from a3d.evaluation.froc import DEFAULT_FPS, classify, froc_from_classification, sensitivity_at
from a3d.evaluation.groundtruth import SPLIT_NAMES, GroundTruth
from a3d.evaluation.plots import curve_from_metrics, plot_froc
from a3d.evaluation.predictions import ImagePredictions, save_predictions
from a3d.io import write_text_atomic

FORMAT = "a3d-metrics"
VERSION = 1
# The stored curve: the interpolated FROC sampled at 2^-4 .. 2^6 FPs per image (16 points per octave).
CURVE_GRID = 2.0 ** np.linspace(-4, 6, 161)


def align_predictions(
    preds: Sequence[ImagePredictions], gt: GroundTruth, missing: str = "error", source: str = "predictions"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, scores) per ground-truth image, in ``gt`` order.

    A prediction for an image that is not in ``gt`` is an error (an id may carry the File_name's
    ``.png`` suffix). An image of ``gt`` without an entry
    is an error with ``missing="error"``, or an image with no predictions with ``missing="empty"``.
    """
    if missing not in ("error", "empty"):
        raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(gt)
    for k, p in enumerate(preds):
        i = gt.index.get(p.image_id)
        if i is None and p.image_id.endswith(".png"):  # a File_name given instead of its id
            i = gt.index.get(p.image_id[:-4])
        if i is None:
            raise A3DError(
                f"{source}: image {k} ({p.image_id!r}) is not among the {len(gt)} evaluated images"
                f"{' of split ' + SPLIT_NAMES[gt.split] if gt.split in SPLIT_NAMES else ''}"
                " (wrong split, or an image whose lesions are all flagged noisy)"
            )
        if out[i] is not None:
            raise A3DError(f"{source}: image {k} ({p.image_id!r}) appears more than once")
        out[i] = (np.asarray(p.boxes, dtype=np.float64).reshape(-1, 4), np.asarray(p.scores, dtype=np.float64).reshape(-1))
    lacking = [gt.images[i].image_id for i, v in enumerate(out) if v is None]
    if lacking and missing == "error":
        raise A3DError(
            f"{source}: no entry for {len(lacking)} of the {len(gt)} evaluated images (first: {lacking[0]!r}); "
            "list every image, with empty boxes where nothing was detected"
        )
    empty = (np.zeros((0, 4)), np.zeros(0))
    return [v if v is not None else empty for v in out]


def evaluate_predictions(
    preds: Sequence[ImagePredictions],
    gt: GroundTruth,
    *,
    fps: Sequence[float] = DEFAULT_FPS,
    iou_threshold: float = 0.5,
    interval_bins: Sequence[tuple[str, float, float]] = DEFAULT_INTERVAL_BINS,
    diameter_thresholds: Sequence[float] = DEFAULT_DIAMETER_THRESHOLDS,
    lesion_types: Sequence[int] = tuple(LESION_TYPES),
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    missing: str = "error",
    source: str = "predictions",
    run: dict | None = None,
    max_per_image: int | None = 50,
) -> dict:
    """The metrics dict (schema in the module docstring): overall FROC, bootstrap CI, breakdowns.

    ``max_per_image``: the protocol scores at most 50 detections per image (the detector's test
    setting); an image with more keeps its highest-scoring ones (ties: listed order) and the
    number left out is reported as ``n_predictions_dropped``. None keeps everything.
    """
    if len(gt) == 0:
        raise A3DError(f"{source}: the ground truth has no image to evaluate (empty split?)")
    per_image = align_predictions(preds, gt, missing, source)
    dropped = 0
    if max_per_image is not None:
        if max_per_image < 1:
            raise A3DError(f"max_per_image: expected a positive number or None, got {max_per_image}")
        capped = []
        for b, sc in per_image:
            if sc.shape[0] > max_per_image:
                keep = np.sort(np.argsort(-sc, kind="stable")[:max_per_image])
                dropped += sc.shape[0] - max_per_image
                b, sc = b[keep], sc[keep]
            capped.append((b, sc))
        per_image = capped
    c = classify([p[0] for p in per_image], [p[1] for p in per_image], [im.boxes for im in gt.images], iou_threshold)
    r = froc_from_classification(c, fps)
    m: dict = {
        "format": FORMAT,
        "version": VERSION,
        "a3d_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "split": SPLIT_NAMES.get(gt.split) if gt.split is not None else None,
        "iou_threshold": float(iou_threshold),
    }
    m.update(r.as_dict())
    m["max_per_image"] = max_per_image
    m["n_predictions_dropped"] = dropped
    m["ci"] = bootstrap_ci(c, fps, n_bootstrap, seed, ci_level) if n_bootstrap > 0 else None
    if r.n_lesions:
        grid = sensitivity_at(r.curve_fps, r.curve_sensitivity, CURVE_GRID)
        m["curve"] = {
            "fps": [float(x) for x in CURVE_GRID],
            "sensitivity": [float(y) for y in grid],
            "note": "interpolated FROC (a step function) sampled at 2^(-4 + k/16) FPs per image, k = 0..160",
        }
    else:
        m["curve"] = None
    m["breakdowns"] = breakdowns(
        per_image, gt, fps, iou_threshold, interval_bins, diameter_thresholds, lesion_types, classification=c
    )
    if run:
        m["run"] = dict(run)
    return m


def _pct(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def metrics_to_markdown(m: dict, title: str | None = None) -> str:
    fps = m["fps"]
    head = "| | " + " | ".join(f"{f:g}" for f in fps) + " | Avg. |"
    sep = "|---" * (len(fps) + 2) + "|"
    lines = [f"# {title or 'DeepLesion FROC'}", ""]
    run = m.get("run") or {}
    facts = []
    if run:
        facts.append("run: " + ", ".join(f"{k} {v}" for k, v in run.items()))
    facts.append(f"split: {m.get('split') or '-'}")
    facts.append(f"{m['n_images']} images, {m['n_lesions']} lesions, {m['n_predictions']} predictions")
    facts.append(f"IoU >= {m['iou_threshold']:g}; sensitivities (%) at FPs per image; Avg. = mean of the first four")
    lines += [f"- {f}" for f in facts] + ["", head, sep]
    lines.append("| all | " + " | ".join(_pct(s) for s in m["sensitivity"]) + f" | {_pct(m['average'])} |")
    ci = m.get("ci")
    if ci:
        lo_hi = ci["sensitivity"] + [ci["average"]]
        lines.append(
            f"| {100 * ci['level']:g}% CI | "
            + " | ".join(f"{_pct(a)}-{_pct(b)}" for a, b in lo_hi)
            + " |"
        )
        lines += ["", f"CI: percentile bootstrap over images, {ci['n_bootstrap']} resamples, seed {ci['seed']}."]
    names = {"slice_interval": "By slice interval (image subsets)", "diameter": "By long diameter (lesion subsets)",
             "lesion_type": "By lesion type (lesion subsets)"}
    for key, entries in (m.get("breakdowns") or {}).items():
        if not entries:
            continue
        lines += ["", f"## {names.get(key, key)}", "", "| subset | images | lesions | " + " | ".join(f"{f:g}" for f in fps) + " | Avg. |",
                  "|---" * (len(fps) + 4) + "|"]
        for e in entries:
            lines.append(
                f"| {e['name']} | {e['n_images']} | {e['n_lesions']} | "
                + " | ".join(_pct(s) for s in e["sensitivity"])
                + f" | {_pct(e['average'])} |"
            )
    return "\n".join(lines) + "\n"


def _clean(o):
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, (np.floating,)):
        return _clean(float(o))
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_metrics(m: dict, out_dir: str | os.PathLike, title: str | None = None) -> tuple[Path, Path]:
    """Write metrics.json and metrics.md into ``out_dir`` (atomically); return their paths."""
    out = Path(out_dir)
    j, md = out / "metrics.json", out / "metrics.md"
    write_text_atomic(j, json.dumps(_clean(m), indent=1, allow_nan=False) + "\n")
    write_text_atomic(md, metrics_to_markdown(m, title))
    return j, md


def read_metrics(path: str | os.PathLike) -> dict:
    """Read a metrics.json (A3DError naming the file when missing or malformed)."""
    path = Path(path)
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise A3DError(f"{path}: metrics file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise A3DError(f"{path}: cannot read metrics JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise A3DError(f'{path}: expected a JSON object with "format": "{FORMAT}"')
    for key in ("fps", "sensitivity", "average"):
        if key not in m:
            raise A3DError(f"{path}: missing field {key!r}")
    if not isinstance(m["fps"], list) or not isinstance(m["sensitivity"], list) or len(m["fps"]) != len(m["sensitivity"]):
        raise A3DError(f"{path}: fields 'fps' and 'sensitivity' must be lists of equal length")
    return m


def write_evaluation(
    out_dir: str | os.PathLike, preds: Sequence[ImagePredictions], m: dict, title: str | None = None
) -> dict[str, Path]:
    """Write everything ``a3d eval`` produces into ``out_dir``: predictions.json, predictions.csv,
    metrics.json, metrics.md, froc.png, froc.svg. Returns {kind: path}."""
    out = Path(out_dir)
    paths = {
        "predictions": save_predictions(out / "predictions.json", preds),
        "predictions_csv": save_predictions(out / "predictions.csv", preds),
    }
    paths["metrics_json"], paths["metrics_md"] = write_metrics(m, out, title)
    run = m.get("run") or {}
    label = run.get("name") or (m.get("split") and f"{m['split']} split") or None
    paths["png"], paths["svg"] = plot_froc([curve_from_metrics(m, label)], out / "froc", title=title or "DeepLesion FROC")
    return paths
