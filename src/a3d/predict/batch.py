"""A folder of scans (``a3d predict FOLDER``): each scan into ``DIR/<scan name>/`` as soon as it is
done, skipped on a rerun while its record matches, shared among torchrun's ranks.

- Each scan's folder is written atomically (:func:`a3d.predict.scan_job.predict_into`) with its
  ``record.json`` (:mod:`a3d.predict.resume`): a killed batch keeps every scan it finished, and the
  same command again skips them, redoing a scan whose input, checkpoint or settings changed (each
  named in one log line) and every scan that failed or never finished. ``--overwrite`` redoes all.
- ``DIR/batch.json`` is rewritten (atomically) after each scan with every scan's status: done,
  skipped, failed or pending; :func:`write_batch_summary` is the one writer of the batch's summary files.
- The next scan is read in a background thread while the model works on the current one
  (:mod:`a3d.predict.prefetch`); a line per scan gives scans done / total and the ETA.
- Under torchrun the ranks claim scans one at a time (:mod:`a3d.predict.ranks`); rank 0 plans,
  writes ``batch.json`` with what it knows after each of its scans, and for all at the end.
- SIGTERM stops the batch once the scan in progress is written (a rerun does the rest).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from a3d import __version__
from a3d.data.scans import scan_entries, scan_name
from a3d.engine.distributed import resolve_device
from a3d.errors import A3DError
from a3d.io import write_bytes_atomic
from a3d.predict import loading  # called as loading.load_predictor: tests substitute a stand-in model there
from a3d.predict.batch_index import write_batch_index
from a3d.predict.outputs import OutputOptions, check_out_dir, write_batch_luna16
from a3d.predict.precision import resolve_precision
from a3d.predict.prefetch import Prefetched, prefetch
from a3d.predict.ranks import POLL_S, Ranks
from a3d.predict.records import json_bytes
from a3d.predict.results import PredictSettings
from a3d.predict.resume import changed_parts, common_record, made_from, settings_record, stored_record
from a3d.predict.scan_job import STATUSES, ReadOptions, ScanOutcome, predict_into, read_input
from a3d.progress import Progress

log = logging.getLogger(__name__)

BATCH_JSON = "batch.json"
BATCH_FORMAT, BATCH_VERSION = "a3d-predict-batch", 2
SKIPPED = "skipped (done, same input, checkpoint and settings)"
_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp(\..+)?|old)$")


@dataclass(frozen=True)
class BatchJob:
    """What every rank needs to know about the batch; ``progress``: key slices of each scan."""

    folder: Path
    out: Path
    checkpoint: str
    settings: PredictSettings
    read: ReadOptions = ReadOptions()
    outputs: OutputOptions = OutputOptions()
    overwrite: bool = False
    progress: Callable[[int, int], None] | None = None


def batch_document(folder: Path, scans: list[ScanOutcome]) -> dict:
    """``batch.json``'s document: every scan with its status, the counts, whether any is pending."""
    counts = {s: sum(o.status == s for o in scans) for s in STATUSES}
    return {"format": BATCH_FORMAT, "version": BATCH_VERSION, "a3d_version": __version__,
            "input": str(Path(folder).absolute()), "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "complete": counts["pending"] == 0, "counts": counts, "scans": [o.record() for o in scans]}


def write_batch_summary(out: Path, doc: dict) -> None:
    """The batch's summary files from its document (:func:`batch_document`): once no scan is pending,
    ``candidates_luna16.csv`` of every finished scan (for ``a3d eval3d``); then ``batch.json`` and
    ``index.html`` (:mod:`a3d.predict.batch_index`)."""
    if doc["complete"]:
        write_batch_luna16(out, [out / s["output"] for s in doc["scans"] if s["status"] in ("done", "skipped")])
    write_bytes_atomic(out / BATCH_JSON, json_bytes(doc))
    write_batch_index(out, doc)


def _earlier_batch(out: Path) -> dict | None:
    try:
        doc = json.loads((out / BATCH_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == BATCH_FORMAT else None


def check_batch_out(out: Path, folder: Path, overwrite: bool) -> None:
    """``out`` may be new, empty, or the output of an earlier run over the same folder (resumed);
    anything else needs ``overwrite``."""
    check_out_dir(out, overwrite=True)
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return
    doc = _earlier_batch(out)
    if doc is None:
        raise A3DError(f"{out}: --out folder exists, is not empty and holds no batch.json of an earlier batch; "
                       "choose another or pass --overwrite")
    if doc.get("input") not in (None, str(folder.absolute())):
        raise A3DError(f"{out}: --out holds the batch of another input folder ({doc['input']}); choose another "
                       "--out or pass --overwrite")


def _clean_leftovers(out: Path) -> None:
    """Temporary files and folders a killed run left in ``out``: a3d.io's ``.NAME.XXXXXXXX.tmp[.suffix]``
    and ``.NAME.XXXXXXXX.old`` (tempfile's 8 random characters)."""
    for p in out.iterdir() if out.is_dir() else []:
        if not _LEFTOVER.match(p.name):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _plan_entry(entry: Path, name: str, job: BatchJob, common: dict) -> ScanOutcome:
    old = None if job.overwrite else stored_record(job.out / name)
    if old is None:
        reason = "--overwrite" if job.overwrite and (job.out / name).exists() else "no earlier output"
        return ScanOutcome(str(entry), None, status="pending", reason=reason)
    parts = changed_parts(old["made_from"], made_from(entry, common))
    if not parts:
        log.info("%s: %s", name, SKIPPED)
        return ScanOutcome(str(entry), name, old.get("detections", 0), old.get("candidates", 0), status="skipped",
                           reason="same input, checkpoint and settings")
    reason = f"{' and '.join(parts)} changed"
    log.info("%s: redone (%s)", name, reason)
    return ScanOutcome(str(entry), None, status="pending", reason=reason)


def plan_batch(job: BatchJob) -> dict:
    """Rank 0's plan (JSON): each scan's name and outcome so far (skipped or pending), and the record
    parts every scan shares."""
    entries = scan_entries(job.folder)
    names = [scan_name(e) for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise A3DError(f"{job.folder}: several scans map to the same output name {sorted(dup)[0]!r}; rename them")
    check_batch_out(job.out, job.folder, job.overwrite)
    _clean_leftovers(job.out)
    precision = resolve_precision(job.settings.precision, job.settings.device)
    loading.check_checkpoint_exists(job.checkpoint)
    common = common_record(job.checkpoint, settings_record(job.settings, precision, job.read, job.outputs))
    scans = [_plan_entry(e, n, job, common) for e, n in zip(entries, names)]
    return {"common": common, "names": names, "scans": [s.record() for s in scans]}


class _Worker:
    """One rank's scans: the model loaded once, each scan predicted into its folder."""

    def __init__(self, job: BatchJob, plan: dict, ranks: Ranks):
        self.job, self.plan, self.ranks = job, plan, ranks
        device = str(resolve_device(job.settings.device, ranks.local_rank))
        self.settings = replace(job.settings, device=device)
        self.model, self.cfg = loading.load_predictor(job.checkpoint, device)

    def read(self, index: int) -> tuple[dict, object, float]:
        """(what scan ``index`` is made from, the scan, seconds reading it): the fingerprint is taken
        before reading, so an input changed meanwhile is redone by the next run."""
        entry = self.plan["scans"][index]["input"]
        made = made_from(entry, self.plan["common"])
        return (made, *read_input(entry, self.job.read, batch_entry=True))

    def run(self, got: Prefetched) -> ScanOutcome:
        """Scan ``got.item`` of the plan, read ahead (``got``: :meth:`read`), predicted and written."""
        planned, name = self.plan["scans"][got.item], self.plan["names"][got.item]
        entry, reason, rank = planned["input"], planned.get("reason"), self.ranks.rank if self.ranks.store else None
        try:
            if got.error is not None:
                raise A3DError(got.error)
            made, scan, read_s = got.take()
            outcome = predict_into(scan, self.job.out / name, self.model, self.cfg, self.settings, self.job.outputs,
                                   checkpoint=self.job.checkpoint, read_s=read_s, made_from=made,
                                   progress=self.job.progress if self.ranks.is_main else None)
        except A3DError as e:
            log.error("%sa3d predict: %s", self.ranks.label(), e)
            return ScanOutcome(entry, None, error=str(e), status="failed", reason=reason, rank=rank)
        outcome.input, outcome.output, outcome.reason, outcome.rank = entry, name, reason, rank
        for w in outcome.warnings:
            log.warning("%swarning: %s", self.ranks.label(), w)
        log.info("%s%s: done, %d detections, %d candidates", self.ranks.label(), name, outcome.detections,
                 outcome.candidates)
        return outcome


class _Summary:
    """Rank 0's view of the batch: the outcomes it knows, ``batch.json``, the batch progress line."""

    def __init__(self, job: BatchJob, scans: list[ScanOutcome], names: list[str], todo: int):
        self.job, self.scans, self.names = job, scans, names
        self.bar = Progress(len(scans), "scans", "scan", initial=len(scans) - todo, every_update=True)

    def update(self, new: dict[int, dict]) -> None:
        """The outcomes ``new`` (scan index -> entry) taken in; ``batch.json`` rewritten if any."""
        if not new:
            return
        for i, rec in sorted(new.items()):
            self.scans[i] = ScanOutcome.from_record(rec)
            self.bar.set_postfix(last=self.names[i])
            self.bar.update(1)
        self.write()

    def write(self) -> None:
        write_batch_summary(self.job.out, batch_document(self.job.folder, self.scans))


@contextlib.contextmanager
def _sigterm_after_current_scan() -> Iterator[Callable[[], bool]]:
    """SIGTERM (``kill``, a scheduler's preemption, torchrun stopping the group after a rank died,
    with 30 s of grace) lets the scan in progress be written, then stops the batch: yields the
    question "was it asked to stop?". Only the main thread can take signals; elsewhere nothing changes."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield asked.is_set
        return
    before = signal.signal(signal.SIGTERM, lambda signum, frame: asked.set())
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGTERM, before)


def _work(worker: _Worker, todo: list[int], ranks: Ranks, summary: _Summary | None,
          stopped: Callable[[], bool]) -> None:
    """This rank's loop: claim a scan, predict it while the next one is read, post its outcome."""

    def take() -> int | None:
        k = ranks.claim()
        return todo[k] if k < len(todo) else None

    for got in prefetch(take, worker.read):
        ranks.post(got.item, worker.run(got).record())
        if summary is not None:
            summary.update(ranks.collect())
        if stopped():
            break


def run_batch(job: BatchJob, ranks: Ranks | None = None) -> list[ScanOutcome]:
    """Every scan of ``job.folder`` into ``job.out``, this rank's share of them (all in one process).
    Returns the batch's outcomes: on rank 0 every scan's, elsewhere the plan's. A3DError after a
    SIGTERM, once the scan in progress is written."""
    ranks = ranks or Ranks.from_env()
    plan = ranks.share(lambda: plan_batch(job))
    scans = [ScanOutcome.from_record(r) for r in plan["scans"]]
    todo = [i for i, s in enumerate(scans) if s.status == "pending"]
    # the model only when there is work; a bad checkpoint fails here, before anything is written
    worker = _Worker(job, plan, ranks) if todo else None
    summary = _Summary(job, scans, plan["names"], len(todo)) if ranks.is_main else None
    if summary is not None:
        summary.write()
    with _sigterm_after_current_scan() as stopped:
        if worker is not None:
            _work(worker, todo, ranks, summary, stopped)
        ranks.finish()
        while summary is not None and not ranks.all_finished() and not stopped():
            time.sleep(POLL_S)
            summary.update(ranks.collect())
    if summary is not None:
        summary.update(ranks.collect())
        summary.bar.close()
    if stopped():
        raise A3DError(f"{job.folder}: stopped (SIGTERM) once the scan in progress was written; the same command "
                       f"again does the scans left (see {job.out / BATCH_JSON})")
    return scans
