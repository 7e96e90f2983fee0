"""One scan's job: read it (:class:`ReadOptions`), predict it with a model already loaded and write its
outputs into a folder atomically (:func:`predict_into`), and the :class:`ScanOutcome` that reports it.

:func:`predict_into` is the piece to call where a model stays loaded across many scans (a batch, a
DICOM node): the folder appears whole, with ``predictions.json`` and every other output, or not at all.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from a3d.config import Config
from a3d.data.scans import Scan, read_scan
from a3d.io import atomic_dir, write_bytes_atomic
from a3d.predict.dicom_uids import check_references
from a3d.predict.inference import predict_scan
from a3d.predict.outputs import OutputOptions, write_outputs
from a3d.predict.records import json_bytes
from a3d.predict.resume import RECORD_FILE, record_doc
from a3d.predict.results import PredictSettings

STATUSES = ("done", "skipped", "failed", "pending")  # a batch scan's status in batch.json


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
    """What became of one scan. ``output``: its sub-folder name in a batch, ``""`` for a single scan,
    None when it failed or is pending; ``reason``: why a batch scan was (re)done or skipped;
    ``rank``: the torchrun rank that did it."""

    input: str
    output: str | None
    detections: int = 0
    candidates: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    status: str = "done"
    reason: str | None = None
    rank: int | None = None

    def record(self) -> dict:
        """Its entry in ``batch.json`` (plain JSON: also what ranks send each other)."""
        out = {"input": self.input, "output": self.output, "status": self.status}
        if self.status in ("done", "skipped"):
            out.update(detections=self.detections, candidates=self.candidates)
        if self.error is not None:
            out["error"] = self.error
        for key in ("reason", "rank"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_record(cls, rec: dict) -> "ScanOutcome":
        return cls(rec["input"], rec.get("output"), rec.get("detections", 0), rec.get("candidates", 0),
                   rec.get("error"), list(rec.get("warnings", [])), rec["status"], rec.get("reason"), rec.get("rank"))


def read_input(path: str | os.PathLike, read: ReadOptions, batch_entry: bool = False) -> tuple[Scan, float]:
    """(the scan, seconds spent reading it); ``batch_entry``: one scan of a batch folder (read_scan)."""
    t0 = time.perf_counter()
    scan = read_scan(path, series_uid=read.series, spacing=read.spacing, dl_info=read.dl_info,
                     allow_missing=read.allow_missing, acquisition=read.acquisition, batch_entry=batch_entry)
    return scan, time.perf_counter() - t0


def predict_into(scan: Scan, folder: str | os.PathLike, model: nn.Module, cfg: Config,
                 settings: PredictSettings = PredictSettings(), outputs: OutputOptions = OutputOptions(), *,
                 checkpoint: str | os.PathLike | None = None, read_s: float = 0.0, made_from: dict | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ScanOutcome:
    """Predict ``scan`` with the loaded ``model`` (and its ``cfg``) and write every output into
    ``folder``, atomically (an existing ``folder`` is replaced only once the new one is complete).

    ``checkpoint``: recorded in ``predictions.json``; ``read_s``: seconds it took to read the scan
    (``timing.read``); ``made_from``: written as ``record.json`` (the batch's resume record,
    :mod:`a3d.predict.resume`); ``progress(done, total)``: key slices. A3DError for bad input.
    """
    if outputs.dicom and scan.kind == "dicom":
        check_references(scan, outputs.new_uids)  # before the model runs: UID-less sources need --new-uids
    ckpt = os.path.abspath(checkpoint) if checkpoint is not None else None
    res = predict_scan(scan, model, cfg, settings, progress=progress, checkpoint=ckpt)
    res.timing["read"] = read_s
    with atomic_dir(folder) as tmp:
        doc = write_outputs(res, tmp, outputs)
        if made_from is not None:
            rec = record_doc(made_from, len(doc["detections"]), len(doc["candidates"]))
            write_bytes_atomic(Path(tmp) / RECORD_FILE, json_bytes(rec))
    return ScanOutcome(scan.source, "", len(doc["detections"]), len(doc["candidates"]), warnings=list(scan.warnings))
