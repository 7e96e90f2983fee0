"""Writers for ``a3d predict``: JSON, CSV, overlay PNGs, NIfTI label volume, self-contained HTML.

All files of one prediction are written into a temporary folder that is renamed onto ``--out`` at
the end (:func:`atomic_dir`), so ``--out`` is either complete or untouched.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import html
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from a3d.engine.predict import PredictionResult, detection_record
from a3d.errors import A3DError

FORMAT = "a3d-predict"
VERSION = 1

DETECTION_COLUMNS = [
    "id", "candidate", "slice", "canonical_slice", "score",
    "x1_px", "y1_px", "x2_px", "y2_px", "width_mm", "height_mm",
    "center_l_mm", "center_p_mm", "center_s_mm",
    "long_axis_mm", "short_axis_mm", "mask_area_mm2",
]
CANDIDATE_COLUMNS = [
    "id", "max_score", "mean_score", "key_slice", "first_slice", "last_slice", "n_slices", "n_detections",
    "z_extent_mm", "volume_mm3", "volume_ml", "long_axis_mm", "short_axis_mm", "measured_on_slice",
    "centroid_l_mm", "centroid_p_mm", "centroid_s_mm", "overlay",
]


# --------------------------------------------------------------------------------------------
# atomic output folder


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise A3DError(f"{out}: --out exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise A3DError(f"{out}: --out folder exists and is not empty; choose another or pass --overwrite")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise A3DError(f"{parent}: cannot write the --out folder here (permission denied)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, else it is deleted."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    from a3d.io import write_bytes_atomic

    write_bytes_atomic(path, data)


# --------------------------------------------------------------------------------------------
# JSON / CSV


def result_dict(res: PredictionResult, files: dict | None = None) -> dict:
    scan = res.scan
    dets = [detection_record(d, scan) for d in res.detections]
    cands = []
    for c in res.candidates:
        info = dict(c.info)
        info = {"id": c.id, **info, "detections": [d.id for d in c.detections]}
        if files and c.id in files.get("candidate_overlays", {}):
            info["overlay"] = files["candidate_overlays"][c.id]
        cands.append(info)
    s = res.settings
    from a3d import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "a3d_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "path": os.path.abspath(scan.source),
            "kind": scan.kind,
            "name": scan.name,
            "series_uid": scan.series_uid,
            "n_slices": int(scan.hu.shape[0]),
        },
        "geometry": scan.geometry(),
        "model": dict(res.model_info, slices=res.spec.depth, image_size=res.spec.size, slice_mm=res.spec.slice_mm),
        "settings": {
            "score_threshold": s.score_threshold,
            "mask_threshold": s.mask_threshold,
            "link_iou": s.link_iou,
            "batch_size": s.batch_size,
            "device": s.device,
            "amp": s.amp,
            "slices": list(s.slices) if s.slices else None,
            "window": {"width": s.window[0], "level": s.window[1]},
        },
        "processed_slices": {
            "count": len(res.processed),
            "first": int(res.slice_of_canonical[res.processed[0]]) if res.processed else None,
            "last": int(res.slice_of_canonical[res.processed[-1]]) if res.processed else None,
        },
        "seconds": round(res.seconds, 3),
        "warnings": list(scan.warnings),
        "files": {k: v for k, v in (files or {}).items() if k != "candidate_overlays"},
        "detections": dets,
        "candidates": cands,
    }


def _csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    return buf.getvalue().encode()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
    return "" if v is None else v


def detection_rows(doc: dict) -> list[dict]:
    rows = []
    for d in doc["detections"]:
        x1, y1, x2, y2 = d["box_px"]
        c = d["center_lps"]
        rows.append({
            **{k: d[k] for k in ("id", "candidate", "slice", "canonical_slice", "score", "width_mm", "height_mm",
                                 "long_axis_mm", "short_axis_mm", "mask_area_mm2")},
            "x1_px": x1, "y1_px": y1, "x2_px": x2, "y2_px": y2,
            "center_l_mm": c[0], "center_p_mm": c[1], "center_s_mm": c[2],
        })
    return rows


def candidate_rows(doc: dict) -> list[dict]:
    rows = []
    for c in doc["candidates"]:
        cen = c["centroid_lps"]
        rows.append({
            **{k: c.get(k) for k in CANDIDATE_COLUMNS if k in c},
            "first_slice": min(c["slices"]), "last_slice": max(c["slices"]),
            "centroid_l_mm": cen[0], "centroid_p_mm": cen[1], "centroid_s_mm": cen[2],
        })
    return rows


# --------------------------------------------------------------------------------------------
# overlays

_COLORS = [(0, 255, 255), (255, 128, 0), (0, 255, 0), (255, 0, 255), (0, 128, 255), (255, 255, 0), (128, 0, 255), (0, 0, 255)]


def window_u8(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    lo = level - width / 2
    return (np.clip((hu.astype(np.float32) - lo) / max(width, 1e-6), 0, 1) * 255).round().astype(np.uint8)


def render_overlay(res: PredictionResult, z: int, min_side: int = 512) -> np.ndarray:
    """BGR image of canonical slice ``z`` (radiological view: top anterior, left = patient right),
    square pixels, with the masks, boxes and scores of its detections."""
    import cv2

    scan = res.scan
    sx, sy, _ = scan.spacing
    h, w = scan.hu.shape[1:]
    base = min(sx, sy)
    kx, ky = sx / base, sy / base
    k = max(1.0, min_side / max(w * kx, h * ky))
    fx, fy = kx * k, ky * k
    W, H = int(round(w * fx)), int(round(h * fy))
    gray = window_u8(scan.hu[z], *res.settings.window)
    img = cv2.cvtColor(cv2.resize(gray, (W, H), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    dets = [d for d in res.detections if d.z == z]
    over = img.copy()
    for d in dets:
        color = _COLORS[(d.candidate - 1) % len(_COLORS)]
        if d.mask is not None:
            m = cv2.resize(d.full_mask((h, w)).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
            over[m > 0] = color
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, color, 1)
    img = cv2.addWeighted(over, 0.3, img, 0.7, 0)
    for d in dets:
        color = _COLORS[(d.candidate - 1) % len(_COLORS)]
        x1, y1, x2, y2 = d.box
        p1 = (int(round(x1 * fx)), int(round(y1 * fy)))
        p2 = (int(round(x2 * fx)) - 1, int(round(y2 * fy)) - 1)
        cv2.rectangle(img, p1, p2, color, 1)
        label = f"C{d.candidate} {d.score:.2f}"
        cv2.putText(img, label, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    wl = f"slice {res.slice_of_canonical[z]}  W{res.settings.window[0]:g} L{res.settings.window[1]:g}"
    cv2.putText(img, wl, (6, H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(img, "A", (W // 2 - 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1, cv2.LINE_AA)
    cv2.putText(img, "R", (4, H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1, cv2.LINE_AA)
    cv2.putText(img, "L", (W - 14, H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1, cv2.LINE_AA)
    return img


def _png_bytes(img: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise A3DError("overlay PNG encoding failed")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# NIfTI labels


def label_volume(res: PredictionResult):
    """SimpleITK uint16 image, candidate id per voxel, with the input's exact geometry."""
    import SimpleITK as sitk

    scan = res.scan
    arr = np.zeros(scan.hu.shape, dtype=np.uint16)
    for c in sorted(res.candidates, key=lambda c: -c.id):  # higher-scoring (lower id) drawn last
        for d in c.detections:
            if d.mask is None:
                continue
            x0, y0 = d.mask_origin
            hh, ww = d.mask.shape
            view = arr[d.z, y0 : y0 + hh, x0 : x0 + ww]
            view[d.mask] = c.id
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(scan.image)
    orig = scan.original
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(orig.GetDirection())
    back = sitk.DICOMOrient(img, code)
    if back.GetSize() != orig.GetSize():
        back = sitk.Resample(img, orig, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    else:
        pos_err = np.abs(np.subtract(back.GetOrigin(), orig.GetOrigin())).max()
        if pos_err > 1e-3 * max(orig.GetSpacing()):
            back = sitk.Resample(img, orig, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    back.CopyInformation(orig)  # exact same header geometry as the input
    return back


# --------------------------------------------------------------------------------------------
# HTML


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


def html_report(doc: dict, overlays: dict[int, bytes]) -> str:
    rows = []
    for n, c in enumerate(doc["candidates"]):
        png = overlays.get(c["id"]) if n < HTML_MAX_IMAGES else None
        img = (
            f'<img class="overlay" alt="candidate {c["id"]} on slice {c["key_slice"]}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
        )
        s = c["slices"]
        cen = ", ".join(f"{(round(v, 1) or 0.0):.1f}" for v in c["centroid_lps"])
        rows.append(
            f'<tr class="candidate" data-candidate-id="{c["id"]}"><td>{c["id"]}</td><td>{c["max_score"]:.3f}</td>'
            f"<td>{min(s)}&ndash;{max(s)} (key {c['key_slice']})</td><td>{c['z_extent_mm']:.1f}</td>"
            f"<td>{c['long_axis_mm']:.1f}</td><td>{c['short_axis_mm']:.1f}</td><td>{c['volume_ml']:.2f}</td>"
            f'<td>{cen}</td><td class="img">{img}</td></tr>'
        )
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


# --------------------------------------------------------------------------------------------
# everything


def write_outputs(
    res: PredictionResult, folder: str | os.PathLike, overlays: bool = True, html_page: bool = True,
    nifti_labels: bool = False, max_overlays: int = 500,
) -> dict:
    """Write all outputs of one scan into ``folder`` (normally a temporary folder); returns the JSON doc."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {"json": "predictions.json", "detections_csv": "detections.csv", "candidates_csv": "candidates.csv"}
    cand_png: dict[int, bytes] = {}
    if overlays or html_page:
        key_z = {c.id: c.info["key_canonical_slice"] for c in res.candidates}
        zs = sorted({d.z for d in res.detections})
        rendered: dict[int, bytes] = {}
        written: set[int] = set()
        for z in zs[:max_overlays] if overlays else []:
            rendered[z] = _png_bytes(render_overlay(res, z))
            written.add(z)
            _atomic_write(folder / "overlays" / f"slice_{int(res.slice_of_canonical[z]):04d}.png", rendered[z])
        for cid, z in list(key_z.items())[: HTML_MAX_IMAGES if html_page else 0]:
            if z not in rendered:
                rendered[z] = _png_bytes(render_overlay(res, z))
            cand_png[cid] = rendered[z]
        if overlays:
            files["overlays"] = "overlays/"
            files["candidate_overlays"] = {
                cid: f"overlays/slice_{int(res.slice_of_canonical[z]):04d}.png" for cid, z in key_z.items() if z in written
            }
    if nifti_labels:
        import SimpleITK as sitk

        tmp = folder / ".labels.tmp.nii.gz"  # SimpleITK picks the writer from the suffix
        try:
            sitk.WriteImage(label_volume(res), str(tmp), True)
            os.replace(tmp, folder / "labels.nii.gz")
        finally:
            tmp.unlink(missing_ok=True)
        files["nifti_labels"] = "labels.nii.gz"
    if html_page:
        files["html"] = "report.html"
    doc = result_dict(res, files)
    _atomic_write(folder / "detections.csv", _csv_bytes(DETECTION_COLUMNS, detection_rows(doc)))
    _atomic_write(folder / "candidates.csv", _csv_bytes(CANDIDATE_COLUMNS, candidate_rows(doc)))
    if html_page:
        _atomic_write(folder / "report.html", html_report(doc, cand_png).encode())
    _atomic_write(folder / "predictions.json", (json.dumps(doc, indent=1) + "\n").encode())
    return doc
