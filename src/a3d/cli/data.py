"""``a3d data``: synthetic data, GrabCut weak masks and the slice cache for a DeepLesion-format folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from a3d.data.cache import build_cache
from a3d.data.masks import build_masks
from a3d.data.synth import generate
from a3d.errors import A3DError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare DeepLesion-format data (synth, masks, cache)",
                              description=__doc__)
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    s = sub.add_parser("synth", help="write a synthetic DeepLesion-format dataset")
    s.add_argument("out", type=Path, help="output folder (DL_info.csv, Images_png/, masks_true/)")
    s.add_argument("--patients", type=int, default=20, help="number of patients (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    s.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    s.set_defaults(func=_synth)

    m = sub.add_parser("masks", help="GrabCut weak lesion masks for every key slice (resumable)")
    m.add_argument("root", type=Path, help="folder with DL_info.csv and Images_png/")
    m.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    m.add_argument("--out", default="masks", help="mask folder under ROOT (default masks)")
    m.add_argument("--window", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="fixed HU window for the 8-bit image (default: each row's DICOM_windows)")
    m.add_argument("--force", action="store_true", help="recompute existing mask files")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=_masks)

    c = sub.add_parser("cache", help="convert each series folder into one memory-mappable volume (resumable)")
    c.add_argument("root", type=Path, help="folder with Images_png/")
    c.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    c.add_argument("--force", action="store_true", help="rebuild existing cache entries")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_cache)


def _synth(args: argparse.Namespace) -> int:
    t = time.perf_counter()
    generate(args.out, patients=args.patients, seed=args.seed, size=args.size, progress=True)
    print(f"wrote {args.out} ({args.patients} patients, {args.size} px) in {time.perf_counter() - t:.1f} s")
    return 0


def _masks(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise A3DError(f"--workers must be >= 1, got {args.workers}")
    done, skipped = build_masks(args.root, workers=args.workers, out_dir=args.out, window=args.window,
                                force=args.force, progress=not args.no_progress)
    print(f"masks: {done} key slices written, {skipped} already present, in {args.root / args.out}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise A3DError(f"--workers must be >= 1, got {args.workers}")
    done, skipped = build_cache(args.root, workers=args.workers, force=args.force,
                                progress=not args.no_progress)
    print(f"cache: {done} series written, {skipped} already present, in {args.root / 'cache'}")
    return 0
