"""JSON and CSV records of a prediction (the ``a3d-predict`` format, version 2; docs/predict.md).

Version 2 (from 1): ``settings.amp`` became ``settings.precision`` (asked) and ``model.precision``
(used); ``skipped_air_slices`` and ``timing`` were added.

:func:`result_dict` is the whole ``predictions.json`` document; the CSV rows are read back from it,
so the two files always agree.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os

import numpy as np

from a3d import __version__
from a3d.data.scans import Scan
from a3d.predict.measurements import mask_outline
from a3d.predict.results import Detection, PredictionResult

FORMAT = "a3d-predict"
VERSION = 2

DETECTION_COLUMNS = [
    "id", "candidate", "slice", "canonical_slice", "score",
    "x1_px", "y1_px", "x2_px", "y2_px", "width_mm", "height_mm",
    "center_l_mm", "center_p_mm", "center_s_mm",
    "long_axis_mm", "short_axis_mm", "mask_area_mm2",
]
# the candidates in the LUNA16 format (a3d eval3d, the official evaluation script): world LPS mm
LUNA16_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
CANDIDATE_COLUMNS = [
    "id", "max_score", "mean_score", "key_slice", "first_slice", "last_slice", "n_slices", "n_detections",
    "z_extent_mm", "volume_mm3", "volume_ml", "long_axis_mm", "short_axis_mm", "measured_on_slice",
    "centroid_l_mm", "centroid_p_mm", "centroid_s_mm", "overlay",
]


def detection_record(d: Detection, scan: Scan) -> dict:
    """JSON-ready description of one detection (docs/predict.md lists the keys)."""
    sx, sy, sz = scan.spacing
    x1, y1, x2, y2 = (float(v) for v in d.box)
    # pixel-edge coordinates -> ITK continuous index (voxel centres at integers): minus 0.5
    c1 = scan.physical_point(x1 - 0.5, y1 - 0.5, d.z)
    c2 = scan.physical_point(x2 - 0.5, y2 - 0.5, d.z)
    centre = scan.physical_point((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, d.z)
    o1 = np.array(scan.original_index(c1))
    o2 = np.array(scan.original_index(c2))
    oc = scan.original_index(centre)
    m = d.measures
    return {
        "id": d.id,
        "candidate": d.candidate,
        "slice": d.slice,
        "canonical_slice": d.z,
        "score": d.score,
        "box_px": [x1, y1, x2, y2],
        "box_mm": [x1 * sx, y1 * sy, x2 * sx, y2 * sy],
        "width_mm": (x2 - x1) * sx,
        "height_mm": (y2 - y1) * sy,
        "box_lps": [[float(v) for v in c1], [float(v) for v in c2]],
        "center_lps": [float(v) for v in centre],
        "center_original_index": [float(v) for v in oc],
        "box_original_index_min": [float(v) for v in np.minimum(o1, o2)],
        "box_original_index_max": [float(v) for v in np.maximum(o1, o2)],
        "long_axis_mm": float(m.get("long_mm", 0.0)),
        "short_axis_mm": float(m.get("short_mm", 0.0)),
        "long_axis_px": m.get("long_axis_px"),
        "short_axis_px": m.get("short_axis_px"),
        "mask_area_mm2": float(m.get("area_mm2", 0.0)),
        "mask_pixels": int(d.mask.sum()) if d.mask is not None else 0,
        "mask_outline_px": mask_outline(d.mask, d.mask_origin),
        "slice_file": _slice_file(scan, d.slice),
    }


def _slice_file(scan: Scan, index: int) -> str | None:
    """DICOM/PNG inputs: the file holding this slice (original order), relative to the input folder
    (DICOM trees: a path below it), else None."""
    files = scan.slice_files
    if files and 0 <= index < len(files) and files[index]:
        return os.path.relpath(files[index], scan.source)
    return None


def _candidate_records(res: PredictionResult, overlays: dict[int, str]) -> list[dict]:
    out = []
    for c in res.candidates:
        info = {"id": c.id, **c.info, "detections": [d.id for d in c.detections]}
        if c.id in overlays:
            info["overlay"] = overlays[c.id]
        out.append(info)
    return out


def _header(res: PredictionResult) -> dict:
    """Everything before the detections: input, geometry, model, settings, what was processed."""
    scan, cfg, s = res.scan, res.cfg, res.settings
    orig = res.slice_of_canonical
    first_last = [int(orig[z]) for z in (res.processed[0], res.processed[-1])] if res.processed else [None, None]
    return {
        "format": FORMAT,
        "version": VERSION,
        "a3d_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": os.path.abspath(scan.source), "kind": scan.kind, "name": scan.name,
                  "series_uid": scan.series_uid, "n_slices": int(scan.hu.shape[0]),
                  "interpolated_slices": [int(k) for k in scan.interpolated]},
        "geometry": scan.geometry(),
        "model": {"checkpoint": res.checkpoint, "slices": cfg.model.slices, "image_size": cfg.data.size,
                  "operator": cfg.model.operator, "name": cfg.name, "slice_mm": cfg.data.context_spacing_mm,
                  "precision": res.precision},
        "settings": {
            "score_threshold": s.score_threshold, "mask_threshold": s.mask_threshold, "link_iou": s.link_iou,
            "batch_size": s.batch_size, "device": s.device, "precision": s.precision,
            "slices": list(s.slices) if s.slices else None, "skip_air": s.skip_air,
            "window": {"width": s.window[0], "level": s.window[1]},
        },
        "processed_slices": {"count": len(res.processed), "first": first_last[0], "last": first_last[1]},
        "skipped_air_slices": sorted(int(orig[z]) for z in res.skipped),
        "seconds": round(res.seconds, 3),
        "timing": timing_record(res.timing),
        "warnings": list(res.scan.warnings),
    }


TIMING_KEYS = ("read", "processing", "model", "write", "total")


def timing_record(timing: dict) -> dict:
    """``timing`` of predictions.json: seconds per step (TIMING_KEYS), None where not measured; the
    total is the sum of the measured steps unless given."""
    out = {k: (round(float(timing[k]), 3) if timing.get(k) is not None else None) for k in TIMING_KEYS[:-1]}
    total = timing.get("total")
    if total is None:
        total = sum(v for v in out.values() if v is not None)
    out["total"] = round(float(total), 3)
    return out


def result_dict(res: PredictionResult, files: dict | None = None) -> dict:
    """The ``predictions.json`` document. ``files``: the names written beside it; its
    ``candidate_overlays`` ({candidate id: PNG path}) goes into each candidate's ``overlay``."""
    files = files or {}
    return {
        **_header(res),
        "files": {k: v for k, v in files.items() if k != "candidate_overlays"},
        "detections": [detection_record(d, res.scan) for d in res.detections],
        "candidates": _candidate_records(res, files.get("candidate_overlays", {})),
    }


def json_bytes(doc: dict) -> bytes:
    """``predictions.json``'s bytes."""
    return (json.dumps(doc, indent=1) + "\n").encode()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
    return "" if v is None else v


def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    """CSV text (header + rows, floats to 3 decimals) as bytes."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    return buf.getvalue().encode()


def detection_rows(doc: dict) -> list[dict]:
    """``detections.csv`` rows (DETECTION_COLUMNS) from a predictions document."""
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
    """``candidates.csv`` rows (CANDIDATE_COLUMNS) from a predictions document."""
    rows = []
    for c in doc["candidates"]:
        cen = c["centroid_lps"]
        rows.append({
            **{k: c.get(k) for k in CANDIDATE_COLUMNS if k in c},
            "first_slice": min(c["slices"]), "last_slice": max(c["slices"]),
            "centroid_l_mm": cen[0], "centroid_p_mm": cen[1], "centroid_s_mm": cen[2],
        })
    return rows


def luna16_seriesuid(doc: dict) -> str:
    """The scan's seriesuid in LUNA16 files: the DICOM SeriesInstanceUID, else the scan name (a NIfTI
    file name without .nii/.nii.gz, a folder's name), the rule ``a3d data import`` follows too."""
    return doc["input"]["series_uid"] or doc["input"]["name"]


def luna16_rows(doc: dict) -> list[dict]:
    """``candidates_luna16.csv`` rows (LUNA16_COLUMNS): each candidate's centroid (world LPS mm, as
    the x, y, z of LUNA16's .mhd world coordinates) and its highest detection score."""
    uid = luna16_seriesuid(doc)
    return [{"seriesuid": uid, "coordX": c["centroid_lps"][0], "coordY": c["centroid_lps"][1],
             "coordZ": c["centroid_lps"][2], "probability": c["max_score"]} for c in doc["candidates"]]


def luna16_csv_bytes(rows: list[dict], header: bool = True) -> bytes:
    """LUNA16 CSV text: coordinates to 0.001 mm, probabilities exact (shortest round-trip repr, so
    that the FROC's ordering and ties are the model's)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(LUNA16_COLUMNS)
    for r in rows:
        w.writerow([r["seriesuid"], *(f"{float(r[k]):.3f}" for k in ("coordX", "coordY", "coordZ")),
                    repr(float(r["probability"]))])
    return buf.getvalue().encode()
