"""Training throughput, peak memory and inference latency of the detector: none and a3d at 3 and 7 slices.

GPU: 512 x 512, batch 2, bf16 autocast, paper heads. CPU: reduced size (default 256 x 256, batch 1,
fp32), paper heads. Each configuration runs in its own process (clean peak-memory numbers).
Writes benchmarks/results/train.md (date, machine, load average).

    python benchmarks/bench_train.py [--size N] [--batch B] [--iters K] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = [("none", 3), ("a3d", 3), ("none", 7), ("a3d", 7)]


def one(op: str, depth: int, size: int, batch: int, iters: int) -> dict:
    import torch

    from a3d.config import load_config
    from a3d.models import build_detector

    from a3d.engine.train import set_cpu_threads

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    threads = set_cpu_threads(0, dev, lambda s: None)  # auto: 1 thread when the CPUs are busy
    cfg = load_config(f"{op}_x{depth}", ["model.pretrained=none", f"data.size={size}"])
    torch.manual_seed(0)
    model = build_detector(cfg.model).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, depth, size, size, device=dev) * 50 + 50
    s = size / 512
    targets = [{"boxes": torch.tensor([[100.0, 120.0, 160.0, 170.0], [300.0, 280.0, 330.0, 320.0]], device=dev) * s,
                "labels": torch.ones(2, dtype=torch.int64, device=dev),
                "masks": torch.zeros(2, size, size, dtype=torch.uint8, device=dev),
                "thickness": torch.tensor(2.0, device=dev)} for _ in range(batch)]
    for t in targets:
        for i, b in enumerate(t["boxes"].long().tolist()):
            t["masks"][i, b[1]:b[3], b[0]:b[2]] = 1
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda)

    def step():
        with torch.autocast(**amp):
            loss = sum(model(x, thickness=[2.0] * batch, targets=targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize()
    train_s = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.eval()
    x1 = x[:1]
    with torch.no_grad(), torch.autocast(**amp):
        model(x1, thickness=[2.0])
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x1, thickness=[2.0])
        if cuda:
            torch.cuda.synchronize()
    infer_s = (time.perf_counter() - t0) / iters
    return {"operator": op, "slices": depth, "size": size, "batch": batch, "samples_per_s": batch / train_s,
            "s_per_iter": train_s, "peak_mib": peak, "infer_ms": 1000 * infer_s,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "amp": "bf16" if cuda else "fp32",
            "torch": torch.__version__, "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.md"))
    ap.add_argument("--one", nargs=2, metavar=("OP", "D"))
    a = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    size = a.size or (512 if cuda else 256)
    batch = a.batch or (2 if cuda else 1)
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), size, batch, a.iters)))
        return 0
    rows = []
    load0 = os.getloadavg()
    for op, d in CASES:
        r = subprocess.run([sys.executable, __file__, "--one", op, str(d), "--size", str(size), "--batch", str(batch),
                            "--iters", str(a.iters)], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    load1 = os.getloadavg()
    dev = rows[0]["device"]
    machine = dev if dev != "cpu" else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "# Detector training / inference benchmark",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {machine}; "
        f"torch {rows[0]['torch']}; {rows[0]['amp']}; {rows[0]['threads']} CPU thread(s); paper heads (fc 2048, 12000/2000 proposals), random init; "
        f"{size} x {size}, batch {batch}, {a.iters} timed iterations after 1 warm-up; "
        f"load average before/after {load0[0]:.1f}/{load1[0]:.1f}.",
        "",
        "| operator | slices | train samples/s | s/iteration | peak memory (MiB) | inference ms / key slice |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['operator']} | {r['slices']} | {r['samples_per_s']:.2f} | {r['s_per_iter']:.2f} | "
                     f"{r['peak_mib']:.0f} | {r['infer_ms']:.0f} |")
    lines += ["", "Peak memory: CUDA max allocated on GPU; process max RSS on CPU (includes the Python runtime).", ""]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
