"""``a3d predict`` as one call: an input path (one scan or a folder of scans) + a checkpoint -> an
output folder, written atomically (:func:`a3d.io.atomic_dir`).

:func:`predict_input` is what the command line calls; :func:`list_series` serves ``--list-series``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from a3d.config import Config
from a3d.data.scans import Scan, SeriesInfo, classify_input, list_dicom_series, read_scan, scan_entries, scan_name
from a3d.errors import A3DError
from a3d.io import atomic_dir, write_bytes_atomic
from a3d.predict import loading  # called as loading.load_predictor: tests substitute a stand-in model there
from a3d.predict.batch_index import write_batch_index
from a3d.predict.geometry import key_slices
from a3d.predict.inference import predict_scan
from a3d.predict.outputs import OutputOptions, check_out_dir, write_batch_luna16, write_outputs
from a3d.predict.precision import resolve_precision
from a3d.predict.records import json_bytes
from a3d.predict.results import PredictSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadOptions:
    """How to read the input scans (:func:`a3d.data.scans.read_scan`)."""

    series: str | None = None  # DICOM SeriesInstanceUID (default: the series with most files)
    spacing: tuple[float, float, float] | None = None  # DeepLesion PNG: x, y, z mm
    dl_info: str | os.PathLike | None = None  # DeepLesion PNG: DL_info.csv giving the spacing
    allow_missing: bool = False  # DICOM: interpolate holes (missing/unreadable slices) instead of refusing
    acquisition: int | None = None  # DICOM: only the files with this AcquisitionNumber


@dataclass
class ScanOutcome:
    input: str
    output: str | None  # sub-folder of the output folder (batch), "" for a single scan, None if failed
    detections: int = 0
    candidates: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """Its entry in ``batch.json``."""
        if self.error is not None:
            return {"input": self.input, "output": None, "status": "error", "error": self.error}
        return {"input": self.input, "output": self.output, "status": "ok", "detections": self.detections,
                "candidates": self.candidates}


@dataclass
class PredictRun:
    out: Path
    batch: bool
    scans: list[ScanOutcome]


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """The DICOM series in the folder ``path`` (A3DError for any other input)."""
    if classify_input(path) != "dicom":
        raise A3DError(f"{path}: --list-series needs a DICOM folder")
    return list_dicom_series(path)


def _read(path: str | os.PathLike, read: ReadOptions) -> tuple[Scan, float]:
    """(the scan, seconds spent reading it)."""
    t0 = time.perf_counter()
    scan = read_scan(path, series_uid=read.series, spacing=read.spacing, dl_info=read.dl_info,
                     allow_missing=read.allow_missing, acquisition=read.acquisition)
    return scan, time.perf_counter() - t0


def _predict_into(folder: Path, scan: Scan, read_s: float, model: nn.Module, cfg: Config, checkpoint: str,
                  settings: PredictSettings, outputs: OutputOptions,
                  progress: Callable[[int, int], None] | None = None) -> ScanOutcome:
    """One scan's prediction, written atomically to ``folder``; ``read_s``: seconds it took to read."""
    res = predict_scan(scan, model, cfg, settings, progress=progress, checkpoint=os.path.abspath(checkpoint))
    res.timing["read"] = read_s
    with atomic_dir(folder) as tmp:
        doc = write_outputs(res, tmp, outputs)
    return ScanOutcome(scan.source, "", len(doc["detections"]), len(doc["candidates"]), warnings=list(scan.warnings))


def _predict_batch(folder: Path, out: Path, checkpoint: str | os.PathLike, settings: PredictSettings,
                   read: ReadOptions, outputs: OutputOptions) -> list[ScanOutcome]:
    """Every scan of a batch folder into its own sub-folder of ``out``, plus ``batch.json``; a scan
    that fails is listed there with its error and the others are still written."""
    entries = scan_entries(folder)
    names = [scan_name(e) for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise A3DError(f"{folder}: several scans map to the same output name {sorted(dup)[0]!r}; rename them")
    model, cfg = loading.load_predictor(checkpoint, settings.device)
    done = []
    with atomic_dir(out) as tmp:
        for entry, name in zip(entries, names):
            try:
                outcome = _predict_into(tmp / name, *_read(entry, read), model, cfg, checkpoint, settings, outputs)
                outcome.input, outcome.output = str(entry), name
                log.info("%s: %d candidates", entry, outcome.candidates)
            except A3DError as e:
                outcome = ScanOutcome(str(entry), None, error=str(e))
                log.error("a3d predict: %s", e)
            done.append(outcome)
        write_batch_luna16(tmp, [tmp / s.output for s in done if s.error is None])  # all scans, for a3d eval3d
        doc = {"format": "a3d-predict-batch", "version": 1, "scans": [s.record() for s in done]}
        write_bytes_atomic(tmp / "batch.json", json_bytes(doc))
        write_batch_index(tmp, doc)  # index.html: every scan, its counts and a link to its report
    return done


def predict_input(input: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
                  settings: PredictSettings = PredictSettings(), read: ReadOptions = ReadOptions(),
                  outputs: OutputOptions = OutputOptions(), overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> PredictRun:
    """Detect lesions in ``input`` (DICOM folder, NIfTI file, DeepLesion PNG folder, or a folder of
    such scans) with the ``a3d train`` checkpoint ``checkpoint``; write the results to ``out``.

    A single scan's files go into ``out``; a batch folder's scans into ``out/<scan name>/`` plus
    ``out/batch.json``. ``out`` appears whole or not at all; a non-empty ``out`` is refused unless
    ``overwrite``. ``progress(done, total)``: key slices of a single scan. Bad input: A3DError (for a
    batch, after writing the scans that worked).
    """
    kind = classify_input(input)
    if outputs.dicom and kind not in ("dicom", "batch"):
        raise A3DError(f"{input}: --dicom writes DICOM SEG/SR referencing the source images; it needs a DICOM "
                       f"series folder (this is {kind} input)")
    loading.check_device(settings.device)
    resolve_precision(settings.precision, settings.device)  # a bad --precision fails before any work
    out = check_out_dir(out, overwrite)
    if kind == "batch":
        done = _predict_batch(Path(input), out, checkpoint, settings, read, outputs)
        failed = [s for s in done if s.error is not None]
        if failed:
            raise A3DError(f"{input}: {len(failed)} of {len(done)} scans failed (first: {failed[0].error}); "
                           f"see {out / 'batch.json'}")
        return PredictRun(out, True, done)
    scan, read_s = _read(input, read)
    key_slices(scan, settings.slices)  # an out-of-range --slices fails before the model is loaded
    model, cfg = loading.load_predictor(checkpoint, settings.device)
    return PredictRun(out, False, [_predict_into(out, scan, read_s, model, cfg, checkpoint, settings, outputs, progress)])
