"""``torchrun --nproc_per_node 2 -m a3d.cli predict FOLDER`` (CPU): the ranks share the scans, each
done exactly once, rank 0 writes one batch.json for all; a rank killed half-way leaves its
unfinished scans to a rerun of the same command. Each launch runs under a time limit."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from test_predict_batch import fake_checkpoint, make_batch
from torchrun_support import finish, launch, stop, worker_of_rank

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 240  # a healthy launch takes ~10-40 s on 2 busy cores
DONE = re.compile(r"^rank (\d): (s\d+): done, ", re.M)


def _done_lines(text: str) -> dict[str, list[int]]:
    """{scan name: the ranks that logged it done}."""
    found: dict[str, list[int]] = {}
    for rank, name in DONE.findall(text):
        found.setdefault(name, []).append(int(rank))
    return found


def test_two_ranks_share_the_scans_each_done_once(tmp_path, tiny_checkpoint):
    """A real (random-init, tiny) checkpoint through `-m a3d.cli`: 5 scans, 2 ranks: every scan is
    done by exactly one rank (its log line and batch.json's rank agree), its folder exists once,
    batch.json (rank 0's) lists all five done and no temporary folder is left. Fails on today's
    main, where every rank does every scan (10 completions for 5 scans) into the same folders."""
    names = make_batch(tmp_path / "batch", n=5, slices=4)
    out = tmp_path / "out"
    res = finish(*launch(tmp_path, ["-m", "a3d.cli", "predict"], str(tmp_path / "batch"), "--checkpoint",
                         str(tiny_checkpoint), "--out", str(out), "--slice", "1", "--no-html", "--no-overlays",
                         "--score-threshold", "0.9"), LIMIT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    done = _done_lines(res.stderr)
    assert sorted(done) == names and all(len(r) == 1 for r in done.values()), res.stderr[-3000:]
    doc = json.loads((out / "batch.json").read_text())
    assert [s["status"] for s in doc["scans"]] == ["done"] * 5 and doc["complete"]
    assert {s["output"]: [s["rank"]] for s in doc["scans"]} == done
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "batch.json", "candidates_luna16.csv", "index.html"])
    assert all((out / n / "record.json").is_file() for n in names)


def test_a_killed_rank_leaves_its_scans_to_a_rerun(tmp_path):
    """2 ranks over 6 scans with a stand-in model sleeping 0.3 s per key slice; rank 1 is killed
    (SIGKILL) once it has finished a scan, and torchrun stops the group (SIGTERM: rank 0 writes the
    scan it is on, then stops). The same command again skips exactly the scans whose folders are
    complete and does each of the others once; no scan was done twice, batch.json lists all six."""
    names = make_batch(tmp_path / "batch", n=6, slices=4)
    out = tmp_path / "out"
    args = [str(REPO / "tests" / "predict_runner.py"), "predict", str(tmp_path / "batch"), "--checkpoint",
            str(fake_checkpoint(tmp_path)), "--out", str(out), "--no-html", "--no-overlays"]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    p, o, e = launch(tmp_path, args, env={**env, "A3D_TEST_FORWARD_S": "0.3"}, tag="first")
    deadline, victim = time.monotonic() + LIMIT_S, None
    try:
        while p.poll() is None and time.monotonic() < deadline and victim is None:
            time.sleep(0.05)
            if re.search(r"^rank 1: s\d+: done, ", e.read_text(), re.M):
                victim = worker_of_rank(p.pid, 1)
        assert victim is not None, e.read_text()[-3000:]
        os.kill(victim, signal.SIGKILL)
        first = finish(p, o, e, LIMIT_S)
    finally:
        if p.poll() is None:
            stop(p)
    assert first.returncode != 0
    assert "stopped (SIGTERM) once the scan in progress was written" in first.stderr  # rank 0, told by torchrun
    complete = [n for n in names if (out / n / "record.json").is_file()]
    assert 1 <= len(complete) < len(names), first.stderr[-3000:]
    assert all(len(r) == 1 for r in _done_lines(first.stderr).values())
    second = finish(*launch(tmp_path, args, env=env, tag="second"), LIMIT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    done = _done_lines(second.stderr)
    assert sorted(done) == [n for n in names if n not in complete] and all(len(r) == 1 for r in done.values())
    for n in complete:
        assert f"{n}: skipped (done, same input, checkpoint and settings)" in second.stderr
    doc = json.loads((out / "batch.json").read_text())
    assert [s["status"] for s in doc["scans"]] == ["skipped" if n in complete else "done" for n in names]
    assert not [q.name for q in out.iterdir() if q.name.startswith(".")]
