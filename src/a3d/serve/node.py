"""The DICOM node: receive (:mod:`~a3d.serve.scp`), turn stable series into jobs, run them one at
a time on the loaded model (:mod:`~a3d.serve.jobs`), send the results (:mod:`~a3d.serve.send`),
all recorded in the persistent queue (:mod:`~a3d.serve.queue`).

Threads: pynetdicom's (one per association) receive; one thread sends; the thread that calls
:meth:`Node.run` promotes stable series, runs jobs and removes expired files. A job never blocks
receiving, and a slow destination never blocks the next job.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from a3d.serve.jobs import JobRunner, Stopped, failure_reason
from a3d.serve.queue import Job, Queue, Send
from a3d.serve.scp import StorageSCP
from a3d.serve.send import Destination, SendError, retry_delay, send
from a3d.serve.store import InstanceStore

log = logging.getLogger("a3d.serve")
# pynetdicom logs every PDU and DIMSE message at INFO: the node's INFO log is one line per association, job and send
for name in ("pynetdicom", "dicomweb_client"):
    logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class NodeConfig:
    work_dir: Path
    ae_title: str = "A3D"
    host: str = "127.0.0.1"
    port: int = 11112
    destinations: tuple[Destination, ...] = ()
    allow_ae: tuple[str, ...] = ()  # calling AE titles accepted; empty: any
    stable_s: float = 30.0  # a series is complete when no instance arrived for this long (Orthanc's StableAge)
    keep_days: float | None = None  # received instances and results of ended jobs older than this are removed
    send_attempts: int = 8  # tries per destination before the job fails
    retry_s: float = 10.0  # first wait between tries, doubling ...
    retry_cap_s: float = 300.0  # ... up to this
    poll_s: float = 0.5
    purge_every_s: float = 3600.0  # how often, when idle, expired files are looked for


class Node:
    def __init__(self, config: NodeConfig, runner: JobRunner, ssl_context: ssl.SSLContext | None = None):
        self.config, self.runner = config, runner
        self.queue = Queue(config.work_dir)
        self.store = InstanceStore(config.work_dir, self.queue)
        self.scp = StorageSCP(self.store, config.ae_title, config.host, config.port, config.allow_ae, ssl_context)
        self.stop_event = threading.Event()
        self._by_name = {d.name: d for d in config.destinations}

    def run(self, ready: threading.Event | None = None) -> None:
        """Serve until :attr:`stop_event` is set (SIGTERM, SIGINT); then the running job is ended at
        its next key slice and queued again, and the port is closed."""
        requeued = self.queue.recover()
        if requeued:
            log.info("restart: %d interrupted jobs queued again", requeued)
        self.scp.start()
        log.info("a3d serve: AE %s listening on %s:%d%s; work folder %s", self.config.ae_title, self.config.host,
                 self.scp.port, " (TLS)" if self.scp.ssl_context else "", self.config.work_dir)
        sender = threading.Thread(target=self._send_loop, name="a3d-send", daemon=True)
        sender.start()
        if ready is not None:
            ready.set()
        try:
            self._job_loop()
        finally:
            self.scp.stop()
            self.stop_event.set()
            sender.join()
            log.info("a3d serve: stopped")

    # --- jobs --------------------------------------------------------------------------------------

    def _job_loop(self) -> None:
        next_purge = 0.0
        while not self.stop_event.is_set():
            for job in self.queue.promote_stable(self.config.stable_s):
                log.info("series %s complete: job %d queued", job.series_uid, job.job)
            job = self.queue.take_job()
            if job is not None:
                self._run_job(job)
                continue
            if self.config.keep_days is not None and time.time() >= next_purge:
                self._purge()
                next_purge = time.time() + self.config.purge_every_s
            self.stop_event.wait(self.config.poll_s)

    def _run_job(self, job: Job) -> None:
        log.info("job %d of series %s: started", job.job, job.series_uid)
        try:
            result = self.runner.run(job, self.store.series_dir(job.study_uid, job.series_uid), self.stop_event)
        except Stopped:
            self.queue.requeue(job)
            log.info("job %d of series %s: stopping, queued again", job.job, job.series_uid)
            return
        except Exception as e:  # a series that cannot be processed fails alone: the node goes on
            reason = failure_reason(e)
            self.queue.fail_job(job, reason)
            log.error("job %d of series %s: failed: %s", job.job, job.series_uid, reason)
            return
        targets = [d.name for d in self.config.destinations] if result.files else []
        if not self.queue.finish_job(job, result.detections, result.candidates, targets):
            log.info("job %d of series %s: superseded by instances received meanwhile; not sent", job.job, job.series_uid)
        elif not result.files:
            log.info("job %d of series %s: done, no candidates: no SEG/SR to send", job.job, job.series_uid)
        elif not targets:
            log.info("job %d of series %s: done (no --send-to or --stow: results kept in %s)", job.job,
                     job.series_uid, self.runner.result_dir(job.series_uid))

    # --- sends -------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self.stop_event.is_set():
            for s in self.queue.due_sends():
                if self.stop_event.is_set():
                    break
                self._send_one(s)
            self.stop_event.wait(self.config.poll_s)

    def _send_one(self, s: Send) -> None:
        dest = self._by_name.get(s.destination)
        files = self.runner.files_of(s.series_uid)
        try:
            if dest is None:
                raise SendError(f"{s.destination} is no longer a destination of this node")
            if not files:
                raise SendError(f"results of series {s.series_uid} are missing from {self.runner.results}")
            send(dest, files, self.config.ae_title)
        except Exception as e:
            attempts = s.attempts + 1
            retry = dest is not None and bool(files) and attempts < self.config.send_attempts
            wait = retry_delay(attempts, self.config.retry_s, self.config.retry_cap_s)
            self.queue.send_failed(s, str(e) if isinstance(e, SendError) else failure_reason(e),
                                   time.time() + wait if retry else None)
            log.warning("send of job %d of series %s to %s: attempt %d failed: %s; %s", s.job, s.series_uid,
                        s.destination, attempts, e, f"next try in {wait:.0f} s" if retry else "giving up")
            return
        self.queue.send_done(s)
        log.info("send of job %d of series %s to %s: %d files stored", s.job, s.series_uid, s.destination, len(files))

    # --- disk use ----------------------------------------------------------------------------------

    def _purge(self) -> None:
        before = time.time() - self.config.keep_days * 86400
        for study, uid in self.queue.expired(before):
            shutil.rmtree(self.store.series_dir(study, uid), ignore_errors=True)
            shutil.rmtree(self.runner.result_dir(uid), ignore_errors=True)
            self.queue.mark_purged(uid)
            log.info("series %s: received instances and results removed (--keep-days %g)", uid, self.config.keep_days)
