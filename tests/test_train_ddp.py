"""DistributedDataParallel (2 gloo processes, 1 image each) takes the same steps as one process that
averages the gradients of the same 2 images, each forwarded alone (as each rank does).

The two images differ, so each rank's gradient differs from the average: a missing DDP wrapper or a
sampler that gives both ranks the same image changes the result. Sampling is made deterministic
(every anchor / RoI is used), augmentation is off, and the reference below is written by hand
(plain torch.optim.SGD, no a3d training code)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from a3d.data import DeepLesionDataset, collate
from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.train import train
from a3d.models import build_detector
from fixtures_train import small_config

ITERATIONS = 2
DETERMINISTIC = ["model.rpn_batch_per_image=100000", "model.roi_batch_per_image=100000",
                 "data.flip=false", "data.augment=false", f"train.max_iters={ITERATIONS}", "train.warmup_iters=0",
                 "train.lr=0.02", "train.lr_steps=100", "train.epochs=100", "train.batch_size=1",
                 "train.device=cpu"]


class Pair(torch.utils.data.Dataset):
    """The first two key slices of the synthetic train split: two different images."""

    def __init__(self, root, slices):
        self.ds = DeepLesionDataset(root, "train", slices=slices, size=64, mask_dir="masks_true")

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.ds[i]


def _worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = small_config(root, *DETERMINISTIC)
    train(cfg, out, progress=False, train_dataset=Pair(root, cfg.model.slices), log=lambda s: None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(cfg, samples) -> tuple[dict, dict]:
    """(initial, final) weights of a hand-written loop: each step averages the two images' gradients."""
    torch.manual_seed(cfg.train.seed)  # rank 0 builds the model from this seed; DDP copies it to rank 1
    model = build_detector(cfg.model).train()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    # lr 0.02 is for 4 images; the total batch is 2 (1 per process)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    for _ in range(ITERATIONS):
        opt.zero_grad()
        for sample in samples:
            images, targets = collate([sample])
            thickness = torch.stack([t["thickness"] for t in targets])
            losses = model(images, thickness=thickness, targets=targets)
            (sum(losses.values()) / len(samples)).backward()
        torch.nn.utils.clip_grad_norm_(params, 35.0)
        opt.step()
    return init, model.state_dict()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_processes_average_their_gradients(synth_root, tmp_path):
    """Fails if the DistributedDataParallel wrapper is removed (rank 0 then steps on its own image's
    gradient), or if EpochSampler hands both ranks the same image (``mine = order[0::world]``)."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        assert k not in os.environ
    cfg = small_config(synth_root, *DETERMINISTIC)
    pair = Pair(synth_root, cfg.model.slices)
    samples = [pair[0], pair[1]]
    assert not torch.equal(samples[0][0], samples[1][0])
    mp.spawn(_worker, args=(2, _free_port(), str(synth_root), str(tmp_path / "ddp")), nprocs=2, join=True)

    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["iteration"] == ITERATIONS and ckpt["world_size"] == 2
    assert len(ckpt["rng"]) == 2  # each rank's RNG state is kept
    init, ref = _reference(cfg, samples)
    ddp = ckpt["model"]
    compared = moved = 0
    for k, v in ref.items():
        if not v.is_floating_point() or "running_" in k:
            continue  # BN running statistics: rank 0's own batch under DDP, both images here
        # the step taken, compared relative to its size (weights alone would hide a small step)
        step_ref, step_ddp = v - init[k], ddp[k] - init[k]
        scale = float(step_ref.norm()) + 1e-7 * float(init[k].norm()) + 1e-12
        assert float((step_ddp - step_ref).norm()) <= 5e-2 * scale, k
        compared += 1
        moved += not torch.equal(ddp[k], init[k])
    assert compared > 100 and moved == compared
