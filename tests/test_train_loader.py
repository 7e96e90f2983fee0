"""Training data order and seeding (a3d.engine.loader): rank shards, (seed, epoch) orders, per-sample
RNG seeds, and training with loader worker processes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.loader import EpochSampler, SeededDataset
from a3d.engine.train import train
from fixtures_train import small_config

QUIET = dict(progress=False, log=lambda s: None)


def _indices(sampler) -> list[int]:
    return [i for i, _ in sampler]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_shards_are_disjoint_and_cover_the_epoch(world):
    """Fails if ranks take overlapping shards (``mine = order[0::world]`` or ``order[rank:]``) or
    drop samples."""
    n, batch = 12, 2  # 12 = a multiple of world x batch: no padding
    shards = [_indices(EpochSampler(n, batch, seed=5, rank=r, world_size=world)) for r in range(world)]
    assert [len(s) for s in shards] == [n // world] * world
    assert sorted(sum(shards, [])) == list(range(n))


def test_uneven_epoch_is_padded_so_every_rank_gets_the_same_batches():
    """Fails if the padding is dropped (a rank would run one batch fewer, and DDP would hang)."""
    n, batch, world = 7, 2, 2  # ceil(7 / 4) = 2 batches per rank, 8 slots for 7 samples
    samplers = [EpochSampler(n, batch, seed=1, rank=r, world_size=world) for r in range(world)]
    shards = [_indices(s) for s in samplers]
    assert all(s.batches_per_epoch == 2 and len(s) == 4 for s in samplers)
    assert [len(s) for s in shards] == [4, 4]
    flat = sum(shards, [])
    assert set(flat) == set(range(n)) and len(flat) == 8


def test_order_is_a_function_of_seed_and_epoch():
    """Fails if the permutation ignores the epoch (every epoch in the same order) or is drawn from the
    global RNG (two samplers with one seed would disagree)."""

    def order(seed, epoch):
        s = EpochSampler(20, 2, seed=seed)
        s.set_epoch(epoch)
        torch.rand(3)  # the global RNG must not matter
        return _indices(s)

    assert order(1, 3) == order(1, 3)
    assert sorted(order(1, 3)) == list(range(20))
    assert order(1, 4) != order(1, 3)
    assert order(2, 3) != order(1, 3)


def test_sample_seeds_do_not_depend_on_the_rank_and_resume_skips_done_batches():
    """Fails if a sample's seed depends on the rank that draws it, or if ``set_epoch(e, start_batch)``
    does not continue where the epoch stopped."""
    whole = dict(EpochSampler(12, 2, seed=4, world_size=1).__iter__())
    for r in range(2):
        s = EpochSampler(12, 2, seed=4, rank=r, world_size=2)
        assert all(whole[i] == seed for i, seed in s)
    full = EpochSampler(12, 2, seed=4, rank=1, world_size=2)
    full.set_epoch(3)
    tail = EpochSampler(12, 2, seed=4, rank=1, world_size=2)
    tail.set_epoch(3, start_batch=2)
    assert list(tail) == list(full)[2 * 2:] and len(tail) == 2


class _Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seeded_dataset_draws_from_the_sample_seed_and_restores_global_rngs():
    """Fails if SeededDataset leaves one of python/numpy/torch unseeded (its draw then follows the
    global state) or does not restore the caller's RNG states."""
    ds = SeededDataset(_Draws())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    got = ds[(3, 42)]
    expected = (random.Random(42).random(), float(np.random.RandomState(42).rand()),
                float(torch.rand((), generator=torch.Generator().manual_seed(42))))
    assert got == expected
    assert ds[(7, 42)] == expected and ds[(3, 43)] != expected
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_worker_processes_give_the_same_weights_as_in_process_loading(synth_root, tmp_path):
    """Fails if a sample's augmentation depends on the process loading it (e.g. SeededDataset not
    seeding torch, whose RNG the flips and affine warps draw from: workers have their own)."""
    over = ["train.max_iters=2", "data.flip=true", "data.augment=true", "data.augment_p=1.0", "train.threads=1"]
    train(small_config(synth_root, *over, "data.workers=0"), tmp_path / "w0", **QUIET)
    train(small_config(synth_root, *over, "data.workers=2"), tmp_path / "w2", **QUIET)
    a = load_checkpoint(tmp_path / "w0" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "w2" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
