"""``a3d predict``: detect lesions in CT scans (DICOM series, NIfTI, DeepLesion PNG) with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from a3d.errors import A3DError

log = logging.getLogger("a3d.predict")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="detect lesions in CT scans with a trained checkpoint",
        description=(
            "Detect lesions in a CT scan: a DICOM series folder, a NIfTI file (.nii/.nii.gz), a DeepLesion "
            "PNG series folder, or a folder of such scans (batch: one sub-folder of --out per scan). "
            "Writes predictions.json, detections.csv, candidates.csv, overlays/, report.html and optionally labels.nii.gz. "
            "See docs/predict.md."
        ),
    )
    p.add_argument("input", help="DICOM folder, .nii/.nii.gz file, DeepLesion PNG folder, or folder of scans")
    p.add_argument("--checkpoint", help="checkpoint written by `a3d train` (config inside); required unless --list-series")
    p.add_argument("--out", help="output folder (written atomically); required unless --list-series")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID to use (default: the series with most files)")
    p.add_argument("--list-series", action="store_true", help="list the DICOM series of INPUT and exit")
    p.add_argument("--dl-info", metavar="CSV", help="DeepLesion DL_info.csv giving the spacing of a PNG series")
    p.add_argument("--spacing", metavar="X,Y,Z", help="voxel spacing in mm for a DeepLesion PNG series")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--slice", type=int, metavar="N", help="only this key slice (0-based index along the input's slice axis)")
    g.add_argument("--slices", metavar="A:B", help="key slices A..B-1 (Python-style, either end may be omitted)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections with score >= this (default 0.5)")
    p.add_argument("--link-iou", type=float, default=0.3, help="box IoU above which detections on adjacent slices join one 3D candidate (default 0.3)")
    p.add_argument("--window", default="400,40", metavar="W,L", help="overlay CT window width,level in HU (default 400,40: soft tissue)")
    p.add_argument("--batch-size", type=int, default=4, help="key slices per forward pass (default 4)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--nifti-labels", action="store_true", help="also write labels.nii.gz (candidate ids, input geometry)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlays/ PNGs")
    p.add_argument("--no-html", action="store_true", help="do not write report.html")
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
    from a3d.data import scans as S
    from a3d.engine import predict as P
    from a3d.engine import predict_outputs as O

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kind = S.classify_input(args.input)
    if args.list_series:
        if kind != "dicom":
            raise A3DError(f"{args.input}: --list-series needs a DICOM folder")
        for s in S.list_dicom_series(args.input):
            print(f"{s.uid}\t{s.n_files} files\t{s.modality}\t{s.description}")
        return 0
    if not args.checkpoint or not args.out:
        raise A3DError("--checkpoint CKPT and --out DIR are required (only --list-series works without them)")
    spacing = S.parse_spacing(args.spacing) if args.spacing else None
    if args.dl_info and not Path(args.dl_info).is_file():
        raise A3DError(f"{args.dl_info}: --dl-info file not found")
    if not 0 <= args.score_threshold <= 1:
        raise A3DError(f"--score-threshold {args.score_threshold}: expected a value in [0, 1]")
    if args.batch_size < 1:
        raise A3DError(f"--batch-size {args.batch_size}: expected at least 1")
    settings = P.PredictSettings(
        score_threshold=args.score_threshold, link_iou=args.link_iou, batch_size=args.batch_size,
        device=args.device, amp=args.amp, slices=_parse_slices(args), window=_parse_window(args.window),
    )
    _check_device(args.device)
    out = O.check_out_dir(args.out, args.overwrite)
    opts = dict(overlays=not args.no_overlays, html_page=not args.no_html, nifti_labels=args.nifti_labels)

    if kind == "batch":
        entries = S.scan_entries(Path(args.input))
        names = [S.scan_name(e) for e in entries]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise A3DError(f"{args.input}: several scans map to the same output name {sorted(dup)[0]!r}; rename them")
        model, spec, info = P.load_predictor(args.checkpoint, args.device)
        summary = []
        with O.atomic_dir(out) as tmp:
            for entry, name in zip(entries, names):
                try:
                    scan = S.read_scan(entry, series_uid=args.series, spacing=spacing, dl_info=args.dl_info)
                    res = P.predict_scan(scan, model, spec, settings)
                    res.model_info = info
                    sub = tmp / name
                    with O.atomic_dir(sub) as stmp:
                        doc = O.write_outputs(res, stmp, **opts)
                    summary.append({"input": str(entry), "output": name, "status": "ok", "detections": len(doc["detections"]), "candidates": len(doc["candidates"])})
                    log.info("%s: %d candidates", entry, len(doc["candidates"]))
                except A3DError as e:
                    summary.append({"input": str(entry), "output": None, "status": "error", "error": str(e)})
                    print(f"a3d predict: {e}", file=sys.stderr)
            failed = [s for s in summary if s["status"] != "ok"]
            O._atomic_write(tmp / "batch.json", (json.dumps({"format": "a3d-predict-batch", "version": 1, "scans": summary}, indent=1) + "\n").encode())
        if failed:
            raise A3DError(f"{args.input}: {len(failed)} of {len(summary)} scans failed (first: {failed[0]['error']}); see {out / 'batch.json'}")
        return 0

    scan = S.read_scan(args.input, series_uid=args.series, spacing=spacing, dl_info=args.dl_info)
    P.key_slices(scan, settings.slices)  # validate the range before loading the model
    model, spec, info = P.load_predictor(args.checkpoint, args.device)
    res = P.predict_scan(scan, model, spec, settings, progress=_progress)
    res.model_info = info
    with O.atomic_dir(out) as tmp:
        doc = O.write_outputs(res, tmp, **opts)
    for w in scan.warnings:
        log.warning("warning: %s", w)
    print(f"{len(doc['detections'])} detections, {len(doc['candidates'])} candidates -> {out}")
    return 0


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise A3DError(f"--device {device!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise A3DError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise A3DError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise A3DError(f"--device {device!r}: expected cpu or cuda[:N]")


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rkey slices {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    else:  # logs: about every 10 %
        decile = done * 10 // total
        if decile != getattr(_progress, "last", -1) or done == total:
            _progress.last = -1 if done == total else decile
            log.info("key slices %d/%d", done, total)
