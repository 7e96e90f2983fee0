"""a3d: universal lesion detection in CT with 3D context fusion operators.

Entry points for users:
- ``a3d.ops``: the seven operators (``OPERATORS``, ``from_conv2d``, ``set_thickness``).
- ``a3d.convert``: turn a 2D model into a 3D one with a chosen operator.
- ``a3d.models``: the truncated DenseNet-121 3D backbone and the detector.
"""

__version__ = "0.1.0"

__all__ = ["convert", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import a3d.evaluation` (numpy only) and data-loader workers do not pay for torch.
    if name == "convert":
        from a3d.converter import convert

        return convert
    raise AttributeError(f"module 'a3d' has no attribute {name!r}")
