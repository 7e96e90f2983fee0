"""Importing labelled CT volumes (NIfTI, or DICOM series with a NIfTI label) as a DeepLesion-format root.

``import_volumes(src, out, ImportOptions(...))`` (``a3d data import SRC --out ROOT``) writes

- ``DL_info.csv``, ``Images_png/``, ``masks_true/``: what training, evaluation, the grid and the
  slice cache read (``data.mask_dir = "masks_true"``);
- ``import/mapping.csv``: source files -> invented patient/study/series numbers, split, counts,
  and the skipped cases with their reason; ``import/cases/<case>.json``: per-case records (resume);
- ``luna16/``: annotations, excluded findings and scan lists per split for ``a3d eval3d``;
- ``volumes/<split>/``: links to the source images, for ``a3d predict``.

Modules by job: ``sources`` (pairing rules), ``volumes`` (reading and checks, canonical LPS),
``lesions`` (components, key slice, RECIST), ``plan`` (numbering, split), ``series`` (slices,
masks, rows, findings), ``luna16`` (evaluation files, volume links), ``run`` (the whole import,
resumable). docs/data.md describes the format and the conventions.
"""

from a3d.data.importer.lesions import Lesion, find_lesions
from a3d.data.importer.plan import Placement, plan_cases, read_split_file
from a3d.data.importer.run import ImportOptions, ImportSummary, import_volumes
from a3d.data.importer.sources import LABEL_SUFFIXES, Case, find_cases

__all__ = ["Case", "ImportOptions", "ImportSummary", "LABEL_SUFFIXES", "Lesion", "Placement", "find_cases",
           "find_lesions", "import_volumes", "plan_cases", "read_split_file"]
