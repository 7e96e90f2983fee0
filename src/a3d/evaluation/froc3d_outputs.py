"""What ``a3d eval3d`` writes: metrics.json, froc.csv, nodules.csv, froc.png and froc.svg.

metrics.json (``"format": "a3d-froc3d", "version": 1``)::

    {"format": "a3d-froc3d", "version": 1, "a3d_version": "0.1.0", "created": "<UTC ISO time>",
     "protocol": "LUNA16",
     "fps": [0.125, 0.25, 0.5, 1, 2, 4, 8], "sensitivity": [7 fractions], "cpm": fraction,
     "n_scans", "n_nodules", "n_candidates", "n_candidates_dropped", "n_detected",
     "n_false_positives", "n_ignored_excluded", "n_double_hits": ints,
     "max_per_scan": 100 | null,
     "ci": {"level": 0.95, "n_bootstrap": 1000, "seed": 0, "n_valid": int,
            "sensitivity": [[low, high] x 7], "cpm": [low, high]} | null,
     "inputs": {"annotations": path, "candidates": path, "excluded": path | null,
                "scans": path | null (null: the scans of the annotations and candidates)},
     "warnings": [str, ...]}

Undefined numbers (no nodule) are null. Every file is written atomically (:mod:`a3d.io`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from pathlib import Path

import numpy as np

from a3d import __version__
from a3d.evaluation.froc3d import Findings, FROC3DResult, froc_counts, operating_points
from a3d.io import atomic_path, write_text_atomic

FORMAT = "a3d-froc3d"
VERSION = 1
PLOT_RANGE = (0.125, 8.0)  # the official plot's x range (FROC_minX, FROC_maxX)


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def froc3d_metrics(r: FROC3DResult, ci: dict | None, inputs: dict, max_per_scan: int | None) -> dict:
    """The metrics.json dict (module docstring)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "a3d_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "protocol": "LUNA16",
        "fps": [float(f) for f in r.fps],
        "sensitivity": [_num(s) for s in r.sensitivity],
        "cpm": _num(r.cpm),
        **{k: int(v) for k, v in r.counts.items()},
        "max_per_scan": max_per_scan or None,
        "ci": ci,
        "inputs": inputs,
        "warnings": list(r.warnings),
    }


def _csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def froc_points_csv(r: FROC3DResult) -> str:
    """One row per curve point: threshold (inf for the origin), FPs per scan, sensitivity, and
    the counts behind them."""
    _, tp, fp = froc_counts(r.hit_score, r.fp_score)
    rows = [
        [repr(float(t)), repr(float(f)), repr(float(s)) if np.isfinite(s) else "", int(n_tp), int(n_fp)]
        for t, f, s, n_tp, n_fp in zip(r.curve_threshold, r.curve_fps, r.curve_sensitivity, tp, fp)
    ]
    return _csv_text(["threshold", "fps_per_scan", "sensitivity", "n_detected", "n_false_positives"], rows)


def nodules_csv(r: FROC3DResult, annotations: Findings) -> str:
    """Each evaluated nodule: where it is, whether it was detected and with what probability."""
    rows = []
    for k, p in zip(r.nodule_index, r.nodule_probability):
        line = annotations.rows[k] if annotations.rows else ""
        x, y, z = (repr(float(v)) for v in annotations.centers[k])
        rows.append([annotations.seriesuid[k], x, y, z, repr(float(annotations.diameters[k])),
                     int(np.isfinite(p)), repr(float(p)) if np.isfinite(p) else "", line])
    header = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "detected", "probability", "annotation_row"]
    return _csv_text(header, rows)


def plot_froc3d(r: FROC3DResult, ci: dict | None, out_stem: str | os.PathLike, title: str) -> list[Path]:
    """The FROC as the official script draws it (log2 x from 1/8 to 8 FPs per scan, the curve
    interpolated linearly between its points), the seven rates marked, with their bootstrap
    intervals when given; saved as ``<out_stem>.png`` and ``.svg``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional heavy dependency, for plots only
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if np.isfinite(r.cpm):
        x = 2.0 ** np.linspace(np.log2(PLOT_RANGE[0]), np.log2(PLOT_RANGE[1]), 385)  # 64 per octave
        (line,) = ax.plot(x, 100 * operating_points(r.curve_fps, r.curve_sensitivity, x), linewidth=1.5,
                          label=f"CPM {100 * r.cpm:.1f} %")
        y = 100 * np.asarray(r.sensitivity)
        if ci is not None:
            lo = np.array([np.nan if v[0] is None else 100 * v[0] for v in ci["sensitivity"]])
            hi = np.array([np.nan if v[1] is None else 100 * v[1] for v in ci["sensitivity"]])
            ax.errorbar(r.fps, y, yerr=[y - lo, hi - y], fmt="o", markersize=4, capsize=3, color=line.get_color(),
                        label=f"{100 * ci['level']:g} % bootstrap interval")
        else:
            ax.plot(r.fps, y, "o", markersize=4, color=line.get_color())
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlim(*PLOT_RANGE)
    ax.set_xticks(list(r.fps))
    ax.set_xticklabels([f"{t:g}" if t >= 1 else f"1/{round(1 / t)}" for t in r.fps])
    ax.set_xlabel("average number of false positives per scan")
    ax.set_ylabel("sensitivity (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        p = Path(out_stem).with_name(Path(out_stem).name + "." + ext)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(p)
    return paths


def write_froc3d(out_dir: str | os.PathLike, r: FROC3DResult, metrics: dict, annotations: Findings,
                 title: str = "FROC (LUNA16 protocol)") -> dict[str, Path]:
    """Write metrics.json, froc.csv, nodules.csv, froc.png, froc.svg into ``out_dir``; {kind: path}."""
    out = Path(out_dir)
    paths = {"metrics": out / "metrics.json", "froc_points": out / "froc.csv", "nodules": out / "nodules.csv"}
    write_text_atomic(paths["metrics"], json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    write_text_atomic(paths["froc_points"], froc_points_csv(r))
    write_text_atomic(paths["nodules"], nodules_csv(r, annotations))
    paths["plot_png"], paths["plot_svg"] = plot_froc3d(r, metrics.get("ci"), out / "froc", title)
    return paths
