"""GrabCut weak masks against the synthetic true masks: the authors' recipe (fixed window
[-1024, 2050] HU over the whole slice) and ours (each row's DICOM window, a crop around the box),
plus the two mixed recipes. Dice per lesion against ``masks_true``, and time per lesion, all
recipes on the same lesions in one run. Writes benchmarks/results/grabcut.md.

    python benchmarks/bench_grabcut.py [--patients 12] [--size 512] [--out benchmarks/results/grabcut.md]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECIPES = {  # name -> (window: None = the row's DICOM window, crop margin: None = whole slice)
    "authors (fixed window, whole slice)": ((-1024.0, 2050.0), None),
    "dicom window, crop (a3d before issue 9)": (None, 32),
    "fixed window, crop": ((-1024.0, 2050.0), 32),
    "dicom window, whole slice": (None, None),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / float(s)


def run(patients: int, size: int, seed: int) -> tuple[dict, int]:
    from a3d.data.dl_info import group_by_key_slice, read_dl_info
    from a3d.data.masks import key_slice_masks
    from a3d.data.slices import read_png_hu, slice_path
    from a3d.data.synth import generate

    root = generate(Path(tempfile.mkdtemp()) / "synth", patients=patients, seed=seed, size=size)
    groups = group_by_key_slice(read_dl_info(root / "DL_info.csv"))
    scores = {name: [] for name in RECIPES}
    seconds = {name: 0.0 for name in RECIPES}
    for g in groups:
        r0 = g[0]
        hu = read_png_hu(slice_path(root, r0.series_dir, r0.key_slice))
        with np.load(root / "masks_true" / f"{r0.image_id}.npz") as z:
            truth = z["masks"].astype(bool)
        boxes, recists = np.stack([r.box for r in g]), np.stack([r.recist for r in g])
        for name, (window, crop) in RECIPES.items():
            wins = [window or r.window for r in g]
            t0 = time.perf_counter()
            masks = key_slice_masks(hu, boxes, recists, wins, crop_margin=crop).astype(bool)
            seconds[name] += time.perf_counter() - t0
            scores[name] += [dice(m, t) for m, t in zip(masks, truth)]
    n = len(scores[next(iter(RECIPES))])
    return {k: (np.array(v), seconds[k] / n) for k, v in scores.items()}, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "grabcut.md"))
    args = ap.parse_args(argv)
    res, n = run(args.patients, args.size, args.seed)
    lines = [
        "# GrabCut recipes against the synthetic true masks",
        "",
        f"{datetime.date.today()}: `python benchmarks/bench_grabcut.py --patients {args.patients} --size "
        f"{args.size} --seed {args.seed}`; {n} lesions of `a3d data synth` ({args.size} px), Dice of each "
        "recipe's mask with `masks_true`; all recipes on the same lesions in one run (one process; "
        "the machine was shared, so read the times as ratios).",
        "",
        "| recipe | mean Dice | median | 10th percentile | ms per lesion |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (d, sec) in res.items():
        lines.append(f"| {name} | {d.mean():.3f} | {np.median(d):.3f} | {np.percentile(d, 10):.3f} | {1000 * sec:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
