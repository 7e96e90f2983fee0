"""``a3d data``: synthetic data, GrabCut weak masks, the slice cache, and importing labelled volumes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from a3d.data.cache import build_cache
from a3d.data.importer import ImportOptions, import_volumes
from a3d.data.importer.series import DEFAULT_CONTEXT_MM
from a3d.data.masks import build_masks
from a3d.data.synth import generate
from a3d.data.synth.nifti import generate_nifti
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

    n = sub.add_parser("synth-nifti", help="write synthetic labelled NIfTI volumes (MSD layout: imagesTr/, labelsTr/)")
    n.add_argument("out", type=Path, help="output folder (imagesTr/, labelsTr/, dataset.json)")
    n.add_argument("--cases", type=int, default=12, help="number of volumes (default 12)")
    n.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    n.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    n.add_argument("--orientation", default="RAS", help="storage orientation code (default RAS, as most NIfTI)")
    n.set_defaults(func=_synth_nifti)

    _add_import(sub)

    m = sub.add_parser("masks", help="GrabCut weak lesion masks for every key slice (resumable)")
    m.add_argument("root", type=Path, help="folder with DL_info.csv and Images_png/")
    m.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    m.add_argument("--out", default="masks", help="mask folder under ROOT (default masks)")
    m.add_argument("--recipe", choices=("authors", "dicom"), default="authors",
                   help="authors (default): fixed window -1024..2050 HU over the whole slice, as the paper; "
                        "dicom: each row's DICOM_windows on a crop around the box (about 10x faster)")
    m.add_argument("--window", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="fixed HU window for the 8-bit image, replacing the recipe's")
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


def _add_import(sub) -> None:
    i = sub.add_parser("import", help="labelled volumes (NIfTI, NRRD, MetaImage, DICOM + a label volume) -> a "
                       "DeepLesion-format root",
                       description="Import labelled CT volumes as a DeepLesion-format root (docs/data.md). SRC: "
                       "imagesTr/ + labelsTr/ (MSD, optional dataset.json), images/ + labels/ (equal names), or "
                       "pairs X.nii.gz + X_seg.nii.gz (or _label, _labels, _mask; X.seg.nrrd). Volume files: "
                       ".nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, in any mix.")
    i.add_argument("src", type=Path, help="folder of image/label pairs")
    i.add_argument("--out", type=Path, required=True, help="DeepLesion-format root to write (resumable)")
    i.add_argument("--labels", default=None, help="lesion label values, e.g. 1,2 (default: every non-zero value)")
    i.add_argument("--min-size", type=float, default=0.0, metavar="MM3",
                   help="drop lesions (connected components) smaller than this volume in mm^3 (default 0)")
    i.add_argument("--context-mm", type=float, default=DEFAULT_CONTEXT_MM,
                   help=f"slices written on each side of a key slice, in mm (default {DEFAULT_CONTEXT_MM:g})")
    i.add_argument("--all-slices", action="store_true", help="write every slice of every volume")
    i.add_argument("--seed", type=int, default=0, help="seed of the 70/15/15 patient split (default 0)")
    i.add_argument("--split", default=None, metavar="FILE", help="CSV case,split (train/val/test) naming every case")
    i.add_argument("--strict", action="store_true", help="stop at the first bad case (exit 2) instead of skipping it")
    i.set_defaults(func=_import)


def _parse_labels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise A3DError(f"--labels {text!r}: expected positive integer label values separated by commas, e.g. 1,2")
    return values


def _import_progress(done: int, total: int, case: str, status: str) -> None:
    line = f"import {done}/{total} {case}: {status}"
    if sys.stderr.isatty() and not status.startswith("skipped"):
        print(f"\r{line[:110]:<110}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    else:  # logs: one line per volume
        print(("\n" if sys.stderr.isatty() else "") + line, file=sys.stderr, flush=True)


def _import(args: argparse.Namespace) -> int:
    if args.min_size < 0:
        raise A3DError(f"--min-size must be >= 0 mm^3, got {args.min_size}")
    if not args.context_mm > 0:
        raise A3DError(f"--context-mm must be > 0, got {args.context_mm}")
    opts = ImportOptions(labels=_parse_labels(args.labels), min_size_mm3=args.min_size,
                         context_mm=None if args.all_slices else args.context_mm, seed=args.seed,
                         split_file=args.split, strict=args.strict)
    s = import_volumes(args.src, args.out, opts, progress=_import_progress)
    for note in s.notes:
        print(f"a3d data import: warning: {note}", file=sys.stderr)
    split = ", ".join(f"{n} {k}" for k, n in s.patients_per_split.items())
    print(f"imported {s.imported + s.resumed} of {s.cases} volumes ({s.resumed} already done): {s.lesions} lesions, "
          f"{s.dropped_small} components below --min-size dropped; patients: {split}; -> {s.root}")
    if s.skipped:
        print(f"skipped {len(s.skipped)} volume(s):", file=sys.stderr)
        for case, reason in s.skipped:
            print(f"  {case}: {reason}", file=sys.stderr)
    return 0


def _synth_nifti(args: argparse.Namespace) -> int:
    t = time.perf_counter()
    generate_nifti(args.out, cases=args.cases, seed=args.seed, size=args.size, orientation=args.orientation)
    print(f"wrote {args.out} ({args.cases} labelled volumes, {args.size} px, {args.orientation}) "
          f"in {time.perf_counter() - t:.1f} s")
    return 0


def _masks(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise A3DError(f"--workers must be >= 1, got {args.workers}")
    done, skipped = build_masks(args.root, workers=args.workers, out_dir=args.out, window=args.window,
                                force=args.force, progress=not args.no_progress, recipe=args.recipe)
    print(f"masks: {done} key slices written, {skipped} already present, in {args.root / args.out}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise A3DError(f"--workers must be >= 1, got {args.workers}")
    done, skipped = build_cache(args.root, workers=args.workers, force=args.force,
                                progress=not args.no_progress)
    print(f"cache: {done} series written, {skipped} already present, in {args.root / 'cache'}")
    return 0
