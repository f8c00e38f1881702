"""The manifest (docs/FORMAT.md, "Manifest"), which names the run files in order with their
sizes and checksums, and open's recovery from it: every run's size, header and checksum are
checked, a damaged or missing run is dropped with every later one, and a file the manifest does
not name (a crash's leftover) is deleted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tsunagi.errors import StorageError
from tsunagi.ledger import limits
from tsunagi.ledger.checksum import crc32
from tsunagi.ledger.index.runfile import (
    FORMAT_VERSION,
    HEADER,
    Entry,
    Kind,
    combined_checksum,
    header,
    layout,
    padding,
)
from tsunagi.ledger.log import write_all

log = logging.getLogger(__package__)  # one logger for the index: tsunagi.ledger.index

FOLDER = "index"
MANIFEST = "manifest"
_MANIFEST_TEMPORARY = "manifest.tmp"


def read_manifest(folder: Path) -> tuple[list[Entry], int] | None:
    """The manifest's runs and next run number; None when missing; raises ValueError when it is
    damaged."""
    try:
        data = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    checksum, _, body = data.partition(b"\n")
    if checksum != b"%08x" % crc32(body):
        raise ValueError("its checksum does not match")
    content = json.loads(body)
    if content.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {content.get('format')!r}, expected {FORMAT_VERSION}")
    entries = [Entry(name, kind, first, end, tuple(counts), size, checksum)
               for name, kind, first, end, counts, size, checksum in content["runs"]]
    return entries, int(content["next_run"])


def _manifest_bytes(entries: Iterable[Entry], next_run: int) -> bytes:
    body = json.dumps({"format": FORMAT_VERSION, "next_run": next_run,
                       "runs": [list(entry[:4]) + [list(entry.counts), entry.size,
                                                   entry.checksum] for entry in entries]},
                      separators=(",", ":")).encode()
    return b"%08x\n" % crc32(body) + body


def write_manifest(folder: Path, entries: Iterable[Entry], next_run: int) -> None:
    """Replaces the manifest: a temporary file, fsynced, renamed over it. The folder is not
    fsynced (log.write_file_atomically would): a flush names only files added, and an older
    manifest after a crash costs re-indexing them; the caller fsyncs the folder before it
    deletes a file the older manifest names."""
    temporary = folder / _MANIFEST_TEMPORARY
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, [_manifest_bytes(entries, next_run)], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, folder / MANIFEST)


def _damage(folder: Path, entry: Entry) -> str | None:
    """What is wrong with a run file, or None when its size, header and checksum are right."""
    path = folder / entry.name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "the file is missing"
    try:
        size = os.fstat(fd).st_size
        columns, expected = layout(entry.kind, entry.counts)
        if size != entry.size:
            return f"{size} bytes, the manifest says {entry.size}"
        if size != expected:
            return f"{size} bytes, its row counts make {expected}"
        found = os.pread(fd, HEADER.size, 0)
        if found != header(entry):
            return "its header does not match the manifest"
        checksums = []
        for (offset, dtype, count), zeros in zip(columns.values(), padding(columns).values()):
            checksum, end, offset = 0, offset + count * dtype.itemsize, offset - zeros
            while offset < end:
                chunk = os.pread(fd, min(end - offset, limits.index_read_chunk_bytes),
                                 offset)
                checksum, offset = crc32(chunk, checksum), offset + len(chunk)
            checksums.append(checksum)
        if combined_checksum(found, checksums) != entry.checksum:
            return "its checksum does not match"
        return None
    finally:
        os.close(fd)


def _recover(folder: Path, entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """The block and owner runs that survive the checks (see the package's docstring)."""
    blocks = [entry for entry in entries if entry.kind == Kind.blocks]
    owners = [entry for entry in entries if entry.kind == Kind.owners]
    kept_blocks, end = [], 0
    for entry in blocks:
        problem = "it does not start where the run before it ends" if entry.first != end \
            else _damage(folder, entry)
        if problem:
            log.warning("index run %s (heights %d..%d) is damaged: %s. Dropping it and %d later "
                        "block runs: the index falls back to height %d and catches up from the "
                        "block log", entry.name, entry.first, entry.end - 1, problem,
                        len(blocks) - len(kept_blocks) - 1, end)
            break
        kept_blocks.append(entry)
        end = entry.end
    for position, entry in enumerate(owners):
        problem = _damage(folder, entry)
        if problem:
            # Its accounts came with blocks from entry.first on: index those blocks again.
            kept_blocks = [block for block in kept_blocks if block.end <= entry.first]
            log.warning("index owner run %s is damaged: %s. Dropping it and %d later owner "
                        "runs: the index falls back to height %d and catches up from the block "
                        "log", entry.name, problem, len(owners) - position - 1,
                        kept_blocks[-1].end if kept_blocks else 0)
            return kept_blocks, owners[:position]
    return kept_blocks, owners


def _remove_leftovers(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        if path.name not in keep:
            log.info("index: deleting %s, which the manifest does not name (a crash's "
                     "leftover)", path.name)
            if path.is_dir():
                raise StorageError(f"{path} is a folder inside the index: move it elsewhere")
            path.unlink()


def recovered(folder: Path) -> tuple[list[Entry], int]:
    """The runs of ``folder`` (created if missing) that pass open's checks, block runs first,
    and the next run number; the manifest rewritten when it dropped any, and leftovers
    deleted. Raises OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        found = read_manifest(folder)
    except (ValueError, KeyError, TypeError) as error:
        log.warning("the index manifest in %s is damaged (%s): indexing again from "
                    "the block log", folder, error)
        found = None
    entries, next_run = found if found is not None else ([], 1)
    blocks, owners = _recover(folder, entries)
    if found is None or len(blocks) + len(owners) < len(entries):
        write_manifest(folder, blocks + owners, next_run)
    _remove_leftovers(folder, {MANIFEST} | {entry.name for entry in blocks + owners})
    return blocks + owners, next_run
