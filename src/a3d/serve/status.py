"""``a3d serve status``: the queue of a work folder, one line per series (most recent first), or JSON."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from a3d.errors import A3DError
from a3d.serve.queue import DB_FILE, STATES, Queue


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _sends(row: dict, now: float) -> str:
    parts = []
    for s in row["sends"]:
        text = f"{s['destination']} {s['state']}"
        if s["state"] == "pending" and s["attempts"]:
            text += f" after {s['attempts']} failed tries, next in {max(0, s['next_try'] - now):.0f} s: {s['last_error']}"
        parts.append(text)
    return "; ".join(parts)


def series_line(row: dict, now: float) -> str:
    detail = row["error"] or _sends(row, now)
    if row["state"] == "done" and row["candidates"] is not None and not detail:
        detail = f"{row['candidates']} candidates" + ("" if row["candidates"] else ", nothing to send")
    elif row["state"] in ("sending", "done") and row["candidates"] is not None:
        detail = f"{row['candidates']} candidates; {detail}"
    return (f"{row['state']:<8} {row['series_uid']}  {row['instances']} instances  job {row['job']}  "
            f"last received {_when(row['last_received'])}" + (f"  {detail}" if detail else ""))


def open_queue(work_dir: str | Path) -> Queue:
    if not (Path(work_dir) / DB_FILE).is_file():
        raise A3DError(f"{work_dir}: no a3d serve queue here (expected {DB_FILE} in the --work-dir of `a3d serve`)")
    return Queue(work_dir)


def status_text(work_dir: str | Path, as_json: bool = False) -> str:
    rows = open_queue(work_dir).series_rows()
    if as_json:
        return json.dumps({"work_dir": str(work_dir), "series": rows}, indent=2)
    counts = Counter(r["state"] for r in rows)
    head = "queue: " + ", ".join(f"{counts[s]} {s}" for s in STATES)
    now = time.time()
    return "\n".join([head] + [series_line(r, now) for r in rows])
