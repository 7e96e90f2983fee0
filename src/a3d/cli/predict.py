"""``a3d predict``: detect lesions in CT scans (DICOM series, NIfTI, NRRD, MetaImage, DeepLesion PNG) with a trained checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from a3d.cli.options import DEVICE_HELP, device
from a3d.data.scans import parse_spacing
from a3d.progress import progress_callback
from a3d.errors import A3DError

log = logging.getLogger("a3d.predict")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="detect lesions in CT scans with a trained checkpoint",
        description=(
            "Detect lesions in a CT scan: a DICOM series folder, a volume file (NIfTI .nii/.nii.gz, NRRD "
            ".nrrd/.nhdr, MetaImage .mha/.mhd), a DeepLesion PNG series folder, or a folder of such scans "
            "(batch: one sub-folder of --out per scan, each written as soon as it is done; the same command "
            "again skips the scans already done with the same input, checkpoint and settings; under "
            "torchrun --nproc_per_node N the N processes share the scans). "
            "Writes predictions.json, detections.csv, candidates.csv, overlays/, report.html, slicer/ markups and "
            "optionally labels.nii.gz and (DICOM input) a DICOM SEG and SR. "
            "See docs/predict.md."
        ),
    )
    p.add_argument("input", help="DICOM folder, volume file (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd), DeepLesion "
                   "PNG folder, or folder of scans")
    p.add_argument("--checkpoint", help="checkpoint written by `a3d train` (config inside); required unless --list-series")
    p.add_argument("--out", help="output folder (a single scan's is written atomically, a batch's scan by scan); "
                   "required unless --list-series")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out; for a batch: redo every "
                   "scan instead of skipping those already done")
    p.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID to use (default: the series with most files)")
    p.add_argument("--list-series", action="store_true", help="list every DICOM series under INPUT (any depth, or its "
                   "DICOMDIR): UID, files, modality, description, folder; then exit")
    p.add_argument("--acquisition", type=int, metavar="N", help="DICOM: use only the files with AcquisitionNumber N "
                   "(when several acquisitions of one region are mixed in a series)")
    p.add_argument("--allow-missing", action="store_true", help="DICOM: proceed when slices are missing or unreadable "
                   "(or irregularly spaced): interpolate them (marked, never key slices) instead of refusing")
    p.add_argument("--dl-info", metavar="CSV", help="DeepLesion DL_info.csv giving the spacing of a PNG series")
    p.add_argument("--spacing", metavar="X,Y,Z", help="voxel spacing in mm for a DeepLesion PNG series")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--slice", type=int, metavar="N", help="only this key slice (0-based index along the input's slice axis)")
    g.add_argument("--slices", metavar="A:B", help="key slices A..B-1 (Python-style, either end may be omitted)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections with score >= this (default 0.5)")
    p.add_argument("--link-iou", type=float, default=0.3, help="box IoU above which detections on adjacent slices join one 3D candidate (default 0.3)")
    p.add_argument("--window", default="400,40", metavar="W,L", help="overlay CT window width,level in HU (default 400,40: soft tissue)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="key slices per forward pass (default 4 on a GPU, 1 on the CPU, where larger batches were slower)")
    p.add_argument("--device", default="auto", type=device, help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="compute precision of the model: auto (default) = bf16 on CUDA GPUs with bfloat16 and on CPUs "
                        "with native bfloat16 (AVX-512 BF16 / AMX), else fp32; fp16 only on GPUs; see docs/predict.md")
    p.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)  # removed: a one-line error points to --precision
    p.add_argument("--keep-air-slices", action="store_true",
                   help="also run key slices that hold only air (skipped by default, listed in predictions.json)")
    p.add_argument("--nifti-labels", action="store_true", help="also write labels.nii.gz (candidate ids, input geometry)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlays/ PNGs")
    p.add_argument("--no-html", action="store_true", help="do not write report.html")
    p.add_argument("--no-markups", action="store_true", help="do not write slicer/*.mrk.json (3D Slicer markups)")
    p.add_argument("--dicom", action="store_true", help="DICOM input: also write dicom/seg.dcm (DICOM SEG) and "
                   "dicom/sr.dcm (TID 1500 measurement report) in the source study")
    p.add_argument("--new-uids", action="store_true", help="with --dicom, for sources without Study/Series/SOP "
                   "Instance UIDs (anonymised exports): generate them, recorded in predictions.json and written with "
                   "copies of the images into dicom/images/ (the input is not changed)")
    p.set_defaults(func=run)
    return p


def _parse_slices(args) -> tuple[int | None, int | None] | None:
    if args.slice is not None:
        if args.slice < 0:
            raise A3DError(f"--slice {args.slice}: expected a slice index >= 0")
        return (args.slice, args.slice + 1)
    if args.slices is None:
        return None
    parts = args.slices.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else None
        b = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise A3DError(f"--slices {args.slices!r}: expected A:B with integer slice indices, e.g. 40:60") from None
    return (a, b)


def _parse_window(text: str) -> tuple[float, float]:
    try:
        w, level = (float(v) for v in text.split(","))
    except ValueError:
        raise A3DError(f"--window {text!r}: expected width,level in HU, e.g. 400,40") from None
    if w <= 0:
        raise A3DError(f"--window {text!r}: width must be positive")
    return (w, level)


def run(args) -> int:
    # a3d.predict pulls in torchvision and the detector: imported when the command runs, not for `a3d --help`
    from a3d import predict as P

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list_series:
        for s in P.list_series(args.input):
            frames = f" ({s.images} images)" if s.images != s.n_files else ""
            print(f"{s.uid}\t{s.n_files} files{frames}\t{s.modality}\t{s.description}\t{s.folder}")
        return 0
    if args.amp:
        raise A3DError("--amp was replaced by --precision {auto,fp32,bf16,fp16} (default auto: bf16 where the "
                       "hardware has it, else fp32)")
    if args.new_uids and not args.dicom:
        raise A3DError("--new-uids gives the DICOM SEG/SR of --dicom UIDs to reference; pass --dicom with it")
    if not args.checkpoint or not args.out:
        raise A3DError("--checkpoint CKPT and --out DIR are required (only --list-series works without them)")
    read = P.ReadOptions(series=args.series, spacing=parse_spacing(args.spacing) if args.spacing else None,
                         dl_info=args.dl_info, allow_missing=args.allow_missing, acquisition=args.acquisition)
    if args.dl_info and not Path(args.dl_info).is_file():
        raise A3DError(f"{args.dl_info}: --dl-info file not found")
    if not 0 <= args.score_threshold <= 1:
        raise A3DError(f"--score-threshold {args.score_threshold}: expected a value in [0, 1]")
    if args.batch_size is None:
        args.batch_size = 4 if args.device.startswith("cuda") else 1
    if args.batch_size < 1:
        raise A3DError(f"--batch-size {args.batch_size}: expected at least 1")
    settings = P.PredictSettings(
        score_threshold=args.score_threshold, link_iou=args.link_iou, batch_size=args.batch_size,
        device=args.device, precision=args.precision, slices=_parse_slices(args), skip_air=not args.keep_air_slices,
        window=_parse_window(args.window),
    )
    outputs = P.OutputOptions(overlays=not args.no_overlays, html=not args.no_html, nifti_labels=args.nifti_labels,
                              markups=not args.no_markups, dicom=args.dicom, new_uids=args.new_uids)
    done = P.predict_input(args.input, args.checkpoint, args.out, settings, read, outputs, overwrite=args.overwrite,
                           progress=_progress)
    if not done.batch:
        scan = done.scans[0]
        for w in scan.warnings:
            log.warning("warning: %s", w)
        print(f"{scan.detections} detections, {scan.candidates} candidates -> {done.out}")
    return 0


# key-slice progress: a bar on a terminal, a line about every 10 % in a log (a3d.progress, as training)
_progress = progress_callback("key slices", "slice")
