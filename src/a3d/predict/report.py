"""``report.html``: one self-contained page (overlays embedded as base64 PNG) listing the candidates."""

from __future__ import annotations

import base64
import html

_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>a3d predict: {title}</title>
<style>
body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}} th{{background:#eee}}
td.img{{text-align:left}} img.overlay{{max-width:512px;image-rendering:auto}} .note{{color:#666;font-size:90%}}
.warn{{color:#a60}}
</style></head>
<body data-candidates="{n_cand}">
<h1>a3d predict: {title}</h1>
<p>Input <code>{input}</code> ({kind}{series}); {n_slices} slices, spacing {spacing} mm; model {model}
({slices} slices, {size} px); score threshold {thr}; {n_det} detections in {n_cand} candidates; {secs:.1f} s.</p>
<p class="note">Overlays: axial slices in radiological view (image top = anterior, image left = patient right),
window W{ww:g}/L{wl:g}. Slice numbers are indices along the input file's slice axis (0-based).
Coordinates are patient LPS millimetres. Research software, not for clinical use.</p>
{warnings}
<table id="candidates"><thead><tr><th>#</th><th>max score</th><th>slices</th><th>z extent mm</th>
<th>long mm</th><th>short mm</th><th>volume mL</th><th>centroid LPS mm</th><th>overlay (key slice)</th></tr></thead>
<tbody>
{rows}
</tbody></table>
{empty}
<script>
window.addEventListener('load', function () {{
  var imgs = document.querySelectorAll('img.overlay'), ok = 0;
  imgs.forEach(function (im) {{ if (im.complete && im.naturalWidth > 0) ok++; }});
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
}});
</script>
</body></html>
"""


HTML_MAX_IMAGES = 100  # candidates beyond this (lowest scores) are listed without an embedded overlay


def _candidate_row(c: dict, png: bytes | None) -> str:
    img = (
        f'<img class="overlay" alt="candidate {c["id"]} on slice {c["key_slice"]}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    )
    s = c["slices"]
    cen = ", ".join(f"{(round(v, 1) or 0.0):.1f}" for v in c["centroid_lps"])
    return (
        f'<tr class="candidate" data-candidate-id="{c["id"]}"><td>{c["id"]}</td><td>{c["max_score"]:.3f}</td>'
        f"<td>{min(s)}&ndash;{max(s)} (key {c['key_slice']})</td><td>{c['z_extent_mm']:.1f}</td>"
        f"<td>{c['long_axis_mm']:.1f}</td><td>{c['short_axis_mm']:.1f}</td><td>{c['volume_ml']:.2f}</td>"
        f'<td>{cen}</td><td class="img">{img}</td></tr>'
    )


def html_report(doc: dict, overlays: dict[int, bytes]) -> str:
    """The page for a predictions document; ``overlays``: PNG bytes of each candidate's key slice."""
    rows = [_candidate_row(c, overlays.get(c["id"]) if n < HTML_MAX_IMAGES else None)
            for n, c in enumerate(doc["candidates"])]
    geo = doc["geometry"]["canonical"]
    warnings = "".join(f'<p class="warn">Warning: {html.escape(w)}</p>' for w in doc["warnings"])
    return _HTML_TEMPLATE.format(
        title=html.escape(doc["input"]["name"]),
        input=html.escape(doc["input"]["path"]),
        kind=doc["input"]["kind"],
        series=f", series {html.escape(doc['input']['series_uid'])}" if doc["input"]["series_uid"] else "",
        n_slices=doc["input"]["n_slices"],
        spacing=" x ".join(f"{v:.3g}" for v in geo["spacing"]),
        model=html.escape(str(doc["model"].get("name") or doc["model"].get("checkpoint") or "")),
        slices=doc["model"]["slices"],
        size=doc["model"]["image_size"],
        thr=doc["settings"]["score_threshold"],
        n_det=len(doc["detections"]),
        n_cand=len(doc["candidates"]),
        secs=doc["seconds"],
        ww=doc["settings"]["window"]["width"],
        wl=doc["settings"]["window"]["level"],
        warnings=warnings,
        rows="\n".join(rows),
        empty="" if rows else '<p id="no-candidates">No lesion candidates above the score threshold.</p>',
    )
