"""``a3d demo``: synthetic data -> train the tiny preset for a few minutes -> evaluate -> report.

The report folder (``DIR/report``) shows that the model learns: the same network is evaluated
before training (step 0, the random initialisation training starts from) and after, on the
validation split:

- ``metrics.md`` / ``metrics.json``: FROC sensitivities at 0.5..16 FPs per image, untrained vs trained;
- ``froc.png``: both FROC curves;
- ``overlays/*.png``: validation key slices with ground-truth boxes (green) and the trained model's
  detections (red, with scores);
- ``trained/`` and ``untrained/``: the full ``a3d eval`` outputs (predictions, metrics, curves).

``DIR/data`` holds the synthetic dataset, ``DIR/run`` the training run (checkpoints, TensorBoard).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from a3d.config import Config, load_config, override_config, to_toml
from a3d.errors import A3DError
from a3d.io import atomic_path, write_text_atomic


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
    from a3d.engine.evaluate import predict_dataset
    from a3d.evaluation import evaluate_predictions, ground_truth_from_records, write_evaluation

    preds = predict_dataset(model, dataset, batch_size=cfg.train.val_batch_size)
    gt = ground_truth_from_records(dataset.lesions, cfg.data.val_split)
    m = evaluate_predictions(preds, gt, n_bootstrap=200, source=title,
                             run={"name": run_name, "operator": cfg.model.operator, "slices": cfg.model.slices})
    write_evaluation(out, preds, m, title=title)
    return m, preds


def _overlay(image: torch.Tensor, gt_boxes: np.ndarray, pred, path: Path, max_boxes: int = 3,
             min_score: float = 0.05, scale: int = 3) -> None:
    """Key slice (window [-50, 205] -> 8 bits), GT boxes green, top predictions red with scores."""
    import cv2

    key = image[0, image.shape[1] // 2].numpy()
    g = np.clip((key + 50.0), 0, 255).astype(np.uint8)
    g = cv2.resize(g, (g.shape[1] * scale, g.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    for b in gt_boxes:
        x1, y1, x2, y2 = (np.asarray(b) * scale).astype(int)
        cv2.rectangle(rgb, (x1, y1), (x2, y2), (0, 200, 0), 1)
    order = np.argsort(-pred.scores)[:max_boxes]
    for i in order:
        if pred.scores[i] < min_score:
            continue
        x1, y1, x2, y2 = (pred.boxes[i] * scale).astype(int)
        cv2.rectangle(rgb, (x1, y1), (x2, y2), (0, 0, 255), 1)
        cv2.putText(rgb, f"{pred.scores[i]:.2f}", (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 255), 1, cv2.LINE_AA)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), rgb):
            raise A3DError(f"{path}: could not write the overlay image")


def demo_config(data_root: Path, overrides: Sequence[str] = ()) -> Config:
    cfg = load_config("tiny")
    cfg = override_config(cfg, [f"data.root={data_root}", "train.val_every=0", *overrides])
    return cfg


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
    """The whole demo; ``minutes`` is the total wall-clock budget (data + training + evaluation)."""
    from a3d.data import DeepLesionDataset
    from a3d.data.synth import generate
    from a3d.engine.evaluate import load_model
    from a3d.engine.train import seed_everything, train
    from a3d.models.detector import build_detector

    t0 = time.time()
    out = Path(out_dir)
    data_root = out / "data"
    report = out / "report"
    run_dir = out / "run"
    if (run_dir / "last.pt").exists():
        raise A3DError(f"{out}: holds a previous demo (run/last.pt); remove it or pass another --out")
    cfg = demo_config(data_root, overrides)
    from a3d.engine.distributed import resolve_device
    from a3d.engine.train import set_cpu_threads

    set_cpu_threads(cfg.train.threads, resolve_device(cfg.train.device), log)
    if not (data_root / "DL_info.csv").exists():
        log(f"generating synthetic data ({patients} patients, {cfg.data.size} px) in {data_root}")
        generate(data_root, patients=patients, seed=seed, size=max(64, cfg.data.size))
    val = DeepLesionDataset(data_root, split=cfg.data.val_split, slices=cfg.model.slices, size=cfg.data.size,
                            masks=False, mask_dir=cfg.data.mask_dir)
    n_train = len(DeepLesionDataset(data_root, split=cfg.data.train_split, slices=cfg.model.slices,
                                    masks=False, mask_dir=cfg.data.mask_dir))
    log(f"{n_train} training and {len(val)} validation key slices")

    # step 0: the initialisation that training starts from (train() seeds the same way)
    seed_everything(cfg.train.seed)
    model0 = build_detector(cfg.model)
    t_eval = time.time()
    m0, _ = _evaluate(model0, cfg, val, report / "untrained", "untrained (step 0)", "untrained")
    eval_s = time.time() - t_eval
    del model0
    log(f"untrained: average sensitivity {m0['average']:.3f} ({eval_s:.0f} s to evaluate)")

    budget = minutes * 60 - (time.time() - t0) - 1.5 * eval_s - 10
    if budget < 20:
        raise A3DError(f"--minutes {minutes}: too little time left to train ({budget:.0f} s); give more minutes")
    res = train(cfg, run_dir, progress=progress, time_budget_s=budget, log=log)
    model, cfg_run = load_model(run_dir / "last.pt", "auto")
    m1, preds = _evaluate(model, cfg_run, val, report / "trained", "trained", "trained")
    log(f"trained ({res.iterations} iterations): average sensitivity {m1['average']:.3f}")

    from a3d.evaluation.plots import curve_from_metrics, plot_froc

    plot_froc([curve_from_metrics(m0, "untrained (step 0)"), curve_from_metrics(m1, f"trained ({res.iterations} it)")],
              report / "froc", title=f"a3d demo: {cfg.model.operator} x{cfg.model.slices}, synthetic val split")
    ov = report / "overlays"
    for i in range(min(n_overlays, len(val))):
        image, target = val[i]
        gt = np.stack([r.box for r in val.records[i]])
        _overlay(image, _to_input_coords(gt, val.records[i][0].image_size, image.shape[-2:]),
                 _pred_to_input(preds[i], val.records[i][0].image_size, image.shape[-2:]),
                 ov / f"{target['image_id']}.png")

    fps = m1["fps"]
    rows = [("untrained (step 0)", m0), (f"trained ({res.iterations} iterations)", m1)]
    lines = [
        "# a3d demo",
        "",
        f"Tiny preset, operator `{cfg.model.operator}`, {cfg.model.slices} slices, {cfg.data.size} px, random init; "
        f"synthetic data ({patients} patients: {n_train} train / {len(val)} val key slices). "
        f"Trained {res.iterations} iterations in {res.seconds / 60:.1f} min on {_device_name()}.",
        "",
        "Validation FROC (sensitivity % at false positives per image):",
        "",
        "| model | " + " | ".join(f"{f:g}" for f in fps) + " | Avg. (0.5-4) |",
        "|---|" + "---|" * (len(fps) + 1),
    ]
    for name, m in rows:
        sens = " | ".join("-" if s is None else f"{100 * s:.1f}" for s in m["sensitivity"])
        lines.append(f"| {name} | {sens} | {100 * m['average']:.1f} |")
    lines += ["", "Curves: `froc.png`; detections on validation slices: `overlays/` (green: ground truth, red: "
              "detections with scores); full outputs: `untrained/`, `trained/`.", ""]
    write_text_atomic(report / "metrics.md", "\n".join(lines))
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
    write_text_atomic(report / "metrics.json", json.dumps(summary, indent=1) + "\n")
    write_text_atomic(report / "config.toml", to_toml(cfg_run))
    return DemoResult(out, float(m0["average"]), float(m1["average"]), res.iterations, time.time() - t0,
                      res.seconds, report)


def _to_input_coords(boxes: np.ndarray, orig_hw, hw) -> np.ndarray:
    (oh, ow), (h, w) = orig_hw, hw
    sx, sy = w / ow, h / oh
    b = boxes.astype(np.float64).copy()
    b[:, 0::2] = (b[:, 0::2] + 0.5) * sx - 0.5
    b[:, 1::2] = (b[:, 1::2] + 0.5) * sy - 0.5
    return b


def _pred_to_input(pred, orig_hw, hw):
    from a3d.evaluation.predictions import ImagePredictions

    return ImagePredictions(pred.image_id, _to_input_coords(np.asarray(pred.boxes).reshape(-1, 4), orig_hw, hw),
                            np.asarray(pred.scores))


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os

    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"

