"""Fewer shares than the threshold reveal nothing a test can see: for a fixed secret a share's
bytes are uniform, and the bytes of threshold - 1 shares are distributed alike for two
different secrets.

Method: thousands of splits from a fixed-seed byte source (random.Random(seed).randbytes, so
every run sees the same bytes and the test never flakes), then Pearson's chi-square: against
the uniform distribution, and two samples against each other (homogeneity). The threshold is
the chi-square quantile at z = 7 (Wilson-Hilferty), a false-alarm rate near 1e-12, so a sound
split would not cross it for any seed. Each test also shows it can see a leak: a source that
never gives a zero byte, as a split that forces its coefficients non-zero would, is caught.
"""

from __future__ import annotations

import math
import random

from tsunagi.privacy.shamir import Share, split

SPLITS = 4000  # 4000 splits of 32 bytes: 500 samples a bin of 256
BINS = 256
SECRET_A = bytes([0x42]) * 32  # one byte value throughout, so a leak hits the same bin
SECRET_B = bytes([0xC3]) * 32


def chi_square_threshold(degrees: int, z: float = 7.0) -> float:
    """The chi-square quantile of ``degrees`` freedom at normal deviate z (Wilson-Hilferty)."""
    ratio = 2 / (9 * degrees)
    return degrees * (1 - ratio + z * math.sqrt(ratio)) ** 3


def never_zero(seed: int):
    """A byte source with no zero byte: a split drawing from it is biased as one that forces
    its coefficients to be non-zero."""
    draw = random.Random(seed)
    return lambda size: bytes(draw.randrange(1, 256) for _ in range(size))


def values_of(secret: bytes, threshold: int, indexes: list[int], source) -> list[bytes]:
    """The values of the shares at ``indexes`` over SPLITS splits of ``secret``."""
    found = []
    for _ in range(SPLITS):
        shares = split(secret, threshold, threshold + 1, random_bytes=source)
        found.append([Share.from_bytes(shares[index]).value for index in indexes])
    return found


def byte_counts(secret: bytes, threshold: int, source) -> list[int]:
    counts = [0] * BINS
    for (value,) in values_of(secret, threshold, [0], source):
        for byte in value:
            counts[byte] += 1
    return counts


def pair_counts(secret: bytes, source) -> list[int]:
    """Joint counts of two shares of a 3-of-4 set at the same place, by their high nibbles."""
    counts = [0] * BINS
    for first, second in values_of(secret, 3, [0, 1], source):
        for a, b in zip(first, second):
            counts[(a >> 4) << 4 | b >> 4] += 1
    return counts


def chi_square_uniform(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((seen - expected) ** 2 / expected for seen in counts)


def chi_square_same(first: list[int], second: list[int]) -> float:
    """Two equal-sized samples drawn from one distribution (homogeneity, len - 1 freedom)."""
    assert sum(first) == sum(second)
    return sum((a - b) ** 2 / (a + b) for a, b in zip(first, second) if a + b)


THRESHOLD = chi_square_threshold(BINS - 1)


def test_a_share_of_a_fixed_secret_is_uniform():
    for threshold, seed in ((2, 1), (3, 2), (5, 3)):
        statistic = chi_square_uniform(byte_counts(SECRET_A, threshold, random.Random(seed)
                                                   .randbytes))
        assert statistic < THRESHOLD, (threshold, statistic)


def test_the_uniformity_test_sees_a_split_that_avoids_zero():
    assert chi_square_uniform(byte_counts(SECRET_A, 2, never_zero(4))) > THRESHOLD


def test_one_share_of_two_secrets_is_distributed_alike():
    first = byte_counts(SECRET_A, 2, random.Random(5).randbytes)
    second = byte_counts(SECRET_B, 2, random.Random(6).randbytes)
    assert chi_square_same(first, second) < THRESHOLD


def test_two_shares_of_a_three_share_threshold_are_distributed_alike_for_two_secrets():
    first = pair_counts(SECRET_A, random.Random(7).randbytes)
    second = pair_counts(SECRET_B, random.Random(8).randbytes)
    assert chi_square_same(first, second) < THRESHOLD


def test_the_comparison_sees_a_split_whose_share_depends_on_the_secret():
    first = byte_counts(SECRET_A, 2, never_zero(9))
    second = byte_counts(SECRET_B, 2, never_zero(10))
    assert chi_square_same(first, second) > THRESHOLD
