"""The chain config round-trips through canonical JSON, refuses every out-of-range or
inconsistent setting with a message naming it, and implies exactly the genesis records that
docs/FORMAT.md describes.

Method: explicit configs for each rule, hypothesis for arbitrary JSON text (only ConfigError may
come out), and the genesis records read back field by field through the numpy record view.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsunagi.core import records
from tsunagi.core.config import (
    BITS_DEVELOPMENT,
    ChainConfig,
    genesis_accounts,
    genesis_records,
)
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError

KEYS = [PrivateKey.from_bytes(bytes([index]) * 32).public_key for index in range(1, 6)]
# Not the x coordinate of any curve point (BIP340 test vector 5's "public key not on the curve").
OFF_CURVE = bytes.fromhex("EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34")


def sample(**changes) -> ChainConfig:
    fields = dict(name="Kyoto points", chain_id=7, asset_code="KPT", decimals=0,
                  issuers=(KEYS[0], KEYS[1]), allocations=((KEYS[2], 1_000), (KEYS[3], 250)),
                  genesis_time_s=1_700_000_000)
    fields.update(changes)
    return ChainConfig(**fields)


def test_json_round_trip_is_canonical():
    config = sample()
    text = config.to_json()
    assert ChainConfig.from_json(text) == config
    assert ChainConfig.from_json(text.encode()) == config
    document = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, separators=(",", ":"))
    assert document["issuers"] == [KEYS[0].hex(), KEYS[1].hex()]
    assert document["allocations"] == [[KEYS[2].hex(), 1000], [KEYS[3].hex(), 250]]
    assert document["format"] == 1 and document["bits"] == BITS_DEVELOPMENT
    assert config.is_canonical(text) and config.is_canonical(text.encode())
    assert not config.is_canonical(json.dumps(document, indent=1))


def test_defaults_fill_left_out_fields_and_lists_become_tuples():
    config = ChainConfig.from_json('{"name": "x", "chain_id": 1, "asset_code": "X"}')
    assert (config.bits, config.address_prefix, config.issuers) == (0x207FFFFF, "tsu", ())
    config = ChainConfig("x", 1, "X", issuers=[bytearray(KEYS[0])],
                         allocations=[[KEYS[1], 5]])
    assert config.issuers == (KEYS[0],) and config.allocations == ((KEYS[1], 5),)
    assert hash(config) == hash(ChainConfig("x", 1, "X", issuers=(KEYS[0],),
                                            allocations=((KEYS[1], 5),)))


@pytest.mark.parametrize(("changes", "reason"), [
    (dict(issuers=(KEYS[0], KEYS[0])), "issuer key is listed twice"),
    (dict(allocations=((KEYS[2], 1), (KEYS[2], 2))), "merge its amounts"),
    (dict(allocations=((KEYS[2], 0),)), r"amount in \[1, 2\*\*64 - 1\]"),
    (dict(allocations=((KEYS[2], 2**64),)), r"amount in \[1, 2\*\*64 - 1\]"),
    (dict(allocations=((KEYS[2], True),)), "amount in"),
    (dict(allocations=((KEYS[2], 2**63), (KEYS[3], 2**63))), "add up to 18446744073709551616"),
    (dict(issuers=(OFF_CURVE,)), "not a valid x-only secp256k1 key"),
    (dict(issuers=(KEYS[0][:31],)), "32 bytes, got 31"),
    (dict(allocations=((KEYS[2],),)), r"\(key, amount\) pair"),
    (dict(chain_id=2**32), "chain_id"),
    (dict(chain_id=-1), "chain_id"),
    (dict(chain_id=True), "chain_id"),
    (dict(decimals=19), "decimals"),
    (dict(bits=0), "zero target"),
    (dict(bits=0x04800001), "negative"),
    (dict(bits=0xFF123456), "above 2\\*\\*256"),
    (dict(bits=2**32), "bits"),
    (dict(block_records_max=0), "block_records_max"),
    (dict(block_records_max=2**20 + 1), "block_records_max"),
    (dict(block_records_max=5), "genesis block would hold 6 records"),
    (dict(block_wait_ms=60_001), "block_wait_ms"),
    (dict(genesis_time_s=2**32), "genesis_time_s"),
    (dict(name=""), "name"),
    (dict(name=" padded"), "name"),
    (dict(name="a\nb"), "name"),
    (dict(asset_code="K P"), "asset_code"),
    (dict(asset_code="ABCDEFGHIJKLM"), "asset_code"),
    (dict(address_prefix="TSU"), "address_prefix"),
    (dict(address_prefix="a" * 32), "address_prefix"),
])
def test_invalid_settings_are_refused_with_a_clear_message(changes, reason):
    with pytest.raises(ConfigError, match=reason):
        sample(**changes)


def test_largest_valid_supply_is_accepted():
    config = sample(allocations=((KEYS[2], 2**63), (KEYS[3], 2**63 - 1)))
    assert sum(amount for _, amount in config.allocations) == 2**64 - 1


@pytest.mark.parametrize(("text", "reason"), [
    ('{"name": "x", "chain_id": 1, "asset_code": "X", "colour": "red"}',
     "unknown chain config fields: colour"),
    ('{"name": "x", "chain_id": 1, "asset_code": "X", "format": 2}', "format 1"),
    ('{"name": "x", "asset_code": "X"}', "chain_id"),
    ('{"name": "x", "chain_id": 1, "asset_code": "X", "issuers": "ab"}', "issuers is a list"),
    ('{"name": "x", "chain_id": 1, "asset_code": "X", "issuers": ["zz"]}', "64 hex digits"),
    ('{"name": "x", "chain_id": 1.0, "asset_code": "X"}', "chain_id"),
    ("[1, 2, 3]", "JSON object"),
    ("{", "JSON object"),
    ("[" * 100_000, "JSON object"),
    (b"\xff\xfe{", "JSON object"),
])
def test_bad_json_is_refused_with_a_clear_message(text, reason):
    with pytest.raises(ConfigError, match=reason):
        ChainConfig.from_json(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
fields = st.sampled_from(["name", "chain_id", "asset_code", "decimals", "issuers",
                          "allocations", "bits", "block_records_max", "block_wait_ms",
                          "address_prefix", "genesis_time_s", "format"])


@given(st.dictionaries(fields, json_values, max_size=12))
def test_arbitrary_json_objects_give_a_config_or_config_error(document):
    try:
        config = ChainConfig.from_json(json.dumps(document))
    except ConfigError:
        return
    assert ChainConfig.from_json(config.to_json()) == config


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_config_error(data):
    with pytest.raises(ConfigError):
        ChainConfig.from_json(data)


def test_genesis_records_open_issuers_then_holders_then_mint_allocations():
    config = sample()
    data = genesis_records(config)
    assert data == genesis_records(sample())  # deterministic
    view = records.as_records(data)
    assert len(view) == 2 + 2 + 2
    assert list(view["kind"]) == [records.Kind.open_account] * 4 + [records.Kind.mint] * 2
    assert (view["chain_id"] == 7).all() and (view["flags"] == 0).all()
    assert [bytes(row) for row in view["data"][:4]] == KEYS[:4]
    assert list(view["sequence"]) == [1, 2, 3, 4, 1, 2]  # account numbers, then mint order
    assert list(view["debit_account"]) == [0] * 6
    assert list(view["credit_account"]) == [0, 0, 0, 0, 3, 4]
    assert list(view["amount"]) == [0, 0, 0, 0, 1000, 250]
    assert genesis_accounts(config) == tuple(KEYS[:4])
    assert records.unpack(data[4 * 128:5 * 128])["kind"] == records.Kind.mint


def test_an_issuer_may_also_hold_an_allocation_in_a_second_account():
    config = sample(issuers=(KEYS[0],), allocations=((KEYS[0], 10),))
    view = records.as_records(genesis_records(config))
    assert list(view["sequence"][:2]) == [1, 2]  # two distinct open_account records
    assert len({bytes(row) for row in view.view("V128")}) == 3
    assert list(view["credit_account"][2:]) == [2]


def test_empty_chain_has_no_genesis_records():
    assert genesis_records(ChainConfig("empty", 0, "E")) == b""


def test_a_consortium_config_round_trips_and_names_its_validators():
    config = sample(validators=[(KEYS[4], 3), (KEYS[0], 1)], timeout_propose_ms=2000,
                    timeout_delta_ms=0)
    assert config.is_consortium and not sample().is_consortium
    assert config.validators == ((KEYS[4], 3), (KEYS[0], 1))  # order kept: it is the index
    document = json.loads(config.to_json())
    assert document["validators"] == [[KEYS[4].hex(), 3], [KEYS[0].hex(), 1]]
    assert document["timeout_propose_ms"] == 2000 and document["timeout_delta_ms"] == 0
    assert "timeout_prevote_ms" not in document
    assert ChainConfig.from_json(config.to_json()) == config


def test_consortium_fields_at_their_defaults_leave_the_json_as_it_was():
    text = sample().to_json()
    for name in ("validators", "timeout_propose_ms", "timeout_prevote_ms",
                 "timeout_precommit_ms", "timeout_delta_ms"):
        assert name not in text
    spelled = json.loads(text) | {"validators": [], "timeout_prevote_ms": 1000}
    assert ChainConfig.from_json(json.dumps(spelled)) == sample()
    assert not sample().is_canonical(json.dumps(spelled, sort_keys=True, separators=(",", ":")))


@pytest.mark.parametrize(("changes", "reason"), [
    ({"validators": [(KEYS[0], 1), (KEYS[0], 2)]}, "validator key is listed twice"),
    ({"validators": [(KEYS[0], 0)]}, "weight of validator"),
    ({"validators": [(KEYS[0], 2**32)]}, "weight of validator"),
    ({"validators": [(KEYS[0], True)]}, "weight of validator"),
    ({"validators": [(OFF_CURVE, 1)]}, "not a valid x-only"),
    ({"validators": [(KEYS[0][:31], 1)]}, "validator key is 32 bytes"),
    ({"validators": [KEYS[0]]}, r"validator 0 is a \(key, weight\) pair"),
    ({"validators": [(KEYS[0], 1)], "retarget_blocks": 10}, "no proof of work"),
    ({"timeout_propose_ms": 0}, "timeout_propose_ms"),
    ({"timeout_prevote_ms": 600_001}, "timeout_prevote_ms"),
    ({"timeout_precommit_ms": "1000"}, "timeout_precommit_ms"),
    ({"timeout_delta_ms": -1}, "timeout_delta_ms"),
])
def test_bad_consortium_settings_are_refused_with_a_clear_message(changes, reason):
    with pytest.raises(ConfigError, match=reason):
        sample(**changes)


def test_too_many_validators_are_refused(monkeypatch):
    from tsunagi import limits
    monkeypatch.setattr(limits, "validators_max", 1)
    with pytest.raises(ConfigError, match="at most 1"):
        sample(validators=[(KEYS[0], 1), (KEYS[1], 1)])
