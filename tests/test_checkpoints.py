"""Run-folder checkpoints: the full training state in last.pt only, best.pt = weights + config + the
metrics that made it best; history.json records every epoch (mean training loss, lr, validation)."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil

import pytest
import torch

from a3d.cli import main
from a3d.engine.checkpoint import TRAINING_KEYS, load_checkpoint
from a3d.engine.evaluate import load_model
from a3d.engine.loader import make_dataset
from a3d.engine.train import train
from a3d.errors import A3DError
from fixtures_train import small_config
from test_predict_support import synthetic_nifti

pytestmark = pytest.mark.usefixtures("cpu_threads")

QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def validated_run(synth_root, tmp_path_factory):
    """A 2-iteration run validated at its end (so best.pt comes from a validation)."""
    run = tmp_path_factory.mktemp("validated") / "run"
    train(small_config(synth_root, "train.max_iters=2", "train.val_every=1"), run, **QUIET)
    return run


def test_best_holds_weights_config_and_metrics_only(validated_run):
    """best.pt has the weights, config and the record that made it best, not the optimizer, schedule
    or RNG states, and is much smaller than last.pt (SGD momentum alone is as large as the weights).

    Fails if best.pt is written from the full training state (as before: both 136 MB in the demo)."""
    last, best = load_checkpoint(validated_run / "last.pt"), load_checkpoint(validated_run / "best.pt")
    assert set(TRAINING_KEYS) <= set(last)
    assert not set(TRAINING_KEYS) & set(best)
    assert best["config"] == last["config"] and best["iteration"] == last["iteration"] == 2
    hist = json.loads((validated_run / "history.json").read_text())
    assert best["metrics"] == hist[-1] and best["best_metric"] == hist[-1]["val_average"]
    assert best["model"].keys() == last["model"].keys()
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    weights = sum(v.numel() * v.element_size() for v in best["model"].values())
    size_best, size_last = (validated_run / "best.pt").stat().st_size, (validated_run / "last.pt").stat().st_size
    assert size_best < 1.05 * weights and size_last > 1.8 * weights, (size_best, size_last, weights)
    model, cfg = load_model(validated_run / "best.pt")  # what a3d eval / predict / grid read
    assert cfg.name == "tiny" and not model.training


def test_history_has_every_epoch_with_its_mean_training_loss(synth_root, tmp_path):
    """Without validation (the demo's setting), history.json still has one record per epoch: the mean
    of that epoch's total losses (from the losses the step used) and the lr of its last iteration;
    a run resumed mid-epoch writes the same history as a straight one.

    Fails if records are written only for validated epochs (history.json was ``[]`` in the demo), if
    the mean is taken over another set of iterations, or if the partial epoch sum is not resumed."""
    cfg = small_config(synth_root, "train.max_iters=3", "train.checkpoint_every=1", "train.threads=1",
                       "train.seed=1")
    four = torch.utils.data.Subset(make_dataset(cfg, cfg.data.train_split, train=True), range(4))
    losses: dict[int, float] = {}

    def record(it, parts):
        losses[it] = sum(float(v.detach()) for v in parts.values())
        return parts

    train(cfg, tmp_path / "straight", train_dataset=four, loss_hook=record, **QUIET)
    hist = json.loads((tmp_path / "straight" / "history.json").read_text())
    # 4 samples, batch 2: epochs of 2 iterations; lr 0.02 x 2/4 with a 2-iteration linear warm-up from
    # 1 %, x 0.1 from the first step (lr_steps 7 of 10 epochs: iteration round(0.7 x 3) = 2)
    assert [(h["epoch"], h["iteration"]) for h in hist] == [(1, 2), (2, 3)]
    assert hist[0]["train_loss"] == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-5)
    assert hist[1]["train_loss"] == pytest.approx(losses[2], rel=1e-5)
    assert hist[0]["lr"] == pytest.approx(0.01 * (0.01 + 0.99 / 2)) and hist[1]["lr"] == pytest.approx(0.001)
    assert "val_average" not in hist[0]

    class Killed(Exception):
        pass

    def kill_at_1(it, parts):
        if it == 1:  # the second step of epoch 1: last.pt is the mid-epoch checkpoint at iteration 1
            raise Killed
        return parts

    with pytest.raises(Killed):
        train(cfg, tmp_path / "resumed", train_dataset=four, loss_hook=kill_at_1, **QUIET)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["iteration"] == 1
    train(cfg, tmp_path / "resumed", resume=True, train_dataset=four, **QUIET)
    assert json.loads((tmp_path / "resumed" / "history.json").read_text()) == hist


def test_resume_from_a_weights_only_file_is_refused(validated_run, tmp_path, capsys):
    """A best.pt copied to last.pt cannot be resumed: one line says it holds weights only and that
    resuming needs the run's last.pt.

    Fails if load_for_resume does not check for the training state (a KeyError traceback instead)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(validated_run / "best.pt", run / "last.pt")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights only" in err and "last.pt" in err and "Traceback" not in err


def _unsafe_pickle(path):
    """A torch.save file holding an object weights_only refuses (argparse.Namespace: any class would do)."""
    torch.save({"format": 1, "model": argparse.Namespace(x=1)}, path)
    return path


def test_foreign_files_get_one_line_saying_what_they_are(validated_run, synth_root, tmp_path, capsys):
    """A text file, pickles with arbitrary objects (torch zip and plain pickle), a truncated
    checkpoint and a folder that is not an export each get one message that says what the file is;
    none relays PyTorch's advice to load with weights_only=False; eval, predict and export all say so
    in one line, exit 2.

    Fails if load_checkpoint passes PyTorch's message through (it says "Re-running torch.load with
    weights_only set to False will likely succeed") or reports the text file as ``KeyError: 101``."""
    text = tmp_path / "notes.pt"
    text.write_text("epoch 12: loss 0.4\n")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"ns": argparse.Namespace(a=1)}))
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((validated_run / "best.pt").read_bytes()[:4096])
    unsafe = _unsafe_pickle(tmp_path / "unsafe.pt")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    for path, expected in ((text, "a text file"), (unsafe, "arbitrary Python objects"),
                           (plain, "arbitrary Python objects"), (truncated, "damaged or truncated"),
                           (empty, "not an a3d export folder")):
        with pytest.raises(A3DError) as err:
            load_checkpoint(path)
        msg = str(err.value)
        assert expected in msg and str(path) in msg and "weights_only" not in msg and "\n" not in msg, msg

    nifti = synthetic_nifti(tmp_path / "ct.nii.gz")[0]
    for argv in (["eval", str(unsafe), "--data", str(synth_root), "--split", "val", "--out", str(tmp_path / "e")],
                 ["predict", str(nifti), "--checkpoint", str(unsafe), "--out", str(tmp_path / "p")],
                 ["export", str(unsafe), "--out", str(tmp_path / "x")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "arbitrary Python objects" in err, err
        assert "weights_only" not in err and "Traceback" not in err, err
