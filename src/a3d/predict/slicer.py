"""3D Slicer markups (``slicer/*.mrk.json``): per candidate an ROI box and its long/short axis lines.

Slicer's markups JSON format (schema ``markups-schema-v1.0.3.json``, the one Slicer writes and reads
since 4.11): ``{"@schema": URL, "markups": [markup]}``. Slicer loads the first markup of a file, so
each markup is a file of its own. Coordinates are patient LPS millimetres
(``"coordinateSystem": "LPS"``): Slicer turns them into its RAS scene. The ROI box follows the
scan's axes (its ``orientation`` is the canonical image's direction matrix, row-major: columns are
the box axes in LPS) and spans the candidate's boxes on all its slices; the lines are the long and
short axis of the detection its diameters come from (``measured_on_slice``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from a3d.io import write_bytes_atomic
from a3d.predict.candidates import measured_detection
from a3d.predict.records import json_bytes
from a3d.predict.results import Candidate, PredictionResult

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
FOLDER = "slicer"
ROI_COLOR = [1.0, 0.85, 0.0]
LONG_COLOR = [1.0, 0.3, 0.3]
SHORT_COLOR = [0.3, 0.8, 1.0]


def _point(label: str, position) -> dict:
    return {"id": label, "label": label, "description": "", "associatedNodeID": "",
            "position": [float(v) for v in position], "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}


def _markup(kind: str, name: str, points: list[dict], color: list[float], **extra) -> dict:
    return {"type": kind, "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": True,
            "fixedNumberOfControlPoints": True, "labelFormat": "%N-%d", **extra, "controlPoints": points,
            "measurements": [],
            "display": {"visibility": True, "opacity": 1.0, "color": color, "selectedColor": color,
                        "propertiesLabelVisibility": True, "pointLabelsVisibility": False}}


def roi_markup(res: PredictionResult, c: Candidate) -> dict:
    """The box around all the candidate's boxes and slices, along the scan's axes."""
    scan = res.scan
    sx, sy, sz = scan.spacing
    b = np.array([d.box for d in c.detections])
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    z1, z2 = min(d.z for d in c.detections), max(d.z for d in c.detections)
    # pixel-edge coordinates -> ITK continuous index (voxel centres at integers): minus 0.5
    centre = scan.physical_point((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, (z1 + z2) / 2)
    size = [(x2 - x1) * sx, (y2 - y1) * sy, (z2 - z1 + 1) * sz]
    name = f"C{c.id} score {c.info['max_score']:.2f}"
    return _markup("ROI", name, [_point(f"C{c.id}", centre)], ROI_COLOR, roiType="Box",
                   center=[float(v) for v in centre],
                   orientation=[float(v) for v in scan.image.GetDirection()], size=[float(v) for v in size],
                   insideOut=False)


def axis_markups(res: PredictionResult, c: Candidate) -> dict[str, dict]:
    """{"long": line, "short": line} of the measured detection (those it has)."""
    d = measured_detection(c)
    out = {}
    for key, color in (("long", LONG_COLOR), ("short", SHORT_COLOR)):
        ends = d.measures.get(f"{key}_axis_px")
        if ends is None:
            continue
        pts = [res.scan.physical_point(x - 0.5, y - 0.5, d.z) for x, y in np.reshape(ends, (2, 2))]
        name = f"C{c.id} {key} axis {d.measures[f'{key}_mm']:.1f} mm"
        out[key] = _markup("Line", name, [_point(f"C{c.id}-{i}", p) for i, p in enumerate(pts, 1)], color)
    return out


def write_markups(res: PredictionResult, folder: Path) -> list[str]:
    """``slicer/C<id>_box.mrk.json``, ``..._long.mrk.json``, ``..._short.mrk.json``; returns their names."""
    names = []
    for c in sorted(res.candidates, key=lambda c: c.id):
        for part, markup in {"box": roi_markup(res, c), **axis_markups(res, c)}.items():
            name = f"{FOLDER}/C{c.id:03d}_{part}.mrk.json"
            doc = {"@schema": SCHEMA, "markups": [markup]}
            write_bytes_atomic(folder / name, json_bytes(doc))
            names.append(name)
    return names
