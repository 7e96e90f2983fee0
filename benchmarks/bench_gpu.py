"""The GPU benchmark behind ``benchmarks/gpu.sh``: training throughput, whole-volume prediction and the
A3D fusion, with a time cap per stage, written to OUT_DIR/gpu.md and OUT_DIR/gpu.json.

    python benchmarks/bench_gpu.py OUT_DIR [--dry] [--device cuda|cpu]

1. train: samples/s and peak memory of a training step (SGD, the detector's losses) for operators
   none / a3d / alignshift at 3 and 7 slices, 512 px, batch 4, bf16 autocast and fp32 (goals on an
   H200: A3D x7 >= 150 samples/s, A3D / none <= 1.05).
2. predict: ``a3d predict`` (default precision) on the 112-slice real CT with a random-init A3D x7
   checkpoint, after a warm-up run (goal: < 1 s per volume on an H200): predictions.json's timing.
3. fusion: the A3D layer (:func:`a3d.ops.from_conv2d`) minus the plain 'none' layer, against a copy
   of its input, forward + backward, on the dense-layer shapes of the backbone at D = 3 and 7.

``--dry`` (or A3D_BENCH_DRY=1): tiny sizes on the CPU, a few seconds, so that the test suite runs it
(tests/test_bench_gpu_dry.py) and it cannot rot. Nothing is downloaded; random-init weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO / ".." / "shared" / "data" / "example_ct.nii.gz"
if not SCAN.is_file():  # on the GPU machine ../shared does not travel: benchmarks/gpu_prepare.sh copies it
    SCAN = REPO / ".gpu" / "example_ct.nii.gz"
GOALS = {"a3d_x7_samples_per_s": 150.0, "a3d_over_none": 1.05, "predict_volume_s": 1.0}


@dataclass(frozen=True)
class Plan:
    """Sizes and time caps (seconds) of one run."""

    size: int = 512
    batch: int = 4
    iters: int = 20
    warmup: int = 3
    operators: tuple[str, ...] = ("none", "a3d", "alignshift")
    slices: tuple[int, ...] = (3, 7)
    precisions: tuple[str, ...] = ("bf16", "fp32")
    train_cap: float = 240.0
    predict_cap: float = 120.0
    fusion_cap: float = 60.0
    predict_slices: int | None = None  # None: the whole volume
    config_overrides: tuple[str, ...] = ()
    fusion_scale: int = 1  # spatial divisor of the fusion shapes
    fusion_iters: int = 20


DRY = Plan(size=32, batch=1, iters=1, warmup=1, slices=(3,), train_cap=60.0, predict_cap=60.0, fusion_cap=20.0, predict_slices=2,
           config_overrides=("model.fc_width=32", "model.rpn_channels=16", "model.mask_channels=8", "model.mask_convs=1",
                             "model.rpn_pre_nms_train=50", "model.rpn_post_nms_train=20", "model.rpn_pre_nms_test=50",
                             "model.rpn_post_nms_test=10", "model.roi_batch_per_image=16", "model.detections=10"),
           fusion_scale=16, fusion_iters=2)


@dataclass
class Clock:
    """A stage's time cap: ``left()`` seconds remain; cases that do not start in time are listed."""

    cap: float
    t0: float = field(default_factory=time.perf_counter)
    skipped: list = field(default_factory=list)

    def left(self) -> float:
        return self.cap - (time.perf_counter() - self.t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def environment(device: torch.device, missing: list[str]) -> dict:
    import torchvision

    import a3d

    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cuda": torch.version.cuda, "a3d": a3d.__version__,
            "python": platform.python_version(), "missing_modules": missing}


# ------------------------------------------------------------------------------------ 1. train


def _batch(plan: Plan, depth: int, device: torch.device) -> tuple[torch.Tensor, list[dict]]:
    """Random CT-like inputs (B, 1, D, S, S) and two boxes with masks per image."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(plan.batch, 1, depth, plan.size, plan.size, generator=g) * 255 - 50).to(device)
    s = plan.size / 512
    targets = []
    for _ in range(plan.batch):
        boxes = torch.tensor([[100.0, 120.0, 160.0, 170.0], [300.0, 280.0, 340.0, 330.0]]) * s
        masks = torch.zeros(2, plan.size, plan.size, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.ones(2, dtype=torch.int64, device=device),
                        "masks": masks.to(device)})
    return x, targets


def train_case(plan: Plan, op: str, depth: int, precision: str, device: torch.device) -> dict:
    """One configuration: samples/s over ``plan.iters`` steps after ``plan.warmup``, peak memory."""
    from a3d.config import load_config
    from a3d.models import build_detector

    cfg = load_config(f"{op}_x{depth}", ["model.pretrained=none", f"data.size={plan.size}", *plan.config_overrides])
    torch.manual_seed(0)
    model = build_detector(cfg.model).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x, targets = _batch(plan, depth, device)
    th = torch.full((plan.batch,), 2.0, device=device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step():
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "fp32"):
            loss = sum(model(x, thickness=th, targets=targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _peak_reset(device)
    for _ in range(plan.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(plan.iters):
        step()
    _sync(device)
    secs = (time.perf_counter() - t0) / plan.iters
    return {"operator": op, "slices": depth, "precision": precision, "size": plan.size, "batch": plan.batch,
            "samples_per_s": plan.batch / secs, "s_per_iter": secs, "peak_mib": _peak_mib(device)}


def stage_train(plan: Plan, device: torch.device) -> dict:
    clock = Clock(plan.train_cap)
    rows = []
    for precision in plan.precisions:
        for depth in sorted(plan.slices, reverse=True):  # x7 first: the goals are about it
            for op in ("a3d", *[o for o in plan.operators if o != "a3d"]):
                name = f"{op} x{depth} {precision}"
                if clock.left() <= 0:
                    clock.skipped.append(name)
                    continue
                try:
                    rows.append(train_case(plan, op, depth, precision, device))
                except torch.cuda.OutOfMemoryError:
                    rows.append({"operator": op, "slices": depth, "precision": precision, "error": "out of memory"})
                print(f"train {name}: {rows[-1].get('samples_per_s', 0):.1f} samples/s", file=sys.stderr, flush=True)
    return {"rows": rows, "skipped": clock.skipped, "seconds": plan.train_cap - clock.left()}


# ------------------------------------------------------------------------------------ 2. predict


def stage_predict(plan: Plan, device: torch.device, scan: Path, tmp: Path) -> dict:
    """A warm-up run, then the timed run: ``a3d predict`` as the command line runs it (JSON + CSV only)."""
    from a3d import predict as P
    from a3d.config import load_config
    from bench_predict import random_checkpoint

    if not scan.is_file():
        return {"error": f"scan not found: {scan}"}
    cfg = load_config("a3d_x7", ["model.pretrained=none", f"data.size={plan.size}", *plan.config_overrides])
    ckpt = random_checkpoint(cfg, tmp / "a3d_x7.pt")
    outputs = P.OutputOptions(overlays=False, html=False)
    runs = []
    clock = Clock(plan.predict_cap)
    for name, slices in (("warm-up", (50, 52)), ("timed", None if plan.predict_slices is None else (50, 50 + plan.predict_slices))):
        if clock.left() <= 0:
            clock.skipped.append(name)
            continue
        settings = P.PredictSettings(device=str(device), slices=slices)
        t0 = time.perf_counter()
        P.predict_input(scan, ckpt, tmp / name, settings, outputs=outputs, overwrite=True)
        doc = json.loads((tmp / name / "predictions.json").read_text())
        runs.append({"run": name, "wall_s": time.perf_counter() - t0, "slices": doc["processed_slices"]["count"],
                     "precision": doc["model"]["precision"], "detections": len(doc["detections"]), "timing": doc["timing"]})
    return {"runs": runs, "skipped": clock.skipped}


# ------------------------------------------------------------------------------------ 3. fusion

# (C_in, C_out, kernel, spatial at 512 px input) of the backbone's dense-layer convs: the first and
# last 1x1 bottleneck of each block and the 3x3 growth conv.
DENSE_SHAPES = [(64, 128, 1, 128), (224, 128, 1, 128), (128, 32, 3, 128), (128, 128, 1, 64), (480, 128, 1, 64),
                (128, 32, 3, 64), (256, 128, 1, 32), (992, 128, 1, 32), (128, 32, 3, 32)]


def _fwd_bwd_s(fn, x: torch.Tensor, iters: int, device: torch.device) -> float:
    for _ in range(2):
        fn(x).sum().backward()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x).sum().backward()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def fusion_case(plan: Plan, ci: int, co: int, k: int, hw: int, depth: int, device: torch.device) -> dict:
    """A3D layer, 'none' layer and a copy of the input, forward + backward, batch ``plan.batch``."""
    from a3d.ops import from_conv2d

    hw = max(4, hw // plan.fusion_scale)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(ci, co, k, padding=k // 2, bias=False)
    a3d_layer = from_conv2d("a3d", conv, depth).to(device)
    none_layer = from_conv2d("none", conv, depth).to(device)
    x = torch.randn(plan.batch, ci, depth, hw, hw, device=device, requires_grad=True)
    t_copy = _fwd_bwd_s(lambda t: t.clone(), x, plan.fusion_iters, device)
    t_a3d = _fwd_bwd_s(a3d_layer, x, plan.fusion_iters, device)
    t_none = _fwd_bwd_s(none_layer, x, plan.fusion_iters, device)
    return {"shape": f"{ci}->{co} k{k} {hw}x{hw}", "slices": depth, "copy_ms": 1e3 * t_copy, "a3d_ms": 1e3 * t_a3d,
            "none_ms": 1e3 * t_none, "fusion_over_copy": (t_a3d - t_none) / t_copy, "a3d_over_none": t_a3d / t_none}


def stage_fusion(plan: Plan, device: torch.device) -> dict:
    clock = Clock(plan.fusion_cap)
    rows = []
    for depth in plan.slices:
        for ci, co, k, hw in DENSE_SHAPES:
            if clock.left() <= 0:
                clock.skipped.append(f"{ci}->{co} k{k} D{depth}")
                continue
            rows.append(fusion_case(plan, ci, co, k, hw, depth, device))
    return {"rows": rows, "skipped": clock.skipped}


# ------------------------------------------------------------------------------------ report


def _train_lines(train: dict) -> list[str]:
    rows = [r for r in train["rows"] if "error" not in r]
    lines = ["## Training (SGD step, detector losses)", "",
             "| operator | slices | precision | samples/s | s/iter | peak MiB | / none (time) |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    base = {(r["slices"], r["precision"]): r["s_per_iter"] for r in rows if r["operator"] == "none"}
    for r in sorted(rows, key=lambda r: (r["precision"], r["slices"], r["operator"])):
        rel = base.get((r["slices"], r["precision"]))
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        ratio = "" if rel is None else f"{r['s_per_iter'] / rel:.3f}"
        lines.append(f"| {r['operator']} | {r['slices']} | {r['precision']} | {r['samples_per_s']:.1f} | {r['s_per_iter']:.4f} | "
                     f"{peak} | {ratio} |")
    lines += [f"| {r['operator']} | {r['slices']} | {r['precision']} | {r['error']} | | | |" for r in train["rows"] if "error" in r]
    return lines + _skipped(train)


def _predict_lines(pred: dict) -> list[str]:
    lines = ["## Whole-volume `a3d predict` (A3D x7, random init, JSON + CSV outputs)", ""]
    if "error" in pred:
        return lines + [f"Not run: {pred['error']}."]
    lines += ["| run | key slices | precision | detections | read s | processing s | model s | write s | total s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in pred["runs"]:
        t = r["timing"]
        lines.append(f"| {r['run']} | {r['slices']} | {r['precision']} | {r['detections']} | {t['read']:.3f} | "
                     f"{t['processing']:.3f} | {t['model']:.3f} | {t['write']:.3f} | {t['total']:.3f} |")
    return lines + _skipped(pred)


def _fusion_lines(fusion: dict) -> list[str]:
    lines = ["## A3D fusion vs a copy of its input (forward + backward)", "",
             "| shape | slices | copy ms | none ms | a3d ms | (a3d - none) / copy | a3d / none |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in fusion["rows"]:
        lines.append(f"| {r['shape']} | {r['slices']} | {r['copy_ms']:.3f} | {r['none_ms']:.3f} | {r['a3d_ms']:.3f} | "
                     f"{r['fusion_over_copy']:.2f} | {r['a3d_over_none']:.3f} |")
    return lines + _skipped(fusion)


def _skipped(stage: dict) -> list[str]:
    return ["", f"Skipped at the stage's time cap: {', '.join(stage['skipped'])}."] if stage.get("skipped") else []


def goals(result: dict) -> dict:
    """The issue's goals, each True / False / None (not measured)."""
    rows = {(r["operator"], r["slices"], r["precision"]): r for r in result["train"]["rows"] if "error" not in r}
    a3d7, none7 = rows.get(("a3d", 7, "bf16")), rows.get(("none", 7, "bf16"))
    timed = [r for r in result["predict"].get("runs", []) if r["run"] == "timed"]
    return {
        "a3d_x7_bf16_samples_per_s >= 150": None if a3d7 is None else a3d7["samples_per_s"] >= GOALS["a3d_x7_samples_per_s"],
        "a3d / none <= 1.05 (x7 bf16)": None if not (a3d7 and none7) else a3d7["s_per_iter"] / none7["s_per_iter"] <= GOALS["a3d_over_none"],
        "predict whole volume < 1 s (processing + model)": None if not timed or result["plan"]["predict_slices"] is not None
        else timed[0]["timing"]["processing"] + timed[0]["timing"]["model"] < GOALS["predict_volume_s"],
    }


def markdown(result: dict) -> str:
    e = result["env"]
    head = [f"# GPU benchmark, {e['date']}", "",
            f"Device: {e['gpu'] or e['device']} ({e['cpu']}); torch {e['torch']}, torchvision {e['torchvision']}, CUDA {e['cuda']}, "
            f"a3d {e['a3d']}, Python {e['python']}.{' DRY RUN (tiny sizes): not figures.' if result['dry'] else ''}",
            f"Plan: {result['plan']['size']} px, batch {result['plan']['batch']}, {result['plan']['iters']} timed iterations after "
            f"{result['plan']['warmup']} warm-up; {result['seconds']:.0f} s in all.", "",
            "Goals: " + "; ".join(f"{k}: {'n/a' if v is None else ('yes' if v else 'NO')}" for k, v in result["goals"].items()) + ".", ""]
    if e["missing_modules"]:
        head += [f"Missing Python modules (stages needing them were skipped): {', '.join(e['missing_modules'])}.", ""]
    return "\n".join(head + _train_lines(result["train"]) + [""] + _predict_lines(result["predict"]) + [""]
                     + _fusion_lines(result["fusion"])) + "\n"


def _missing_modules() -> list[str]:
    import importlib.util

    return [m for m in ("torchvision", "numpy", "cv2", "SimpleITK", "pydicom") if importlib.util.find_spec(m) is None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (gpu.md, gpu.json)")
    ap.add_argument("--dry", action="store_true", default=os.environ.get("A3D_BENCH_DRY") == "1",
                    help="tiny sizes on the CPU (seconds): checks that the benchmark runs")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry")
    ap.add_argument("--scan", default=str(SCAN))
    args = ap.parse_args(argv)
    plan = DRY if args.dry else Plan()
    device = torch.device(args.device or ("cpu" if args.dry else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run with --dry for the CPU check", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.dry:
        torch.set_num_threads(1)  # tiny ops: a second thread only waits at barriers (and on a busy machine, spins)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = _missing_modules()
    result = {"dry": args.dry, "plan": plan.__dict__, "env": environment(device, missing)}
    result["train"] = stage_train(plan, device)
    with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
        result["predict"] = ({"error": f"missing {', '.join(missing)}"} if missing
                             else stage_predict(plan, device, Path(args.scan), Path(tmp)))
    result["fusion"] = stage_fusion(plan, device)
    result["seconds"] = time.perf_counter() - t0
    result["goals"] = goals(result)
    from a3d.io import write_text_atomic

    write_text_atomic(out / "gpu.json", json.dumps(result, indent=1, default=str) + "\n")
    write_text_atomic(out / "gpu.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
