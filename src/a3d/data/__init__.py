"""DeepLesion data: DL_info.csv reader, dataset, augmentation, GrabCut masks, slice cache, synthetic data.

See docs/data.md. Torch-dependent names (DeepLesionDataset, collate, TrainTransform) are imported
lazily so that the CSV reader, the generator and the mask/cache workers start without torch.
``a3d.data.scans`` (user scans) is imported on its own.
"""

from a3d.data.dl_info import COLUMNS, SPLITS, LesionRecord, group_by_key_slice, read_dl_info, select_split
from a3d.data.slices import hu_to_input

__all__ = [
    "COLUMNS", "SPLITS", "LesionRecord", "read_dl_info", "group_by_key_slice", "select_split",
    "DeepLesionDataset", "collate", "TrainTransform", "hu_to_input",
]

_LAZY = {"DeepLesionDataset": "a3d.data.dataset", "collate": "a3d.data.dataset",
         "TrainTransform": "a3d.data.transforms"}


def __getattr__(name):
    if name in _LAZY:  # torch-backed: imported on first use (see the module docstring)
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'a3d.data' has no attribute {name!r}")
