"""Synthetic DeepLesion-format data: CT-like series with 3D lesions, look-alike vessels and a DL_info.csv.

``generate(out, patients, seed, size=512)`` writes

- ``Images_png/<patient:06d>_<study:02d>_<series:02d>/<slice:03d>.png``: 16-bit PNGs, HU + 32768;
- ``DL_info.csv``: all 18 DeepLesion columns (1-based pixel coordinates, like the real file);
- ``masks_true/<image_id>.npz``: the true key-slice lesion masks, same format as ``a3d data masks``
  writes (``masks`` uint8 (N, H, W), ``boxes`` float32 (N, 4) 0-based, lesions in CSV row order,
  noisy rows included), so ``DeepLesionDataset(..., mask_dir="masks_true")`` trains on them and
  GrabCut masks can be scored against them.

Anatomy: an elliptical body (fat rim, soft tissue) in one of three regions (chest: lungs, mediastinum,
heart, spine; abdomen: liver, spleen, kidneys, spine, aorta, bowel; pelvis: bladder, iliac bones),
with smooth texture and Gaussian noise. Lesions are (sometimes two-lobed) ellipsoids in an organ, flattened in z
(semi-axis 3-15 mm) so that 2-mm neighbours show them shrink or end,
with organ-typical contrast (mostly strong, about 10% subtle), long diameters mostly 7.5%-30% of
the image width (10-40 px at 128 px). Look-alikes: tubes (vessels) running through every slice of a
series with the same intensity and calibre as that organ's lesions: on one slice they look like a
round lesion; only the neighbouring slices tell them apart. Slice intervals 1, 1.25, 2, 2.5, 5 mm,
folders span about +-15 mm around the key slices; ~4% rows are flagged Possibly_noisy; a
patient-level 70/15/15 split (at least one val and one test patient when N >= 3). Same seed, same bytes.

Modules: ``anatomy`` (body, organs, series layout), ``lesions`` (lesions, vessels),
``series`` (one series' slices, masks and CSV rows), ``nifti`` (the same anatomy as NIfTI volumes
with lesion labels). The RECIST measurement lives in :mod:`a3d.data.recist`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from a3d.data.dl_info import write_dl_info
from a3d.data.recist import recist_from_mask
from a3d.data.synth.anatomy import INTERVALS
from a3d.data.synth.series import _series
from a3d.errors import A3DError
from a3d.progress import Progress

__all__ = ["generate", "recist_from_mask", "split_codes", "INTERVALS"]


def split_codes(n: int, rng: np.random.Generator) -> list[int]:
    """Patient-level 70/15/15 split codes (1/2/3) for n patients; >= 1 val and test when n >= 3."""
    if n >= 3:
        n_val = max(1, int(round(0.15 * n)))
        n_test = max(1, int(round(0.15 * n)))
    elif n == 2:
        n_val, n_test = 0, 1
    else:
        n_val = n_test = 0
    codes = np.array([1] * (n - n_val - n_test) + [2] * n_val + [3] * n_test)
    return rng.permutation(codes).tolist()


def generate(out: str | os.PathLike, patients: int, seed: int, size: int = 512, *, progress: bool = False,
             max_series: int = 3) -> Path:
    """Write a synthetic DeepLesion-format dataset to ``out``; returns ``out`` as a Path.

    Deterministic: the same (patients, seed, size) gives byte-identical files.
    """
    out = Path(out)
    if patients < 1:
        raise A3DError(f"--patients must be >= 1, got {patients}")
    if not 64 <= size <= 1024:
        raise A3DError(f"--size must be within 64..1024, got {size}")
    if int(seed) < 0:
        raise A3DError(f"--seed must be >= 0, got {seed}")
    if patients > 999_999:
        raise A3DError("--patients must be < 1,000,000 (6-digit patient index)")
    root_ss = np.random.SeedSequence(int(seed))
    split_rng = np.random.default_rng(root_ss.spawn(1)[0])
    splits = split_codes(patients, split_rng)
    pss = np.random.SeedSequence([int(seed), 7919]).spawn(patients)
    rows = []
    with Progress(patients, "synth", "patient", enabled=progress) as bar:
        for pi in range(patients):
            rows += _patient(out, pi + 1, splits[pi], np.random.default_rng(pss[pi]), size, max_series)
            bar.update()
    write_dl_info(out / "DL_info.csv", rows)
    return out


def _patient(out: Path, pid: int, split: int, rng: np.random.Generator, S: int, max_series: int) -> list:
    gender = "M" if rng.random() < 0.55 else "F"
    age = None if rng.random() < 0.06 else float(int(rng.integers(18, 90)))
    n_series = int(rng.integers(1, max_series + 1))
    rows = []
    study, series = 1, 0
    for k in range(n_series):
        if k > 0 and rng.random() < 0.5:
            study += 1
            series = 0
        series += 1
        rows += _series(out, pid, study, series, split, gender, age, rng, S)
    return rows
