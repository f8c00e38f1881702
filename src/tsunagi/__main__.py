"""``python -m tsunagi`` runs the command line."""

import sys

from tsunagi.cli import main

sys.exit(main())
