"""Canonical encoding of contract values: the native encoder (tsunagi._native.encoding) beside
the plain-Python reference (tsunagi.contracts.encoding.reference_*) on what the connection
chain encodes and decodes most.

- ``entry``: a transfer's stored entry as the connection contract saves it at each step
  (ten fields, a list among them; about 150 bytes): read and written by every step call.
- ``proof``: the arguments of one batched proven step (``escrowed_many``): a linked block's
  proof (80-byte header, a 6,500-byte body, a multiproof of 7 hashes) and 100 items of a
  transfer id, a 128-byte record and its position; about 21 KB, decoded once a call.

Run ``python -m pytest bench/bench_encoding.py --benchmark-only`` (groups ``encoding-<case>-
<operation>`` put native beside reference), or ``python bench/bench_encoding.py``, which prints
the median time of each and the ratio (TSUNAGI_BENCH_ROUNDS rounds, default 7).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from tsunagi.contracts import encoding

ROUNDS = int(os.environ.get("TSUNAGI_BENCH_ROUNDS", "7"))
ENCODERS = {"native": (encoding.encode, encoding.decode),
            "reference": (encoding.reference_encode, encoding.reference_decode)}


def transfer_entry() -> dict:
    return {"rule_id": 7, "payer": 1, "payee": 1, "amount": 103, "payout": 139,
            "tag": 8618270935349748139, "state": "escrow", "requested_s": 1_800_000_000,
            "hold": [1, 42, 1_800_003_600], "steps": 4, "escrowed_s": 1_800_000_012}


def proof_argument() -> list:
    digest = bytes(range(32))
    block = {"height": 12, "header": bytes(80), "body": bytes(6500), "hashes": [digest] * 7,
             "record_count": 100}
    items = [[b"t-%d" % n, bytes([n]) * 128, n] for n in range(100)]
    return ["escrowed_many", [block, items, [bytes(80), bytes(80)]]]


CASES = {"entry": transfer_entry, "proof": proof_argument}
# Calls a timing repeats, so one is well above the clock's resolution.
REPEATS = {"entry": 2000, "proof": 20}


def operation(name: str, case: str, what: str):
    """A no-argument function doing ``what`` (encode or decode) of ``case`` with ``name``."""
    encode, decode = ENCODERS[name]
    value = CASES[case]()
    data = encoding.reference_encode(value)
    assert encode(value) == data and decode(data) == value  # the same bytes either way
    return (lambda: encode(value)) if what == "encode" else (lambda: decode(data))


@pytest.mark.skipif(not encoding.NATIVE, reason="tsunagi._native.encoding is not built")
@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("what", ["encode", "decode"])
@pytest.mark.parametrize("case", list(CASES))
def test_encoding(benchmark, case, what, name):
    benchmark.group = f"encoding-{case}-{what}"
    benchmark(operation(name, case, what))


def median_us(function, repeats: int) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - started) / repeats)
    return 1e6 * statistics.median(times)


def main() -> None:
    if not encoding.NATIVE:
        raise SystemExit("tsunagi._native.encoding is not built: python setup.py build_ext "
                         "--inplace")
    print(f"canonical encoding, median of {ROUNDS} rounds (microseconds a call)")
    print(f"{'case':<8} {'operation':<9} {'bytes':>7} {'reference':>10} {'native':>9} "
          f"{'speed-up':>9}")
    for case in CASES:
        size = len(encoding.reference_encode(CASES[case]()))
        for what in ("encode", "decode"):
            reference = median_us(operation("reference", case, what), REPEATS[case])
            native = median_us(operation("native", case, what), REPEATS[case])
            print(f"{case:<8} {what:<9} {size:>7,} {reference:>10.1f} {native:>9.2f} "
                  f"{reference / native:>8.1f}x")


if __name__ == "__main__":
    main()
