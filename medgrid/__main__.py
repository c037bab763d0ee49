"""``python -m medgrid``: the same as the ``medgrid`` console script."""

import sys

from medgrid.cli import main

sys.exit(main())
