"""Data loading for training: datasets from the config, a deterministic sampler, seeded samples.

Determinism (what makes ``--resume`` end with the same weights as an uninterrupted run):

- the order of samples is a function of (seed, epoch) only (:class:`EpochSampler`), split across
  ranks like DistributedSampler (padded so every rank gets the same number of batches);
- each sample's augmentation is drawn from RNGs seeded by (seed, epoch, sample index)
  (:class:`SeededDataset`), whatever the worker count, rank or resume point; the caller's global
  RNG states are left untouched;
- a resumed epoch starts its sampler at the batch where the checkpoint was taken.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from a3d.config import Config, DataConfig
from a3d.data import DeepLesionDataset, collate
from a3d.data.transforms import TrainTransform


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint32)[0])


class SeededDataset(Dataset):
    """Wraps a dataset; item ``(index, seed)`` -> ``dataset[index]`` with python/numpy/torch RNGs seeded."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class EpochSampler(Sampler):
    """This rank's ``(index, sample seed)`` pairs for one epoch: a (seed, epoch) permutation, padded to
    a multiple of ``world_size * batch_size``, every ``world_size``-th element from ``rank``."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n < 1:
            raise ValueError("EpochSampler: no samples (an epoch of 0 samples cannot be padded to a batch)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(self.n / (self.world_size * self.batch_size)))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.batches_per_epoch * self.world_size * self.batch_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[:total]

    def __iter__(self):
        mine = self._indices()[self.rank :: self.world_size]
        for index in mine[self.start_batch * self.batch_size :]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def train_transform(d: DataConfig):
    """The training augmentation for ``d``: :class:`a3d.data.transforms.TrainTransform` (random
    horizontal flip, then shift/scale/rotate with probability ``augment_p``), or None."""
    if not d.flip and not d.augment:
        return None
    return TrainTransform(flip_p=0.5 if d.flip else 0.0, shift=d.shift, scale=d.scale, rotate=d.rotate,
                          p=d.augment_p if d.augment else 0.0, interpolation=d.augment_interpolation,
                          border=d.augment_border)


def make_dataset(cfg: Config, split: str, train: bool, masks: bool | None = None) -> DeepLesionDataset:
    """The ``split`` of ``cfg.data.root`` as the model sees it (training augmentation if ``train``)."""
    d = cfg.data
    return DeepLesionDataset(
        d.root,
        split=split,
        slices=cfg.model.slices,
        size=d.size,
        transform=train_transform(d) if train else None,
        masks=(d.masks and cfg.model.mask) if masks is None else masks,
        mask_dir=d.mask_dir,
        context_spacing_mm=d.context_spacing_mm, operator=cfg.model.operator, pad_divisor=d.pad_divisor,
    )


def make_train_loader(dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int, workers: int,
                      shuffle: bool = True) -> tuple[DataLoader, EpochSampler]:
    """This rank's loader of ``(images, targets)`` batches, and its sampler (call ``set_epoch``)."""
    sampler = EpochSampler(len(dataset), batch_size, seed, rank, world_size, shuffle=shuffle)
    loader = DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        # a private generator: creating an iterator must not draw from the global torch RNG
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler
