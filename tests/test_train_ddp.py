"""DistributedDataParallel (2 gloo processes, 1 image each) matches one process at the same total
batch (2 images). Sampling is made deterministic (every anchor / RoI is used), augmentation is off,
and every sample is the same image so per-process BatchNorm statistics equal the batch's."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fixtures_train import small_config

DETERMINISTIC = ["model.rpn_batch_per_image=100000", "model.roi_batch_per_image=100000",
                 "data.flip=false", "data.augment=false", "train.max_iters=3", "train.warmup_iters=0",
                 "train.lr=0.02"]


class Repeat(torch.utils.data.Dataset):
    """``n`` copies of one sample."""

    def __init__(self, root, slices, n=4):
        from a3d.data import DeepLesionDataset

        self.ds = DeepLesionDataset(root, "train", slices=slices, size=64, mask_dir="masks_true")
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[0]


def _worker(rank, world, port, root, out, batch):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from a3d.engine.train import train

    cfg = small_config(root, *DETERMINISTIC, f"train.batch_size={batch}", "train.device=cpu")
    train(cfg, out, progress=False, train_dataset=Repeat(root, cfg.model.slices), log=lambda s: None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_processes_match_one(synth_root, tmp_path):
    from a3d.engine.checkpoint import load_checkpoint
    from a3d.engine.train import train

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        assert k not in os.environ
    cfg = small_config(synth_root, *DETERMINISTIC, "train.batch_size=2", "train.device=cpu")
    train(cfg, tmp_path / "single", progress=False, train_dataset=Repeat(synth_root, 3), log=lambda s: None)
    mp.spawn(_worker, args=(2, _free_port(), str(synth_root), str(tmp_path / "ddp"), 1), nprocs=2, join=True)

    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert a["iteration"] == b["iteration"] == 3 and b["world_size"] == 2
    init = None
    moved = 0.0
    for k, v in a["model"].items():
        if not v.is_floating_point() or "running_" in k:
            continue  # BN running variance uses n-1 over the local batch: differs by design
        torch.testing.assert_close(b["model"][k], v, rtol=1e-3, atol=1e-4, msg=k)
        moved += 1
    assert moved > 100
    assert len(b["rng"]) == 2  # each rank's RNG state is kept
    del init
