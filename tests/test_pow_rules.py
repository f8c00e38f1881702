"""The proof-of-work rules (tsunagi.consensus.pow) give Bitcoin's answers on Bitcoin's data, and
a chain config that does not use them keeps its genesis block byte for byte.

Method: known answers from outside: Bitcoin Core's src/test/pow_tests.cpp (retargets of real
mainnet blocks: no change, the pow-limit cap, both clamps) and arith_uint256_tests.cpp (compact
bits), the mainnet headers of shared/testdata, hashlib as the oracle of the lowest nonce, and
genesis hashes computed on the code before these fields existed. Hypothesis checks the compact
re-encoding and the retarget's clamps on arbitrary values; a stop event that turns true on a
chosen look shows where a search ends, without measuring time.
"""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bitcoin
from test_core_config import sample  # the config whose genesis hash is pinned below
from tsunagi import hashing
from tsunagi.consensus.pow import (
    ProofOfWork,
    SealResult,
    TimeCheck,
    block_work,
    check_time,
    expected_bits,
)
from tsunagi.core.block import BlockResult, check_block, decode_block, encode_block, genesis_block
from tsunagi.core.config import BITS_DEVELOPMENT, ChainConfig
from tsunagi.errors import ConfigError, EncodingError

BITCOIN_BITS = 0x1D00FFFF  # mainnet's pow limit in compact form (difficulty 1)
# Bitcoin's rules as a chain config: 2016 blocks a retarget, ten minutes a block.
BITCOIN = ChainConfig(name="bitcoin rules", chain_id=0, asset_code="BTC", bits=BITCOIN_BITS,
                      retarget_blocks=2016, block_interval_s=600)
HARD_BITS = 0x1B0404CB  # difficulty ~16,000: ~7 * 10**13 hashes, never found in a test


def times(**at: int):
    """A time_at for expected_bits that knows only the heights given (h_32255=...)."""
    known = {int(name.removeprefix("h_")): value for name, value in at.items()}
    return known.__getitem__  # any other height is a KeyError: the rule asked for too much


# --- compact bits and work ---------------------------------------------------------------------

# Bitcoin Core's SetCompact gives these 0 and not negative: the sign bit of a mantissa shifted
# to nothing. tsunagi refuses them as negative; either way no block can carry them.
SIGN_OF_NOTHING = [0x00923456, 0x01803456, 0x02800056, 0x03800000, 0x04800000]


@pytest.mark.parametrize("bits", SIGN_OF_NOTHING + [0, 0x01003456, 0x04923456, 0xFF123456])
def test_bits_without_a_usable_target_prove_no_work(bits):
    assert block_work(bits) == 0


def test_block_work_of_known_bits():
    assert block_work(BITCOIN_BITS) == 4295032833  # Bitcoin genesis: 0x100010001
    assert block_work(BITS_DEVELOPMENT) == 2
    assert block_work(0x1903A30C) == 2**256 // ((0x03A30C << 176) + 1)  # block 277,647


def test_real_mainnet_bits_round_trip(bitcoin_dir):
    blocks = bitcoin.read_blocks(bitcoin_dir / "277647.dat.bz2") \
        + bitcoin.read_blocks(bitcoin_dir / "blocks1-256.bz2")
    headers = [block.header for block in blocks]
    # And the retarget answers of Bitcoin Core's pow_tests, real mainnet bits too.
    found = {hashing.header_fields(header)[4] for header in headers}
    for bits in sorted(found | {0x1D00D86A, 0x1C05A3F4, 0x1C0168FD, 0x1C387F6F, 0x1D00E1FD}):
        assert hashing.target_to_bits(hashing.bits_to_target(bits)) == bits


@given(bits=st.integers(0, 2**32 - 1))
def test_re_encoding_bits_keeps_their_target(bits):
    # Bitcoin's SetCompact then GetCompact: the value survives, the sign bit never appears.
    try:
        target = hashing.bits_to_target(bits)
    except EncodingError:
        return
    compact = hashing.target_to_bits(target)
    assert hashing.bits_to_target(compact) == target
    assert not compact & 0x00800000


# --- the retarget ------------------------------------------------------------------------------

# Bitcoin Core, src/test/pow_tests.cpp: (height of the new block, parent bits, time of block
# height - 1, time of block height - 2016, the bits CalculateNextWorkRequired gives).
BITCOIN_RETARGETS = {
    "no constraint": (32256, 0x1D00FFFF, 1262152739, 1261130161, 0x1D00D86A),
    "pow limit": (2016, 0x1D00FFFF, 1233061996, 1231006505, 0x1D00FFFF),
    "lower clamp": (68544, 0x1C05A3F4, 1279297671, 1279008237, 0x1C0168FD),
    "upper clamp": (46368, 0x1C387F6F, 1269211443, 1263163443, 0x1D00E1FD),  # not a real time
}


@pytest.mark.parametrize("height, parent, last, first, want", BITCOIN_RETARGETS.values(),
                         ids=BITCOIN_RETARGETS.keys())
def test_retarget_gives_bitcoin_cores_answers(height, parent, last, first, want):
    time_at = times(**{f"h_{height - 1}": last, f"h_{height - 2016}": first})
    assert expected_bits(BITCOIN, height, parent, time_at) == want


def test_real_mainnet_blocks_carry_the_bits_and_times_the_rules_give(bitcoin_dir):
    headers = [bitcoin.GENESIS_HEADER] + [block.header for block in
                                          bitcoin.read_blocks(bitcoin_dir / "blocks1-256.bz2")]
    fields = [hashing.header_fields(header) for header in headers]
    assert expected_bits(BITCOIN, 0, 0, times()) == fields[0][4]
    for height in range(1, len(fields)):
        parent, block = fields[height - 1], fields[height]
        assert expected_bits(BITCOIN, height, parent[4], times()) == block[4]
        assert check_time(parent[3], block[3], block[3], BITCOIN) == TimeCheck.ok
        assert ProofOfWork().check_seal(headers[height], block[4]) == SealResult.ok


def test_the_clamps_hold_at_four_times_and_a_quarter():
    timespan = 2016 * 600
    parent = 0x1C05A3F4
    target = hashing.bits_to_target(parent)

    def retarget(span: int) -> int:
        return expected_bits(BITCOIN, 4032, parent, times(h_4031=span, h_2016=0))

    assert retarget(timespan) == parent
    assert retarget(timespan * 4) == hashing.target_to_bits(target * 4)
    assert retarget(timespan * 400) == retarget(timespan * 4)
    assert retarget(timespan // 4) == hashing.target_to_bits(target // 4)
    assert retarget(0) == retarget(-timespan) == retarget(timespan // 4)


def test_the_target_never_passes_the_pow_limit():
    slow = times(h_2015=10**9, h_0=0)
    assert expected_bits(BITCOIN, 2016, BITCOIN_BITS, slow) == BITCOIN_BITS
    development = ChainConfig(name="d", chain_id=1, asset_code="D", retarget_blocks=10,
                              block_interval_s=1)
    assert expected_bits(development, 10, BITS_DEVELOPMENT, times(h_9=10**6, h_0=0)) \
        == BITS_DEVELOPMENT  # the easiest target of all: 4x would pass 2**255


@given(parent=st.integers(1, hashing.bits_to_target(BITCOIN_BITS)),
       span=st.integers(-2**33, 2**33), blocks=st.integers(4, 5000),
       interval=st.integers(1, 3600))
def test_a_retarget_stays_within_its_clamps_and_the_limit(parent, span, blocks, interval):
    config = ChainConfig(name="p", chain_id=1, asset_code="P", bits=BITCOIN_BITS,
                         retarget_blocks=blocks, block_interval_s=interval)
    parent_bits = hashing.target_to_bits(parent)
    parent = hashing.bits_to_target(parent_bits)
    timespan = blocks * interval

    def retarget(measured: int) -> int:
        time_at = times(**{f"h_{2 * blocks - 1}": measured, f"h_{blocks}": 0})
        return expected_bits(config, 2 * blocks, parent_bits, time_at)

    clamped = min(max(span, timespan // 4), timespan * 4)
    assert retarget(span) == retarget(clamped)
    exact = min(parent * clamped // timespan, hashing.bits_to_target(BITCOIN_BITS))
    # Compact bits keep at least 16 significant bits: rounded down by under 2**-15.
    assert 0 <= exact - hashing.bits_to_target(retarget(span)) <= exact >> 15


def test_between_retargets_and_in_development_mode_the_bits_stay():
    for height in (1, 2015, 2017, 4031):
        assert expected_bits(BITCOIN, height, 0x1C05A3F4, times()) == 0x1C05A3F4
    development = ChainConfig(name="d", chain_id=1, asset_code="D")
    assert development.retarget_blocks == 0
    for height in (0, 1, 2016, 10**6):  # never asks for a time
        assert expected_bits(development, height, BITS_DEVELOPMENT, times()) == BITS_DEVELOPMENT


# --- time --------------------------------------------------------------------------------------

def test_time_rule():
    config = ChainConfig(name="t", chain_id=1, asset_code="T", time_future_s=7200)
    now = 1_700_000_000
    assert check_time(now - 600, now - 600, now, config) == TimeCheck.ok  # same second: ok
    assert check_time(now - 600, now - 601, now, config) == TimeCheck.before_parent
    assert check_time(now, now + 7200, now, config) == TimeCheck.ok
    assert check_time(now, now + 7201, now, config) == TimeCheck.too_far_ahead
    assert check_time(now, now + 7201, now + 1, config) == TimeCheck.ok  # taken later
    strict = ChainConfig(name="t", chain_id=1, asset_code="T", time_future_s=0)
    assert check_time(now, now + 1, now, strict) == TimeCheck.too_far_ahead


# --- sealing -----------------------------------------------------------------------------------

def unsealed(bits: int = BITS_DEVELOPMENT, seed: bytes = b"pow") -> bytearray:
    """A block without records on a made-up parent, its nonce not yet searched."""
    return encode_block(prev_hash=hashlib.sha256(seed).digest(), time=1_700_000_000, bits=bits,
                        records=b"", codes=b"", signatures=b"")


@pytest.mark.parametrize("bits", [BITS_DEVELOPMENT, 0x1F00FFFF])  # quick path; threads
def test_proof_of_work_seals_with_the_lowest_nonce(bits):
    block = unsealed(bits=0x207FFFFF)  # sealing writes the bits it is given
    assert ProofOfWork().seal(block, bits, threads=2)
    header = bytes(block[:80])
    assert hashing.header_fields(header)[4] == bits
    assert hashing.header_fields(header)[5] == bitcoin.lowest_nonce(header, 0, 2**20)
    assert check_block(decode_block(block)) == BlockResult.ok
    assert ProofOfWork().check_seal(header, bits) == SealResult.ok


def test_check_seal_refuses_other_bits_and_a_missed_target():
    block = unsealed()
    ProofOfWork().seal(block, BITS_DEVELOPMENT)
    header = bytearray(block[:80])
    assert ProofOfWork().check_seal(bytes(header), 0x1F00FFFF) == SealResult.unexpected_bits
    while hashing.check_pow(bytes(header)):
        header[76] += 1  # a nonce that misses the target
    assert ProofOfWork().check_seal(bytes(header), BITS_DEVELOPMENT) == SealResult.bad_pow


def test_seal_refuses_what_it_cannot_write():
    with pytest.raises(EncodingError, match="writable"):
        ProofOfWork().seal(bytes(unsealed()), BITS_DEVELOPMENT)
    with pytest.raises(EncodingError, match="32-bit"):
        ProofOfWork().seal(unsealed(), 2**32)
    with pytest.raises(EncodingError, match="zero target"):
        ProofOfWork().seal(unsealed(), 0x01000000)


class LookCounter(threading.Event):
    """A stop event that counts the sealer's looks and turns true on look ``true_at``."""

    def __init__(self, true_at: int | None = None) -> None:
        super().__init__()
        self.looks = 0
        self.true_at = true_at
        self.looked_twice = threading.Event()

    def is_set(self) -> bool:
        self.looks += 1
        if self.looks >= 2:
            self.looked_twice.set()
        if self.looks == self.true_at:
            self.set()
        return super().is_set()


@pytest.mark.parametrize("true_at", [1, 2, 3])
def test_a_search_ends_at_the_first_look_after_stop(true_at):
    stop = LookCounter(true_at)
    block = unsealed(HARD_BITS)
    before = bytes(block[68:80])  # time, bits, nonce
    assert not ProofOfWork().seal(block, HARD_BITS, stop=stop, threads=2)
    assert stop.looks == true_at  # one stretch of nonces at most between set and return
    assert bytes(block[68:80]) == before  # left unsealed


def test_a_stop_set_from_another_thread_ends_a_hard_search():
    stop = LookCounter()
    block = unsealed(HARD_BITS)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(
        ProofOfWork().seal(block, HARD_BITS, stop=stop)), daemon=True)
    worker.start()
    assert stop.looked_twice.wait(600)  # the search is past its quick first stretch
    stop.set()
    worker.join(600)  # a hang guard, not a timing: a stretch takes milliseconds
    assert not worker.is_alive() and outcome == [False]


# --- the chain config --------------------------------------------------------------------------

# Computed on main at 0f6937c, before the proof-of-work fields existed, with
# genesis_block(config, threads=1) and hashing.header_hash of its header shown reversed (and
# hashlib.sha256 of the whole block). The same configs must give the same blocks today.
MINIMAL_JSON = ('{"address_prefix":"tsu","allocations":[],"asset_code":"X","bits":545259519,'
                '"block_records_max":8192,"block_wait_ms":100,"chain_id":1,"decimals":2,'
                '"format":1,"genesis_time_s":0,"issuers":[],"name":"x"}')
GENESIS_BEFORE = {
    "minimal": ("09a5b9dd0d29344c4693f9ec8dd4f89da02b8db52d2fcdcf1a6205c528c2af74",
                "5363ea7eb9f0e9feed25a1a05e9e9e0cb278912ca4a47b5b1029b24ede39bd4f"),
    "sample": ("716393a03e2195b81482ae36c71e833210b0fbc95695259cc3966eb8a0cb6c85",
               "724cebba1b8de072cf8591f0b1c9119b10db44c296fd75a3ff0d851690f095c0"),
}


@pytest.mark.parametrize("name", GENESIS_BEFORE)
def test_configs_without_the_new_fields_keep_their_genesis_block(name):
    config = ChainConfig(name="x", chain_id=1, asset_code="X") if name == "minimal" else sample()
    if name == "minimal":
        assert config.to_json() == MINIMAL_JSON
    block = genesis_block(config, threads=1)
    assert (hashing.header_hash(bytes(block[:80]))[::-1].hex(),
            hashlib.sha256(block).hexdigest()) == GENESIS_BEFORE[name]
    assert check_block(decode_block(block)) == BlockResult.ok


def test_the_new_fields_are_written_only_when_they_differ_from_their_defaults():
    document = json.loads(sample().to_json())
    assert not {"retarget_blocks", "block_interval_s", "time_future_s"} & set(document)
    changed = sample(retarget_blocks=2016, block_interval_s=30, time_future_s=600)
    document = json.loads(changed.to_json())
    assert (document["retarget_blocks"], document["block_interval_s"],
            document["time_future_s"]) == (2016, 30, 600)
    assert ChainConfig.from_json(changed.to_json()) == changed
    block = genesis_block(changed, threads=1)
    assert check_block(decode_block(block)) == BlockResult.ok
    # Spelled out at their defaults they are read, but that text is not the canonical one.
    spelled = dict(json.loads(sample().to_json()), retarget_blocks=0, block_interval_s=600,
                   time_future_s=7200)
    text = json.dumps(spelled, sort_keys=True, separators=(",", ":"))
    assert ChainConfig.from_json(text) == sample() and not sample().is_canonical(text)


@pytest.mark.parametrize("change, message", [
    (dict(retarget_blocks=-1), "retarget_blocks is an integer"),
    (dict(retarget_blocks=2**20 + 1), "retarget_blocks is an integer"),
    (dict(retarget_blocks=True), "retarget_blocks is an integer"),
    (dict(retarget_blocks=1), "retarget_blocks is 0"),
    (dict(block_interval_s=0), "block_interval_s is an integer"),
    (dict(block_interval_s=86_401), "block_interval_s is an integer"),
    (dict(block_interval_s="600"), "block_interval_s is an integer"),
    (dict(time_future_s=-1), "time_future_s is an integer"),
    (dict(time_future_s=86_401), "time_future_s is an integer"),
    (dict(retarget_blocks=3, block_interval_s=1), "retarget_blocks \\* block_interval_s"),
])
def test_the_new_fields_are_validated_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        sample(**change)
    assert sample(retarget_blocks=2, block_interval_s=2).retarget_blocks == 2  # 4 s: enough
