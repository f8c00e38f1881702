"""The native hashing core beside plain-Python hashlib and beside this machine's limit.

Run ``python bench/hashing_table.py [--out DIR] [--repeats N] [--scale S]``: it measures every
workload of the issue in one run (median of N repetitions), prints one table and, with --out,
writes ``hashing.json`` and ``hashing.png`` there. bench/bench_hashing.py times the same cases
with pytest-benchmark.

The machine's limit is SHA-256 compressions a second on one core as OpenSSL measures it
(``openssl speed -evp sha256`` on 16 KiB buffers: bytes/s / 64), times the threads a case uses,
divided by the compressions one item costs: 2 a nonce (the header's first 64 bytes are hashed
once, a midstate), 3 a header (2 for 80 bytes, 1 for the 32-byte second hash), 4 a 128-byte
record, 3 a Merkle parent (64 bytes plus padding is 2, then 1). OpenSSL hashes one message at a
time, so its rate is bound by the latency of the SHA-NI instructions; code that interleaves
independent messages (nonces, records, Merkle pairs) can pass it, and a share above 100% is then
a real measurement, not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from tsunagi import hashing

REGTEST_BITS = 0x207FFFFF  # Bitcoin regtest: about every second hash qualifies, mining is cheap
HARD_BITS = 0x03000001  # target 1: no nonce qualifies, so a search covers its whole range
HEADERS = 1_000_000
LEAVES = 1_000_000
RECORDS = 1_000_000
RECORD_BYTES = 128
PORTABLE_ENV = "TSUNAGI_SHA256_PORTABLE"


@dataclass
class Machine:
    """SHA-256 compressions a second on one core (median of the OpenSSL runs), and the cores."""

    compressions_per_s: float
    cores: int
    openssl_runs: list[float] = field(default_factory=list)

    def limit(self, compressions_per_item: float, threads: int) -> float:
        """Items a second this machine could do at best on ``threads`` threads."""
        return self.compressions_per_s * min(threads, self.cores) / compressions_per_item


def openssl_compressions_per_s(seconds: int = 2) -> float:
    """One ``openssl speed`` run on 16 KiB buffers: bytes/s / 64 = compressions/s on one core."""
    done = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "-bytes", "16384", "-evp", "sha256"],
        capture_output=True, text=True, check=True)
    # The last line reads e.g. "sha256   1850564.35k": thousands of bytes a second.
    match = re.search(r"^sha256\s+([\d.]+)k\s*$", done.stdout, re.M | re.I)
    if not match:
        raise RuntimeError(f"cannot read openssl speed output:\n{done.stdout}")
    return float(match[1]) * 1000 / 64


def measure_machine(repeats: int = 3) -> Machine:
    runs = [openssl_compressions_per_s() for _ in range(repeats)]
    return Machine(statistics.median(runs), hashing.cpu_count(), runs)


@contextlib.contextmanager
def forced_backend(name: str | None) -> Iterator[None]:
    """Runs the block on the named backend ('portable' or 'shani'), or as it is for None."""
    saved = os.environ.get(PORTABLE_ENV)
    if name is not None:
        if name == "portable":
            os.environ[PORTABLE_ENV] = "1"
        else:
            os.environ.pop(PORTABLE_ENV, None)
        hashing.select_backend()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PORTABLE_ENV, None)
        else:
            os.environ[PORTABLE_ENV] = saved
        hashing.select_backend()


def hashlib_nonce_search(header: bytes, first: int, count: int) -> int | None:
    """The nonce search in plain Python: hashlib with the same midstate trick as the C code."""
    target = hashing.bits_to_target(hashing.header_fields(header)[4])
    sha256 = hashlib.sha256
    midstate = sha256(header[:64])
    tail = header[64:76]
    pack = struct.Struct("<I").pack
    for nonce in range(first, first + count):
        inner = midstate.copy()
        inner.update(tail + pack(nonce))
        if int.from_bytes(sha256(inner.digest()).digest(), "little") <= target:
            return nonce
    return None


def mine_chain(count: int, seed: int = 1) -> bytes:
    """A valid chain of ``count`` regtest headers, mined with hashlib (not with tsunagi)."""
    roots = np.random.default_rng(seed).bytes(32 * count)
    target = hashing.bits_to_target(REGTEST_BITS)
    sha256 = hashlib.sha256
    pack_header = struct.Struct("<I32s32sIII").pack_into
    pack_nonce = struct.Struct("<I").pack_into
    header = bytearray(80)
    chain = bytearray(80 * count)
    prev = bytes(32)
    for index in range(count):
        root = roots[32 * index:32 * index + 32]
        pack_header(header, 0, 0x20000000, prev, root, 1_700_000_000 + index, REGTEST_BITS, 0)
        nonce = 0
        while True:
            digest = sha256(sha256(header).digest()).digest()
            if int.from_bytes(digest, "little") <= target:
                break
            nonce += 1
            pack_nonce(header, 76, nonce)
        chain[80 * index:80 * index + 80] = header
        prev = digest
    return bytes(chain)


def hashlib_validate_headers(headers: bytes, prev_hash: bytes | None) -> tuple[int, int]:
    """validate_headers in plain Python: link, bits, proof of work, header by header."""
    sha256 = hashlib.sha256
    view = memoryview(headers)
    targets: dict[bytes, int | None] = {}
    expected = prev_hash
    count = len(headers) // 80
    for index in range(count):
        header = view[80 * index:80 * index + 80]
        if expected is not None and header[4:36] != expected:
            return index, hashing.HeaderResult.bad_link
        bits = header[72:76].tobytes()
        if bits not in targets:
            try:
                targets[bits] = hashing.bits_to_target(int.from_bytes(bits, "little")) or None
            except ValueError:
                targets[bits] = None
        target = targets[bits]
        if target is None:
            return index, hashing.HeaderResult.bad_bits
        digest = sha256(sha256(header).digest()).digest()
        if int.from_bytes(digest, "little") > target:
            return index, hashing.HeaderResult.bad_pow
        expected = digest
    return count, hashing.HeaderResult.ok


def hashlib_merkle_root(leaves: list[bytes]) -> bytes:
    """Bitcoin's Merkle root in plain Python (an odd level pairs its last hash with itself)."""
    sha256 = hashlib.sha256
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256(sha256(level[i] + level[i + 1]).digest()).digest()
                 for i in range(0, len(level), 2)]
    return level[0] if level else bytes(32)


def hashlib_sha256d_records(buffer: bytes, record_size: int) -> list[bytes]:
    sha256 = hashlib.sha256
    view = memoryview(buffer)
    return [sha256(sha256(view[start:start + record_size]).digest()).digest()
            for start in range(0, len(buffer), record_size)]


def merkle_parents_total(leaves: int) -> int:
    """Parent hashes a Merkle tree of ``leaves`` leaves computes, all levels together."""
    total = 0
    while leaves > 1:
        leaves = (leaves + 1) // 2
        total += leaves
    return total


class Workloads:
    """The inputs, built once on first use (the header chain takes a few seconds)."""

    def __init__(self, scale: float = 1.0, seed: int = 7):
        self.headers_count = max(2, int(HEADERS * scale))
        self.leaves_count = max(2, int(LEAVES * scale))
        self.records_count = max(2, int(RECORDS * scale))
        self.nonce_scale = scale
        self.rng = np.random.default_rng(seed)

    @cached_property
    def hard_header(self) -> bytes:
        return hashing.make_header(1, self.rng.bytes(32), self.rng.bytes(32), 1_700_000_000,
                                   HARD_BITS)

    @cached_property
    def chain(self) -> bytes:
        return mine_chain(self.headers_count)

    @cached_property
    def leaves(self) -> np.ndarray:
        return np.frombuffer(self.rng.bytes(32 * self.leaves_count), np.uint8).reshape(-1, 32)

    @cached_property
    def leaf_list(self) -> list[bytes]:
        return [row.tobytes() for row in self.leaves]

    @cached_property
    def merkle_root(self) -> bytes:
        return hashlib_merkle_root(self.leaf_list)

    @cached_property
    def records(self) -> bytes:
        return self.rng.bytes(RECORD_BYTES * self.records_count)

    def records_right(self, digests) -> bool:
        """First, middle and last digests agree with hashlib."""
        rows = [0, self.records_count // 2, self.records_count - 1]
        want = hashlib_sha256d_records(
            b"".join(self.records[i * RECORD_BYTES:(i + 1) * RECORD_BYTES] for i in rows),
            RECORD_BYTES)
        return len(digests) == self.records_count and [bytes(digests[i]) for i in rows] == want

    def nonces(self, count: int) -> int:
        return max(1 << 12, int(count * self.nonce_scale))


@dataclass
class Target:
    """What the issue asks of a case, and a test of it on the measured rate and median time."""

    text: str
    met: Callable[[float, float, float | None], bool]


@dataclass
class Case:
    group: str
    name: str
    items: int  # work items one run does: nonces, headers, leaves or records
    unit: str
    run: Callable[[], object]
    right: Callable[[object], bool]  # the answer of a run is the right one
    rounds: int
    compressions_per_item: float
    threads: int
    baseline: bool = False
    backend: str | None = None  # None: the default (SHA-NI where the CPU has it)
    target: Target | None = None

    def limit(self, machine: Machine) -> float:
        return machine.limit(self.compressions_per_item, self.threads)


def nonce_cases(work: Workloads) -> list[Case]:
    header = work.hard_header

    def native(count: int, threads: int) -> Callable[[], object]:
        return lambda: hashing.search_nonce(header, 0, count, threads)

    counts = {"1": work.nonces(1 << 23), "2": work.nonces(1 << 24),
              "portable": work.nonces(1 << 21), "hashlib": work.nonces(1 << 15)}
    two = Target("2 threads >= 80% of limit", lambda rate, s, limit: rate >= 0.8 * limit)
    none = lambda answer: answer is None  # noqa: E731 - target 1 is never met
    return [
        Case("nonce search", "native, 1 thread", counts["1"], "nonces",
             native(counts["1"], 1), none, 5, 2, 1),
        Case("nonce search", "native, 2 threads", counts["2"], "nonces",
             native(counts["2"], 2), none, 5, 2, 2, target=two),
        Case("nonce search", "portable backend, 1 thread", counts["portable"], "nonces",
             native(counts["portable"], 1), none, 3, 2, 1, backend="portable"),
        Case("nonce search", "hashlib loop", counts["hashlib"], "nonces",
             lambda: hashlib_nonce_search(header, 0, counts["hashlib"]), none, 3, 2, 1,
             baseline=True),
    ]


def header_cases(work: Workloads) -> list[Case]:
    count = work.headers_count
    ok = lambda answer: tuple(answer) == (count, hashing.HeaderResult.ok)  # noqa: E731
    ten_million = Target(">= 10 M headers/s on 2 cores", lambda rate, s, limit: rate >= 10e6)
    return [
        Case("validate headers", "native, 1 thread", count, "headers",
             lambda: hashing.validate_headers(work.chain, bytes(32), 1), ok, 5, 3, 1),
        Case("validate headers", "native, 2 threads", count, "headers",
             lambda: hashing.validate_headers(work.chain, bytes(32), 2), ok, 5, 3, 2,
             target=ten_million),
        Case("validate headers", "hashlib loop", count, "headers",
             lambda: hashlib_validate_headers(work.chain, bytes(32)), ok, 2, 3, 1,
             baseline=True),
    ]


def merkle_cases(work: Workloads) -> list[Case]:
    right = lambda answer: answer == work.merkle_root  # noqa: E731
    # The target is a time for 1 M leaves; scaled to the leaf count actually used.
    seconds_max = 0.150 * work.leaves_count / LEAVES
    fast = Target(f"< {seconds_max * 1e3:.0f} ms on 1 core", lambda rate, s, limit: s < seconds_max)
    parents = merkle_parents_total(work.leaves_count)
    # Items are leaves; a leaf costs parents/leaves (about 1) parents of 3 compressions each.
    cost = 3 * parents / work.leaves_count
    return [
        Case("merkle root", "native, 1 thread", work.leaves_count, "leaves",
             lambda: hashing.merkle_root(work.leaves), right, 5, cost, 1, target=fast),
        Case("merkle root", "hashlib reference", work.leaves_count, "leaves",
             lambda: hashlib_merkle_root(work.leaf_list), right, 2, cost, 1, baseline=True),
    ]


def record_cases(work: Workloads) -> list[Case]:
    def native(threads: int) -> Callable[[], object]:
        return lambda: hashing.sha256d_records(work.records, RECORD_BYTES, threads)

    count = work.records_count
    return [
        Case("sha256d records", "native, 1 thread", count, "records", native(1),
             work.records_right, 5, 4, 1),
        Case("sha256d records", "native, 2 threads", count, "records", native(2),
             work.records_right, 5, 4, 2),
        Case("sha256d records", "hashlib loop", count, "records",
             lambda: hashlib_sha256d_records(work.records, RECORD_BYTES), work.records_right,
             2, 4, 1, baseline=True),
    ]


def all_cases(work: Workloads) -> list[Case]:
    return nonce_cases(work) + header_cases(work) + merkle_cases(work) + record_cases(work)


@dataclass
class Measured:
    case: Case
    seconds: list[float]
    limit: float

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.case.items / self.median_s

    @property
    def of_limit(self) -> float:
        return self.rate / self.limit

    @property
    def met(self) -> bool | None:
        target = self.case.target
        return None if target is None else target.met(self.rate, self.median_s, self.limit)


def measure(case: Case, machine: Machine, repeats: int | None = None) -> Measured:
    """Times ``repeats`` runs (after one warm-up run that also checks the answer)."""
    with forced_backend(case.backend):
        answer = case.run()
        if not case.right(answer):
            raise AssertionError(f"{case.group} / {case.name}: wrong answer {answer!r:.80}")
        seconds = []
        for _ in range(repeats or case.rounds):
            started = time.perf_counter()
            case.run()
            seconds.append(time.perf_counter() - started)
    return Measured(case, seconds, case.limit(machine))


def speedups(rows: list[Measured]) -> dict[int, float]:
    """Rate over the same group's hashlib baseline, by row position."""
    base = {row.case.group: row.rate for row in rows if row.case.baseline}
    return {i: row.rate / base[row.case.group] for i, row in enumerate(rows)
            if row.case.group in base and not row.case.baseline}


def si(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:.0f} "


def print_table(rows: list[Measured], machine: Machine) -> None:
    from rich.console import Console
    from rich.table import Table

    limit = si(machine.compressions_per_s)
    table = Table(title=f"tsunagi hashing, backend {hashing.backend()}, {machine.cores} cores; "
                        f"limit from openssl: {limit}SHA-256 compressions/s a core")
    for column in ("workload", "case", "median", "figure", "limit", "of limit", "target",
                   "met", "x hashlib"):
        table.add_column(column, justify="left" if column in ("workload", "case", "target")
                         else "right")
    faster = speedups(rows)
    for i, row in enumerate(rows):
        met = {None: "", True: "[green]yes[/]", False: "[red]no[/]"}[row.met]
        table.add_row(row.case.group, row.case.name, f"{row.median_s * 1e3:.1f} ms",
                      f"{si(row.rate)}{row.case.unit}/s", f"{si(row.limit)}/s",
                      f"{row.of_limit:.0%}", row.case.target.text if row.case.target else "",
                      met, f"{faster[i]:.0f}x" if i in faster else "")
    console = Console()
    if not console.is_terminal:  # a pipe or file: wide enough that no cell wraps
        console = Console(width=max(console.width, 170))
    console.print(table)


def as_json(rows: list[Measured], machine: Machine, repeats: int) -> dict:
    faster = speedups(rows)
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": machine.cores,
                    "compressions_per_s_core": machine.compressions_per_s,
                    "openssl_runs": machine.openssl_runs, "backend": hashing.backend()},
        "repeats": repeats,
        "rows": [{"group": row.case.group, "case": row.case.name, "items": row.case.items,
                  "unit": row.case.unit, "threads": row.case.threads,
                  "backend": row.case.backend or hashing.backend(), "seconds": row.seconds,
                  "median_s": row.median_s, "rate_per_s": row.rate, "limit_per_s": row.limit,
                  "of_limit": row.of_limit,
                  "target": row.case.target.text if row.case.target else None,
                  "met": row.met, "x_hashlib": faster.get(i)} for i, row in enumerate(rows)],
    }


def draw(rows: list[Measured], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row.case.group}: {row.case.name}" for row in rows]
    shares = [100 * row.of_limit for row in rows]
    colours = ["#999999" if row.case.baseline else
               {None: "#4477aa", True: "#228833", False: "#cc3311"}[row.met] for row in rows]
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    axes.barh(labels, shares, color=colours)
    axes.set_xscale("log")
    axes.invert_yaxis()
    axes.axvline(80, color="black", linestyle="--", linewidth=1)
    axes.text(80, 1.01, " 80%: the nonce-search target", fontsize=8,
              transform=axes.get_xaxis_transform())
    for y, (share, row) in enumerate(zip(shares, rows)):
        axes.text(share, y, f" {share:.1f}%  {si(row.rate)}{row.case.unit}/s",
                  va="center", fontsize=8)
    axes.set_xlabel("share of the machine's SHA-256 limit (openssl speed), log scale")
    axes.set_xlim(min(shares) / 2, 400)
    axes.set_title("tsunagi native hashing vs hashlib and the machine limit")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for hashing.json and hashing.png")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs a case (median)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="workload size relative to the issue's (1 M headers etc.)")
    args = parser.parse_args(argv)
    machine = measure_machine()
    work = Workloads(args.scale)
    rows = []
    for case in all_cases(work):
        repeats = args.repeats if not case.baseline else max(1, min(args.repeats, 2))
        rows.append(measure(case, machine, repeats))
    machine_after = measure_machine()  # the limit again: a busy machine shows as a change
    print_table(rows, machine)
    print(f"openssl compressions/s/core before: {si(machine.compressions_per_s)}, after: "
          f"{si(machine_after.compressions_per_s)}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = as_json(rows, machine, args.repeats)
        report["machine"]["compressions_per_s_core_after"] = machine_after.compressions_per_s
        (args.out / "hashing.json").write_text(json.dumps(report, indent=2))
        draw(rows, args.out / "hashing.png")
        print(f"wrote {args.out / 'hashing.json'} and {args.out / 'hashing.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
