"""``a3d demo``: synthetic data -> train the tiny preset for a few minutes -> evaluate -> report.

The report folder (``DIR/report``) shows that the model learns: the same network is evaluated
before training (step 0, the random initialisation training starts from) and after, on the
validation split:

- ``metrics.md`` / ``metrics.json``: FROC sensitivities at 0.5..16 FPs per image, untrained vs trained;
- ``froc.png``: both FROC curves;
- ``overlays/*.png``: validation key slices with ground-truth boxes (green) and the trained model's
  top detections (red, non-overlapping score labels, near-duplicates merged; a legend under each,
  :mod:`a3d.engine.demo_overlay`);
- ``trained/`` and ``untrained/``: the full ``a3d eval`` outputs (predictions, metrics, curves).

``DIR/data`` holds the synthetic dataset, ``DIR/run`` the training run (checkpoints, TensorBoard).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from a3d.config import Config, load_config, override_config, to_toml
from a3d.data.resize import FitPad
from a3d.data.synth import generate
from a3d.engine.demo_overlay import render_overlay, write_overlay
from a3d.engine.distributed import resolve_device
from a3d.engine.evaluate import load_model, predict_dataset, split_dataset
from a3d.engine.train import seed_everything, set_cpu_threads, train
from a3d.errors import A3DError
from a3d.evaluation import evaluate_predictions, ground_truth_from_records, write_evaluation
from a3d.evaluation.plots import curve_from_metrics, plot_froc
from a3d.io import write_text_atomic
from a3d.models.detector import build_detector


@dataclass
class DemoResult:
    out_dir: Path
    untrained_average: float
    trained_average: float
    iterations: int
    seconds: float
    train_seconds: float
    report: Path


def _evaluate(model, cfg: Config, dataset, out: Path, title: str, run_name: str) -> tuple[dict, list]:
    preds = predict_dataset(model, dataset, batch_size=cfg.train.val_batch_size)
    gt = ground_truth_from_records(dataset.lesions, cfg.data.val_split)
    m = evaluate_predictions(preds, gt, n_bootstrap=200, source=title,
                             run={"name": run_name, "operator": cfg.model.operator, "slices": cfg.model.slices})
    write_evaluation(out, preds, m, title=title)
    return m, preds


MIN_MINUTES = 1.0  # synthetic data, two evaluations and at least 20 s of training
MIN_PATIENTS = 3  # the 70/15/15 patient split then has a validation patient


def check_demo_args(out: Path, minutes: float, patients: int, seed: int) -> None:
    """A3DError naming the first unusable argument."""
    if not (math.isfinite(minutes) and minutes >= MIN_MINUTES):
        raise A3DError(f"--minutes {minutes:g}: expected at least {MIN_MINUTES:g} (synthetic data, two evaluations "
                       "and some training)")
    if patients < MIN_PATIENTS:
        raise A3DError(f"--patients {patients}: expected at least {MIN_PATIENTS} (so that the validation split "
                       "has a patient)")
    if seed < 0:
        raise A3DError(f"--seed {seed}: expected a number >= 0")
    if out.exists() and not out.is_dir():
        raise A3DError(f"--out {out}: exists and is not a folder")
    if (out / "run" / "last.pt").exists():
        raise A3DError(f"{out}: holds a previous demo (run/last.pt); remove it or pass another --out")


def demo_config(data_root: Path, overrides: Sequence[str] = ()) -> Config:
    cfg = load_config("tiny")
    cfg = override_config(cfg, [f"data.root={data_root}", "train.val_every=0", *overrides])
    return cfg


def _data(cfg: Config, data_root: Path, patients: int, seed: int, log) -> tuple:
    """(validation dataset, number of training key slices); the synthetic data written first if absent."""
    if not (data_root / "DL_info.csv").exists():
        log(f"generating synthetic data ({patients} patients, {cfg.data.size} px) in {data_root}")
        generate(data_root, patients=patients, seed=seed, size=max(64, cfg.data.size))
    val = split_dataset(cfg, data_root, cfg.data.val_split)
    n_train = len(split_dataset(cfg, data_root, cfg.data.train_split))
    log(f"{n_train} training and {len(val)} validation key slices")
    return val, n_train


def _untrained(cfg: Config, val, report: Path, log) -> tuple[dict, float]:
    """Metrics of step 0, the initialisation that training starts from (train() seeds the same way),
    and the seconds that evaluation took."""
    seed_everything(cfg.train.seed)
    model0 = build_detector(cfg.model)
    t_eval = time.time()
    m0, _ = _evaluate(model0, cfg, val, report / "untrained", "untrained (step 0)", "untrained")
    eval_s = time.time() - t_eval
    log(f"untrained: average sensitivity {m0['average']:.3f} ({eval_s:.0f} s to evaluate)")
    return m0, eval_s


def run_demo(
    out_dir: str | Path = "demo_out",
    minutes: float = 5.0,
    patients: int = 60,
    seed: int = 0,
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    n_overlays: int = 8,
) -> DemoResult:
    """The whole demo; ``minutes`` is the total wall-clock budget (data + training + evaluation).
    Every argument is checked (:func:`check_demo_args`) before any work."""
    t0 = time.time()
    out = Path(out_dir)
    data_root, report, run_dir = out / "data", out / "report", out / "run"
    check_demo_args(out, minutes, patients, seed)
    cfg = demo_config(data_root, overrides)
    set_cpu_threads(cfg.train.threads, resolve_device(cfg.train.device), log)
    val, n_train = _data(cfg, data_root, patients, seed, log)
    m0, eval_s = _untrained(cfg, val, report, log)

    budget = minutes * 60 - (time.time() - t0) - 1.5 * eval_s - 10
    if budget < 20:
        raise A3DError(f"--minutes {minutes}: too little time left to train ({budget:.0f} s); give more minutes")
    res = train(cfg, run_dir, progress=progress, time_budget_s=budget, log=log)
    model, cfg_run = load_model(run_dir / "last.pt", "auto")
    m1, preds = _evaluate(model, cfg_run, val, report / "trained", "trained", "trained")
    log(f"trained ({res.iterations} iterations): average sensitivity {m1['average']:.3f}")

    _draw(report, cfg, m0, m1, res.iterations, val, preds, n_overlays)
    summary = {
        "untrained": {"average": m0["average"], "fps": m0["fps"], "sensitivity": m0["sensitivity"]},
        "trained": {"average": m1["average"], "fps": m1["fps"], "sensitivity": m1["sensitivity"]},
        "iterations": res.iterations,
        "train_seconds": res.seconds,
        "total_seconds": time.time() - t0,
        "config": cfg.name,
        "operator": cfg.model.operator,
        "slices": cfg.model.slices,
        "device": _device_name(),
    }
    about = (f"synthetic data ({patients} patients: {n_train} train / {len(val)} val key slices). "
             f"Trained {res.iterations} iterations in {res.seconds / 60:.1f} min on {_device_name()}.")
    write_text_atomic(report / "metrics.md", _markdown(cfg, m0, m1, res.iterations, about))
    write_text_atomic(report / "metrics.json", json.dumps(summary, indent=1) + "\n")
    write_text_atomic(report / "config.toml", to_toml(cfg_run))
    return DemoResult(out, float(m0["average"]), float(m1["average"]), res.iterations, time.time() - t0,
                      res.seconds, report)


def _draw(report: Path, cfg: Config, m0: dict, m1: dict, iterations: int, val, preds, n_overlays: int) -> None:
    """``froc.png`` (both curves) and the overlays of the first validation key slices."""
    plot_froc([curve_from_metrics(m0, "untrained (step 0)"), curve_from_metrics(m1, f"trained ({iterations} it)")],
              report / "froc", title=f"a3d demo: {cfg.model.operator} x{cfg.model.slices}, synthetic val split")
    for i in range(min(n_overlays, len(val))):
        image, target = val[i]
        g = FitPad.of_target(target, image.shape[-2:])  # predictions and GT are in original pixels
        gt = np.stack([r.box for r in val.records[i]]).astype(np.float64)
        boxes = g.points(np.asarray(preds[i].boxes).reshape(-1, 4))
        key = image[0, image.shape[1] // 2].numpy()
        overlay = render_overlay(key, g.points(gt), boxes, np.asarray(preds[i].scores))
        write_overlay(report / "overlays" / f"{target['image_id']}.png", overlay)


def _markdown(cfg: Config, m0: dict, m1: dict, iterations: int, about: str) -> str:
    fps = m1["fps"]
    lines = [
        "# a3d demo",
        "",
        f"Tiny preset, operator `{cfg.model.operator}`, {cfg.model.slices} slices, {cfg.data.size} px, random init; "
        + about,
        "",
        "Validation FROC (sensitivity % at false positives per image):",
        "",
        "| model | " + " | ".join(f"{f:g}" for f in fps) + " | Avg. (0.5-4) |",
        "|---|" + "---|" * (len(fps) + 1),
    ]
    for name, m in (("untrained (step 0)", m0), (f"trained ({iterations} iterations)", m1)):
        sens = " | ".join("-" if s is None else f"{100 * s:.1f}" for s in m["sensitivity"])
        lines.append(f"| {name} | {sens} | {100 * m['average']:.1f} |")
    lines += ["", "Curves: `froc.png`; detections on validation slices: `overlays/` (green: ground truth, red: "
              "top detections with scores; legend under each image); full outputs: `untrained/`, `trained/`.", ""]
    return "\n".join(lines)


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
