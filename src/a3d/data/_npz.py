"""Deterministic, pickle-free .npz writing (fixed zip timestamps, so same arrays -> same bytes), atomic."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from a3d.io import atomic_path


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write ``arrays`` as a compressed .npz (readable by ``np.load(allow_pickle=False)``), atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
