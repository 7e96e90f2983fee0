"""Models: the 3D DenseNet-121 backbone and the Mask R-CNN detector built on it."""

from a3d.models.backbone import DenseNet3dBackbone, densenet121_3d
from a3d.models.detector import build_detector

__all__ = ["DenseNet3dBackbone", "build_detector", "densenet121_3d"]
