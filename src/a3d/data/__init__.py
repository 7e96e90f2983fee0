"""DeepLesion data: DL_info.csv reader, dataset, augmentation, GrabCut masks, slice cache, synthetic data.

See docs/data.md. ``a3d.data.scans`` (user scans) is imported on its own.
"""

from a3d.data.dl_info import COLUMNS, SPLITS, LesionRecord, group_by_key_slice, read_dl_info, select_split
from a3d.data.dataset import DeepLesionDataset, collate
from a3d.data.slices import hu_to_input

__all__ = [
    "COLUMNS", "SPLITS", "LesionRecord", "read_dl_info", "group_by_key_slice", "select_split",
    "DeepLesionDataset", "collate", "hu_to_input",
]
