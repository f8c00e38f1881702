"""tsunagi: a performance-first ledger for Python.

The top level re-exports the public API; lower-level pieces stay importable from their modules
(``tsunagi.hashing``, ``tsunagi._native``) but out of this namespace.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("tsunagi")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from tsunagi import errors, hashing, limits  # noqa: E402
from tsunagi.errors import TsunagiError  # noqa: E402

__all__ = sorted(["TsunagiError", "__version__", "errors", "hashing", "limits"])
