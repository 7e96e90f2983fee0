"""The node's persistent queue: one SQLite file in the work folder (WAL, ``synchronous=FULL``: a
committed change survives a power cut).

One row per series (``series``), one per received instance (``instances``), one per result send
(``sends``: a job's results to one destination). A series moves through

    received -> queued -> running -> sending -> done
                                  \\-> failed (the series could not be processed, or a send never got through)

``job`` counts the series' jobs: an instance arriving for a series in any state sends it back to
``received``, and it is queued again as job ``job + 1`` once the series is stable; a job that
finishes after that is superseded and its results are not sent. After a crash, ``running`` goes
back to ``queued`` (nothing of it was sent) and ``sending`` goes on with the files already written.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "queue.sqlite"
STATES = ("received", "queued", "running", "sending", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, state TEXT NOT NULL,
    job INTEGER NOT NULL DEFAULT 0, instances INTEGER NOT NULL DEFAULT 0,
    first_received REAL NOT NULL, last_received REAL NOT NULL, queued_at REAL, started_at REAL,
    finished_at REAL, job_seconds REAL, detections INTEGER, candidates INTEGER, error TEXT, purged INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, path TEXT NOT NULL, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sends (
    series_uid TEXT NOT NULL, job INTEGER NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, last_error TEXT, sent_at REAL,
    PRIMARY KEY (series_uid, job, destination));
"""


@dataclass(frozen=True)
class Job:
    series_uid: str
    study_uid: str
    job: int


@dataclass(frozen=True)
class Send:
    series_uid: str
    job: int
    destination: str
    attempts: int


class Queue:
    """The queue of one work folder; safe to share between threads (a connection per thread)."""

    def __init__(self, work_dir: str | Path):
        self.path = Path(work_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def _tx(self):
        return _Transaction(self._db())

    # --- receiving -------------------------------------------------------------------------------

    def add_instance(self, study_uid: str, series_uid: str, sop_uid: str, path: str, now: float | None = None) -> bool:
        """Record a stored instance (its file already on disk); the series goes (back) to ``received``.
        True when the instance is new, False when it replaced one of the same SOP Instance UID."""
        now = time.time() if now is None else now
        with self._tx() as db:
            new = db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is None
            db.execute("INSERT OR REPLACE INTO instances VALUES (?,?,?,?)", (sop_uid, series_uid, path, now))
            db.execute("INSERT OR IGNORE INTO series (series_uid, study_uid, state, first_received, last_received) "
                       "VALUES (?,?,'received',?,?)", (series_uid, study_uid, now, now))
            db.execute("UPDATE series SET state='received', last_received=?, instances=instances+?, error=NULL, "
                       "purged=0 WHERE series_uid=?", (now, int(new), series_uid))
        return new

    def promote_stable(self, stable_s: float, now: float | None = None) -> list[Job]:
        """Series with no instance for ``stable_s`` seconds become queued jobs (the next job number)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE series SET state='queued', job=job+1, queued_at=? "
                       "WHERE state='received' AND last_received<=?", (now, now - stable_s))
            rows = db.execute("SELECT series_uid, study_uid, job FROM series WHERE state='queued' AND queued_at=?",
                              (now,)).fetchall()
        return [Job(*r) for r in rows]

    # --- jobs ------------------------------------------------------------------------------------

    def take_job(self, now: float | None = None) -> Job | None:
        """The oldest queued job, now ``running``; None when there is none."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT series_uid, study_uid, job FROM series WHERE state='queued' "
                             "ORDER BY queued_at, series_uid LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE series SET state='running', started_at=? WHERE series_uid=?", (now, row[0]))
        return Job(*row)

    def instance_paths(self, series_uid: str) -> list[str]:
        rows = self._db().execute("SELECT path FROM instances WHERE series_uid=? ORDER BY path", (series_uid,))
        return [r[0] for r in rows]

    def finish_job(self, job: Job, detections: int, candidates: int, destinations: list[str],
                   now: float | None = None) -> bool:
        """``running`` -> ``sending`` (one pending send per destination) or ``done`` (nothing to send).
        False, and nothing changes, when the job was superseded by a late instance."""
        now = time.time() if now is None else now
        state = "sending" if destinations else "done"
        with self._tx() as db:
            cur = db.execute("UPDATE series SET state=?, detections=?, candidates=?, finished_at=?, "
                             "job_seconds=?-started_at WHERE series_uid=? AND job=? AND state='running'",
                             (state, detections, candidates, None if destinations else now, now, job.series_uid, job.job))
            if cur.rowcount == 0:
                return False
            db.executemany("INSERT OR IGNORE INTO sends (series_uid, job, destination, state, next_try) "
                           "VALUES (?,?,?,'pending',?)", [(job.series_uid, job.job, d, now) for d in destinations])
        return True

    def fail_job(self, job: Job, error: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute("UPDATE series SET state='failed', error=?, finished_at=? "
                             "WHERE series_uid=? AND job=? AND state='running'", (error, now, job.series_uid, job.job))
        return cur.rowcount > 0

    def requeue(self, job: Job) -> None:
        """A running job stopped before its end (SIGTERM): queued again, same job number."""
        with self._tx() as db:
            db.execute("UPDATE series SET state='queued' WHERE series_uid=? AND job=? AND state='running'",
                       (job.series_uid, job.job))

    def recover(self) -> int:
        """After a crash or a stop: running jobs are queued again (none of their results was sent).
        Returns how many."""
        with self._tx() as db:
            return db.execute("UPDATE series SET state='queued' WHERE state='running'").rowcount

    # --- sends -----------------------------------------------------------------------------------

    def due_sends(self, now: float | None = None) -> list[Send]:
        """Pending sends of current jobs whose next try is due."""
        now = time.time() if now is None else now
        rows = self._db().execute(
            "SELECT s.series_uid, s.job, s.destination, s.attempts FROM sends s JOIN series r "
            "ON r.series_uid=s.series_uid AND r.job=s.job AND r.state='sending' "
            "WHERE s.state='pending' AND s.next_try<=? ORDER BY s.next_try", (now,)).fetchall()
        return [Send(*r) for r in rows]

    def send_done(self, send: Send, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE sends SET state='done', attempts=attempts+1, sent_at=?, last_error=NULL "
                       "WHERE series_uid=? AND job=? AND destination=?", (now, send.series_uid, send.job, send.destination))
            self._settle(db, send, now)

    def send_failed(self, send: Send, error: str, retry_at: float | None, now: float | None = None) -> None:
        """One failed attempt; ``retry_at`` None: no more attempts, the send has failed."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE sends SET state=?, attempts=attempts+1, next_try=?, last_error=? "
                       "WHERE series_uid=? AND job=? AND destination=?",
                       ("pending" if retry_at is not None else "failed", retry_at or now, error,
                        send.series_uid, send.job, send.destination))
            self._settle(db, send, now)

    @staticmethod
    def _settle(db: sqlite3.Connection, send: Send, now: float) -> None:
        """A job whose sends have all ended is done, or failed with the first failed send's reason."""
        rows = db.execute("SELECT destination, state, attempts, last_error FROM sends WHERE series_uid=? AND job=?",
                          (send.series_uid, send.job)).fetchall()
        if any(r["state"] == "pending" for r in rows):
            return
        failed = [r for r in rows if r["state"] == "failed"]
        error = (f"send to {failed[0]['destination']} failed after {failed[0]['attempts']} attempts: "
                 f"{failed[0]['last_error']}") if failed else None
        db.execute("UPDATE series SET state=?, error=?, finished_at=? WHERE series_uid=? AND job=? AND state='sending'",
                   ("failed" if failed else "done", error, now, send.series_uid, send.job))

    # --- status and disk use -------------------------------------------------------------------

    def series_rows(self) -> list[dict]:
        """Every series, most recent first, with its sends of the current job."""
        db = self._db()
        out = []
        for r in db.execute("SELECT * FROM series ORDER BY last_received DESC").fetchall():
            sends = db.execute("SELECT destination, state, attempts, next_try, last_error, sent_at FROM sends "
                               "WHERE series_uid=? AND job=? ORDER BY destination", (r["series_uid"], r["job"]))
            out.append({**dict(r), "sends": [dict(s) for s in sends]})
        return out

    def expired(self, before: float) -> list[tuple[str, str]]:
        """(Study UID, Series UID) of the series that ended (done or failed) before ``before`` and still hold files."""
        rows = self._db().execute("SELECT study_uid, series_uid FROM series WHERE state IN ('done','failed') "
                                  "AND purged=0 AND finished_at<?", (before,))
        return [(r[0], r[1]) for r in rows]

    def mark_purged(self, series_uid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM instances WHERE series_uid=?", (series_uid,))
            db.execute("UPDATE series SET purged=1, instances=0 WHERE series_uid=?", (series_uid,))


class _Transaction:
    """``with``: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception), so a change is all or nothing."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
