"""Models: the 3D DenseNet-121 backbone (and the detector, added by its own module)."""

from a3d.models.backbone import DenseNet3dBackbone, densenet121_3d

__all__ = ["DenseNet3dBackbone", "densenet121_3d"]
from a3d.models.detector import build_detector  # noqa: E402  (the detector issue)
