"""Benchmark: vectorised DeepLesion FROC against a per-prediction loop, plus the bootstrap CI.

    python benchmarks/bench_froc.py [--images 5000] [--per-image 50] [--bootstrap 1000] [--out benchmarks/results/froc.md]

Synthetic detections shaped like DeepLesion's test split (~1.02 lesions per key slice, at most 50
detections per image, the best of them near a lesion). The loop is the authors' style of algorithm
(one prediction at a time, IoU against its image's boxes, a hit flag per box); both must agree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from a3d.evaluation import ImagePredictions, bootstrap_ci, evaluate_predictions, froc, sensitivity_at
from a3d.evaluation.groundtruth import GroundTruth, ImageGroundTruth
from a3d.io import write_text_atomic


def make_case(n_img: int, per_image: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gts, pbs, pss = [], [], []
    for _ in range(n_img):
        g = 1 + (rng.random() < 0.02)
        xy = rng.uniform(50, 400, size=(g, 2))
        gb = np.concatenate([xy, xy + rng.uniform(10, 80, size=(g, 2))], axis=1)
        gts.append(gb)
        near = gb[rng.integers(g, size=per_image // 5)] + rng.normal(0, 4, size=(per_image // 5, 4))
        p = rng.uniform(0, 480, size=(per_image - len(near), 2))
        far = np.concatenate([p, p + rng.uniform(8, 60, size=p.shape)], axis=1)
        b = np.concatenate([near, far])
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
        s = np.concatenate([rng.uniform(0.3, 1.0, len(near)), rng.uniform(0.0, 0.9, len(far))])
        pbs.append(b)
        pss.append(s)
    return pbs, pss, gts


def loop_froc(pbs, pss, gts, fps, th=0.5):
    """The plain algorithm: sort, then one prediction at a time."""
    img = np.concatenate([[i] * len(s) for i, s in enumerate(pss)]).astype(int)
    boxes = np.concatenate(pbs)
    order = np.argsort(-np.concatenate(pss), kind="stable")
    hit = [np.zeros(len(g), bool) for g in gts]
    n_hit = n_fp = 0
    tp, fp = [], []
    for k in order:
        b, g = boxes[k], gts[img[k]]
        iw = np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0]) + 1
        ih = np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1]) + 1
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        iou = inter / ((b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1) - inter)
        if len(iou) == 0 or iou.max() < th:
            n_fp += 1
        else:
            new = (iou >= th) & ~hit[img[k]]
            n_hit += int(new.sum())
            hit[img[k]] |= new
        tp.append(n_hit)
        fp.append(n_fp)
    n_gt = sum(len(g) for g in gts)
    return sensitivity_at(np.array(fp) / len(gts), np.array(tp) / n_gt, fps)


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "froc.md"))
    args = ap.parse_args(argv)
    fps = (0.5, 1, 2, 4, 8, 16)
    pbs, pss, gts = make_case(args.images, args.per_image)
    t_vec, r = best_of(lambda: froc(pbs, pss, gts, fps), 3)
    t_loop, s_loop = best_of(lambda: loop_froc(pbs, pss, gts, fps), 1)
    assert np.allclose(r.sensitivities, s_loop), (r.sensitivities, s_loop)
    t_boot, ci = best_of(lambda: bootstrap_ci(r.classification, fps, args.bootstrap, seed=0), 1)
    n_pred = sum(len(s) for s in pss)
    # the whole metrics dict: overall FROC, CI, 2 interval + 3 diameter + 9 type subsets
    rng = np.random.default_rng(1)
    gt = GroundTruth([
        ImageGroundTruth(f"img{i}", g, rng.choice([-1, 1, 2, 3, 4, 5, 6, 7, 8], len(g)), rng.uniform(3, 60, len(g)),
                         float(rng.choice([0.625, 1.25, 2.5, 5.0])))
        for i, g in enumerate(gts)
    ])
    preds = [ImagePredictions(f"img{i}", b, s) for i, (b, s) in enumerate(zip(pbs, pss))]
    t_eval, _ = best_of(lambda: evaluate_predictions(preds, gt, n_bootstrap=args.bootstrap), 1)
    try:
        import os

        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    lines = [
        "# FROC benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {cores} cores usable; Python {platform.python_version()}, numpy {np.__version__}",
        f"- case: {args.images} images x {args.per_image} predictions = {n_pred} predictions, {r.n_lesions} lesions (synthetic, seed 0)",
        f"- command: `python benchmarks/bench_froc.py --images {args.images} --per-image {args.per_image} --bootstrap {args.bootstrap}`",
        "",
        "| what | time (s) |",
        "|---|---|",
        f"| `froc` vectorised (best of 3) | {t_vec:.3f} |",
        f"| per-prediction loop (1 run) | {t_loop:.3f} |",
        f"| speed-up | {t_loop / t_vec:.1f}x |",
        f"| `bootstrap_ci`, {args.bootstrap} resamples | {t_boot:.3f} |",
        f"| `evaluate_predictions` (FROC + CI + 14 subsets) | {t_eval:.3f} |",
        "",
        "Sensitivities (%) at " + ", ".join(f"{f:g}" for f in fps) + ": "
        + ", ".join(f"{100 * s:.2f}" for s in r.sensitivities)
        + f"; Avg. {100 * r.average:.2f} (95% CI {100 * ci['average'][0]:.2f}-{100 * ci['average'][1]:.2f}). "
        "The loop gives the same numbers.",
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
