"""Training engine: checkpoints (weights_only), exact resume, NaN stop, refusing foreign checkpoints,
load_model / predict_split, the schedule, and the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from a3d.cli import main
from a3d.config import config_from_dict, load_config, override_config
from a3d.engine.checkpoint import FORMAT, load_checkpoint, load_model_state
from a3d.engine.evaluate import load_model, predict_split
from a3d.engine.grid import run_grid
from a3d.engine.schedule import WarmupStepSchedule, scaled_lr
from a3d.engine.train import TrainingDiverged, train
from a3d.errors import A3DError
from a3d.evaluation import ImagePredictions
from a3d.models import build_detector
from fixtures_train import small_config, small_overrides

pytestmark = pytest.mark.usefixtures("cpu_threads")

QUIET = dict(progress=False, log=lambda s: None)


def _params(path):
    return load_checkpoint(path)["model"]


def test_checkpoint_contents_weights_only(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "iteration", "config",
                "a3d_version", "format"):
        assert key in ckpt
    assert ckpt["format"] == FORMAT and ckpt["iteration"] == 2
    assert ckpt["config"]["model"]["operator"] == "a3d" and isinstance(ckpt["config"], dict)
    rng = ckpt["rng"][0]
    assert set(rng) == {"python", "numpy", "torch", "cuda"}
    run = tiny_checkpoint.parent
    assert (run / "best.pt").is_file() and (run / "config.toml").is_file() and (run / "tb").is_dir()


def test_resume_gives_the_same_weights(synth_root, tmp_path):
    """An interrupted run resumed from last.pt continues at iteration 3 and ends with the weights of
    an uninterrupted run.

    Fails if the resume ignores the checkpoint (``if False`` at the restore: training is deterministic,
    so a restart reproduces the weights, but it starts at iteration 0), or if the optimizer momentum,
    the RNG states or the position inside the epoch are not restored (the weights then differ)."""
    # flips + shift/scale/rotate on: augmentation must be a function of (seed, epoch, sample)
    # a fixed thread count: float reductions (hence bit-exactness) depend on it
    over = ["train.epochs=2", "train.checkpoint_every=3", "data.augment=true", "data.flip=true", "train.seed=3",
            "train.threads=1"]
    cfg = small_config(synth_root, *over)
    straight = train(cfg, tmp_path / "straight", **QUIET)
    assert straight.iterations >= 5

    class Killed(Exception):
        pass

    def kill_at_4(it, losses):
        if it == 4:  # after the checkpoint at iteration 3, before step 5 completes
            raise Killed
        return losses

    with pytest.raises(Killed):
        train(cfg, tmp_path / "resumed", loss_hook=kill_at_4, **QUIET)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["iteration"] == 3
    steps = []

    def record(it, losses):
        steps.append(it)
        return losses

    resumed = train(cfg, tmp_path / "resumed", resume=True, loss_hook=record, **QUIET)
    assert steps == list(range(3, straight.iterations))  # only the iterations not done before the kill
    assert resumed.iterations == straight.iterations
    a, b = _params(tmp_path / "straight" / "last.pt"), _params(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synth_root, tmp_path):
    cfg = small_config(synth_root, "train.max_iters=6", "train.checkpoint_every=2")

    def nan_at_3(it, losses):
        if it == 3:
            losses = dict(losses)
            losses["loss_classifier"] = losses["loss_classifier"] * float("nan")
        return losses

    with pytest.raises(TrainingDiverged, match=r"iteration 4\b.*last good checkpoint.*iteration 2"):
        train(cfg, tmp_path / "run", loss_hook=nan_at_3, **QUIET)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_huge_lr_diverges_with_a_clear_message(synth_root, tmp_path):
    cfg = small_config(synth_root, "train.max_iters=8", "train.lr=1e12", "train.clip_grad=0", "train.warmup_iters=0")
    with pytest.raises(TrainingDiverged, match="iteration"):
        train(cfg, tmp_path / "run", **QUIET)


def test_resume_refuses_other_model_config(tiny_checkpoint, synth_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    cfg = small_config(synth_root, "train.max_iters=2", "model.operator=none")
    with pytest.raises(A3DError, match=r"another model config.*model\.operator"):
        train(cfg, run, resume=True, **QUIET)
    with pytest.raises(A3DError, match="already holds a run"):
        train(small_config(synth_root, "train.max_iters=2"), run, **QUIET)


def test_foreign_checkpoints_refused(tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    bad = dict(ckpt, format=FORMAT + 1)
    torch.save(bad, tmp_path / "future.pt")
    with pytest.raises(A3DError, match=f"format {FORMAT + 1}"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(A3DError, match="not an a3d checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(A3DError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    other = override_config(config_from_dict(ckpt["config"]), ["model.fc_width=32"])
    with pytest.raises(A3DError, match="another config"):
        load_model_state(build_detector(other.model), ckpt["model"], "x.pt")


def test_load_model_and_predict_split(tiny_checkpoint, synth_root):
    model, cfg = load_model(tiny_checkpoint, "cpu")
    assert not model.training and cfg.model.operator == "a3d"
    preds = predict_split(tiny_checkpoint, synth_root, "val", batch_size=2, device="cpu")
    assert preds and all(isinstance(p, ImagePredictions) for p in preds)
    # boxes are in the original 128 px image's coordinates (the model ran at 64 px)
    allb = torch.cat([torch.as_tensor(p.boxes).reshape(-1, 4) for p in preds])
    assert allb.numel() and float(allb.max()) > 64 and float(allb.max()) <= 128
    assert all(len(p.scores) <= 50 for p in preds)


def test_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupStepSchedule(opt, 0.02, warmup_iters=500, warmup_factor=0.01, step_iters=[900, 1600], gamma=0.1)
    assert s.lr_at(0) == pytest.approx(0.0002)
    assert s.lr_at(250) == pytest.approx(0.02 * (0.01 + 0.99 * 0.5))
    assert s.lr_at(500) == pytest.approx(0.02)
    assert s.lr_at(899) == pytest.approx(0.02) and s.lr_at(900) == pytest.approx(0.002)
    assert s.lr_at(1600) == pytest.approx(0.0002)


def test_lr_scaled_with_total_batch():
    cfg = load_config("a3d_x7", ["train.batch_size=2"])
    assert scaled_lr(cfg, 1) == pytest.approx(0.01) and scaled_lr(cfg, 4) == pytest.approx(0.04)


def test_cli_train_and_resume(synth_root, tmp_path, capsys):
    """Fails if ``--resume`` ignores the checkpoint: resuming the finished run would then train it
    again and rewrite last.pt, and extending it would start a new history."""
    out = tmp_path / "cli_run"
    args = ["train", "tiny", *small_overrides(synth_root), "train.max_iters=2", "train.val_every=1",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    hist = json.loads((out / "history.json").read_text())
    assert [h["iteration"] for h in hist] == [2] and 0.0 <= hist[-1]["val_average"] <= 1.0
    assert main(args) == 2  # the folder already holds a run
    assert "already holds a run" in capsys.readouterr().err
    # resume a finished run from its stored config: nothing left to do, last.pt not rewritten
    before = (out / "last.pt").stat()
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    after = (out / "last.pt").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # extend it by one iteration: the history continues
    assert main(["train", "train.max_iters=3", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["iteration"] == 3
    assert [h["iteration"] for h in json.loads((out / "history.json").read_text())] == [2, 3]


def test_cli_resume_without_a_checkpoint(synth_root, tmp_path, capsys):
    """Fails if ``--resume`` on a folder without last.pt starts a new run instead of stopping."""
    out = tmp_path / "nothing_here"
    assert main(["train", "tiny", *small_overrides(synth_root), "--resume", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt not found" in err and "Traceback" not in err
    assert main(["train", "--resume", "--out", str(out)]) == 2  # no config: the stored one is missing too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt" in err and "not found" in err
    assert not (out / "last.pt").exists()


def test_resume_refuses_another_total_batch(tiny_checkpoint, synth_root, tmp_path):
    """Fails if resuming skips the world-size/batch check (the run would continue at a position of
    another epoch length, with another data order)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    with pytest.raises(A3DError, match=r"1 process\(es\) x train.batch_size 2 .*here 1 x 1 .*same world size"):
        train(small_config(synth_root, "train.max_iters=4", "train.batch_size=1"), run, resume=True, **QUIET)
    # a checkpoint of 2 processes resumed by 1 (same per-process batch)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    torch.save(dict(ckpt, world_size=2), run / "last.pt")
    with pytest.raises(A3DError, match=r"2 process\(es\) x train.batch_size 2 .*here 1 x 2"):
        train(small_config(synth_root, "train.max_iters=4"), run, resume=True, **QUIET)
    assert load_checkpoint(run / "last.pt")["iteration"] == 2


def _drop_split(root, code: str) -> None:
    """Remove the rows of one Train_Val_Test code from root/DL_info.csv."""
    path = root / "DL_info.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("Train_Val_Test")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[col] != code])


def test_empty_split_is_a_clear_error(synth_copy, tmp_path):
    """Fails if an empty validation split is validated on silently (every epoch would score 0 and the
    first one become best.pt), or if an empty training split gets past setup."""
    _drop_split(synth_copy, "2")  # no val rows
    with pytest.raises(A3DError, match=r"split 'val' has no samples.*train\.val_every=0"):
        train(small_config(synth_copy, "train.max_iters=1", "train.val_every=1"), tmp_path / "a", **QUIET)
    with pytest.raises(A3DError, match=r"split 'val' has no samples.*nothing to train on"):
        train(small_config(synth_copy, "train.max_iters=1", "data.train_split=val"), tmp_path / "b", **QUIET)
    assert not (tmp_path / "a" / "last.pt").exists() and not (tmp_path / "b" / "last.pt").exists()


def test_grid_one_pair(synth_root, tmp_path):
    over = [*small_overrides(synth_root), "train.max_iters=1"]
    res = run_grid(["none_x3", "a3d_x3"], tmp_path / "grid", "tiny", over, split="val", progress=False,
                   log=lambda s: None)
    assert [r.name for r in res["runs"]] == ["none_x3", "a3d_x3"]
    md = res["report"]["markdown"].read_text()
    assert "A3D" in md and "No Fusion" in md
    for r in res["runs"]:
        assert (r.run_dir / "metrics.json").is_file()
    # a second call reuses the finished runs
    again = run_grid(["none_x3"], tmp_path / "grid", "tiny", over, split="val", progress=False, log=lambda s: None)
    assert again["runs"][0].iterations == 1
