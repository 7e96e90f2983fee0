"""Benchmark a batch (``a3d predict FOLDER``): throughput of 1 process against torchrun with 2 processes on
the CPU, side by side in one run, and what reading the next scan in the background gains. One command:

    python benchmarks/bench_batch.py [--quick] [--scans N] [--rounds R] [--key-slices K] [--out FILE]

The batch: N copies of the real CT (``../shared/data/example_ct.nii.gz``) upsampled 4x in-plane to
488 x 404 x 112 voxels (23 MB gzip: the size of a clinical CT, about 2 s to read here), each with K
key slices (the middle ones) through a random-init tiny detector (64 px), so that reading and the
model take comparable time, as on a GPU with the paper detector. Variants, each run R times in
interleaved rounds into a fresh ``--out``, medians of the wall time of the whole command (process
start and model loading included):

1. ``a3d predict`` in 1 process, 1 thread (``OMP_NUM_THREADS=1``);
2. 1 process, 2 threads;
3. ``torchrun --standalone --nproc_per_node 2 -m a3d.cli predict`` (1 thread each);
4. the rerun of a finished batch (every scan skipped): the cost of resuming;
5. in this process (1 thread), :func:`a3d.predict.run_batch` with its background read-ahead against
   the same loop reading each scan only when it comes (:func:`a3d.predict.prefetch.prefetch`
   replaced by a sequential reader): the prefetch's gain.

The results are appended to benchmarks/results/batch.md (date, machine, load average).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_predict import append_result, machine, random_checkpoint  # noqa: E402

CT = REPO / ".." / "shared" / "data" / "example_ct.nii.gz"


def make_batch(folder: Path, n: int) -> None:
    """``n`` copies of the real CT upsampled 4x in-plane (``ct_01.nii.gz`` ...)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    first = folder / "ct_01.nii.gz"
    sitk.WriteImage(sitk.Expand(sitk.ReadImage(str(CT)), (4, 4, 1)), str(first), useCompression=True)
    for i in range(2, n + 1):
        shutil.copyfile(first, folder / f"ct_{i:02d}.nii.gz")


def cli_variants(batch: Path, ckpt: Path, slices: str) -> dict[str, list[str]]:
    args = [str(batch), "--checkpoint", str(ckpt), "--slices", slices, "--no-html", "--no-overlays",
            "--score-threshold", "0.9", "--device", "cpu"]
    cli = [sys.executable, "-m", "a3d.cli", "predict", *args]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "a3d.cli",
           "predict", *args]
    return {"1 process, 1 thread": cli, "1 process, 2 threads": cli, "torchrun, 2 processes x 1 thread": run}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_command(cmd: list[str], out: Path, threads: int) -> tuple[float, float]:
    """(wall s, CPU s of the command and every process under it: torchrun waits for its workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src")}
    t0, c0 = time.perf_counter(), _children_cpu()
    res = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{res.stderr[-3000:]}")
    return wall, cpu


def time_cli(batch: Path, ckpt: Path, slices: str, rounds: int, tmp: Path) -> dict[str, list[tuple[float, float]]]:
    variants = cli_variants(batch, ckpt, slices)
    threads = {"1 process, 2 threads": 2}
    walls: dict[str, list[tuple[float, float]]] = {k: [] for k in [*variants, "rerun, every scan skipped (1 process)"]}
    for r in range(rounds):
        for i, (name, cmd) in enumerate(variants.items()):
            out = tmp / f"out_{r}_{i}"
            walls[name].append(timed_command(cmd, out, threads.get(name, 1)))
            if i == 0:
                walls["rerun, every scan skipped (1 process)"].append(timed_command(cmd, out, 1))
            shutil.rmtree(out)
    return walls


def _sequential(take, read):
    """The batch loop without read-ahead: each scan read when its turn comes."""
    from a3d.errors import A3DError
    from a3d.predict.prefetch import Prefetched

    while (item := take()) is not None:
        try:
            yield Prefetched(item, read(item), None)
        except A3DError as e:
            yield Prefetched(item, None, str(e))


def time_prefetch(batch: Path, ckpt: Path, slices: str, rounds: int, tmp: Path) -> dict[str, list[float]]:
    """In this process, 1 thread: run_batch with and without the background read."""
    from a3d import predict as P
    from a3d.predict import batch as B

    key = tuple(int(v) for v in slices.split(":"))
    settings = P.PredictSettings(score_threshold=0.9, batch_size=1, device="cpu", slices=key)
    outputs = P.OutputOptions(overlays=False, html=False)
    torch.set_num_threads(1)
    real = B.prefetch
    walls: dict[str, list[float]] = {"read-ahead (default)": [], "sequential reads": []}
    for r in range(rounds):
        for name, fn in (("read-ahead (default)", real), ("sequential reads", _sequential)):
            out = tmp / f"pf_{r}_{name[:4]}"
            B.prefetch = fn
            try:
                t0 = time.perf_counter()
                B.run_batch(B.BatchJob(batch, out, str(ckpt), settings, outputs=outputs))
                walls[name].append(time.perf_counter() - t0)
            finally:
                B.prefetch = real
            shutil.rmtree(out)
    return walls


def report(walls: dict[str, list[tuple[float, float]]], prefetch: dict[str, list[float]], n: int, key_slices: int,
           rounds: int, loads: tuple[float, float]) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ref = statistics.median(w for w, _ in walls["1 process, 1 thread"])
    lines = [f"## {when}: {n} scans, {key_slices} key slices each, {rounds} rounds", "",
             f"Machine: {machine()}. Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}.",
             "Scans: the real CT upsampled to 488 x 404 x 112 (23 MB .nii.gz); random-init tiny detector at 64 px; "
             "wall time of the whole command (start, model loading, every scan), median of the rounds; CPU: user + "
             "system seconds of the command and its workers (median).", "",
             "| variant | wall s (median) | all rounds | scans/min | vs 1 process, 1 thread | CPU s |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for name, runs in walls.items():
        m, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        lines.append(f"| {name} | {m:.1f} | {', '.join(f'{w:.1f}' for w, _ in runs)} | {60 * n / m:.1f} | "
                     f"{ref / m:.2f}x | {cpu:.1f} |")
    lines += ["", "The background read (in one process, 1 thread, `run_batch` alone: no process start):", "",
              "| loop | wall s (median) | all rounds | scans/min | gain |", "| --- | ---: | --- | ---: | ---: |"]
    seq = statistics.median(prefetch["sequential reads"])
    for name, w in prefetch.items():
        m = statistics.median(w)
        lines.append(f"| {name} | {m:.1f} | {', '.join(f'{v:.1f}' for v in w)} | {60 * n / m:.1f} | {seq / m:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 scans, 1 round (a few minutes)")
    ap.add_argument("--scans", type=int, default=None, help="scans in the batch (default 8; 4 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    ap.add_argument("--key-slices", type=int, default=3, help="key slices per scan (the middle ones; default 3)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "batch.md"))
    args = ap.parse_args(argv)
    n, rounds = args.scans or (4 if args.quick else 8), args.rounds or (1 if args.quick else 3)
    if not CT.is_file():
        print(f"real CT not found: {CT}", file=sys.stderr)
        return 2
    from a3d.config import load_config, override_config

    first = 56 - args.key_slices // 2
    slices = f"{first}:{first + args.key_slices}"
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch."))
    try:
        make_batch(tmp / "batch", n)
        ckpt = random_checkpoint(override_config(load_config("tiny"), ["data.size=64"]), tmp / "tiny64.pt")
        loads = [os.getloadavg()[0]]
        walls = time_cli(tmp / "batch", ckpt, slices, rounds, tmp)
        prefetch = time_prefetch(tmp / "batch", ckpt, slices, rounds, tmp)
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(walls, prefetch, n, args.key_slices, rounds, (loads[0], loads[1]))
    print(text)
    append_result(Path(args.out), "a3d predict batch benchmark", "bench_batch.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
