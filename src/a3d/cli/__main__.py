import sys

from a3d.cli import main

sys.exit(main())
