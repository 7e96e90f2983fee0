"""FROC plots (PNG and SVG) with matplotlib's Agg canvas; pyplot's global state is never touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from a3d.io import atomic_path


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def plot_froc(
    curves: Sequence[dict],
    out_stem: str | os.PathLike,
    title: str = "FROC",
    x_range: tuple[float, float] = (0.125, 16.0),
) -> list[Path]:
    """Draw one or more FROC curves and save ``<out_stem>.png`` and ``<out_stem>.svg`` atomically.

    Each curve: {"label": str, "curve_fps": [...], "curve_sensitivity": [...]} (the line, a step
    function sampled densely, drawn as steps: each sample holds until the next), optionally "fps"
    and "sensitivity" (the reported points, marked).
    The x axis is log2 FPs per image over ``x_range``; y is sensitivity in %.
    """
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        x = np.asarray(c.get("curve_fps", []), dtype=float)
        y = np.asarray(c.get("curve_sensitivity", []), dtype=float)
        (line,) = ax.plot(x, 100 * y, label=c.get("label"), linewidth=1.5, drawstyle="steps-post")
        if c.get("fps") is not None and c.get("sensitivity") is not None:
            px = np.asarray(c["fps"], dtype=float)
            py = np.array([np.nan if v is None else v for v in c["sensitivity"]], dtype=float)
            ax.plot(px, 100 * py, "o", color=line.get_color(), markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_xlim(*x_range)
    ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if x_range[0] <= t <= x_range[1]]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title)
    if any(c.get("label") for c in curves):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out_stem = Path(out_stem)
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_name(out_stem.name + "." + ext)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(p)
    return paths


def curve_from_metrics(m: dict, label: str | None = None) -> dict:
    """The plot curve of a metrics dict (its sampled "curve", and the reported points)."""
    curve = m.get("curve") or {}
    return {
        "label": label,
        "curve_fps": curve.get("fps", []),
        "curve_sensitivity": curve.get("sensitivity", []),
        "fps": m.get("fps"),
        "sensitivity": m.get("sensitivity"),
    }
