"""``report.html``: one self-contained page: an interactive viewer of the scan and its candidates
(NiiVue, vendored in ``assets/`` and inlined with the data of :func:`a3d.predict.viewer.viewer_data`),
the candidate list, and the scan, model and settings.

One file rather than a folder: a page opened from disk (file://) may not fetch the files beside it,
and one file travels whole (2.3 MB of it is NiiVue).
"""

from __future__ import annotations

import html
import json
from importlib import resources

_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>a3d predict: {title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;color:#ddd;background:#16181c}}
header{{padding:.7em 1.2em;background:#202329;border-bottom:1px solid #333}} h1{{font-size:1.25em;margin:0 0 .3em}}
header p{{margin:.2em 0;font-size:90%;color:#aaa}} code{{color:#cde}} .warn{{color:#fb5}}
main{{display:flex;gap:1em;padding:1em 1.2em;align-items:flex-start;flex-wrap:wrap}}
#viewer{{position:relative;width:min(72vh,calc(100vw - 460px));min-width:360px;aspect-ratio:1;background:#000;border:1px solid #333}}
#nv-canvas{{width:100%;height:100%;display:block;outline:none}}
#nv-labels{{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;overflow:visible}}
#nv-labels text{{font:600 12px system-ui,sans-serif;paint-order:stroke;stroke:#000;stroke-width:3px}}
#viewer-error{{position:absolute;inset:2em;color:#fb5}}
aside{{flex:1;min-width:380px;max-width:640px}}
.bar{{display:flex;flex-wrap:wrap;gap:.4em;align-items:center;margin:0 0 .6em}} .bar .label{{color:#999;font-size:85%;width:4.5em}}
button{{background:#2b2f36;color:#ddd;border:1px solid #444;border-radius:4px;padding:.25em .6em;cursor:pointer}}
button.active{{background:#3d5a80;border-color:#6a8fc0}} .value{{font-variant-numeric:tabular-nums;color:#cde;font-size:90%}}
input[type=range]{{width:12em}} .help{{font-size:80%;color:#888;margin:.3em 0 .8em}}
.list{{max-height:calc(100vh - 300px);min-height:12em;overflow:auto;border:1px solid #333}}
table{{border-collapse:collapse;width:100%;font-size:88%;font-variant-numeric:tabular-nums}} thead th{{position:sticky;top:0}}
td,th{{border-bottom:1px solid #333;padding:3px 6px;text-align:right;white-space:nowrap}} th{{color:#999;font-weight:600;background:#202329}}
tr.candidate{{cursor:pointer}} tr.candidate:hover{{background:#262a31}} tr.candidate.here td:first-child{{font-weight:700}}
.swatch{{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:-1px}}
footer{{padding:0 1.2em 1em;font-size:80%;color:#888}}
</style></head>
<body data-candidates="{n_cand}" data-visible-candidates="{n_cand}">
<header><h1>a3d predict: {title}</h1>
<p>Input <code>{input}</code> ({kind}{series}); {n_slices} slices, spacing {spacing} mm; model {model}
({slices} slices, {size} px); score threshold {thr}; {n_det} detections in {n_cand} candidates; {secs:.1f} s.</p>
{warnings}</header>
<main>
<div id="viewer"><canvas id="nv-canvas" tabindex="0"></canvas><svg id="nv-labels"></svg><p id="viewer-error" hidden></p></div>
<aside>
<div class="bar"><span class="label">window</span>{presets}<span class="value" id="window-value"></span></div>
<div class="bar"><span class="label">plane</span>{planes}<span class="value" id="slice-value"></span></div>
<div class="bar"><span class="label">min score</span>
<input type="range" id="score-slider" min="{thr}" max="1" step="0.01" value="{thr}">
<span class="value" id="score-value">{thr:.2f}</span><span class="value">(<span id="shown-count">{n_cand}</span> shown)</span></div>
<p class="help">Scroll: mouse wheel, or the arrow / Page keys. Window: a preset, or drag with the right
button (across: width, up and down: level). Left click moves the crosshair (the other planes follow);
click a candidate to go to its key slice (where it is largest and was measured).</p>
<div class="list"><table id="candidates"><thead><tr><th>#</th><th>max score</th><th>slices (key)</th><th>long mm</th>
<th>short mm</th><th>volume mL</th><th>centroid LPS mm</th></tr></thead>
<tbody>
{rows}
</tbody></table></div>
{empty}
</aside></main>
<footer>Axial slices in radiological view (image left = patient right, top = anterior); orientation
letters from the scan's geometry. Slice numbers are indices along the input file's slice axis (0-based).
Coordinates are patient LPS millimetres. CT stored in the page as 8-bit codes (within 2 HU in the soft
tissue window, 4 HU in lung, 16 HU in bone) in JPEG slices, which move a code by about one on average.
Research software, not for clinical use.</footer>
<script id="a3d-viewer-data" type="application/json">{data}</script>
<script>{niivue}</script>
<script>{viewer}</script>
</body></html>
"""


def _asset(name: str) -> str:
    return resources.files("a3d.predict").joinpath("assets", name).read_text(encoding="utf-8")


def _candidate_row(c: dict, rgb: list[int]) -> str:
    s = c["slices"]
    cen = ", ".join(f"{(round(v, 1) or 0.0):.1f}" for v in c["centroid_lps"])
    z0, z1 = c["canonical_slices"]
    return (
        f'<tr class="candidate" data-candidate-id="{c["id"]}" data-score="{c["max_score"]!r}" '
        f'data-key-z="{c["key_canonical_slice"]}" data-slices="{",".join(str(z) for z in range(z0, z1 + 1))}">'
        f'<td><span class="swatch" style="background:rgb({rgb[0]},{rgb[1]},{rgb[2]})"></span>{c["id"]}</td>'
        f'<td>{c["max_score"]:.3f}</td><td>{min(s)}&ndash;{max(s)} ({c["key_slice"]})</td>'
        f"<td>{c['long_axis_mm']:.1f}</td><td>{c['short_axis_mm']:.1f}</td><td>{c['volume_ml']:.2f}</td><td>{cen}</td></tr>"
    )


def html_report(doc: dict, viewer: dict) -> str:
    """The page for a predictions document and its viewer data (:func:`a3d.predict.viewer.viewer_data`)."""
    rgb = {c["id"]: c["rgb"] for c in viewer["candidates"]}
    rows = [_candidate_row(c, rgb[c["id"]]) for c in doc["candidates"]]
    geo = doc["geometry"]["canonical"]
    warnings = "".join(f'<p class="warn">Warning: {html.escape(w)}</p>' for w in doc["warnings"])
    presets = "".join(f'<button class="preset" data-preset="{k}">{k}</button>' for k in viewer["windows"])
    planes = "".join(f'<button class="plane{" active" if p == "Axial" else ""}" data-plane="{p}">{p.lower()}</button>'
                     for p in ("Axial", "Coronal", "Sagittal", "Multiplanar"))
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
        warnings=warnings,
        presets=presets,
        planes=planes,
        rows="\n".join(rows),
        empty="" if rows else '<p id="no-candidates">No lesion candidates above the score threshold.</p>',
        data=json.dumps(viewer, separators=(",", ":")).replace("</", "<\\/"),
        niivue=_asset("niivue.umd.js"),
        viewer=_asset("viewer.js"),
    )
