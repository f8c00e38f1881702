"""Contracts: calls a second through Runtime.execute_block, and state-root update time per block.

Run ``python bench/bench_contracts.py`` (about a minute here; ``TSUNAGI_BENCH_SMALL=1`` makes a
CI-sized run of a 100,000-key state). TSUNAGI_BENCH_ROUNDS sets the rounds of each case
(default 5); every figure printed is the median of its rounds.

- ``calls``: blocks of 10,000 ``register`` calls of the example NameRegistry (each reads two
  keys, writes two, emits an event), on a fresh state each round, three ways: compiled with the
  step charges (what a chain runs), compiled without them, and without them but counted by a
  ``sys.settrace`` line tracer that traces contract frames only (the other way to meter).
- ``root``: a state of 1,000,000 keys (32-byte keys, 32-byte values); a block changes 1,000,
  10,000 or 100,000 random existing keys; the time of ``end_block`` (re-hashing the dirty
  leaves and their ancestors) is reported apart from the time of the ``set`` calls. Beside it
  the full rebuild of the same tree (every leaf re-hashed) and the rate of the native batch
  hasher on 65-byte nodes, from which the hashing a 256-level sparse Merkle tree would need is
  estimated (256 node hashes per changed key, against about 20 here).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tsunagi.contracts import Call, Registry, Runtime, WorldState, source_sha256
from tsunagi.hashing import sha256d_records

ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "5"))
SMALL = os.environ.get("TSUNAGI_BENCH_SMALL") == "1"
STATE_KEYS = 100_000 if SMALL else 1_000_000
CHANGED = (1_000, 10_000) if SMALL else (1_000, 10_000, 100_000)
CALLS_PER_BLOCK = 2_000 if SMALL else 10_000
NAMES = "tsunagi.contracts.examples:NameRegistry"
RESULTS = Path(__file__).parent / "results" / "contracts.json"


def runtime(metering: bool) -> Runtime:
    registry = Registry(metering=metering)
    registry.install(NAMES, source_sha256(NAMES))
    return Runtime(registry)


def calls_block(count: int, salt: int) -> list[Call]:
    return [Call("names", "register", [f"n{salt}-{index}", b"target"], index % 100,
                 bytes(32), index.to_bytes(32, "little")) for index in range(count)]


def line_tracer(contract_file: str):
    """A global trace function that counts the lines of contract frames (and only those)."""
    counter = [0]

    def local(frame, event, arg):
        if event == "line":
            counter[0] += 1
        return local

    def global_trace(frame, event, arg):
        return local if frame.f_code.co_filename == contract_file else None
    return global_trace, counter


def bench_calls() -> dict[str, float]:
    """The three ways interleaved round by round, so a busy machine slows them alike."""
    contract_file = source_file()
    variants = {"step charges": (runtime(True), False), "no metering": (runtime(False), False),
                "settrace lines": (runtime(False), True)}
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    for round_index in range(ROUNDS):
        for label, (run, traced) in variants.items():
            state, calls = WorldState(), calls_block(CALLS_PER_BLOCK, round_index)
            tracer, _ = line_tracer(contract_file)
            started = time.perf_counter()
            if traced:
                sys.settrace(tracer)
            try:
                results = run.execute_block(state, 0, 1_700_000_000, calls)
            finally:
                sys.settrace(None)
            seconds[label].append(time.perf_counter() - started)
            assert all(result.code == 0 for result in results)
    return {label: CALLS_PER_BLOCK / statistics.median(times) for label, times in seconds.items()}


def source_file() -> str:
    import tsunagi.contracts.examples as examples
    return examples.__file__


def build_state(keys: int) -> tuple[WorldState, list[bytes], float]:
    rng = random.Random(7)
    names = [rng.randbytes(32) for _ in range(keys)]
    state = WorldState()
    state.begin_block(0)
    for key in names:
        state.set(key, rng.randbytes(32))
    started = time.perf_counter()
    state.end_block()
    return state, names, time.perf_counter() - started


def bench_root(state: WorldState, names: list[bytes], changed: int) -> dict[str, float]:
    rng = random.Random(changed)
    set_s, root_s = [], []
    for _ in range(ROUNDS):
        height = state.height + 1
        chosen = rng.sample(names, changed)
        started = time.perf_counter()
        state.begin_block(height)
        for key in chosen:
            state.set(key, rng.randbytes(32))
        middle = time.perf_counter()
        state.end_block()
        ended = time.perf_counter()
        set_s.append(middle - started)
        root_s.append(ended - middle)
    return {"set_ms": 1e3 * statistics.median(set_s), "root_ms": 1e3 * statistics.median(root_s)}


def bench_rebuild(state: WorldState) -> float:
    seconds = []
    for _ in range(max(1, ROUNDS // 2)):
        started = time.perf_counter()
        state._rehash(np.arange(state.slot_count, dtype=np.int64),  # every leaf: the whole tree
                      [value for _, value in state.items()])
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def node_hash_rate() -> float:
    nodes = np.frombuffer(hashlib.shake_256(b"nodes").digest(65 * 100_000), np.uint8)
    seconds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        sha256d_records(nodes, 65)
        seconds.append(time.perf_counter() - started)
    return 100_000 / statistics.median(seconds)


def main() -> None:
    print(f"calls through execute_block, blocks of {CALLS_PER_BLOCK:,} register calls "
          f"(median of {ROUNDS}):")
    rates = bench_calls()
    for label, rate in rates.items():
        print(f"  {label:<16} {rate:>10,.0f} calls/s  ({rate / rates['no metering']:.2f}x "
              "of no metering)")
    state, names, build_root_s = build_state(STATE_KEYS)
    print(f"state of {STATE_KEYS:,} keys: first root {build_root_s * 1e3:,.0f} ms")
    hash_rate = node_hash_rate()
    depth = (STATE_KEYS - 1).bit_length()
    roots = {}
    for changed in CHANGED:
        roots[changed] = bench_root(state, names, changed)
        smt_ms = 1e3 * changed * 256 / hash_rate
        print(f"  {changed:>7,} changed keys: end_block {roots[changed]['root_ms']:8.1f} ms "
              f"(sets {roots[changed]['set_ms']:7.1f} ms); a 256-level sparse tree would hash "
              f"~{smt_ms:,.0f} ms at the same node rate")
    rebuild_s = bench_rebuild(state)
    print(f"  full rebuild of the tree: {rebuild_s * 1e3:,.0f} ms; native node hashing "
          f"{hash_rate / 1e6:.2f} M nodes/s (65 bytes, one thread); tree depth {depth}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "calls_per_s": rates, "state_keys": STATE_KEYS, "first_root_ms": build_root_s * 1e3,
        "roots": {str(k): v for k, v in roots.items()}, "rebuild_ms": rebuild_s * 1e3,
        "node_hashes_per_s": hash_rate}, indent=2) + "\n")


if __name__ == "__main__":
    main()
