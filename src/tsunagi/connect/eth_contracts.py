"""The Vyper contracts of the Ethereum leg (contracts/token.vy, contracts/escrow.vy), compiled
at run time by the ``vyper`` package: no compiler binary is downloaded.

Compiling both takes about 4 s here, so the output (ABI and bytecode) is cached on disk,
keyed by the SHA-256 of the source and the compiler's version: an edited source or another
vyper compiles afresh, a damaged cache file is compiled over. The cache lives in
``$TSUNAGI_CACHE_DIR`` or else ``$XDG_CACHE_HOME/tsunagi`` (``~/.cache/tsunagi``), under
``vyper/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tsunagi import extras

__all__ = ["CONTRACTS", "CompiledContract", "cache_dir", "compile_contract"]

SOURCES = Path(__file__).parent / "contracts"
CONTRACTS = ("token", "escrow")
CACHE_FORMAT = 1  # bumped when the cached document changes shape


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list
    bytecode: bytes
    source_sha256: str
    from_cache: bool  # read from the cache rather than compiled by this call


def cache_dir() -> Path:
    """Where compiled contracts are kept (see the module docstring)."""
    if os.environ.get("TSUNAGI_CACHE_DIR"):
        return Path(os.environ["TSUNAGI_CACHE_DIR"]) / "vyper"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsunagi" / "vyper"


def compile_contract(name: str, cache: Path | None = None) -> CompiledContract:
    """The ABI and bytecode of contracts/``name``.vy, from the cache when it holds this
    source's output for this vyper, else compiled and cached. ``cache`` overrides
    :func:`cache_dir`."""
    extras.require("ethereum", "compiling the Vyper contracts")
    import vyper

    if name not in CONTRACTS:
        raise ValueError(f"unknown contract {name!r}: one of {', '.join(CONTRACTS)}")
    source = (SOURCES / f"{name}.vy").read_bytes()
    digest = hashlib.sha256(source + b"\0" + vyper.__version__.encode()).hexdigest()
    path = (cache or cache_dir()) / f"{name}-{digest}.json"
    cached = _read_cache(path, digest)
    if cached is not None:
        return CompiledContract(name, cached["abi"], bytes.fromhex(cached["bytecode"]),
                                digest, from_cache=True)
    output = vyper.compile_code(source.decode(), output_formats=["abi", "bytecode"])
    bytecode = bytes.fromhex(output["bytecode"].removeprefix("0x"))
    _write_cache(path, {"format": CACHE_FORMAT, "key": digest, "abi": output["abi"],
                        "bytecode": bytecode.hex()})
    return CompiledContract(name, output["abi"], bytecode, digest, from_cache=False)


def _read_cache(path: Path, digest: str) -> dict | None:
    try:
        document = json.loads(path.read_bytes())
        bytes.fromhex(document["bytecode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: compile again
    if document.get("format") != CACHE_FORMAT or document.get("key") != digest \
            or not isinstance(document.get("abi"), list):
        return None
    return document


def _write_cache(path: Path, document: dict) -> None:
    """Writes through a temporary file and a rename, so a reader never sees half a file. A
    cache that cannot be written costs a compile next time, nothing more."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document))
        os.replace(temporary, path)
    except OSError:
        pass
