"""Shared fixtures. ``synth_root``: a small synthetic DeepLesion-format dataset (session scoped).

``synth_root`` (Path): 8 patients, 128 x 128 images, seed 0, generated once per session into a
temporary folder by :func:`a3d.data.synth.generate` (about a second). It holds ``DL_info.csv``,
``Images_png/`` and ``masks_true/`` (true key-slice masks, the GrabCut mask file format). Treat it as
read-only; tests that write (masks, cache) should copy it first (``synth_copy``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Training fixtures (tiny_checkpoint, cpu_threads) live in their own module.
pytest_plugins = ["fixtures_train"]

SYNTH_PATIENTS = 8
SYNTH_SIZE = 128
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from a3d.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "deeplesion"
    generate(root, patients=SYNTH_PATIENTS, seed=SYNTH_SEED, size=SYNTH_SIZE)
    return root


@pytest.fixture()
def synth_copy(synth_root, tmp_path) -> Path:
    """A writable per-test copy of ``synth_root``."""
    dst = tmp_path / "deeplesion"
    shutil.copytree(synth_root, dst)
    return dst
