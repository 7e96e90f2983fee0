"""``a3d eval``: DeepLesion FROC of saved predictions, or of a model checkpoint run over a split.

    a3d eval --predictions preds.json --data ROOT --split test --out DIR
    a3d eval CHECKPOINT --data ROOT --split val --out DIR [--batch-size 4] [--device cuda]

Writes predictions.json, predictions.csv, metrics.json, metrics.md, froc.png and froc.svg to --out.
"""

from __future__ import annotations

import math
from pathlib import Path

from a3d.cli.options import DEVICE_HELP, resolve_device
from a3d.data.dl_info import read_dl_info
from a3d.errors import A3DError
from a3d.evaluation import (
    DEFAULT_INTERVAL_BINS,
    evaluate_predictions,
    ground_truth_from_records,
    load_predictions,
    write_evaluation,
)
from a3d.evaluation.predictions import complete_predictions


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="DeepLesion FROC of saved predictions or of a checkpoint",
        description=__doc__,
    )
    p.add_argument("checkpoint", nargs="?", help="model checkpoint to run over the split (omit with --predictions)")
    p.add_argument("--predictions", help="saved predictions file (.json a3d-predictions, or .csv image_id,x1,y1,x2,y2,score)")
    p.add_argument("--data", required=True, help="DeepLesion root holding DL_info.csv (or the CSV itself)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="official split (default test)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--batch-size", type=int, default=4, help="model evaluation batch size (default 4)")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP}; the model runs in float32")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a hit (default 0.5)")
    p.add_argument("--fps", default="0.5,1,2,4,8,16", help="FPs per image to report, comma separated")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CI (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--interval-bin",
        action="append",
        metavar="LABEL=LO:HI",
        help="slice-interval subset, mm, closed [LO, HI]; repeat (default '<= 2 mm=0:2' and '5 mm=5:5')",
    )
    p.add_argument("--diameter-thresholds", default="10,30", help="long-diameter bin edges in mm (default 10,30)")
    p.add_argument("--keep-noisy", action="store_true", help="keep lesions flagged Possibly_noisy (dropped by default)")
    p.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="treat split images absent from a JSON predictions file as having no detections (CSV: always)",
    )
    p.add_argument("--max-per-image", type=int, default=50,
                   help="score at most this many highest-scoring detections per image (default 50, the protocol; 0 = all)")
    p.add_argument("--name", help="run name stored in metrics.json")
    p.add_argument("--operator", help="operator stored in metrics.json (for a3d report)")
    p.add_argument("--slices", type=int, help="number of slices stored in metrics.json (for a3d report)")
    p.set_defaults(func=run)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise A3DError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals or not all(math.isfinite(v) and v >= 0 for v in vals):
        raise A3DError(f"{what}: expected non-negative numbers, got {text!r}")
    return vals


def _interval_bins(specs: list[str] | None):
    if not specs:
        return DEFAULT_INTERVAL_BINS
    out = []
    for s in specs:
        label, sep, rng = s.rpartition("=")
        lo, sep2, hi = rng.partition(":")
        try:
            if not sep or not sep2 or not label:
                raise ValueError
            out.append((label, float(lo), float(hi)))
        except ValueError:
            raise A3DError(f"--interval-bin: expected LABEL=LO:HI (mm), got {s!r}") from None
    return tuple(out)


def _dl_info_path(data: str) -> Path:
    p = Path(data)
    csv = p if p.is_file() else p / "DL_info.csv"
    if not csv.is_file():
        raise A3DError(f"{csv}: DL_info.csv not found (give --data the DeepLesion root or the CSV)")
    return csv


def _predict(args, data_root: Path):
    """(predictions, the checkpoint's config) for the model in args.checkpoint over the split."""
    # torch: imported when a model runs, so that `a3d --help` and scoring a predictions file start without it
    from a3d.engine.evaluate import load_model, predict_dataset, split_dataset

    model, cfg = load_model(args.checkpoint, args.device)
    return predict_dataset(model, split_dataset(cfg, data_root, args.split), batch_size=args.batch_size), cfg


def _check_args(args) -> tuple[list[float], list[float], tuple]:
    """(FP rates, diameter thresholds, interval bins) from the arguments; A3DError for a bad one."""
    if bool(args.checkpoint) == bool(args.predictions):
        raise A3DError("eval: give either a CHECKPOINT or --predictions FILE (exactly one)")
    if args.batch_size < 1:
        raise A3DError(f"--batch-size: expected at least 1, got {args.batch_size}")
    fps = _floats(args.fps, "--fps")
    thresholds = _floats(args.diameter_thresholds, "--diameter-thresholds")
    bins = _interval_bins(args.interval_bin)
    if not 0 < args.iou <= 1:
        raise A3DError(f"--iou: expected a number in (0, 1], got {args.iou}")
    if args.max_per_image < 0:
        raise A3DError(f"--max-per-image: expected >= 0, got {args.max_per_image}")
    if args.bootstrap < 0:
        raise A3DError(f"--bootstrap: expected >= 0, got {args.bootstrap}")
    if args.checkpoint:
        if not Path(args.checkpoint).exists():
            raise A3DError(f"{args.checkpoint}: checkpoint not found (expected an 'a3d train' checkpoint file or "
                           "an 'a3d export' folder)")
        args.device = resolve_device(args.device)
    elif not Path(args.predictions).is_file():
        raise A3DError(f"{args.predictions}: predictions file not found")
    return fps, thresholds, bins


def _predictions(args, csv: Path):
    """(predictions, their source for messages, how missing images count) from the file or the model;
    a model's config also labels the run (operator and slice count for ``a3d report``)."""
    if args.predictions:
        csv_file = Path(args.predictions).suffix.lower() == ".csv"
        missing = "empty" if (args.missing_as_empty or csv_file) else "error"
        return load_predictions(args.predictions), str(args.predictions), missing
    preds, cfg = _predict(args, csv.parent)
    args.operator = args.operator or cfg.model.operator
    args.slices = args.slices or cfg.model.slices
    return preds, f"{args.checkpoint} predictions", "empty"  # images the model returned nothing for


def _print_summary(m: dict, paths: dict, out) -> None:
    sens = " ".join(f"{f:g}:{100 * s:.2f}" if s is not None else f"{f:g}:-" for f, s in zip(m["fps"], m["sensitivity"]))
    avg = m["average"]
    ci = (m.get("ci") or {}).get("average")
    ci_s = f" (95% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f})" if ci and None not in ci else ""
    print(f"{m['n_images']} images, {m['n_lesions']} lesions, {m['n_predictions']} predictions")
    if m["n_predictions_dropped"]:
        print(f"note: {m['n_predictions_dropped']} predictions beyond the {m['max_per_image']} highest-scoring of their image "
              "were left out (--max-per-image)")
    print(f"sensitivity (%) at FPs/image  {sens}  Avg. {100 * avg:.2f}{ci_s}" if avg is not None else f"sensitivity: {sens}")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


def run(args) -> int:
    fps, thresholds, bins = _check_args(args)
    csv = _dl_info_path(args.data)
    gt = ground_truth_from_records(read_dl_info(csv), args.split, drop_noisy=not args.keep_noisy)
    if len(gt) == 0:
        raise A3DError(f"{csv}: no lesion of split {args.split} (after dropping noisy rows)")
    preds, source, missing = _predictions(args, csv)
    run_meta = {k: v for k, v in (("name", args.name), ("operator", args.operator), ("slices", args.slices)) if v is not None}
    if args.checkpoint and "name" not in run_meta:
        ck = Path(args.checkpoint)  # RUN/best.pt -> RUN; an export folder -> its own name
        run_meta["name"] = ck.name if ck.is_dir() else (ck.parent.name or ck.stem)
    m = evaluate_predictions(
        preds,
        gt,
        fps=fps,
        iou_threshold=args.iou,
        interval_bins=bins,
        diameter_thresholds=thresholds,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        missing=missing,
        source=source,
        run=run_meta or None,
        max_per_image=args.max_per_image if args.max_per_image > 0 else None,
    )
    # every evaluated image (those without detections included) goes into the predictions file
    paths = write_evaluation(args.out, complete_predictions(preds, gt.image_ids), m,
                             title=f"DeepLesion FROC ({args.split})")
    _print_summary(m, paths, args.out)
    return 0
