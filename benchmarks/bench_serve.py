"""Benchmark the DICOM node (``a3d serve``) against Debian's Orthanc on loopback, CPU. One command:

    python benchmarks/bench_serve.py [--slices 100] [--configs tiny a3d_x3] [--score-threshold T] [--out FILE]

For each model config (random init, ``model.pretrained=none``; timing only): a ``--slices`` x 512 x 512
series made from the real CT (``../shared/data/example_ct_sm.nii.gz`` upsampled, CT noise, two planted
lesions; tests/dicom_fixtures.py) is uploaded to Orthanc and routed to the node, which sends its
SEG and SR back to Orthanc. Measured:

1. last instance received (the node's queue) -> SEG and SR stored in Orthanc, split into the
   ``--stable-seconds`` wait (2 s here; 30 s by default), the job (read, model, writing) and the send;
2. the node's receive throughput (instances/s, one pynetdicom C-STORE association) of a second copy
   of the series while the job runs, against the same while the node is idle, side by side.

Random-init detectors score near 0.5, so ``--score-threshold`` (default 0.3) keeps some candidates:
without a candidate there is no SEG/SR to send. Results are appended to benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
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

CT = REPO / ".." / "shared" / "data" / "example_ct_sm.nii.gz"
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


def _node(work: Path, config: str, orthanc: Orthanc, port: int, threshold: float):
    from a3d.config import load_config, override_config
    from a3d.predict import loading
    from a3d.predict.results import PredictSettings
    from a3d.serve.jobs import JobRunner
    from a3d.serve.node import Node, NodeConfig
    from a3d.serve.send import parse_send_to

    cfg = override_config(load_config(config), ["model.pretrained=none"])
    ckpt = random_checkpoint(cfg, work.parent / f"{config}.pt")
    model, cfg = loading.load_predictor(ckpt, "cpu")
    settings = PredictSettings(score_threshold=threshold, batch_size=1, device="cpu")
    conf = NodeConfig(work, port=port, destinations=(parse_send_to(orthanc.destination),), stable_s=STABLE_S, poll_s=0.05)
    return Node(conf, JobRunner(work, model, cfg, settings, str(ckpt)))


def _throughput(files: list[Path], port: int) -> float:
    t0 = time.perf_counter()
    statuses = c_store(files, port, calling="BENCH")
    assert statuses == [0] * len(files), statuses
    return len(files) / (time.perf_counter() - t0)


def run_config(config: str, tmp: Path, slices: int, threshold: float) -> dict:
    port = free_port()
    orthanc = Orthanc(tmp / f"orthanc-{config}", {"a3d": ("A3D", port)}).start()
    node = _node(tmp / f"node-{config}", config, orthanc, port, threshold)
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
        wait_for(lambda: len([s for s in orthanc.study_series(_study(files))
                              if s.get("Modality") in ("SEG", "SR")]) >= 2, 3600, every=0.05, what="SEG and SR in Orthanc")
        stored = time.time()
        row = series_state(node.config.work_dir)[uid]
        return {"config": config, "total": stored - row["last_received"], "row": row, "idle": idle, "busy": busy, "stored": stored}
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
    ap.add_argument("--configs", nargs="+", default=["tiny", "a3d_x3"])
    ap.add_argument("--score-threshold", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.md")
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for config in args.configs:
            r = run_config(config, Path(d), args.slices, args.score_threshold)
            row = r["row"]
            job_s = row["job_seconds"]
            wait_s = row["started_at"] - row["last_received"]
            send_s = r["stored"] - row["started_at"] - job_s
            print(f"{config}: {r['total']:.1f} s (stable wait + queue {wait_s:.1f}, job {job_s:.1f}, send {send_s:.1f}); "
                  f"{row['candidates']} candidates; receive {r['idle']:.0f}/s idle, {r['busy']:.0f}/s during a job", flush=True)
            lines.append(f"| {config} | {r['total']:.1f} | {wait_s:.1f} | {job_s:.1f} | {send_s:.1f} | {row['candidates']} "
                         f"| {r['idle']:.0f} | {r['busy']:.0f} | {r['busy'] / r['idle']:.2f} |")
    when = dt.date.today().isoformat()
    text = (f"## {when}: {args.slices} x 512 x 512 series, CPU, --score-threshold {args.score_threshold}\n\n"
            f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end; --stable-seconds {STABLE_S:g}.\n\n"
            "| model (random init) | last instance -> SEG+SR in Orthanc, s | stable wait + queue, s | job, s | send, s "
            "| candidates | receive idle, inst/s | receive during a job, inst/s | ratio |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(lines) + "\n")
    append_result(args.out, "a3d serve: latency and receive throughput", "bench_serve.py", text)
    print(text)


if __name__ == "__main__":
    main()
