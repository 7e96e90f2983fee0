"""Writing one scan's prediction: ``predictions.json``, the CSVs, overlays, labels, ``report.html``.

:func:`write_outputs` fills a folder (normally the temporary folder of :func:`a3d.io.atomic_dir`, so
that ``--out`` is either complete or untouched); every file in it is itself written atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from a3d.errors import A3DError
from a3d.io import write_bytes_atomic
from a3d.predict.labels import write_labels
from a3d.predict.overlays import png_bytes, render_overlay
from a3d.predict.records import (CANDIDATE_COLUMNS, DETECTION_COLUMNS, candidate_rows, csv_bytes, detection_rows,
                                 json_bytes, luna16_csv_bytes, luna16_rows, result_dict, timing_record)
from a3d.predict.report import html_report
from a3d.predict.results import PredictionResult
from a3d.predict.slicer import write_markups
from a3d.predict.viewer import viewer_data


LUNA16_CSV = "candidates_luna16.csv"  # seriesuid,coordX,coordY,coordZ,probability (a3d eval3d's CANDIDATES)


@dataclass(frozen=True)
class DicomSeries:
    """Where ``--dicom`` puts the SEG and the SR: their Series Instance UIDs and Instance Number. A
    DICOM node (``a3d serve``) keeps both series per source series, so that a rerun's results
    (new SOP Instance UIDs, the next instance number) land in the series of the earlier ones."""

    seg_uid: str
    sr_uid: str
    instance_number: int = 1


@dataclass(frozen=True)
class OutputOptions:
    overlays: bool = True  # overlays/slice_NNNN.png for every slice with detections
    html: bool = True  # report.html (the viewer: docs/predict.md, "The report")
    nifti_labels: bool = False  # labels.nii.gz
    max_overlays: int = 500  # overlay PNGs beyond this many slices (highest slices) are not written
    markups: bool = True  # slicer/*.mrk.json (3D Slicer markups: ROI box, long/short axis per candidate)
    dicom: bool = False  # dicom/seg.dcm + dicom/sr.dcm (DICOM input only; a batch skips other scans with a warning)
    new_uids: bool = False  # --dicom on sources without UIDs: generate them, copies of the images in dicom/images/
    dicom_series: DicomSeries | None = None  # None: a new SEG series and a new SR series for each run


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` as a Path, after checking it can be (re)written: A3DError otherwise."""
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


def _overlay_name(res: PredictionResult, z: int) -> str:
    return f"overlays/slice_{int(res.slice_of_canonical[z]):04d}.png"


def _write_overlays(res: PredictionResult, folder: Path, options: OutputOptions, files: dict) -> None:
    """Overlay PNGs of the slices with detections (the first ``max_overlays``)."""
    key_z = {c.id: c.info["key_canonical_slice"] for c in res.candidates}
    zs = sorted({d.z for d in res.detections})[: options.max_overlays]
    written = set(zs)
    for z in zs:
        write_bytes_atomic(folder / _overlay_name(res, z), png_bytes(render_overlay(res, z)))
    files["overlays"] = "overlays/"
    files["candidate_overlays"] = {cid: _overlay_name(res, z) for cid, z in key_z.items() if z in written}


def _write_viewer_files(res: PredictionResult, folder: Path, options: OutputOptions, files: dict) -> None:
    """3D Slicer markups and, with ``dicom``, the DICOM SEG and SR (issue 14)."""
    if options.markups:
        files["slicer_markups"] = write_markups(res, folder)
    if options.dicom and res.scan.kind != "dicom":
        res.scan.warnings.append(f"{res.scan.source}: no DICOM SEG/SR (--dicom): the input is {res.scan.kind}, not a DICOM series")
    elif options.dicom:
        from a3d.predict.dicom_outputs import write_dicom  # highdicom (~0.5 s to import): only with --dicom

        files.update(write_dicom(res, folder, options.new_uids, options.dicom_series))


def write_outputs(res: PredictionResult, folder: str | os.PathLike, options: OutputOptions = OutputOptions()) -> dict:
    """Write all outputs of one scan into ``folder``; returns the ``predictions.json`` document.

    ``predictions.json`` is written last, its ``timing.write`` the seconds spent on the other files."""
    t0 = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {"json": "predictions.json", "detections_csv": "detections.csv", "candidates_csv": "candidates.csv",
                   "luna16_csv": LUNA16_CSV}
    if options.overlays:
        _write_overlays(res, folder, options, files)
    if options.nifti_labels:
        write_labels(res, folder / "labels.nii.gz")
        files["nifti_labels"] = "labels.nii.gz"
    if options.html:
        files["html"] = "report.html"
    _write_viewer_files(res, folder, options, files)
    doc = result_dict(res, files)
    write_bytes_atomic(folder / "detections.csv", csv_bytes(DETECTION_COLUMNS, detection_rows(doc)))
    write_bytes_atomic(folder / "candidates.csv", csv_bytes(CANDIDATE_COLUMNS, candidate_rows(doc)))
    write_bytes_atomic(folder / LUNA16_CSV, luna16_csv_bytes(luna16_rows(doc)))
    if options.html:
        write_bytes_atomic(folder / "report.html", html_report(doc, viewer_data(res)).encode())
    res.timing["write"] = time.perf_counter() - t0
    doc["timing"] = timing_record(res.timing)
    write_bytes_atomic(folder / "predictions.json", json_bytes(doc))
    return doc


def write_batch_luna16(folder: Path, scan_folders: list[Path]) -> None:
    """``folder/candidates_luna16.csv``: the rows of every scan's own file, one header, scans in order."""
    parts = [luna16_csv_bytes([], header=True)]
    for sub in scan_folders:
        lines = (sub / LUNA16_CSV).read_bytes().splitlines(keepends=True)
        parts += lines[1:]
    write_bytes_atomic(folder / LUNA16_CSV, b"".join(parts))
