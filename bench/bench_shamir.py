"""Shamir sharing of a 32-byte key: split and combine at 2 of 3, 6 of 10, 128 of 255 and 255 of
255 (the largest set: GF(256)'s point 255 holds the secret and its tag, shares sit at 0..254),
with the native constant-time kernel beside the plain-Python reference of the same arithmetic.

Both run the whole of tsunagi.privacy.shamir.split and combine (randomness, the tag,
checksums, encoding); for the reference the module's kernel is swapped for
reference_evaluate_shares and reference_interpolate, so only the arithmetic differs. combine
is given exactly the threshold of shares.

Run ``python -m pytest bench/bench_shamir.py --benchmark-only`` (pytest-benchmark groups put
the two kernels side by side), or ``python bench/bench_shamir.py``, which prints the median of
each case and the ratio.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import types

import pytest

from tsunagi.privacy import shamir

KEY_BYTES = 32
CASES = [(2, 3), (6, 10), (128, 255), (255, 255)]  # (threshold, count)
KERNELS = ("native", "reference")
REFERENCE = types.SimpleNamespace(evaluate_shares=shamir.reference_evaluate_shares,
                                  interpolate=shamir.reference_interpolate)


@contextlib.contextmanager
def kernel(name: str):
    """split and combine run with the named kernel inside the block."""
    native = shamir.native
    if name == "reference":
        shamir.native = REFERENCE
    try:
        yield
    finally:
        shamir.native = native


def rounds_for(name: str, count: int) -> int:
    # The reference takes seconds to split 255 shares: a few rounds are enough.
    return 3 if name == "reference" and count > 100 else 20


def workload(threshold: int, count: int):
    key = os.urandom(KEY_BYTES)
    shares = shamir.split(key, threshold, count)
    return key, shares[-threshold:]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("threshold, count", CASES, ids=[f"{k}-of-{n}" for k, n in CASES])
def test_split(benchmark, name, threshold, count):
    key, _ = workload(threshold, count)
    benchmark.group = f"split {threshold} of {count}"
    with kernel(name):
        shares = benchmark.pedantic(shamir.split, (key, threshold, count),
                                    rounds=rounds_for(name, count), iterations=1)
    assert shamir.combine(shares[:threshold]) == key


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("threshold, count", CASES, ids=[f"{k}-of-{n}" for k, n in CASES])
def test_combine(benchmark, name, threshold, count):
    key, shares = workload(threshold, count)
    benchmark.group = f"combine {threshold} of {count}"
    with kernel(name):
        opened = benchmark.pedantic(shamir.combine, (shares,),
                                    rounds=rounds_for(name, count), iterations=1)
    assert opened == key


def median_s(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(f"{'case':<22}{'native':>12}{'reference':>13}{'ratio':>9}")
    for threshold, count in CASES:
        key, shares = workload(threshold, count)
        for operation, call in (("split", lambda: shamir.split(key, threshold, count)),
                                ("combine", lambda: shamir.combine(shares))):
            medians = {}
            for name in KERNELS:
                with kernel(name):
                    medians[name] = median_s(call, rounds_for(name, count))
            print(f"{operation + f' {threshold} of {count}':<22}"
                  f"{medians['native'] * 1e6:>10.1f}us{medians['reference'] * 1e3:>11.1f}ms"
                  f"{medians['reference'] / medians['native']:>8.0f}x")


if __name__ == "__main__":
    main()
