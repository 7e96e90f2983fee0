"""``a3d predict`` as one call: an input path (one scan or a folder of scans) + a checkpoint -> an
output folder.

A single scan's ``--out`` is written atomically (:func:`a3d.io.atomic_dir`); a batch folder's is
filled scan by scan, resumably, and shared among torchrun's ranks (:mod:`a3d.predict.batch`).
:func:`predict_input` is what the command line calls; :func:`list_series` serves ``--list-series``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from a3d.data.scans import SeriesInfo, classify_input, list_dicom_series
from a3d.errors import A3DError
from a3d.predict import loading  # called as loading.load_predictor: tests substitute a stand-in model there
from a3d.predict.batch import BATCH_JSON, BatchJob, run_batch
from a3d.predict.geometry import key_slices
from a3d.predict.outputs import OutputOptions, check_out_dir
from a3d.predict.precision import resolve_precision
from a3d.predict.ranks import Ranks, launched_world_size
from a3d.predict.results import PredictSettings
from a3d.predict.scan_job import ReadOptions, ScanOutcome, predict_into, read_input

__all__ = ["PredictRun", "ReadOptions", "ScanOutcome", "list_series", "predict_input"]


@dataclass
class PredictRun:
    out: Path
    batch: bool
    scans: list[ScanOutcome]


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM series anywhere under the folder ``path``, also a batch folder (A3DError for a
    file, or when there is none)."""
    if not Path(path).is_dir():
        raise A3DError(f"{path}: --list-series needs a folder holding DICOM files (any depth) or a DICOMDIR")
    series = list_dicom_series(path)
    if not series:
        raise A3DError(f"{path}: no readable DICOM series anywhere under this folder")
    return series


def _predict_batch(input: str | os.PathLike, out: Path, job: BatchJob) -> PredictRun:
    ranks = Ranks.from_env()
    done = run_batch(job, ranks)
    if not ranks.is_main:
        return PredictRun(out, True, done)  # rank 0 reports for all: a failing exit here would stop it
    failed = [s for s in done if s.status == "failed"]
    if failed:
        raise A3DError(f"{input}: {len(failed)} of {len(done)} scans failed (first: {failed[0].error}); "
                       f"see {out / BATCH_JSON}")
    return PredictRun(out, True, done)


def predict_input(input: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
                  settings: PredictSettings = PredictSettings(), read: ReadOptions = ReadOptions(),
                  outputs: OutputOptions = OutputOptions(), overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> PredictRun:
    """Detect lesions in ``input`` (DICOM folder, volume file, DeepLesion PNG folder, or a folder of
    such scans) with the ``a3d train`` checkpoint ``checkpoint``; write the results to ``out``.

    A single scan's files go into ``out``, which appears whole or not at all; a non-empty ``out`` is
    refused unless ``overwrite``. A batch folder's scans go into ``out/<scan name>/``, each as soon
    as it is done, plus ``out/batch.json``; the same call again skips the scans already done with the
    same input, checkpoint and settings (``overwrite``: redo all); under torchrun the ranks share the
    scans. ``progress(done, total)``: key slices of each scan. Bad input: A3DError (for a batch,
    after writing the scans that worked).
    """
    kind = classify_input(input)
    if outputs.dicom and kind not in ("dicom", "batch"):
        raise A3DError(f"{input}: --dicom writes DICOM SEG/SR referencing the source images; it needs a DICOM "
                       f"series folder (this is {kind} input)")
    loading.check_device(settings.device)
    resolve_precision(settings.precision, settings.device)  # a bad --precision fails before any work
    if kind == "batch":
        job = BatchJob(Path(input), Path(out), str(checkpoint), settings, read, outputs, overwrite, progress)
        return _predict_batch(input, Path(out), job)
    if launched_world_size() > 1:
        raise A3DError(f"{input}: torchrun shares the scans of a folder of scans among its processes; run a single "
                       "scan without torchrun")
    out = check_out_dir(out, overwrite)
    scan, read_s = read_input(input, read)
    key_slices(scan, settings.slices)  # an out-of-range --slices fails before the model is loaded
    model, cfg = loading.load_predictor(checkpoint, settings.device)
    return PredictRun(out, False, [predict_into(scan, out, model, cfg, settings, outputs, checkpoint=checkpoint,
                                                read_s=read_s, progress=progress)])
