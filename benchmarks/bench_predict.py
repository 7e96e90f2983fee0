"""Benchmark ``a3d predict`` on a whole 112-slice CT at 512 x 512 (random-init A3D x7 detector).

    python benchmarks/bench_predict.py [--device cpu|cuda] [--model-slices N] [--config a3d_x7]
        [--scan ../shared/data/example_ct.nii.gz] [--out benchmarks/results/predict.md]

The scan (122 x 101 x 112 voxels, 3 mm) is fitted into the model's 512 x 512 input by the predict
pipeline itself (square pixels of max(FOV)/512 mm). Timing is split in two:

1. the pipeline without the network (reading, orientation, 2 mm context building, in-plane fit,
   post-processing, writing JSON/CSV/overlays/HTML/NIfTI) over all 112 key slices, with a null
   detector that returns a fixed set of detections;
2. the detector's forward on ``--model-slices`` key slices (default: 4 on CPU, all on GPU), after one
   warm-up batch; on CPU the whole-volume model time is extrapolated linearly (stated in the output).

Results are appended to benchmarks/results/predict.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class NullDetector(torch.nn.Module):
    """Returns two fixed detections per key slice (post-processing is exercised, no network)."""

    def forward(self, images, thickness=None):
        b, _, _, h, w = images.shape
        out = []
        for _ in range(b):
            boxes = torch.tensor([[h * 0.4, w * 0.4, h * 0.5, w * 0.5], [h * 0.6, w * 0.3, h * 0.7, w * 0.36]])
            masks = torch.zeros((2, h, w), dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            out.append({"boxes": boxes, "scores": torch.tensor([0.9, 0.6]), "labels": torch.ones(2, dtype=torch.int64), "masks": masks})
        return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)}"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", default=str(REPO / ".." / "shared" / "data" / "example_ct.nii.gz"))
    ap.add_argument("--config", default="a3d_x7")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--model-slices", type=int, default=None, help="key slices timed through the network (default 4 on CPU, all on GPU)")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict.md"))
    args = ap.parse_args(argv)

    from a3d import predict as P
    from a3d.config import load_config, override_config
    from a3d.data.scans import read_scan
    from a3d.models.detector import build_detector

    if not Path(args.scan).is_file():
        print(f"scan not found: {args.scan}", file=sys.stderr)
        return 2
    cfg = override_config(load_config(args.config), ["model.pretrained=none"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict."))
    try:
        # 1. pipeline without the network, whole volume
        t0 = time.perf_counter()
        scan = read_scan(args.scan)
        t_read = time.perf_counter() - t0
        n = scan.shape[0]
        settings = P.PredictSettings(batch_size=args.batch_size, device="cpu")
        t0 = time.perf_counter()
        res = P.predict_scan(scan, NullDetector(), cfg, settings)
        t_pipe = time.perf_counter() - t0
        t0 = time.perf_counter()
        P.write_outputs(res, tmp / "out", P.OutputOptions(nifti_labels=True))
        t_write = time.perf_counter() - t0

        # 2. the network
        torch.manual_seed(0)
        model = build_detector(cfg.model, pretrained=False).to(args.device).eval()
        k = args.model_slices or (n if args.device.startswith("cuda") else 4)
        k = min(k, n)
        mid = n // 2
        start = max(0, mid - k // 2)
        P.predict_scan(scan, model, cfg, P.PredictSettings(batch_size=args.batch_size, device=args.device, amp=args.amp,
                                                           slices=(start, start + min(args.batch_size, k))))  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        load_before = os.getloadavg()
        c0 = time.process_time()
        t0 = time.perf_counter()
        P.predict_scan(scan, model, cfg, P.PredictSettings(batch_size=args.batch_size, device=args.device, amp=args.amp,
                                                           slices=(start, start + k), score_threshold=0.05))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_model_k = time.perf_counter() - t0
        cpu_model_k = time.process_time() - c0
        load_after = os.getloadavg()
        per_slice = t_model_k / k
        t_model = per_slice * n
        total = t_read + t_pipe + t_write + t_model
        extrap = k < n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {when}: {args.config}, {args.device}{' AMP' if args.amp else ''}, batch {args.batch_size}",
        "",
        f"Machine: {machine()}.",
        f"Scan: {Path(args.scan).name}, {scan.shape[2]} x {scan.shape[1]} x {n} voxels, spacing {scan.spacing} mm, "
        f"fitted to {cfg.data.size} x {cfg.data.size}, {cfg.model.slices} context slices at "
        f"{cfg.data.context_spacing_mm:g} mm; random-init weights.",
        "",
        "| part | seconds |",
        "| --- | ---: |",
        f"| read + orient | {t_read:.2f} |",
        f"| context building, fit, post-processing, {n} key slices (null detector) | {t_pipe:.2f} |",
        f"| write JSON/CSV/{len({d.z for d in res.detections})} overlays/HTML/NIfTI | {t_write:.2f} |",
        f"| detector forward, {k} key slices{' (measured)' if extrap else ''} | {t_model_k:.2f} |",
        f"| detector per key slice | {per_slice:.3f} |",
        f"| detector CPU time per key slice (all threads of this process) | {cpu_model_k / k:.3f} |",
        f"| detector, all {n} slices{' (extrapolated linearly from ' + str(k) + ')' if extrap else ''} | {t_model:.1f} |",
        f"| **whole volume{', extrapolated' if extrap else ''}** | **{total:.1f}** |",
        "",
        f"Load average (1 min) before/after the timed forward passes: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores; with other jobs running, wall time is inflated: CPU time / threads "
        f"({cpu_model_k / k / torch.get_num_threads():.2f} s per key slice here) approximates an unshared machine.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    header = "# a3d predict benchmark\n\nWhole-volume inference time (`benchmarks/bench_predict.py`).\n\n"
    old = out.read_text() if out.is_file() else header
    from a3d.io import write_text_atomic

    write_text_atomic(out, old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
