"""Batches that survive (`a3d predict FOLDER`): each scan's folder written as soon as it is done,
batch.json after each scan, a rerun skipping what is done (SIGKILL half-way), redoing what changed,
progress across the batch, the next scan read while the model works on the current one."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from a3d.cli import main
from a3d.errors import A3DError
from a3d.predict import batch as B
from a3d.predict import loading
from a3d.predict.prefetch import prefetch
from predict_runner import CFG
from test_predict import standin  # noqa: F401 (the blob stand-in as the CLI's model)
from test_predict_support import BlobDetector, phantom, synthetic_nifti, write_dicom_series

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "predict_runner.py"
FAST = ["--no-html", "--no-overlays"]
VOLATILE = ("created", "seconds", "timing")  # predictions.json keys that differ between two runs of a scan


def make_batch(folder: Path, n: int = 4, slices: int = 6) -> list[str]:
    """``n`` small NIfTI scans with planted lesions (s0 ... s{n-1}); their scan names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lesions = [((40.0 - 8 * i, 10.0, -14.0 + 0.5 * i), (6.0, 6.0, 5.0))]
        synthetic_nifti(folder / f"s{i}.nii.gz", lesions=lesions, shape_zyx=(slices, 40, 48))
    return [f"s{i}" for i in range(n)]


def fake_checkpoint(tmp_path: Path, content: bytes = b"stand-in weights") -> Path:
    """A checkpoint file for the stand-in loader (which ignores it); the batch records its hash."""
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime_ns, bytes)} of every file below ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def comparable(out: Path, name: str) -> dict[str, object]:
    """A scan folder's files as they should agree between two runs (predictions.json without its
    creation time and timings)."""
    files = {}
    for rel, (_, data) in snapshot(out / name).items():
        if rel == "predictions.json":
            doc = json.loads(data)
            files[rel] = {k: v for k, v in doc.items() if k not in VOLATILE}
        else:
            files[rel] = data
    return files


def batch_doc(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())


def _done_in(out: Path) -> list[str]:
    try:
        return [s["output"] for s in batch_doc(out)["scans"] if s["status"] == "done"]
    except (OSError, ValueError):
        return []


def test_sigkill_after_two_scans_then_rerun_skips_them(tmp_path, standin, caplog):
    """A batch of 4 in a subprocess (a stand-in model sleeping 0.25 s per key slice) killed with
    SIGKILL once batch.json shows 2 scans done: the finished scans are whole on disk, the rerun of
    the same command skips them (one line each, their files untouched: same bytes and mtime) and
    does the others; the outputs equal those of an uninterrupted run. Fails on today's main, where
    the batch lives in one temporary folder (nothing is kept) and the rerun starts from scan 1."""
    names = make_batch(tmp_path / "batch")
    ckpt, out = fake_checkpoint(tmp_path), tmp_path / "out"
    argv = ["predict", str(tmp_path / "batch"), "--checkpoint", str(ckpt), "--out", str(out), *FAST]
    env = dict(os.environ, A3D_TEST_FORWARD_S="0.25", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    with open(tmp_path / "log.txt", "w") as log:
        p = subprocess.Popen([sys.executable, str(RUNNER), *argv], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 120
        while len(_done_in(out)) < 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
    done = _done_in(out)
    assert 2 <= len(done) < len(names), (done, (tmp_path / "log.txt").read_text()[-2000:])
    kept = {n: snapshot(out / n) for n in done}
    assert all("record.json" in files and "predictions.json" in files for files in kept.values())
    assert [n for n in names if (out / n).exists()] == done  # no half-written scan folder under its name
    with caplog.at_level(logging.INFO, logger="a3d.predict"):
        assert main(argv) == 0
    err = caplog.text
    for n in names:
        assert err.count(f"{n}: skipped (done, same input, checkpoint and settings)") == (n in done), err
        assert err.count(f"{n}: done,") == (n not in done), err
    for n in done:
        assert snapshot(out / n) == kept[n]
    assert [s["status"] for s in batch_doc(out)["scans"]] == ["skipped" if n in done else "done" for n in names]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the killed run's temporary folders
    ref = tmp_path / "ref"
    assert main([*argv[:-len(FAST) - 2], "--out", str(ref), *FAST]) == 0
    assert [s["candidates"] for s in batch_doc(ref)["scans"]] == [1] * len(names)  # each planted lesion found
    for n in names:
        assert comparable(out, n) == comparable(ref, n), n
    assert (out / "candidates_luna16.csv").read_bytes() == (ref / "candidates_luna16.csv").read_bytes()


def test_batch_json_and_each_scan_folder_appear_as_scans_finish(tmp_path, monkeypatch, capsys):
    """While the model runs on scan k, the folders of scans 0..k-1 are complete and batch.json lists
    them done and the rest pending; one progress line per scan gives scans done/total and an ETA."""
    names = make_batch(tmp_path / "batch", n=3)
    out = tmp_path / "out"
    seen = []

    class Watching(BlobDetector):
        def forward(self, images, thickness=None):
            doc = batch_doc(out)
            seen.append(([s["status"] for s in doc["scans"]], sorted(p.name for p in out.iterdir()
                                                                   if not p.name.startswith("."))))
            return super().forward(images, thickness)

    monkeypatch.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (Watching(), CFG))
    argv = ["predict", str(tmp_path / "batch"), "--checkpoint", str(fake_checkpoint(tmp_path)), "--out", str(out),
            "--slice", "2", *FAST]
    assert main(argv) == 0
    assert seen == [(["pending"] * 3, ["batch.json", "index.html"]),
                    (["done", "pending", "pending"], ["batch.json", "index.html", "s0"]),
                    (["done", "done", "pending"], ["batch.json", "index.html", "s0", "s1"])]
    doc = batch_doc(out)
    assert doc["complete"] and doc["counts"] == {"done": 3, "skipped": 0, "failed": 0, "pending": 0}
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("scans: ")]
    assert [ln.split(" scan ")[0] for ln in lines] == ["scans: 1/3", "scans: 2/3", "scans: 3/3"]
    assert "ETA" in lines[0] and "ETA" in lines[1] and lines[2].endswith("last=s2")
    assert names == [s["output"] for s in doc["scans"]]


def test_rerun_redoes_what_changed_and_retries_failures(tmp_path, standin, capsys, caplog):
    """Skipped while input, checkpoint and settings are the same; a touched input, new checkpoint
    weights or another --score-threshold redo (and say which changed); a failed scan is retried on
    every rerun; --overwrite redoes all; an --out holding something else is refused."""
    names = make_batch(tmp_path / "batch", n=3)
    write_dicom_series(tmp_path / "batch" / "t_mr", phantom((4, 40, 40)), modality="MR")
    ckpt, out = fake_checkpoint(tmp_path), tmp_path / "out"
    argv = ["predict", str(tmp_path / "batch"), "--checkpoint", str(ckpt), "--out", str(out), "--slice", "2", *FAST]

    def rerun(*extra) -> dict[str, str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="a3d.predict"):
            assert main([*argv, *extra]) == 2  # t_mr fails every time
        err = capsys.readouterr().err
        assert "Modality is MR" in caplog.text and "1 of 4 scans failed" in err, err
        for n, (status, reason) in ((s["output"], (s["status"], s.get("reason"))) for s in batch_doc(out)["scans"]):
            if status == "skipped":
                assert f"{n}: skipped (done, same input, checkpoint and settings)" in caplog.text
            elif reason != "no earlier output" and reason != "--overwrite" and status == "done":
                assert f"{n}: redone ({reason})" in caplog.text
        return {s["input"].rsplit("/", 1)[1].split(".")[0]: (s["status"], s.get("reason")) for s in batch_doc(out)["scans"]}

    assert rerun() == {**{n: ("done", "no earlier output") for n in names}, "t_mr": ("failed", "no earlier output")}
    same = ("skipped", "same input, checkpoint and settings")
    assert rerun() == {**{n: same for n in names}, "t_mr": ("failed", "no earlier output")}
    st = (tmp_path / "batch" / "s1.nii.gz").stat()
    os.utime(tmp_path / "batch" / "s1.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert rerun()["s1"] == ("done", "input changed")
    ckpt.write_bytes(b"stand-in WEIGHTS")  # same size: only the content tells
    got = rerun()
    assert [got[n] for n in names] == [("done", "checkpoint changed")] * 3
    got = rerun("--score-threshold", "0.6")
    assert [got[n] for n in names] == [("done", "settings changed")] * 3
    got = rerun("--score-threshold", "0.6", "--overwrite")
    assert [got[n] for n in names] == [("done", "--overwrite")] * 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    rc = main([*argv[:4], "--out", str(tmp_path / "other"), *FAST])
    assert rc == 2 and "holds no batch.json of an earlier batch" in capsys.readouterr().err
    make_batch(tmp_path / "batch2", n=1)
    rc = main(["predict", str(tmp_path / "batch2"), *argv[2:]])
    assert rc == 2 and "holds the batch of another input folder" in capsys.readouterr().err


def test_next_scan_is_read_while_the_model_works(tmp_path, monkeypatch):
    """A reader and a model that record their start and stop times: scan k+1's reading starts before
    the model is done with scan k (and the total is less than the sequential sum); a scan that
    cannot be read is reported as that scan's failure, the ones after it still done."""
    make_batch(tmp_path / "batch", n=4, slices=4)
    (tmp_path / "batch" / "s2.nii.gz").write_bytes((tmp_path / "batch" / "s2.nii.gz").read_bytes()[:500])
    events, lock = [], threading.Lock()

    def note(what, name):
        with lock:
            events.append((time.monotonic(), what, name))

    real_read = B.read_input

    def slow_read(path, read, batch_entry=False):
        name = Path(path).name.split(".")[0]
        note("read start", name)
        time.sleep(0.3)
        try:
            return real_read(path, read, batch_entry)
        finally:
            note("read end", name)

    class Timed(BlobDetector):
        def forward(self, images, thickness=None):
            time.sleep(0.1)
            return super().forward(images, thickness)

    model = Timed()
    monkeypatch.setattr(B, "read_input", slow_read)
    monkeypatch.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (model, CFG))
    real_into = B.predict_into

    def timed_into(scan, folder, *a, **kw):
        note("model start", scan.name)
        try:
            return real_into(scan, folder, *a, **kw)
        finally:
            note("model end", scan.name)

    monkeypatch.setattr(B, "predict_into", timed_into)
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "batch"), "--checkpoint", str(fake_checkpoint(tmp_path)), "--out", str(out),
               "--slices", "0:3", *FAST])
    assert rc == 2
    at = {(what, name): t for t, what, name in events}
    for k, nxt in (("s0", "s1"), ("s1", "s2")):
        assert at[("read start", nxt)] < at[("model end", k)], events  # overlap
        assert at[("model start", k)] < at[("read end", nxt)], events
    assert at[("read start", "s3")] < at[("read end", "s2")] + 0.25  # s3 read right after s2's failed read
    scans = batch_doc(out)["scans"]
    assert [s["status"] for s in scans] == ["done", "done", "failed", "done"]
    assert "s2.nii.gz" in scans[2]["error"] and not (out / "s2").exists()


def test_prefetch_holds_one_scan_ahead_and_reports_errors_in_order():
    """The prefetcher alone: item k+1 is being read while k is handed out, never k+2 (bounded
    memory); a read error comes back as that item's error, in order."""
    reading, order = [], iter(range(5))

    def read(i):
        reading.append(i)
        if i == 2:
            raise A3DError(f"item {i} unreadable")
        return i * 10

    got = []
    for item in prefetch(lambda: next(order, None), read):
        time.sleep(0.05)  # the read of item + 1 has started by now
        assert max(reading) == min(item.item + 1, 4), (item.item, reading)
        got.append((item.item, item.take(), item.error))
    assert got == [(0, 0, None), (1, 10, None), (2, None, "item 2 unreadable"), (3, 30, None), (4, 40, None)]


def test_rerun_clears_what_a_killed_run_left_half_written(tmp_path, standin):
    """A kill inside a scan's write leaves a3d.io's temporary folder (``.NAME.*.tmp``) and maybe a
    ``batch.json`` temporary file: the rerun removes them, and only them."""
    make_batch(tmp_path / "batch", n=2)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "batch"), "--checkpoint", str(fake_checkpoint(tmp_path)), "--out", str(out),
            "--slice", "2", *FAST]
    assert main(argv) == 0
    (out / ".s1.k2j3x8q1.tmp").mkdir()
    (out / ".s1.k2j3x8q1.tmp" / "predictions.json").write_text("{")
    (out / ".batch.x1y2_3w4.tmp.json").write_text("{")
    (out / ".s0.ab12cd34.old").mkdir()
    (out / "notes.txt").write_text("mine")
    (out / ".mine.tmp").write_text("not a3d's")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".mine.tmp", "batch.json", "candidates_luna16.csv", "index.html",
                                                     "notes.txt", "s0", "s1"]
    assert [s["status"] for s in batch_doc(out)["scans"]] == ["skipped", "skipped"]


def test_a_single_scan_is_refused_under_torchrun(tmp_path, standin, monkeypatch, capsys):
    path, *_ = synthetic_nifti(tmp_path / "one.nii.gz")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(tmp_path / "out")]) == 2
    assert "torchrun shares the scans of a folder of scans" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sigterm_lets_the_scan_in_progress_finish(tmp_path):
    """SIGTERM (what torchrun sends the other ranks when one dies, and `kill`) while a scan is in the
    model: that scan is still written, then the batch stops with one line saying how to go on;
    batch.json lists the rest pending. Fails if SIGTERM kills the process at once."""
    make_batch(tmp_path / "batch", n=4)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "batch"), "--checkpoint", str(fake_checkpoint(tmp_path)), "--out", str(out), *FAST]
    env = dict(os.environ, A3D_TEST_FORWARD_S="0.25", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    p = subprocess.Popen([sys.executable, str(RUNNER), *argv], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while len(_done_in(out)) < 1 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # s1 is in the model (6 key slices x 0.25 s)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("a3d predict: error:") and "stopped (SIGTERM) once the scan in progress was written" in last
    assert [s["status"] for s in batch_doc(out)["scans"]] == ["done", "done", "pending", "pending"]
    assert (out / "s1" / "record.json").is_file() and not (out / "s2").exists()
