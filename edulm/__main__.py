"""``python -m edulm`` runs the command line."""

import sys

from edulm.cli import main

sys.exit(main())
