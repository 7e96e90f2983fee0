"""One job of the node: a received series through the loaded model into ``results/<Series UID>/``,
with the outputs of ``a3d predict --dicom`` (the SEG and SR in series derived from the source's)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.uid import generate_uid
from torch import nn

from a3d.config import Config
from a3d.errors import A3DError
from a3d.predict.outputs import DicomSeries, OutputOptions
from a3d.predict.results import PredictSettings
from a3d.predict.scan_job import ReadOptions, predict_into, read_input
from a3d.serve.queue import Job

log = logging.getLogger("a3d.serve")

RESULTS_DIR = "results"
RESULT_FILES = ("dicom/seg.dcm", "dicom/sr.dcm")


class Stopped(Exception):
    """The node is stopping: the running job ends early and is queued again."""


def result_series(source_series_uid: str, job: int) -> DicomSeries:
    """The SEG's and SR's series for a source series: the same for every job of that series (a rerun
    replaces results within them), instance number = job number."""
    return DicomSeries(generate_uid(entropy_srcs=["a3d serve SEG", source_series_uid]),
                       generate_uid(entropy_srcs=["a3d serve SR", source_series_uid]), instance_number=job)


@dataclass
class JobResult:
    detections: int
    candidates: int
    files: list[Path]  # what to send: the SEG and SR (none without candidates)


class JobRunner:
    """Runs jobs one at a time on one loaded model."""

    def __init__(self, work_dir: Path, model: nn.Module, cfg: Config, settings: PredictSettings,
                 checkpoint: str, outputs: OutputOptions = OutputOptions(overlays=False)):
        self.results = Path(work_dir) / RESULTS_DIR
        self.model, self.cfg, self.settings, self.checkpoint, self.outputs = model, cfg, settings, checkpoint, outputs

    def result_dir(self, series_uid: str) -> Path:
        return self.results / series_uid

    def files_of(self, series_uid: str) -> list[Path]:
        folder = self.result_dir(series_uid)
        return [folder / f for f in RESULT_FILES if (folder / f).is_file()]

    def run(self, job: Job, series_dir: Path, stop: threading.Event) -> JobResult:
        """A3DError (the reason ``a3d predict`` would give) when the series cannot be processed;
        Stopped when ``stop`` is set before the job ends."""
        def progress(done: int, total: int) -> None:
            if stop.is_set():
                raise Stopped

        t0 = time.perf_counter()
        scan, read_s = read_input(series_dir, ReadOptions(series=job.series_uid))
        if stop.is_set():
            raise Stopped
        outputs = replace(self.outputs, dicom=True, dicom_series=result_series(job.series_uid, job.job))
        done = predict_into(scan, self.result_dir(job.series_uid), self.model, self.cfg, self.settings, outputs,
                            checkpoint=self.checkpoint, read_s=read_s, progress=progress)
        for w in done.warnings:
            log.warning("job %d of series %s: warning: %s", job.job, job.series_uid, w)
        log.info("job %d of series %s: %d detections, %d candidates in %.1f s", job.job, job.series_uid,
                 done.detections, done.candidates, time.perf_counter() - t0)
        return JobResult(done.detections, done.candidates, self.files_of(job.series_uid))


def failure_reason(e: BaseException) -> str:
    """The one line recorded for a failed job."""
    if isinstance(e, A3DError):
        return str(e)
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else 'no message'}"
