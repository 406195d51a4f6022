"""``python -m tinyodl`` runs the ``tinyodl`` command."""

import sys

from tinyodl.cli import main

sys.exit(main())
