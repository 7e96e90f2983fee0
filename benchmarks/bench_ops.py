"""A3D fusion speed on CPU: the fusion against a copy, the A3D layer against `none`, the whole backbone.

Not a test. One command, ratios measured side by side in one run (candidates interleaved within
every repetition, medians), written to benchmarks/results/ops.md:

1. every dense-layer shape of the truncated DenseNet-121 backbone for a 512 x 512 input (1x1 convs
   C -> 128 with C = 64+32k at 128x128, 128+32k at 64x64, 256+32k at 32x32; the 3x3 conv 128 -> 32
   at each size), D = 3 and 7, batch 1 and 2:
   - the fusion alone (fwd+bwd) / ``x.clone()`` (fwd+bwd), x a leaf requiring grad, same upstream
     gradient (clone's backward is one copy of it into x.grad); and the fusion's marginal cost inside
     the layer, (A3D layer - none layer) / clone;
   - the A3D layer (fusion + conv) / the none layer (the conv), fwd+bwd;
   each for the current implementation and for the OLD one (a verbatim reference copy below);
2. the whole backbone ``densenet121_3d`` on 1 x 1 x D x S x S (S = 512 by default): none, A3D, A3D
   with the old fusion.

``--operators`` instead compares all seven operators (representative shapes and the backbone at
``--size``) and writes benchmarks/results/ops_operators.md.

Clock: one thread and the process's CPU time by default. The reference machine's 2 cores are shared
with other jobs; with 2 threads wall times swing 2-5x between repetitions. ``--threads 2 --clock wall``
measures the other way. Allocation matters here: tensors above glibc's 32 MB mmap threshold are
page-faulted in afresh on every allocation (set THP_MEM_ALLOC_ENABLE=1 to see that cost shrink).

    python benchmarks/bench_ops.py            # ~25 minutes on a quiet 2-core machine
    python benchmarks/bench_ops.py --quick    # a smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import time
import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from a3d.io import write_text_atomic
from a3d.models import densenet121_3d
from a3d.ops import A3D, OPERATORS, a3d_fuse, from_conv2d, set_thickness

CLOCK = time.process_time


# ---- OLD implementation (a3d before this change), verbatim, for side-by-side ratios only ------------
class _OldFuse(torch.autograd.Function):
    """OLD: batched (D x D) @ (D x H*W) matmuls over the B*C (sample, channel) pairs, no layout copies."""

    @staticmethod
    def forward(ctx, x, p):
        b, c, d = x.shape[:3]
        xm = x.reshape(b * c, d, -1)
        pt = p.permute(2, 1, 0).unsqueeze(0).expand(b, c, d, d).contiguous().view(b * c, d, d)
        ctx.save_for_backward(xm, pt)
        ctx.bcd = (b, c, d)
        return torch.bmm(pt, xm).view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        xm, pt = ctx.saved_tensors
        b, c, d = ctx.bcd
        gm = g.reshape(b * c, d, -1)
        gx = gp = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(pt.transpose(1, 2).to(gm.dtype), gm).to(xm.dtype).view(g.shape)
        if ctx.needs_input_grad[1]:
            gkd = torch.bmm(gm, xm.transpose(1, 2).to(gm.dtype)).view(b, c, d, d).sum(0)
            gp = gkd.permute(2, 1, 0).to(pt.dtype)
        return gx, gp


def old_fuse(x, p):
    return _OldFuse.apply(x, p)


def _old_a3d_forward(self, x):
    """OLD A3D.forward: the fusion node, then the none conv as a second node."""
    self._check_input(x)
    return self._plane_conv(old_fuse(x, self.P), self.weight, self.bias)


def use_old_fusion(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, A3D):
            m.forward = types.MethodType(_old_a3d_forward, m)
    return model
# ---- end of the OLD implementation ---------------------------------------------------------------


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fb(fn, x, g, params=()):
    """A candidate: one forward + backward of fn(x), returning (fwd_s, bwd_s)."""

    def run():
        t0 = CLOCK()
        y = fn(x)
        t1 = CLOCK()
        y.backward(g)
        t2 = CLOCK()
        x.grad = None
        for p in params:
            p.grad = None
        return t1 - t0, t2 - t1

    return run


def _times(cands: dict, min_reps: int, budget_s: float) -> dict[str, list[float]]:
    """Interleave the candidates after one warm-up round, rotating their order every repetition
    (A, B, C, B, C, A, ...: what ran just before changes the allocator's and the caches' state); the
    number of repetitions fills ``budget_s`` of measured time (at least ``min_reps``). fwd+bwd
    seconds of every repetition."""
    first = {k: sum(f()) for k, f in cands.items()}
    reps = max(min_reps, min(40, math.ceil(budget_s / max(1e-6, sum(first.values())))))
    names = list(cands)
    times = {k: [] for k in cands}
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            times[k].append(sum(cands[k]()))
    return times


def _medians(cands: dict, min_reps: int, budget_s: float) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in _times(cands, min_reps, budget_s).items()}


def dense_layer_shapes(quick: bool) -> list[tuple[str, int, int, int]]:
    """(label, C in, kernel, spatial) of every dense-layer conv for a 512 x 512 input."""
    if quick:
        return [("block1 conv1", 64, 1, 32), ("block1 conv2", 128, 3, 32)]
    rows = []
    for block, (c0, n, s) in enumerate(((64, 6, 128), (128, 12, 64), (256, 24, 32)), start=1):
        rows += [(f"block{block} conv1", c0 + 32 * k, 1, s) for k in range(n)]
        rows.append((f"block{block} conv2", 128, 3, s))
    return rows


def bench_shape(ci, k, s, d, b, min_reps, budget_s):
    torch.manual_seed(0)
    co = 128 if k == 1 else 32
    op = from_conv2d("a3d", nn.Conv2d(ci, co, k, padding=k // 2, bias=False), d)
    none = from_conv2d("none", nn.Conv2d(ci, co, k, padding=k // 2, bias=False), d)
    old = use_old_fusion(from_conv2d("a3d", nn.Conv2d(ci, co, k, padding=k // 2, bias=False), d))
    x = torch.randn(b, ci, d, s, s, requires_grad=True)
    p = op.P.detach().clone().requires_grad_()
    gx, gy = torch.randn_like(x), torch.randn(b, co, d, s, s)
    cands = {
        "copy": _fb(lambda v: v.clone(), x, gx),
        "fuse_old": _fb(lambda v: old_fuse(v, p), x, gx, [p]),
        "fuse_new": _fb(lambda v: a3d_fuse(v, p), x, gx, [p]),
        "none": _fb(none, x, gy, list(none.parameters())),
        "layer_old": _fb(old, x, gy, list(old.parameters())),
        "layer_new": _fb(op, x, gy, list(op.parameters())),
    }
    return _medians(cands, min_reps, budget_s)


def bench_layers(shapes, slices, batches, min_reps, budget_s):
    rows = []
    for label, ci, k, s in shapes:
        for d in slices:
            for b in batches:
                t = bench_shape(ci, k, s, d, b, min_reps, budget_s)
                rows.append((label, ci, k, s, d, b, t))
                print(f"{label} C={ci} {k}x{k} {s}x{s} D={d} B={b}: fusion/copy old {t['fuse_old'] / t['copy']:.2f} "
                      f"new {t['fuse_new'] / t['copy']:.2f}; layer/none old {t['layer_old'] / t['none']:.2f} "
                      f"new {t['layer_new'] / t['none']:.2f}", flush=True)
    return rows


def bench_backbone(slices, size, names, min_reps):
    rows = []
    for d in slices:
        models = {}
        for n in names:
            torch.manual_seed(0)
            models[n] = densenet121_3d(n.replace("-old", ""), d)
            if n.endswith("-old"):
                use_old_fusion(models[n])
        if "alignshift" in models:
            set_thickness(models["alignshift"], torch.tensor([5.0]))
        x = torch.randn(1, 1, d, size, size)
        g = torch.randn(1, 512, size // 4, size // 4)
        times = _times({n: _fb(m, x, g, tuple(m.parameters())) for n, m in models.items()}, min_reps, 0.0)
        del models
        # ratio of each repetition (candidates run back to back), then median and range: the spread
        # shows the noise of a shared machine
        ratios = {n: sorted(a / b for a, b in zip(times[n], times["none"])) for n in names}
        rows.append((d, statistics.median(times["none"]), ratios))
        print(f"backbone D={d} {size}x{size}: none {statistics.median(times['none']):.2f} s; "
              + " ".join(f"{n} {statistics.median(r):.2f}" for n, r in ratios.items() if n != "none"), flush=True)
    return rows


def bench_operators(reps):
    """All seven operators on representative dense-layer shapes (batch 2), ratio to none."""
    rows = []
    shapes = [("conv1", 128, 128, 1, 128), ("conv2", 128, 32, 3, 128), ("conv1", 512, 128, 1, 64),
              ("conv2", 128, 32, 3, 64), ("conv1", 1024, 128, 1, 32), ("conv2", 128, 32, 3, 32)]
    for label, ci, co, k, s in shapes:
        for d in (3, 7):
            torch.manual_seed(0)
            conv = nn.Conv2d(ci, co, k, padding=k // 2, bias=False)
            ops = {n: from_conv2d(n, conv, d) for n in OPERATORS}
            set_thickness(ops["alignshift"], torch.tensor([1.0, 5.0]))
            x = torch.randn(2, ci, d, s, s, requires_grad=True)
            g = torch.randn(2, co, d, s, s)
            t = _medians({n: _fb(m, x, g, list(m.parameters())) for n, m in ops.items()}, reps, 0.0)
            rows.append((f"{label} {k}x{k} -> {co}", ci, s, d, t))
            print(f"{label} C={ci} {s}x{s} D={d}: " + " ".join(f"{n} {t[n] / t['none']:.2f}" for n in OPERATORS),
                  flush=True)
    return rows


def _header(args, elapsed) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    clock = "process CPU time" if args.clock == "cpu" else "wall time"
    return [
        f"- date: {now}; machine: {_cpu_name()} ({os.cpu_count()} cores); torch {torch.__version__}; "
        f"{torch.get_num_threads()} thread(s); clock: {clock}; THP_MEM_ALLOC_ENABLE="
        f"{os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; run took {elapsed / 60:.1f} min"
        + (" (--quick: a smoke run, not a measurement)" if args.quick else ""),
        "- times are medians of interleaved repetitions (forward + backward); every ratio is between "
        "candidates measured in the same run. OLD = the implementation before this change (reference "
        "copy in bench_ops.py).",
        "",
    ]


def _summary(rows) -> list[str]:
    out = ["## Summary (worst and median over the shapes; goals: fusion/copy <= 1.3, layer/none <= 1.2)", "",
           "| conv | D | shapes | fusion/copy OLD | fusion/copy NEW | layer/none OLD | layer/none NEW | NEW layer <= 1.2 |",
           "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, int], list] = {}
    for label, _ci, _k, _s, d, _b, t in rows:
        groups.setdefault((label, d), []).append(t)
    for (label, d), ts in groups.items():
        def rng(a, b):
            r = [t[a] / t[b] for t in ts]
            return f"{max(r):.2f} (median {statistics.median(r):.2f})"
        ok = sum(t["layer_new"] / t["none"] <= 1.2 for t in ts)
        out.append(f"| {label} | {d} | {len(ts)} | {rng('fuse_old', 'copy')} | {rng('fuse_new', 'copy')} | "
                   f"{rng('layer_old', 'none')} | {rng('layer_new', 'none')} | {ok} of {len(ts)} |")
    return out + [""]


def _ratio(r: list[float]) -> str:
    return f"{statistics.median(r):.2f} ({r[0]:.2f}-{r[-1]:.2f})"


def report(layer_rows, bb_rows, args, elapsed) -> str:
    out = ["# A3D fusion benchmark (benchmarks/bench_ops.py)", ""] + _header(args, elapsed)
    out += [f"## Whole backbone, 1 x 1 x D x {args.size} x {args.size} (forward + backward)", "",
            "median ratio of the repetitions (min-max)", "",
            "| D | none (s) | A3D OLD / none | A3D NEW / none |", "|---|---|---|---|"]
    for d, t_none, r in bb_rows:
        out.append(f"| {d} | {t_none:.2f} | {_ratio(r['a3d-old'])} | {_ratio(r['a3d'])} |")
    out += [""] + _summary(layer_rows)
    out += ["## Every dense-layer shape", "",
            "fusion: the fusion alone / `x.clone()`; in layer: (A3D layer - none layer) / `x.clone()`, the "
            "fusion's marginal cost where it runs; layer: A3D layer / none layer (fusion + conv vs conv).", "",
            "| conv | C in | size | D | B | clone (ms) | fusion OLD | fusion NEW | in layer OLD | in layer NEW "
            "| none (ms) | layer OLD | layer NEW |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, ci, k, s, d, b, t in layer_rows:
        c, n = t["copy"], t["none"]
        out.append(f"| {label} {k}x{k} | {ci} | {s}x{s} | {d} | {b} | {c * 1e3:.2f} | {t['fuse_old'] / c:.2f} | "
                   f"{t['fuse_new'] / c:.2f} | {(t['layer_old'] - n) / c:.2f} | {(t['layer_new'] - n) / c:.2f} | "
                   f"{n * 1e3:.1f} | {t['layer_old'] / n:.2f} | {t['layer_new'] / n:.2f} |")
    return "\n".join(out + [""])


def report_operators(op_rows, bb_rows, args, elapsed) -> str:
    out = ["# Operator benchmark (benchmarks/bench_ops.py --operators)", ""] + _header(args, elapsed)
    out += ["## Operators on dense-layer shapes (forward + backward, batch 2, ratio to none)", "",
            "| conv | C in | size | D | none (ms) | " + " | ".join(OPERATORS[1:]) + " |",
            "|---|---|---|---|---|" + "---|" * (len(OPERATORS) - 1)]
    for label, ci, s, d, t in op_rows:
        out.append(f"| {label} | {ci} | {s}x{s} | {d} | {t['none'] * 1e3:.1f} | "
                   + " | ".join(f"{t[n] / t['none']:.2f}" for n in OPERATORS[1:]) + " |")
    out += ["", f"## Whole backbone, 1 x 1 x D x {args.size} x {args.size} (forward + backward, ratio to none)", "",
            "| D | none (s) | " + " | ".join(OPERATORS[1:]) + " |", "|---|---|" + "---|" * (len(OPERATORS) - 1)]
    for d, t_none, r in bb_rows:
        out.append(f"| {d} | {t_none:.2f} | " + " | ".join(_ratio(r[n]) for n in OPERATORS[1:]) + " |")
    return "\n".join(out + [""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="default benchmarks/results/ops.md (ops_operators.md with --operators)")
    ap.add_argument("--quick", action="store_true", help="smoke run: two small shapes, a 64 px backbone")
    ap.add_argument("--operators", action="store_true", help="compare all seven operators instead")
    ap.add_argument("--reps", type=int, default=5, help="minimum repetitions per candidate")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of measured time per shape (more reps when fast)")
    ap.add_argument("--size", type=int, default=512, help="backbone input size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the docstring)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    reps, budget = (args.reps, args.budget) if not args.quick else (2, 0.0)
    if args.quick:
        args.size = 64
    t0 = time.time()
    if args.operators:
        op_rows = bench_operators(reps)
        bb_rows = bench_backbone((3, 7), args.size, list(OPERATORS), reps)
        text = report_operators(op_rows, bb_rows, args, time.time() - t0)
        out = args.out or "benchmarks/results/ops_operators.md"
    else:
        bb_rows = bench_backbone((3, 7), args.size, ["none", "a3d", "a3d-old"], reps + 2)
        layer_rows = bench_layers(dense_layer_shapes(args.quick), (3, 7), (1, 2), reps, budget)
        text = report(layer_rows, bb_rows, args, time.time() - t0)
        out = args.out or "benchmarks/results/ops.md"
    write_text_atomic(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
