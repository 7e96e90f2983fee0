"""A briefly trained tiny detector, run through `a3d predict`, finds a synthetic lesion on its key slice.

Slow (trains for several minutes on CPU), so opt-in: ``A3D_SLOW=1 pytest -m slow tests/test_predict_trained.py``.
The fast tests check the same geometry chain with a deterministic stand-in detector
(tests/test_predict.py); this one checks it with a real trained network end to end, reading the
synthetic DeepLesion PNG series with its DL_info.csv spacing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("A3D_SLOW") != "1", reason="trains a detector for minutes on CPU; set A3D_SLOW=1 to run"),
]


def test_trained_tiny_model_finds_lesion_on_key_slice(synth_root, tmp_path):
    from a3d.cli import main
    from a3d.config import load_config, override_config
    from a3d.data import read_dl_info
    from a3d.engine.train import train

    budget = float(os.environ.get("A3D_SLOW_TRAIN_S", "600"))
    cfg = override_config(load_config("tiny"), [f"data.root={synth_root}", "train.device=cpu", "train.epochs=30",
                                                "train.lr_steps=[24, 28]", "train.val_every=1000"])
    res = train(cfg, tmp_path / "run", progress=False, time_budget_s=budget, log=lambda s: None)
    ckpt = res.last_checkpoint or (tmp_path / "run" / "last.pt")
    records = [r for r in read_dl_info(synth_root / "DL_info.csv") if r.split == 1 and not r.noisy][:3]

    def near(boxes, rec) -> bool:
        gt = np.asarray(rec.box, float)
        gc = ((gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2)
        return any(abs((b[0] + b[2]) / 2 - gc[0]) <= 5 and abs((b[1] + b[3]) / 2 - gc[1]) <= 5 for b in boxes)

    # reference: the detector engine's own inference on the same key slices (top 3 boxes, score >= 0.05)
    from a3d.data import DeepLesionDataset
    from a3d.engine.evaluate import load_model, predict_dataset

    model, cfg2 = load_model(ckpt, "cpu")
    ds = DeepLesionDataset(synth_root, "train", slices=cfg2.model.slices, masks=False)
    engine_hits = 0
    for rec in records:
        i = next(n for n, g in enumerate(ds.records) if g[0].image_id == rec.image_id)
        p = predict_dataset(model, torch.utils.data.Subset(ds, [i]), batch_size=1)[0]
        keep = np.argsort(-p.scores)[:3]
        engine_hits += near([p.boxes[k] for k in keep if p.scores[k] >= 0.05], rec)
    assert engine_hits > 0, (f"the model trained for {res.iterations} iterations ({budget:.0f} s budget) finds none of the "
                    "lesions even through the detector engine's own inference; raise A3D_SLOW_TRAIN_S")

    hits = 0
    for rec in records:
        series = synth_root / "Images_png" / rec.series_dir
        files = sorted(p.name for p in series.glob("*.png"))
        key_index = files.index(f"{rec.key_slice:03d}.png")
        out = tmp_path / f"pred_{rec.image_id}"
        rc = main(["predict", str(series), "--checkpoint", str(ckpt), "--out", str(out), "--dl-info",
                   str(synth_root / "DL_info.csv"), "--slices", f"{key_index - 1}:{key_index + 2}",
                   "--score-threshold", "0.05", "--no-html"])
        assert rc == 0
        doc = json.loads((out / "predictions.json").read_text())
        on_key = sorted((d for d in doc["detections"] if d["slice"] == key_index), key=lambda d: -d["score"])
        assert all(d["slice_file"] == f"{rec.key_slice:03d}.png" for d in on_key)
        hits += near([d["box_px"] for d in on_key[:3]], rec)
    assert hits >= engine_hits, f"a3d predict found {hits} of {len(records)} lesions, the engine's inference {engine_hits}"
