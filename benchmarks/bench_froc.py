"""Benchmark: vectorised DeepLesion FROC against a per-prediction loop, plus the bootstrap CI;
``--case volume``: the LUNA16 volume-level FROC (``a3d eval3d``) against the official script's loop.

    python benchmarks/bench_froc.py [--images 5000] [--per-image 50] [--bootstrap 1000] [--out benchmarks/results/froc.md]
    python benchmarks/bench_froc.py --case volume [--scans 888] [--per-scan 100] [--bootstrap 1000]
                                    [--out benchmarks/results/froc3d.md]

Synthetic detections shaped like DeepLesion's test split (~1.02 lesions per key slice, at most 50
detections per image, the best of them near a lesion). The loop is the authors' style of algorithm
(one prediction at a time, IoU against its image's boxes, a hit flag per box); both must agree.
The volume case is shaped like LUNA16 (888 scans, ~1.34 nodules of 3-30 mm per scan, 100
candidates per scan, some near the nodules); its loop is the official script's algorithm (per
scan, per nodule, per candidate, then one curve point per distinct probability).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from a3d.evaluation import (
    LUNA16_FPS,
    Candidates,
    Findings,
    ImagePredictions,
    bootstrap_ci,
    evaluate_predictions,
    froc,
    froc3d,
    froc3d_ci,
    read_candidates,
    sensitivity_at,
)
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


def make_volume_case(n_scans: int, per_scan: int, seed: int = 0):
    """(scans, nodule rows, candidate rows): rows are (seriesuid, x, y, z, diameter or probability)."""
    rng = np.random.default_rng(seed)
    scans = [f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{i:012d}" for i in range(n_scans)]
    nodules, cands = [], []
    for s in scans:
        mine = [(s, *map(float, rng.uniform(-150, 150, 3)), float(rng.uniform(3, 30))) for _ in range(rng.poisson(1.34))]
        nodules += mine
        for k in range(per_scan):
            if mine and k < 3 * len(mine):
                n = mine[k % len(mine)]
                xyz = np.array(n[1:4]) + rng.normal(0, n[4] / 4, 3)
                cands.append((s, *map(float, xyz), float(rng.uniform(0.3, 1.0))))
            else:
                cands.append((s, *map(float, rng.uniform(-150, 150, 3)), float(rng.uniform(0.0, 0.9))))
    return scans, nodules, cands


def loop_froc3d(scans, nodules, cands, fps):
    """The official script's algorithm in plain Python (no excluded findings, no cap)."""
    gt, prob = [], []
    for s in scans:
        mine = [c for c in cands if c[0] == s]
        left = set(range(len(mine)))
        for n in (n for n in nodules if n[0] == s):
            r2 = (n[4] / 2.0) ** 2
            hits = [k for k, c in enumerate(mine) if (n[1] - c[1]) ** 2 + (n[2] - c[2]) ** 2 + (n[3] - c[3]) ** 2 < r2]
            left -= set(hits)
            if hits:
                gt.append(1)
                prob.append(max(mine[k][4] for k in hits))
        gt += [0] * len(left)
        prob += [mine[k][4] for k in left]
    xs, ys, tp, fp = [0.0], [0.0], 0, 0
    order = sorted(range(len(prob)), key=lambda i: -prob[i])
    for j, i in enumerate(order):
        tp, fp = tp + gt[i], fp + 1 - gt[i]
        if j + 1 == len(order) or prob[order[j + 1]] != prob[i]:  # one point per distinct probability
            xs.append(fp / len(scans))
            ys.append(tp / len(nodules))
    return np.interp(fps, xs, ys)


def main_volume(args) -> int:
    scans, nodules, cands = make_volume_case(args.scans, args.per_scan)
    ann = Findings([n[0] for n in nodules], [n[1:4] for n in nodules], [n[4] for n in nodules])
    cand = Candidates([c[0] for c in cands], [c[1:4] for c in cands], [c[4] for c in cands])
    t_vec, r = best_of(lambda: froc3d(ann, cand, scans, max_per_scan=None), 3)
    t_loop, s_loop = best_of(lambda: loop_froc3d(scans, nodules, cands, LUNA16_FPS), 1)
    assert np.allclose(r.sensitivity, s_loop), (r.sensitivity, s_loop)
    t_boot, ci = best_of(lambda: froc3d_ci(r, args.bootstrap, seed=0), 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidates.csv"
        path.write_text("seriesuid,coordX,coordY,coordZ,probability\n" + "".join(f"{c[0]},{c[1]!r},{c[2]!r},{c[3]!r},{c[4]!r}\n" for c in cands))
        t_read, _ = best_of(lambda: read_candidates(path), 1)
    lines = _header("LUNA16 volume-level FROC benchmark", [
        f"- case: {args.scans} scans, {len(nodules)} nodules, {len(cands)} candidates (synthetic, seed 0)",
        f"- command: `python benchmarks/bench_froc.py --case volume --scans {args.scans} --per-scan {args.per_scan} "
        f"--bootstrap {args.bootstrap}`",
    ]) + [
        "| what | time (s) |",
        "|---|---|",
        f"| `froc3d` (best of 3) | {t_vec:.3f} |",
        f"| the official script's loop in plain Python (1 run) | {t_loop:.3f} |",
        f"| speed-up | {t_loop / t_vec:.1f}x |",
        f"| `froc3d_ci`, {args.bootstrap} resamples of the scans | {t_boot:.3f} |",
        f"| `read_candidates`, {len(cands)} rows | {t_read:.3f} |",
        "",
        "Sensitivities (%) at " + ", ".join(f"{f:g}" for f in LUNA16_FPS) + ": "
        + ", ".join(f"{100 * s:.2f}" for s in r.sensitivity)
        + f"; CPM {100 * r.cpm:.2f} (95% CI {100 * ci['cpm'][0]:.2f}-{100 * ci['cpm'][1]:.2f}). The loop gives the same numbers.",
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(args.out or Path(__file__).parent / "results" / "froc3d.md", text)
    print(text)
    return 0


def _header(title: str, case_lines: list[str]) -> list[str]:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return [
        f"# {title}",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {cores} cores usable; Python {platform.python_version()}, numpy {np.__version__}",
        *case_lines,
        "",
    ]


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
    ap.add_argument("--case", choices=("image", "volume"), default="image",
                    help="image: the DeepLesion FROC (default); volume: the LUNA16 FROC of a3d eval3d")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=50)
    ap.add_argument("--scans", type=int, default=888, help="volume case: scans (LUNA16: 888)")
    ap.add_argument("--per-scan", type=int, default=100, help="volume case: candidates per scan")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", help="results file (default benchmarks/results/froc.md, or froc3d.md for --case volume)")
    args = ap.parse_args(argv)
    if args.case == "volume":
        return main_volume(args)
    args.out = args.out or str(Path(__file__).parent / "results" / "froc.md")
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
    lines = _header("FROC benchmark", [
        f"- case: {args.images} images x {args.per_image} predictions = {n_pred} predictions, {r.n_lesions} lesions (synthetic, seed 0)",
        f"- command: `python benchmarks/bench_froc.py --images {args.images} --per-image {args.per_image} --bootstrap {args.bootstrap}`",
    ]) + [
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
