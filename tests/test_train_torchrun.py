"""``torchrun --nproc_per_node 2 -m a3d.cli train`` end to end (gloo, CPU) with validation on: the run
finishes, writes last.pt / best.pt / history.json, and resumes with more iterations.

Each launch runs under a time limit; a hang is stopped (launcher and workers) and fails the test."""

from __future__ import annotations

import json
import math

import pytest
import torch

from a3d.data import DeepLesionDataset
from a3d.engine.checkpoint import load_checkpoint
from fixtures_train import small_overrides
from torchrun_support import finish, launch

LIMIT_S = 240  # a healthy launch takes ~10-40 s on 2 busy cores


def _torchrun(tmp, *args: str):
    """``torchrun --nproc_per_node 2 -m a3d.cli train ARGS`` (CONFIG and overrides first, then flags);
    after LIMIT_S the launcher and its workers are stopped and the test fails."""
    return finish(*launch(tmp, ["-m", "a3d.cli", "train"], *args, "--no-progress"), LIMIT_S)


def _validations(start: int, total: int, per_epoch: int) -> list[int]:
    """Iterations after ``start`` that end with a validation: each epoch's end and the run's end."""
    return [i for i in range(start + 1, total + 1) if i % per_epoch == 0 or i == total]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_processes_validate_checkpoint_and_resume(synth_root, tmp_path):
    """Fails on a rank skipping a collective the other enters (the hang after validation: rank 0 in a
    barrier, rank 1 gathering RNG states), and if a resumed DDP run ignores its checkpoint (the
    resumed history would then lack the first launch's validations)."""
    run = tmp_path / "run"
    common = [*small_overrides(synth_root), "train.val_every=1", "train.threads=1"]
    first = _torchrun(tmp_path, "tiny", *common, "train.max_iters=2", "--out", str(run))
    assert first.returncode == 0, first.stderr[-3000:]
    n_train = len(DeepLesionDataset(synth_root, "train", masks=False))
    per_epoch = math.ceil(n_train / (2 * 2))  # 2 processes x train.batch_size 2 (tiny)

    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert (run / "best.pt").is_file()
    hist = json.loads((run / "history.json").read_text())
    assert [h["iteration"] for h in hist] == _validations(0, 2, per_epoch)
    assert first.stdout.count("trained 2 iterations") == 1  # rank 0 reports

    total = per_epoch + 1  # crosses an epoch end
    second = _torchrun(tmp_path, "tiny", *common, f"train.max_iters={total}", "--out", str(run), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == total and ckpt["world_size"] == 2
    hist = json.loads((run / "history.json").read_text())
    assert [h["iteration"] for h in hist] == _validations(0, 2, per_epoch) + _validations(2, total, per_epoch)
    assert ckpt["history"] == hist
    best = load_checkpoint(run / "best.pt")
    top = max(h["val_average"] for h in hist)
    assert best["best_metric"] == top
    assert best["iteration"] == next(h["iteration"] for h in hist if h["val_average"] == top)
