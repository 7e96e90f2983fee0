"""Launching ``torchrun --standalone --nproc_per_node N`` from a test under a time limit: output to
files (a hung worker keeps pipes open), a hang stops the launcher and every worker and fails the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def descendants(pid: int) -> list[int]:
    """Process ids under ``pid`` (from /proc): torchrun's workers run in sessions of their own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the worker with RANK=``rank`` under the torchrun process ``launcher``."""
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID=" in b"\0".join(env):
            return pid
    return None


def launch(tmp: Path, target: list[str], *args: str, nproc: int = 2, env: dict | None = None,
           tag: str = "torchrun") -> tuple[subprocess.Popen, Path, Path]:
    """``torchrun --standalone --nproc_per_node nproc TARGET ARGS`` (TARGET: ``["-m", "a3d.cli", "train"]``
    or a script path and its command); stdout and stderr go to ``tmp/<tag>.out`` / ``.err``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *target, *args]
    out, err = tmp / f"{tag}.out", tmp / f"{tag}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return p, out, err


def stop(p: subprocess.Popen) -> None:
    """Stop the launcher (torchrun stops its workers on SIGTERM) and kill any worker left."""
    workers = descendants(p.pid)
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def finish(p: subprocess.Popen, out: Path, err: Path, limit_s: float) -> subprocess.CompletedProcess:
    """Wait for the launch to end; after ``limit_s`` everything is stopped and the test fails."""
    try:
        p.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        stop(p)
        pytest.fail(f"torchrun hung (stopped after {limit_s} s); stderr tail:\n{err.read_text()[-2000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text())
