"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class A3DError(Exception):
    """Bad input or configuration: the message names the file, row, field or layer and what was expected."""


class ConversionError(A3DError, TypeError):
    """A layer the 2D-to-3D converter cannot convert, or an operator used against its contract."""
