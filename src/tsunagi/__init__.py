"""tsunagi: a performance-first ledger for Python.

The top level re-exports the public API; lower-level pieces stay importable from their modules
(``tsunagi.hashing``, ``tsunagi.core.block``, ``tsunagi._native``) but out of this namespace.
Names load on first use, so ``import tsunagi`` (and every CLI start) stays cheap.
"""

from importlib import import_module as _import_module
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("tsunagi")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "AsyncClient": "tsunagi.node.client",
    "BatchAnswer": "tsunagi.ledger",
    "BatchAuth": "tsunagi.core.block",
    "ChainConfig": "tsunagi.core.config",
    "Client": "tsunagi.node.client",
    "Kind": "tsunagi.core.records",
    "Ledger": "tsunagi.ledger",
    "PrivateKey": "tsunagi.core.keys",
    "Result": "tsunagi.core.codes",
    "TsunagiError": "tsunagi.errors",
    "errors": None,
    "hashing": None,
    "limits": None,
    "records": "tsunagi.core",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tsunagi' has no attribute {name!r}")
    home = _EXPORTS[name]
    value = (_import_module(f"tsunagi.{name}") if home is None
             else getattr(_import_module(home), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
