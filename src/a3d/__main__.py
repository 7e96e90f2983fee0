"""``python -m a3d ...``: the same program as the ``a3d`` command (``a3d.cli.main``)."""

import sys

from a3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
