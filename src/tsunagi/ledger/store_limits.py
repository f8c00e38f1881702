"""The old name of :mod:`tsunagi.ledger.limits`, kept for ledger/index.py until its owner, who is
splitting it into a package, imports ``tsunagi.ledger.limits``; then this file goes.

It is that very module, not a copy, so a limit set through either name is seen through both.
"""

import sys

from tsunagi.ledger import limits

sys.modules[__name__] = limits
