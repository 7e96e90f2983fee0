"""Benchmark ``a3d predict``: the speed of each precision/speed lever side by side, the pipeline's time
split, and bf16-vs-fp32 parity of the detections on a trained model. One command:

    python benchmarks/bench_predict.py [--quick] [--device cpu|cuda] [--threads N] [--repeats R]
        [--batch-size B] [--compile] [--checkpoint TINY_CKPT | --train-seconds S] [--out FILE]

1. Levers: the paper detector (``a3d_x7``, random init, 512 x 512) on B key slices of the real CT
   (``../shared/data/example_ct.nii.gz``, 112 slices of 3 mm), each variant timed R times in
   interleaved rounds (A, B, C, A, B, C, ...), medians of wall and CPU (process) time per key slice,
   ratios against fp32. ``--compile`` adds torch.compile / torch.jit.freeze of the backbone.
2. Pipeline: ``a3d predict`` (:func:`a3d.predict.predict_input`, default precision) with a saved
   random-init paper checkpoint over ``--pipeline-slices`` key slices: predictions.json's ``timing``.
3. Parity: a trained tiny checkpoint (``--checkpoint``; else the tiny preset trained for
   ``--train-seconds`` on synthetic data) over synthetic series and the real CT, fp32 vs the default
   precision: detections with score >= 0.5 matched on the same slice with box IoU > 0.9 and score
   within 0.02, both ways.

The results are appended to benchmarks/results/predict.md (date, machine, torch, threads, load).
Random-init weights: the timings do not depend on the weights' values; the parity needs a trained model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO / ".." / "shared" / "data" / "example_ct.nii.gz"


def machine() -> str:
    """CPU model (lscpu), cores, torch version and threads, GPU name when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    s = f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)}"
    return s


def append_result(out: Path, title: str, script: str, text: str) -> None:
    """``text`` appended to the results file ``out`` (created with its header), atomically."""
    from a3d.io import write_text_atomic

    header = f"# {title}\n\nWritten by `benchmarks/{script}` (see its docstring); newest last.\n"
    old = out.read_text() if out.is_file() else header
    write_text_atomic(out, old.rstrip("\n") + "\n\n" + text)


def random_checkpoint(cfg, path: Path) -> Path:
    """A random-init detector for ``cfg`` saved as an ``a3d train`` checkpoint (for timing only)."""
    from a3d.config import config_to_dict
    from a3d.engine.checkpoint import model_state, save_checkpoint
    from a3d.models.detector import build_detector

    torch.manual_seed(0)
    model = build_detector(cfg.model, pretrained=False)
    return save_checkpoint(path, {"config": config_to_dict(cfg), "model": model_state(model), "epoch": 0, "iteration": 0})


# ------------------------------------------------------------------------------------ 1. levers


def _low_precision_copy(model, dtype):
    """The detector with backbone and RoI-head weights stored in ``dtype`` (BatchNorm kept float32:
    oneDNN normalises bf16 inputs with float32 statistics; the RPN stays float32, as the detector runs it)."""
    m = copy.deepcopy(model)
    m.backbone.to(dtype)
    m.roi_heads.to(dtype)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.float()
    return m


def _channels_last_copy(model):
    m = copy.deepcopy(model)
    for p in m.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return m


def _forward(model, x, th, context: Callable):
    with context():
        out = model(x, thickness=th)
    if x.is_cuda:
        torch.cuda.synchronize()
    return out


QUICK_LEVERS = ("fp32", "autocast only", "(default)", "weights cast")


def lever_variants(model, x, th, device: str, compile_: bool, quick: bool) -> dict[str, tuple[Callable, str]]:
    """name -> (one forward pass of the batch, what it is). The first is the fp32 reference; ``quick``
    keeps the precision levers only."""
    from a3d.predict.precision import precision_context, resolve_precision

    low = resolve_precision("auto", device)
    low = "bf16" if low == "fp32" else low  # the low precision this device would run
    dt_low = {"bf16": torch.bfloat16, "fp16": torch.float16}[low]
    kind = torch.device(device).type
    ctx = lambda m, p: (lambda: precision_context(m, p, kind))  # noqa: E731
    cl = _channels_last_copy(model)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    cast = _low_precision_copy(model, dt_low)
    v = {
        "fp32": (lambda: _forward(model, x, th, ctx(model, "fp32")), "float32 reference, torch.inference_mode"),
        "fp32 no_grad": (lambda: _forward(model, x, th, torch.no_grad), "torch.no_grad instead of inference_mode"),
        "fp32 channels-last": (lambda: _forward(cl, x_cl, th, ctx(cl, "fp32")), "channels-last 3D weights and input"),
        f"{low} autocast only": (lambda: _forward(model, x, th, lambda: _autocast_only(kind, dt_low)),
                                 "autocast alone (the former --amp): CPU pools run float32"),
        f"{low} (default)": (lambda: _forward(model, x, th, ctx(model, low)), "autocast + pools keep the low dtype: what a3d predict runs"),
        f"{low} + weights cast": (lambda: _forward(cast, x, th, ctx(cast, low)), "weights stored in the low dtype (BN, RPN float32)"),
        f"{low} + channels-last": (lambda: _forward(cl, x_cl, th, ctx(cl, low)), "channels-last 3D on top of the default"),
    }
    if quick:
        v = {k: r for k, r in v.items() if any(k == q or k.endswith(q) for q in QUICK_LEVERS)}
    if compile_:
        v.update(_compiled_variants(model, x, th, kind, low, ctx))
    return v


@contextlib.contextmanager
def _autocast_only(kind: str, dtype: torch.dtype):
    with torch.inference_mode(), torch.autocast(device_type=kind, dtype=dtype):
        yield


def _compiled_variants(model, x, th, kind, low, ctx) -> dict:
    """torch.compile and jit.trace + freeze of the backbone (the rest eager); the one-off compile time
    is printed and noted. A variant that fails on this torch is reported and left out."""
    out = {}
    for name, make in (("torch.compile", lambda bb: torch.compile(bb)),
                       ("jit.freeze", lambda bb: torch.jit.freeze(torch.jit.trace(bb, x, check_trace=False)))):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        try:
            with ctx(m, low)():
                m.backbone = make(m.backbone)
                m(x, thickness=th)  # compiles
        except Exception as e:  # any failure of the optional compilers: report, keep going
            print(f"{name}: not available here ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=sys.stderr)
            continue
        secs = time.perf_counter() - t0
        out[f"{low} + {name}"] = (lambda m=m: _forward(m, x, th, ctx(m, low)), f"backbone compiled once ({secs:.0f} s, not counted)")
    return out


def time_levers(variants: dict, n_slices: int, repeats: int) -> dict[str, dict]:
    """Interleaved rounds; per variant the median wall and CPU seconds per key slice."""
    for run, _ in variants.values():  # warm-up (oneDNN primitive caches, allocator)
        run()
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    for r in range(repeats):
        for k, (run, _) in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            wall[k].append((time.perf_counter() - t0) / n_slices)
            cpu[k].append((time.process_time() - c0) / n_slices)
        print(f"round {r + 1}/{repeats}: " + ", ".join(f"{k} {wall[k][-1]:.2f}" for k in variants), file=sys.stderr, flush=True)
    return {k: {"wall": float(np.median(wall[k])), "cpu": float(np.median(cpu[k])), "what": variants[k][1]} for k in variants}


def time_batching(model, cfg, scan, device: str, batch: int, repeats: int) -> dict[int, tuple[float, float]]:
    """Median (wall, CPU) seconds per key slice of the default precision at batch 1 and ``batch``."""
    from a3d import predict as P

    keys = _middle_keys(scan, batch)
    b = P.ContextBuilder(scan, cfg)
    images = np.stack([b.build(k) for k in keys])
    runs = {1: lambda: [P.run_model(model, images[i : i + 1], scan.spacing[2], device, "auto") for i in range(batch)],
            batch: lambda: P.run_model(model, images, scan.spacing[2], device, "auto")}
    res = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            res[k].append(((time.perf_counter() - t0) / batch, (time.process_time() - c0) / batch))
    return {k: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v]))) for k, v in res.items()}


def _middle_keys(scan, n: int) -> list[int]:
    mid = scan.hu.shape[0] // 2
    return list(range(mid - n // 2, mid - n // 2 + n))


# ------------------------------------------------------------------------------------ 2. pipeline


def time_pipeline(cfg, scan_path: Path, device: str, n_slices: int | None, tmp: Path) -> dict:
    """predictions.json's timing of one ``a3d predict`` run (default precision) on ``n_slices`` key
    slices in the middle of the scan (all when None)."""
    from a3d import predict as P
    from a3d.data.scans import read_scan

    ckpt = random_checkpoint(cfg, tmp / "paper.pt")
    n = read_scan(scan_path).hu.shape[0]
    sl = None if n_slices is None or n_slices >= n else (n // 2 - n_slices // 2, n // 2 - n_slices // 2 + n_slices)
    settings = P.PredictSettings(device=device, slices=sl, score_threshold=0.5)
    P.predict_input(scan_path, ckpt, tmp / "pred", settings, overwrite=True)
    doc = json.loads((tmp / "pred" / "predictions.json").read_text())
    return {"timing": doc["timing"], "slices": doc["processed_slices"]["count"], "n": n,
            "precision": doc["model"]["precision"]}


# ------------------------------------------------------------------------------------ 3. parity


def trained_tiny(checkpoint: str | None, train_seconds: float, tmp: Path) -> tuple[Path, Path, str]:
    """(tiny checkpoint, synthetic data root, how it was obtained); trains one when none is given."""
    from a3d.config import load_config, override_config
    from a3d.data.synth import generate
    from a3d.engine.train import train

    data = tmp / "synth"
    generate(data, patients=24, seed=1, size=128)
    if checkpoint:
        return Path(checkpoint), data, f"checkpoint {checkpoint}"
    cfg = override_config(load_config("tiny"), [f"data.root={data}", "train.device=cpu", "train.epochs=40",
                                                "train.lr_steps=[30, 36]", "train.val_every=1000"])
    res = train(cfg, tmp / "tiny_run", progress=False, time_budget_s=train_seconds, log=lambda s: None)
    return (res.last_checkpoint or tmp / "tiny_run" / "last.pt"), data, (
        f"tiny preset trained {res.iterations} iterations ({train_seconds:.0f} s budget) on 24 synthetic patients")


def _matches(ref: list, other: list, threshold: float = 0.5, iou: float = 0.9, score: float = 0.02) -> tuple[int, int, float, float]:
    """(ref detections >= threshold, how many have an ``other`` detection on the same slice with box
    IoU > iou and score within ``score``, the smallest best IoU, the largest score difference of the
    best-IoU partners); ``other`` is searched down to threshold - score."""
    from a3d.boxes import box_iou

    n = ok = 0
    worst_iou, worst_ds = 1.0, 0.0
    for d in (d for d in ref if d.score >= threshold):
        n += 1
        same = [e for e in other if e.z == d.z and e.score >= threshold - score]
        if not same:
            worst_iou, worst_ds = 0.0, max(worst_ds, d.score)
            continue
        ious = box_iou(d.box[None], np.stack([e.box for e in same]))[0]
        j = int(np.argmax(ious))
        worst_iou, worst_ds = min(worst_iou, float(ious[j])), max(worst_ds, abs(d.score - same[j].score))
        ok += any(v > iou and abs(d.score - e.score) < score for v, e in zip(ious, same))
    return n, ok, worst_iou, worst_ds


def parity(checkpoint: Path, data: Path, scan_path: Path, device: str, n_series: int) -> list[dict]:
    """fp32 vs the default precision over ``n_series`` synthetic series and the real CT."""
    from a3d import predict as P
    from a3d.data.scans import read_scan

    model, cfg = P.load_predictor(checkpoint, device)
    scans = [(s.name, read_scan(s, dl_info=data / "DL_info.csv")) for s in sorted((data / "Images_png").iterdir())[:n_series]]
    scans.append((scan_path.name, read_scan(scan_path)))
    rows = []
    for name, scan in scans:
        runs = {}
        for p in ("fp32", "auto"):
            res = P.predict_scan(scan, model, cfg, P.PredictSettings(device=device, precision=p, score_threshold=0.4))
            runs[p] = (res.detections, res.timing["model"] / max(1, len(res.processed)), res.precision)
        a, b = runs["fp32"][0], runs["auto"][0]
        n1, ok1, iou1, ds1 = _matches(a, b)
        n2, ok2, iou2, ds2 = _matches(b, a)
        rows.append({"scan": name, "slices": scan.hu.shape[0], "precision": runs["auto"][2], "n_fp32": n1, "n_low": n2,
                     "matched": f"{ok1}/{n1}, {ok2}/{n2}", "min_iou": min(iou1, iou2), "max_dscore": max(ds1, ds2),
                     "same_slices": {d.z for d in a if d.score >= 0.5} == {d.z for d in b if d.score >= 0.5},
                     "speedup": runs["fp32"][1] / max(1e-9, runs["auto"][1])})
    return rows


# ------------------------------------------------------------------------------------ report


def report(args, levers: dict, batching: dict, pipe: dict, par: list[dict], par_source: str, loads: tuple) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ref = levers["fp32"]
    lines = [
        f"## {when}: {args.config}, {args.device}, batch {args.batch_size}{' (--quick)' if args.quick else ''}",
        "",
        f"Machine: {machine()}. Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}.",
        f"Scan: {Path(args.scan).name}; model input {args.batch_size} key slices from the middle of the scan, "
        f"random-init weights; {args.repeats} interleaved rounds, medians per key slice.",
        "",
        "| variant | wall s / key slice | CPU s / key slice | speed-up vs fp32 (wall) | (CPU) | what |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for k, r in levers.items():
        lines.append(f"| {k} | {r['wall']:.2f} | {r['cpu']:.2f} | {ref['wall'] / r['wall']:.2f}x | "
                     f"{ref['cpu'] / r['cpu']:.2f}x | {r['what']} |")
    if batching:
        (b1, (w1, c1)), (bn, (wn, cn)) = sorted(batching.items())
        lines += ["", f"Batching (default precision), per key slice: batch {b1} {w1:.2f} s wall / {c1:.2f} s CPU, "
                      f"batch {bn} {wn:.2f} / {cn:.2f} (speed-up {w1 / wn:.2f}x wall, {c1 / cn:.2f}x CPU)."]
    t = pipe["timing"]
    per = t["model"] / max(1, pipe["slices"])
    lines += ["", f"Pipeline (`a3d predict`, precision {pipe['precision']}, {pipe['slices']} of {pipe['n']} key slices): "
                  f"read {t['read']:.2f} s, processing {t['processing']:.2f} s, model {t['model']:.2f} s "
                  f"({per:.2f} s per key slice), write {t['write']:.2f} s, total {t['total']:.2f} s; "
                  f"whole volume about {t['read'] + (t['processing'] + t['model']) * pipe['n'] / max(1, pipe['slices']) + t['write']:.0f} s."]
    lines += ["", f"Parity, fp32 vs default precision ({par_source}); detections with score >= 0.5, matched on the "
                  "same slice with box IoU > 0.9 and |score difference| < 0.02, fp32 -> default and default -> fp32:", "",
              "| scan | slices | precision | detections fp32 / default | matched | same slices | min IoU | max score diff | model speed-up |",
              "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in par:
        lines.append(f"| {r['scan']} | {r['slices']} | {r['precision']} | {r['n_fp32']} / {r['n_low']} | {r['matched']} | "
                     f"{'yes' if r['same_slices'] else 'NO'} | {r['min_iou']:.3f} | {r['max_dscore']:.4f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="precision levers only, 2 rounds, batch 1, fewer slices, "
                    "short training: minutes on a quiet 2-core machine")
    ap.add_argument("--scan", default=str(SCAN))
    ap.add_argument("--config", default="a3d_x7")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--batch-size", type=int, default=None, help="key slices per forward in the lever table (default 2; 1 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; 2 with --quick)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile / jit.freeze of the backbone")
    ap.add_argument("--pipeline-slices", type=int, default=None, help="key slices of the a3d predict run (default 4 on CPU, all on GPU)")
    ap.add_argument("--checkpoint", help="trained tiny checkpoint for the parity (default: train one)")
    ap.add_argument("--train-seconds", type=float, default=None, help="training budget of that model (default 900; 240 with --quick)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict.md"))
    args = ap.parse_args(argv)
    q = args.quick
    args.batch_size = args.batch_size or (1 if q else 2)
    args.repeats = args.repeats or (2 if q else 5)
    gpu = args.device.startswith("cuda")
    n_pipe = args.pipeline_slices or (None if gpu else (2 if q else 4))
    train_s = args.train_seconds or (240.0 if q else 900.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.scan).is_file():
        print(f"scan not found: {args.scan}", file=sys.stderr)
        return 2

    from a3d import predict as P
    from a3d.config import load_config, override_config
    from a3d.data.scans import read_scan
    from a3d.models.detector import build_detector

    cfg = override_config(load_config(args.config), ["model.pretrained=none"])
    scan = read_scan(args.scan)
    torch.manual_seed(0)
    model = build_detector(cfg.model, pretrained=False).to(args.device).eval()
    b = P.ContextBuilder(scan, cfg)
    x = torch.from_numpy(np.stack([b.build(k) for k in _middle_keys(scan, args.batch_size)])).unsqueeze(1).to(args.device)
    th = torch.full((args.batch_size,), float(scan.spacing[2]), device=args.device)
    loads = [os.getloadavg()[0]]
    levers = time_levers(lever_variants(model, x, th, args.device, args.compile, q), args.batch_size, args.repeats)
    batching = {} if q else time_batching(model, cfg, scan, args.device, 4, max(2, args.repeats // 2))
    del model
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict."))
    try:
        pipe = time_pipeline(cfg, Path(args.scan), args.device, n_pipe, tmp)
        ckpt, data, source = trained_tiny(args.checkpoint, train_s, tmp)
        par = parity(ckpt, data, Path(args.scan), args.device, 2 if q else 6)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    text = report(args, levers, batching, pipe, par, source, tuple(loads))
    print(text)
    append_result(Path(args.out), "a3d predict benchmark", "bench_predict.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
