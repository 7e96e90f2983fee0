"""``index.html`` of a batch output folder: one row per scan of ``batch.json`` (status, candidates,
top score, a link to its ``report.html``, the top candidate's key overlay as a thumbnail).

:func:`batch_index_html` is a function of the ``a3d-predict-batch`` document and the folder it
describes; scans of any status are listed ("ok", "error", or another such as "pending"), missing
counts and files are shown as absent. Links are relative, so the folder travels whole.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from a3d.io import write_text_atomic

INDEX = "index.html"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>a3d predict: {n} scans</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right;vertical-align:middle}}
th{{background:#f2f2f2}} td.name,td.status{{text-align:left}} img{{height:96px;display:block}}
tr.error td.status{{color:#b00}} tr.other td.status{{color:#a60}} .note{{color:#666;font-size:90%}}
</style></head>
<body data-scans="{n}">
<h1>a3d predict: {n} scans</h1>
<p class="note">{summary}. Thumbnails: each scan's top candidate on its key slice (overlays/).</p>
<table id="scans"><thead><tr><th>scan</th><th>status</th><th>candidates</th><th>detections</th>
<th>top score</th><th>key overlay</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def _predictions(folder: Path, output: str | None) -> dict | None:
    """The scan's predictions.json, or None when it is absent or unreadable (a scan still running)."""
    if not output:
        return None
    try:
        return json.loads((folder / output / "predictions.json").read_text())
    except (OSError, ValueError):
        return None


def _link(folder: Path, rel: str, text: str) -> str:
    return f'<a href="{html.escape(rel)}">{text}</a>' if (folder / rel).is_file() else text


def _row(folder: Path, scan: dict) -> str:
    status = str(scan.get("status", "unknown"))
    output = scan.get("output")
    name = html.escape(output or os.path.basename(str(scan.get("input", ""))))
    pred = _predictions(folder, output)
    cands = (pred or {}).get("candidates") or []
    top = max((c.get("max_score", 0.0) for c in cands), default=None)
    thumb = ""
    if cands and cands[0].get("overlay") and (folder / output / cands[0]["overlay"]).is_file():
        src = html.escape(f"{output}/{cands[0]['overlay']}")
        thumb = f'<a href="{src}"><img src="{src}" alt="{name}: candidate 1"></a>'
    n_cand, n_det = scan.get("candidates", len(cands) if pred else None), scan.get("detections")
    cell = [
        f'<td class="name">{_link(folder, f"{output}/report.html", name) if output else name}</td>',
        f'<td class="status">{html.escape(status)}'
        + (f": {html.escape(str(scan['error']))}" if scan.get("error") else "") + "</td>",
        f"<td>{'&ndash;' if n_cand is None else n_cand}</td><td>{'&ndash;' if n_det is None else n_det}</td>",
        f"<td>{'&ndash;' if top is None else f'{top:.3f}'}</td><td>{thumb}</td>",
    ]
    kind = "ok" if status in ("ok", "done", "skipped") else "error" if status in ("error", "failed") else "other"
    return f'<tr class="scan {kind}" data-status="{html.escape(status)}">{"".join(cell)}</tr>'


def batch_index_html(doc: dict, folder: str | os.PathLike) -> str:
    """The page for a batch document (``batch.json``) describing the scan folders under ``folder``."""
    folder = Path(folder)
    scans = list(doc.get("scans") or [])
    counts: dict[str, int] = {}
    for s in scans:
        counts[str(s.get("status", "unknown"))] = counts.get(str(s.get("status", "unknown")), 0) + 1
    summary = ", ".join(f"{n} {html.escape(k)}" for k, n in counts.items()) or "no scans"
    return _PAGE.format(n=len(scans), summary=summary, rows="\n".join(_row(folder, s) for s in scans))


def write_batch_index(folder: str | os.PathLike, doc: dict) -> None:
    """``folder/index.html`` for the batch document ``doc``, written atomically."""
    write_text_atomic(Path(folder) / INDEX, batch_index_html(doc, folder))
