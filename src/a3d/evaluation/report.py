"""A Table 2-style comparison of runs: one Markdown table and one overlaid FROC plot.

Each run directory holds a ``metrics.json`` (see :mod:`a3d.evaluation.metrics`). The row of a run
comes from its optional ``"run": {"operator", "slices", "name"}`` block (the trainer fills it); a
field that is missing is read from the directory name (``a3d_x7``, ``alignshift-x3-seed1``: the
first known operator name in it and the number after an ``x``), else left blank.
Rows are ordered as in the paper: by slices (x3 before x7), then operator in the order
none, i3d, p3d, acs, tsm, alignshift, a3d, then unknown operators, then name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from a3d.errors import A3DError
from a3d.evaluation.metrics import read_metrics
from a3d.evaluation.plots import curve_from_metrics, plot_froc
from a3d.io import write_text_atomic

OPERATOR_ORDER = ("none", "i3d", "p3d", "acs", "tsm", "alignshift", "a3d")
DISPLAY = {"none": "No Fusion", "i3d": "I3D", "p3d": "P3D", "acs": "ACS", "tsm": "TSM", "alignshift": "AlignShift", "a3d": "A3D"}


def _from_dirname(name: str) -> tuple[str | None, int | None]:
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    op = next((t for t in tokens if t in OPERATOR_ORDER), None)
    sl = next((int(t[1:]) for t in tokens if re.fullmatch(r"x\d+", t)), None)
    return op, sl


def run_info(run_dir: Path, m: dict) -> dict:
    run = dict(m.get("run") or {})
    op, sl = _from_dirname(run_dir.name)
    name = run.get("name") or run_dir.name
    operator = str(run.get("operator") or op or "").lower() or None
    slices = run.get("slices", sl)
    try:
        slices = int(slices) if slices is not None else None
    except (TypeError, ValueError):
        slices = None
    return {"name": name, "operator": operator, "slices": slices}


def _sort_key(row: dict):
    op = row["operator"]
    rank = OPERATOR_ORDER.index(op) if op in OPERATOR_ORDER else len(OPERATOR_ORDER)
    return (row["slices"] if row["slices"] is not None else 10**9, rank, op or "", row["name"])


def _pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}"


def load_runs(run_dirs: Sequence[str | os.PathLike]) -> list[dict]:
    rows = []
    for d in run_dirs:
        d = Path(d)
        path = d if d.is_file() else d / "metrics.json"
        if d.is_file():
            d = d.parent
        m = read_metrics(path)
        rows.append({**run_info(d, m), "metrics": m, "dir": str(d)})
    if not rows:
        raise A3DError("report: no run directory given")
    return sorted(rows, key=_sort_key)


def report_markdown(rows: list[dict]) -> str:
    fps = rows[0]["metrics"]["fps"]
    for r in rows[1:]:
        if r["metrics"]["fps"] != fps:
            raise A3DError(
                f"{r['dir']}/metrics.json: FP rates {r['metrics']['fps']} differ from {fps} of {rows[0]['dir']}; "
                "evaluate every run at the same rates"
            )
    head = "| Method | Slices | " + " | ".join(f"{f:g}" for f in fps) + " | Avg. | Avg. 95% CI | Run |"
    lines = [
        "# FROC comparison",
        "",
        "Sensitivities (%) at FPs per image; Avg. = mean of the first four"
        f" ({', '.join(f'{f:g}' for f in fps[:4])}).",
        "",
        head,
        "|---" * (len(fps) + 5) + "|",
    ]
    splits = sorted({str(r["metrics"].get("split")) for r in rows})
    for r in rows:
        m = r["metrics"]
        method = DISPLAY.get(r["operator"], r["operator"] or r["name"])
        slices = f"x{r['slices']}" if r["slices"] is not None else "-"
        ci = (m.get("ci") or {}).get("average")
        ci_s = f"{_pct(ci[0])}-{_pct(ci[1])}" if ci and None not in ci else "-"
        lines.append(
            f"| {method} | {slices} | " + " | ".join(_pct(s) for s in m["sensitivity"])
            + f" | {_pct(m['average'])} | {ci_s} | {r['name']} |"
        )
    lines += ["", f"Split(s): {', '.join(splits)}. Runs: {len(rows)}."]
    return "\n".join(lines) + "\n"


def write_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Read each run's metrics.json; write report.md, froc.png and froc.svg into ``out_dir``.

    Returns {"markdown": ..., "png": ..., "svg": ...}. A3DError names a run whose metrics are
    missing or malformed.
    """
    rows = load_runs(run_dirs)
    out = Path(out_dir)
    md = out / "report.md"
    write_text_atomic(md, report_markdown(rows))
    curves = []
    for r in rows:
        label = f"{DISPLAY.get(r['operator'], r['operator'] or r['name'])}"
        if r["slices"] is not None:
            label += f" x{r['slices']}"
        same = sum(1 for q in rows if (q["operator"], q["slices"]) == (r["operator"], r["slices"]))
        if r["operator"] is not None and same > 1:  # tell apart runs of one operator x slices
            label += f" ({r['name']})"
        curves.append(curve_from_metrics(r["metrics"], label))
    png, svg = plot_froc(curves, out / "froc", title="FROC comparison")
    return {"markdown": md, "png": png, "svg": svg}
