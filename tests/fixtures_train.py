"""Training fixtures shared across test modules (register with ``pytest_plugins = ["fixtures_train"]``).

- ``small_overrides(root)``: overrides that shrink the tiny preset further (64 px, narrow heads) for
  fast CPU tests; same code path.
- ``tiny_checkpoint`` (session): a checkpoint of the tiny preset trained 2 iterations on
  ``synth_root`` (an ``a3d train`` run folder's ``last.pt``; the run folder is its parent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from a3d.config import load_config
from a3d.engine.runtime import set_cpu_threads
from a3d.engine.train import train


def small_overrides(root) -> list[str]:
    return [
        f"data.root={root}",
        "data.size=64",
        "data.workers=0",
        "model.fc_width=64",
        "model.rpn_channels=32",
        "model.mask_channels=16",
        "model.mask_convs=1",
        "model.rpn_pre_nms_train=200",
        "model.rpn_post_nms_train=50",
        "model.rpn_pre_nms_test=100",
        "model.rpn_post_nms_test=30",
        "model.roi_batch_per_image=32",
        "train.val_every=0",
        "train.warmup_iters=2",
    ]


def small_config(root, *overrides: str):
    return load_config("tiny", [*small_overrides(root), *overrides])


@pytest.fixture(scope="session")
def tiny_checkpoint(synth_root, tmp_path_factory) -> Path:
    cfg = small_config(synth_root, "train.max_iters=2")
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    train(cfg, run, progress=False, log=lambda s: None)
    return run / "last.pt"


@pytest.fixture(scope="module")
def cpu_threads():
    """Torch CPU threads by the trainer's heuristic (1 when the CPUs are already busy), restored after."""
    before = torch.get_num_threads()
    set_cpu_threads(0, torch.device("cpu"), lambda s: None)
    yield torch.get_num_threads()
    torch.set_num_threads(before)
