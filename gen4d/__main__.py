"""``python -m gen4d``: the ``gen4d`` command without its console script (e.g. from a source tree)."""

import sys

from gen4d.cli import main

sys.exit(main())
