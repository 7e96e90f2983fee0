"""Benchmark the DICOM node (``a3d serve``) against Debian's Orthanc on loopback, CPU. One command:

    python benchmarks/bench_serve.py [--slices 100] [--models tiny:CKPT a3d_x3] [--out FILE]

For each model (``CONFIG:CHECKPOINT`` a trained checkpoint, ``CONFIG`` alone a random-init detector,
``model.pretrained=none``, for timing only): a ``--slices`` x 512 x 512
series made from the real CT (``../shared/data/example_ct.nii.gz``, its middle slices upsampled, CT noise, two planted
lesions; tests/dicom_fixtures.py) is uploaded to Orthanc and routed to the node, which sends its
SEG and SR back to Orthanc. Measured:

1. last instance received (the node's queue) -> SEG and SR stored in Orthanc, split into the
   ``--stable-seconds`` wait (2 s here; 30 s by default), the job (read, model, writing) and the send;
2. the node's receive throughput (instances/s, one pynetdicom C-STORE association) of a second copy
   of the series while the job runs, against the same while the node is idle, side by side.

A random-init detector gives every box a score of 1.0 (hundreds of candidates in 100 slices: a SEG
no trained model writes), so it runs with a score threshold above 1: every key slice goes through
the model, nothing is kept, and nothing is sent (the "send" column is then empty; the trained
model's row gives the send). Results are appended to benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]
from bench_predict import append_result, machine, random_checkpoint  # noqa: E402
from dicom_fixtures import real_looking_series  # noqa: E402
from serve_support import Orthanc, c_store, free_port, series_state, wait_for  # noqa: E402

CT = REPO / ".." / "shared" / "data" / "example_ct.nii.gz"
STABLE_S = 2.0


def _series(folder: Path, slices: int, uid: str) -> list[Path]:
    import pydicom

    paths, _ = real_looking_series(CT, folder, slices=slices)
    for p in paths:  # a fresh study, series and instance UIDs per copy
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".0", uid  # a study per copy: its results alone in it
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{uid}.{ds.InstanceNumber}"
        ds.save_as(p)
    return paths


def _node(work: Path, model: str, orthanc: Orthanc, port: int):
    from a3d.config import load_config, override_config
    from a3d.predict import loading
    from a3d.predict.results import PredictSettings
    from a3d.serve.jobs import JobRunner
    from a3d.serve.node import Node, NodeConfig
    from a3d.serve.send import parse_send_to

    config, _, ckpt = model.partition(":")
    if not ckpt:
        cfg = override_config(load_config(config), ["model.pretrained=none"])
        ckpt = random_checkpoint(cfg, work.parent / f"{config}.pt")
    detector, cfg = loading.load_predictor(ckpt, "cpu")
    settings = PredictSettings(score_threshold=0.5 if ":" in model else 1.01, batch_size=1, device="cpu")
    conf = NodeConfig(work, port=port, destinations=(parse_send_to(orthanc.destination),), stable_s=STABLE_S, poll_s=0.05)
    return Node(conf, JobRunner(work, detector, cfg, settings, str(ckpt)))


def _throughput(files: list[Path], port: int) -> float:
    t0 = time.perf_counter()
    statuses = c_store(files, port, calling="BENCH")
    assert statuses == [0] * len(files), statuses
    return len(files) / (time.perf_counter() - t0)


def run_model(model: str, tmp: Path, slices: int) -> dict:
    port = free_port()
    name = model.partition(":")[0]
    orthanc = Orthanc(tmp / f"orthanc-{name}", {"a3d": ("A3D", port)}).start()
    node = _node(tmp / f"node-{name}", model, orthanc, port)
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: node.scp._server is not None, 30, what="the node")
        base = "1.2.826.0.1.3680043.8.498.4242"
        idle = _throughput(_series(tmp / "idle", slices, base + ".9"), port)
        wait_for(lambda: series_state(node.config.work_dir)[base + ".9"]["state"] in ("done", "failed"), 3600,
                 what="the idle copy's job")
        files = _series(tmp / "main", slices, base + ".1")
        assert orthanc.route(orthanc.upload(files)).ok
        uid = base + ".1"
        wait_for(lambda: series_state(node.config.work_dir).get(uid, {}).get("state") == "running", 120, what="job")
        busy = _throughput(_series(tmp / "busy", slices, base + ".2"), port)

        def ended():
            row = series_state(node.config.work_dir)[uid]
            if row["state"] == "done" and not row["candidates"]:
                return row["finished_at"]  # nothing to send
            results = [s for s in orthanc.study_series(_study(files)) if s.get("Modality") in ("SEG", "SR")]
            return time.time() if len(results) >= 2 else None

        stored = wait_for(ended, 3600, every=0.05, what="SEG and SR in Orthanc")
        row = series_state(node.config.work_dir)[uid]
        return {"total": stored - row["last_received"], "row": row, "idle": idle, "busy": busy, "stored": stored}
    finally:
        node.stop_event.set()
        thread.join(60)
        orthanc.stop()


def _study(files: list[Path]) -> str:
    import pydicom

    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--models", nargs="+", default=["tiny", "a3d_x3"], help="CONFIG (random init) or CONFIG:CHECKPOINT")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.md")
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for model in args.models:
            r = run_model(model, Path(d), args.slices)
            row = r["row"]
            job_s = row["job_seconds"]
            wait_s = row["started_at"] - row["last_received"]
            send_s = r["stored"] - row["started_at"] - job_s if row["candidates"] else float("nan")
            label = f"{model.partition(':')[0]}, " + ("trained" if ":" in model else "random init, nothing kept")
            print(f"{label}: {r['total']:.1f} s (stable wait + queue {wait_s:.1f}, job {job_s:.1f}, send {send_s:.1f}); "
                  f"{row['candidates']} candidates; receive {r['idle']:.0f}/s idle, {r['busy']:.0f}/s during a job", flush=True)
            send = f"{send_s:.1f}" if row["candidates"] else "- (nothing to send)"
            lines.append(f"| {label} | {r['total']:.1f} | {wait_s:.1f} | {job_s:.1f} | {send} | {row['candidates']} "
                         f"| {r['idle']:.0f} | {r['busy']:.0f} | {r['busy'] / r['idle']:.2f} |")
    when = dt.date.today().isoformat()
    text = (f"## {when}: {args.slices} x 512 x 512 series, CPU\n\n"
            f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end; --stable-seconds {STABLE_S:g}.\n\n"
            "| model | last instance -> SEG+SR in Orthanc (or job done), s | stable wait + queue, s | job, s | send, s "
            "| candidates | receive idle, inst/s | receive during a job, inst/s | ratio |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(lines) + "\n")
    append_result(args.out, "a3d serve: latency and receive throughput", "bench_serve.py", text)
    print(text)


if __name__ == "__main__":
    main()
