"""Operator speed on this machine: forward+backward time of each operator as a ratio to 'none'.

Not a test. Measures, interleaving the candidates within every repetition and taking medians:

1. each operator on dense-layer shapes (the 1x1 C -> 128 and the 3x3 128 -> 32 convolution of a
   dense layer at the spatial size of its block for a 512 input; batch 2; D = 3 and 7);
2. the whole backbone ``densenet121_3d`` on 1 x 1 x D x 256 x 256 (forward + backward);
3. A3D's fusion alone against ``x.clone()``, forward and backward separately (x a leaf that
   requires grad, the same upstream gradient for both: clone's backward is then one copy of it
   into x.grad), and the paper's einsum for reference.

Clock: by default one thread and the process's CPU time (``time.process_time``). This machine's
2 cores are shared with other jobs; with 2 OpenMP threads, wall times swing 2-5x from one
repetition to the next (a descheduled thread stalls every parallel region), which drowns the
ratios. ``--threads 2 --clock wall`` measures the other way.

Writes benchmarks/results/ops.md (``--out``). ``--quick`` runs a tiny smoke version.

    python benchmarks/bench_ops.py            # ~10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import time

import torch
from torch import nn

from a3d.io import write_text_atomic
from a3d.models import densenet121_3d
from a3d.ops import OPERATORS, a3d_fuse, a3d_fuse_reference, from_conv2d, set_thickness


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ncpu() -> int:
    import os

    return os.cpu_count() or 1


def _interleaved(cands: dict, reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """cands: name -> callable returning (fwd_s, bwd_s). Repetitions interleave the candidates."""
    times = {k: [] for k in cands}
    for r in range(warmup + reps):
        for k, f in cands.items():
            t = f()
            if r >= warmup:
                times[k].append(t)
    return times


CLOCK = time.process_time


def _fb(module_or_fn, x, g, params=()):
    def run():
        t0 = CLOCK()
        y = module_or_fn(x)
        t1 = CLOCK()
        y.backward(g)
        t2 = CLOCK()
        x.grad = None
        for p in params:
            p.grad = None
        return t1 - t0, t2 - t1

    return run


def bench_layers(shapes, slices, reps):
    rows = []
    for label, ci, co, k, s in shapes:
        for d in slices:
            torch.manual_seed(0)
            conv = nn.Conv2d(ci, co, k, padding=k // 2, bias=False)
            ops = {n: from_conv2d(n, conv, d) for n in OPERATORS}
            set_thickness(ops["alignshift"], torch.tensor([1.0, 5.0]))
            x = torch.randn(2, ci, d, s, s, requires_grad=True)
            g = torch.randn(2, co, d, s, s)
            cands = {n: _fb(m, x, g, list(m.parameters())) for n, m in ops.items()}
            t = _interleaved(cands, reps)
            tot = {n: statistics.median(a + b for a, b in v) for n, v in t.items()}
            rows.append((label, ci, co, k, s, d, tot))
            print(f"{label} C={ci} {s}x{s} D={d}: none {tot['none'] * 1e3:.1f} ms; "
                  + " ".join(f"{n} {tot[n] / tot['none']:.2f}" for n in OPERATORS), flush=True)
    return rows


def bench_backbone(slices, size, reps):
    rows = []
    for d in slices:
        models = {}
        for n in OPERATORS:
            torch.manual_seed(0)
            models[n] = densenet121_3d(n, d)
        set_thickness(models["alignshift"], torch.tensor([5.0]))
        x = torch.randn(1, 1, d, size, size)
        g = torch.randn(1, 512, size // 4, size // 4)

        def cand(m):
            def run():
                t0 = CLOCK()
                y = m(x)
                t1 = CLOCK()
                y.backward(g)
                t2 = CLOCK()
                m.zero_grad(set_to_none=True)
                return t1 - t0, t2 - t1

            return run

        t = _interleaved({n: cand(m) for n, m in models.items()}, reps)
        tot = {n: statistics.median(a + b for a, b in v) for n, v in t.items()}
        rows.append((d, tot))
        print(f"backbone D={d} {size}x{size}: none {tot['none']:.2f} s; "
              + " ".join(f"{n} {tot[n] / tot['none']:.2f}" for n in OPERATORS), flush=True)
    return rows


def bench_fusion(shapes, slices, reps):
    rows = []
    for ci, s in shapes:
        for d in slices:
            torch.manual_seed(0)
            x = torch.randn(2, ci, d, s, s, requires_grad=True)
            p = (torch.eye(d).unsqueeze(2) + 0.1 * torch.randn(d, d, ci)).requires_grad_()
            g = torch.randn_like(x)
            cands = {
                "clone": _fb(lambda v: v.clone(), x, g),
                "a3d": _fb(lambda v: a3d_fuse(v, p), x, g, [p]),
                "einsum": _fb(lambda v: a3d_fuse_reference(v, p), x, g, [p]),
            }
            t = _interleaved(cands, reps, warmup=2)
            med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v),
                       statistics.median(a + b for a, b in v)) for k, v in t.items()}
            rows.append((ci, s, d, med))
            c = med["clone"]
            print(f"fusion C={ci} {s}x{s} D={d}: clone {c[0] * 1e3:.2f}/{c[1] * 1e3:.2f} ms; a3d x"
                  f"{med['a3d'][0] / c[0]:.2f}/{med['a3d'][1] / c[1]:.2f} (total {med['a3d'][2] / c[2]:.2f}); "
                  f"einsum total x{med['einsum'][2] / c[2]:.2f}", flush=True)
    return rows


def report(layer_rows, bb_rows, fusion_rows, args, elapsed) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Operator benchmark (benchmarks/bench_ops.py)",
        "",
        f"- date: {now}; machine: {_cpu_name()} ({_ncpu()} cores, shared with other jobs); "
        f"torch {torch.__version__}; {torch.get_num_threads()} thread(s), clock: {args.clock} "
        f"({'process CPU time' if args.clock == 'cpu' else 'wall time'}); run took {elapsed / 60:.1f} min",
        "- times are medians of interleaved repetitions (forward + backward, batch 2 for layers); ratios are "
        "to `none` measured in the same run.",
        "",
        "## Operators on dense-layer shapes (forward + backward, ratio to none)",
        "",
        "| conv | C in | size | D | none (ms) | " + " | ".join(OPERATORS[1:]) + " |",
        "|---|---|---|---|---|" + "---|" * (len(OPERATORS) - 1),
    ]
    for label, ci, co, k, s, d, tot in layer_rows:
        out.append(f"| {label} {k}x{k} -> {co} | {ci} | {s}x{s} | {d} | {tot['none'] * 1e3:.1f} | "
                   + " | ".join(f"{tot[n] / tot['none']:.2f}" for n in OPERATORS[1:]) + " |")
    out += ["", f"## Whole backbone, 1 x 1 x D x {args.size} x {args.size} (forward + backward, ratio to none)", "",
            "| D | none (s) | " + " | ".join(OPERATORS[1:]) + " |", "|---|---|" + "---|" * (len(OPERATORS) - 1)]
    for d, tot in bb_rows:
        out.append(f"| {d} | {tot['none']:.2f} | " + " | ".join(f"{tot[n] / tot['none']:.2f}" for n in OPERATORS[1:]) + " |")
    out += ["", "## A3D fusion alone vs x.clone() (x leaf requiring grad, same upstream gradient)", "",
            "| C | size | D | clone fwd / bwd (ms) | A3D fwd | A3D bwd | A3D fwd+bwd | einsum fwd+bwd |",
            "|---|---|---|---|---|---|---|---|"]
    for ci, s, d, med in fusion_rows:
        c = med["clone"]
        out.append(f"| {ci} | {s}x{s} | {d} | {c[0] * 1e3:.2f} / {c[1] * 1e3:.2f} | {med['a3d'][0] / c[0]:.2f} | "
                   f"{med['a3d'][1] / c[1]:.2f} | {med['a3d'][2] / c[2]:.2f} | {med['einsum'][2] / c[2]:.2f} |")
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/ops.md")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="backbone input size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the docstring)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.quick:
        shapes = [("conv1", 128, 128, 1, 16), ("conv2", 128, 32, 3, 16)]
        fshapes = [(128, 16)]
        args.size, reps, breps = 64, 2, 2
    else:
        # (label, C in, C out, K, spatial): dense-layer convs at the block sizes of a 512 input
        shapes = [("conv1", 128, 128, 1, 128), ("conv2", 128, 32, 3, 128), ("conv1", 512, 128, 1, 64),
                  ("conv2", 128, 32, 3, 64), ("conv1", 1024, 128, 1, 32), ("conv2", 128, 32, 3, 32)]
        fshapes = [(128, 128), (128, 64), (512, 64), (1024, 32)]
        reps, breps = args.reps, max(3, args.reps - 1)
    layer_rows = bench_layers(shapes, (3, 7), reps)
    fusion_rows = bench_fusion(fshapes, (3, 7), 3 * reps)
    bb_rows = bench_backbone((3, 7), args.size, breps)
    text = report(layer_rows, bb_rows, fusion_rows, args, time.time() - t0)
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
