"""``python -m tsunagi.loadgen ...``: the ``tsunagi loadgen`` command on its own."""

import sys

from tsunagi.loadgen.cli import main

sys.exit(main())
