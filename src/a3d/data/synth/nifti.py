"""Synthetic labelled CT volumes as NIfTI, in the Medical Segmentation Decathlon layout.

``generate_nifti(out, cases, seed, size=128, orientation="RAS")`` writes

- ``imagesTr/case_NNN.nii.gz``: int16 HU volumes, the anatomy, lesions and look-alike vessels of
  :mod:`a3d.data.synth` (:func:`a3d.data.synth.series.render_slice`), one series per case: the
  slices of its stored range (+-15 mm around 1-2 key slices), pixel spacing x, y and the slice
  interval as z spacing;
- ``labelsTr/case_NNN.nii.gz``: uint8 labels on the same grid: 1 lesion, 2 vessel (the look-alikes,
  so that ``a3d data import --labels 1`` has something to leave out), 0 elsewhere;
- ``dataset.json``: the MSD description (labels, file pairs).

The volume is built in a3d's canonical LPS orientation (:mod:`a3d.data.scans`) and stored in
``orientation`` (a DICOM-style code as SimpleITK's ``DICOMOrient`` takes it: ``RAS`` as most
NIfTI files, ``LPS``, or a permutation such as ``SLP``); the physical geometry is the same whatever
the code. The origin puts the image centre on the z axis. Same (cases, seed, size, orientation),
same bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from a3d.data.synth.anatomy import _layout
from a3d.data.synth.lesions import _place_lesions, _place_tubes
from a3d.data.synth.series import render_slice
from a3d.errors import A3DError
from a3d.io import write_text_atomic

LABELS = {"0": "background", "1": "lesion", "2": "vessel"}

__all__ = ["LABELS", "generate_nifti", "write_nifti"]


def _sitk():
    # SimpleITK: imported when volumes are written, so that a3d.data.synth stays light
    import SimpleITK as sitk

    return sitk


def write_nifti(image, path: str | os.PathLike) -> None:
    """Write a SimpleITK image to ``path`` (.nii.gz, compressed) atomically (temp file + rename)."""
    sitk = _sitk()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".tmp.nii.gz", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _case_volumes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, tuple, int]:
    """(HU int16 (Z, S, S), labels uint8 (Z, S, S), (px, px, interval) mm, first slice number) in LPS.
    A layout where no lesion could be placed is drawn again: every case has at least one lesion."""
    lesions: list = []
    while not lesions:
        lay = _layout(rng, size)
        lesions = _place_lesions(lay, rng)
    tubes = _place_tubes(lay, lesions, rng)
    noise_sd = float(rng.uniform(8, 18))
    first, last = lay.srange
    hu = np.empty((last - first + 1, size, size), dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for z, n in enumerate(range(first, last + 1)):
        img, lesion_masks, vessels = render_slice(lay, lesions, tubes, n, noise_sd, rng, masks=True)
        hu[z] = np.clip(np.round(img), -32768, 32767).astype(np.int16)
        labels[z][vessels] = 2
        for m in lesion_masks:
            labels[z][m] = 1
    return hu, labels, (lay.px, lay.px, lay.interval), first


def _image(arr: np.ndarray, spacing: tuple, first: int, orientation: str):
    """The LPS array as a SimpleITK image, re-oriented to ``orientation`` for storage."""
    sitk = _sitk()
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing))
    z_count, h, w = arr.shape
    img.SetOrigin((-(w - 1) / 2 * spacing[0], -(h - 1) / 2 * spacing[1], first * spacing[2]))
    return sitk.DICOMOrient(img, orientation)


def _check_orientation(orientation: str) -> str:
    code = str(orientation).upper()
    axes = [{"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}.get(c) for c in code]
    if len(code) != 3 or None in axes or sorted(axes) != [0, 1, 2]:
        raise A3DError(f"--orientation {orientation!r}: expected a 3-letter code with one of L/R, one of P/A and "
                       "one of S/I (e.g. RAS, LPS)")
    return code


def generate_nifti(out: str | os.PathLike, cases: int, seed: int, size: int = 128, orientation: str = "RAS",
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``cases`` synthetic labelled volumes to ``out`` (MSD layout); returns ``out`` as a Path."""
    out = Path(out)
    if not 1 <= cases <= 999:
        raise A3DError(f"--cases must be within 1..999, got {cases}")
    if not 64 <= size <= 1024:
        raise A3DError(f"--size must be within 64..1024, got {size}")
    code = _check_orientation(orientation)
    training = []
    for i, ss in enumerate(np.random.SeedSequence([int(seed), 104729]).spawn(cases)):
        name = f"case_{i + 1:03d}.nii.gz"
        hu, labels, spacing, first = _case_volumes(np.random.default_rng(ss), size)
        write_nifti(_image(hu, spacing, first, code), out / "imagesTr" / name)
        write_nifti(_image(labels, spacing, first, code), out / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        if progress is not None:
            progress(i + 1, cases)
    desc = {"name": "a3d synthetic lesions", "description": "synthetic CT with lesion and vessel labels (a3d)",
            "modality": {"0": "CT"}, "labels": LABELS, "numTraining": cases, "numTest": 0,
            "training": training, "test": []}
    write_text_atomic(out / "dataset.json", json.dumps(desc, indent=1) + "\n")
    return out
