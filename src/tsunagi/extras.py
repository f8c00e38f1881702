"""Optional dependencies: which extra of the tsunagi package brings which modules, and the check
a command runs before it needs one, so a user reads what to install instead of a traceback::

    pip install 'tsunagi[http]'     the node's REST API and web pages (--http), metrics (--metrics)
    pip install 'tsunagi[charts]'   PNG charts: tsunagi loadgen --out, the bench tables
    pip install 'tsunagi[ethereum]' ConnectionChain's Ethereum leg (tsunagi.connect.ethereum):
                                    an in-process eth-tester chain, Vyper contracts, proofs
    pip install 'tsunagi[all]'      all of them

The library, the ledger, the node's binary protocol, the client and ``tsunagi demo`` need none.
"""

from __future__ import annotations

import importlib

from tsunagi.errors import MissingExtraError

__all__ = ["EXTRAS", "require"]

# The modules each extra installs (tests/test_extras.py checks them against pyproject.toml).
EXTRAS = {
    "http": ("fastapi", "fastapi_offline", "uvicorn", "prometheus_client", "jinja2"),
    "charts": ("matplotlib",),
    "ethereum": ("eth_tester", "web3", "vyper", "eth_account", "eth_hash", "rlp", "trie"),
}


def require(extra: str, feature: str) -> None:
    """Imports the modules of ``extra``; raises MissingExtraError naming the pip command when
    one is missing. ``feature`` says what needs it in the command's words (``node --http``)."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(f"{feature} needs the {extra} extra: pip install "
                                    f"'tsunagi[{extra}]' ({exc})") from None
