"""Proof-of-work consensus: the work a block proves, the bits each height must carry, the time
rule, and the sealing step (docs/FORMAT.md, "Difficulty and time").

The rules are Bitcoin's (Bitcoin Core's GetBlockProof, CalculateNextWorkRequired and its limit
on future block times) on tsunagi's chain config. A chain engine sums :func:`block_work` to find
the branch of most work, asks :func:`expected_bits` and :func:`check_time` of each block in its
place on a branch, and seals the blocks it makes with a :class:`Sealer`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from enum import IntEnum

from tsunagi import hashing, limits
from tsunagi.core.block import BITS_OFFSET, HEADER_BYTES, mine_header
from tsunagi.core.config import ChainConfig
from tsunagi.errors import EncodingError

__all__ = ["ProofOfWork", "SealResult", "Sealer", "TimeCheck", "block_work", "check_time",
           "expected_bits"]


def block_work(bits: int) -> int:
    """The work a header of these compact bits proves: the hashes expected to meet its target,
    ``2**256 // (target + 1)`` (Bitcoin Core's GetBlockProof). Bits that encode no usable
    target (negative, zero, 2**256 or more) prove nothing: 0."""
    try:
        if hashing.bits_to_target(bits) == 0:
            return 0
    except EncodingError:
        return 0
    return hashing.work_from_bits(bits)


def expected_bits(config: ChainConfig, height: int, parent_bits: int,
                  time_at: Callable[[int], int]) -> int:
    """The bits the block at ``height`` must carry on the branch being judged.

    ``parent_bits`` are those of its parent (height - 1); ``time_at(h)`` is the time of the
    branch's block at height ``h``, asked only at a retarget height, for ``height - 1`` and
    ``height - config.retarget_blocks``. Genesis (height 0) carries ``config.bits``; so does
    every block of a chain that never retargets (``retarget_blocks`` 0).
    """
    assert height >= 0, height
    blocks = config.retarget_blocks
    if blocks == 0 or height == 0:
        return config.bits
    if height % blocks:
        return parent_bits
    timespan = blocks * config.block_interval_s
    # Bitcoin's window: the parent's time less that of the block `blocks` back, which is the
    # time of blocks - 1 intervals (Bitcoin's off-by-one, kept so its own figures apply).
    actual = time_at(height - 1) - time_at(height - blocks)
    actual = min(max(actual, timespan // 4), timespan * 4)
    # Exact integers: no 256-bit wrap-around, and never easier than the chain's own limit.
    target = hashing.bits_to_target(parent_bits) * actual // timespan
    return hashing.target_to_bits(min(target, hashing.bits_to_target(config.bits)))


class TimeCheck(IntEnum):
    """How a block's time stands to its parent's and the node's clock; 0 is ok."""

    ok = 0  # at least the parent's time, at most the clock + time_future_s
    before_parent = 1  # earlier than its parent: invalid on this branch for good
    too_far_ahead = 2  # past the clock + time_future_s: not valid yet, may be taken later


def check_time(parent_time: int, time: int, now_s: int, config: ChainConfig) -> TimeCheck:
    """Whether a block dated ``time`` may follow a parent dated ``parent_time`` at ``now_s``
    (the receiving node's clock, Unix seconds).

    A block too far ahead is not invalid for good: keep it aside (or ask for it again) and
    take it once the clock reaches ``time - config.time_future_s``.
    """
    if time < parent_time:
        return TimeCheck.before_parent
    if time > now_s + config.time_future_s:
        return TimeCheck.too_far_ahead
    return TimeCheck.ok


class SealResult(IntEnum):
    """Why a sealer refused a header's seal; 0 is ok. Values are never reused."""

    ok = 0  # the header is sealed as the chain expects at its place
    unexpected_bits = 1  # its bits are not those the chain's rules give at its height
    bad_pow = 2  # its hash is above the target of its bits


class Sealer(abc.ABC):
    """The step that makes a block final for its chain, and the check of it, so a chain engine
    needs no knowledge of how blocks are sealed.

    Proof of work seals with a nonce (:class:`ProofOfWork`); a consortium chain would seal with
    validator signatures. The engine seals the blocks it makes, and checks the seal of every
    header it receives with the bits :func:`expected_bits` gives at the header's place.
    """

    @abc.abstractmethod
    def seal(self, block, bits: int, stop: threading.Event | None = None,
             threads: int | None = None) -> bool:
        """Seals ``block`` (a writable buffer, header first) for ``bits``, in place. Returns
        False when ``stop`` was set first (a better tip arrived): the block is then unsealed.
        ``threads`` is how many cores it may use (all by default)."""

    @abc.abstractmethod
    def check_seal(self, header: bytes, expected_bits: int) -> SealResult:
        """Whether an 80-byte header is sealed as its chain expects, where the chain's rules
        give ``expected_bits`` at its height."""


class ProofOfWork(Sealer):
    """The seal is the lowest nonce whose header hash meets the target of the bits, found by
    the native nonce search (mine_header): first a few thousand nonces on the calling thread,
    enough at development difficulty, then stretches on every thread with a look at ``stop``
    between two. When all 2**32 nonces fail, the header's time moves one second on.
    """

    def seal(self, block, bits: int, stop: threading.Event | None = None,
             threads: int | None = None) -> bool:
        view = memoryview(block)
        if view.readonly or view.nbytes < HEADER_BYTES:
            raise EncodingError("a seal is written into a writable block buffer (a bytearray)")
        if not 0 <= bits <= limits.u32_max:
            raise EncodingError(f"bits are a 32-bit field, got {bits}")
        view[BITS_OFFSET:BITS_OFFSET + 4] = bits.to_bytes(4, "little")
        return mine_header(block, threads, stop=stop) is not None

    def check_seal(self, header: bytes, expected_bits: int) -> SealResult:
        if hashing.header_fields(header)[4] != expected_bits:
            return SealResult.unexpected_bits
        if not hashing.check_pow(header):
            return SealResult.bad_pow
        return SealResult.ok
