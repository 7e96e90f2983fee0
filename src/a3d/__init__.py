"""a3d: universal lesion detection in CT with 3D context fusion operators.

Entry points for users:
- ``a3d.ops``: the seven operators (``OPERATORS``, ``from_conv2d``, ``set_thickness``).
- ``a3d.convert``: turn a 2D model into a 3D one with a chosen operator.
- ``a3d.models``: the truncated DenseNet-121 3D backbone and the detector.

Every subpackage is reachable as an attribute after ``import a3d`` (``a3d.models.densenet121_3d``),
imported on first use: ``import a3d`` itself does not import torch.
"""

import importlib
import sys

# python-gdcm's gdcm.py (loaded by pydicom's JPEG decoder plugins) first tries `import dl` and
# `import DLFCN`, Python 2 modules: a folder of that name in the working directory (on sys.path under
# `python -m` and torchrun) imports as a namespace package without RTLD_NOW and breaks `import pydicom`.
# A None entry makes both imports fail cleanly, as they do on any Python 3 without such a folder.
for _py2_module in ("dl", "DLFCN"):
    sys.modules.setdefault(_py2_module, None)
del _py2_module

__version__ = "0.1.0"

__all__ = ["convert", "__version__"]

# Submodules reachable as attributes of the package, imported on first access.
_SUBMODULES = ("boxes", "cli", "config", "converter", "cost", "data", "engine", "errors", "evaluation",
               "io", "models", "ops")


def __getattr__(name: str):
    # Lazy, so that `import a3d.evaluation` (numpy only) and data-loader workers do not pay for torch.
    if name == "convert":
        return importlib.import_module("a3d.converter").convert
    if name in _SUBMODULES:
        return importlib.import_module(f"a3d.{name}")
    raise AttributeError(f"module 'a3d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "convert", *_SUBMODULES})
