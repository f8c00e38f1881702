"""Chain config: what a chain is, fixed at genesis, and the genesis records it implies.

The config travels inside the genesis block as canonical JSON (sorted keys, no spaces, keys in
lower-case hex), so every node that holds the genesis block knows the chain's rules, and two
nodes started from the same config build the same genesis block byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

from tsunagi import hashing, limits
from tsunagi.core import json_text, records
from tsunagi.core.address import ADDRESS_PREFIX_DEFAULT
from tsunagi.core.keys import KEY_BYTES, is_public_key
from tsunagi.errors import ConfigError, EncodingError

__all__ = ["BITS_DEVELOPMENT", "ChainConfig", "genesis_accounts", "genesis_records"]

CONFIG_FORMAT = 1  # the "format" field of the JSON; bump on an incompatible change

# Regtest's difficulty: about every second hash qualifies, so a block is "mined" at once.
BITS_DEVELOPMENT = 0x207FFFFF
ASSET_CODE_PATTERN = re.compile(r"[A-Za-z0-9]{1,12}")
# 31 characters keeps an address of a 32-byte key within bech32's 90 characters.
ADDRESS_PREFIX_PATTERN = re.compile(r"[a-z0-9]{1,31}")
# Fields added after format 1 was first written: to_json leaves each out while it holds its
# default, so a config that does not use them keeps its JSON, and its genesis block its bytes.
FIELDS_OMITTED_AT_DEFAULT = ("retarget_blocks", "block_interval_s", "time_future_s",
                             "validators", "timeout_propose_ms", "timeout_prevote_ms",
                             "timeout_precommit_ms", "timeout_delta_ms", "contracts")
CONTRACT_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")

@dataclass(frozen=True)
class ChainConfig:
    """The rules of one chain. Keys are 32-byte x-only public keys; amounts are units.

    Account numbers at genesis: the issuers are accounts 1..len(issuers), in order; then one
    account per allocation, in order.
    """

    name: str
    chain_id: int  # u32, written in every record: a record for one chain is void on another
    asset_code: str
    decimals: int = 2  # display only: amounts are integers of the smallest unit
    issuers: tuple[bytes, ...] = ()  # keys whose accounts may mint and burn
    allocations: tuple[tuple[bytes, int], ...] = ()  # (key, amount) minted at genesis
    bits: int = BITS_DEVELOPMENT  # compact proof-of-work target of the genesis block
    block_records_max: int = 8192
    block_wait_ms: int = 100  # how long a block waits to fill before it is cut
    address_prefix: str = ADDRESS_PREFIX_DEFAULT
    genesis_time_s: int = 0  # the genesis header's time: same config, same genesis block
    # Proof of work (docs/FORMAT.md, "Difficulty and time"): blocks between retargets, 0 for
    # never (the bits stay config.bits: development mode); the pace a retarget aims for; how
    # far ahead of a node's clock a block's time may be.
    retarget_blocks: int = 0
    block_interval_s: int = 600
    time_future_s: int = 7200
    # A consortium chain (docs/FORMAT.md, "Consortium chains"): its genesis validators as
    # (x-only key, weight) pairs, empty for a proof-of-work chain; and the round timeouts of
    # its BFT consensus (Tendermint's timeoutPropose/Prevote/Precommit, each growing by
    # timeout_delta_ms a round).
    validators: tuple[tuple[bytes, int], ...] = ()
    timeout_propose_ms: int = 3000
    timeout_prevote_ms: int = 1000
    timeout_precommit_ms: int = 1000
    timeout_delta_ms: int = 500
    # Contracts the chain runs (tsunagi.contracts), as (name, SHA-256 of the contract's
    # source) pairs: a call record names one by its number, 1 for the first. Every node
    # installs the same code, and refuses to run a chain whose contract source differs.
    contracts: tuple[tuple[str, bytes], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and bytes-like values, but store tuples of bytes: frozen and hashable.
        object.__setattr__(self, "issuers", tuple(_key(key, "issuer") for key in self.issuers))
        object.__setattr__(self, "allocations", tuple(
            (_key(pair[0], "allocation"), pair[1]) for pair in _pairs(self.allocations)))
        object.__setattr__(self, "validators", tuple(
            (_key(pair[0], "validator"), pair[1])
            for pair in _pairs(self.validators, "validators")))
        object.__setattr__(self, "contracts", tuple(
            (pair[0], _digest(pair[1])) for pair in _pairs(self.contracts, "contracts")))
        _validate(self)

    @property
    def is_consortium(self) -> bool:
        """True for a chain whose blocks validators sign (BFT) instead of miners' work."""
        return bool(self.validators)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, hex keys. Equal configs give equal text."""
        document = dataclasses.asdict(self)
        for field in dataclasses.fields(self):
            if field.name in FIELDS_OMITTED_AT_DEFAULT and document[field.name] == field.default:
                del document[field.name]
        document["issuers"] = [key.hex() for key in self.issuers]
        document["allocations"] = [[key.hex(), amount] for key, amount in self.allocations]
        if "validators" in document:
            document["validators"] = [[key.hex(), weight] for key, weight in self.validators]
        if "contracts" in document:
            document["contracts"] = [[name, digest.hex()] for name, digest in self.contracts]
        document["format"] = CONFIG_FORMAT
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ChainConfig:
        """The config of a JSON text; fields left out take their defaults, unknown ones fail."""
        if len(text) > limits.config_json_bytes_max:
            raise ConfigError(f"a chain config is at most {limits.config_json_bytes_max} bytes")
        try:
            document = json_text.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 too
            raise ConfigError(f"a chain config is a JSON object: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError("a chain config is a JSON object")
        if document.pop("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise ConfigError(f"this tsunagi reads chain config format {CONFIG_FORMAT}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ConfigError(f"unknown chain config fields: {', '.join(unknown)}")
        document["issuers"] = [_hex_key(text, "issuer") for text in
                               _list(document.get("issuers", []), "issuers")]
        document["allocations"] = [(_hex_key(pair[0], "allocation"), pair[1])
                                   for pair in _pairs(document.get("allocations", []))]
        if "validators" in document:
            document["validators"] = [(_hex_key(pair[0], "validator"), pair[1])
                                      for pair in _pairs(document["validators"], "validators")]
        if "contracts" in document:
            document["contracts"] = [(pair[0], _hex_digest(pair[1]))
                                     for pair in _pairs(document["contracts"], "contracts")]
        required = [field.name for field in dataclasses.fields(cls)
                    if field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in document]
        if missing:
            raise ConfigError(f"a chain config needs the fields {', '.join(required)}; "
                              f"this one lacks {', '.join(missing)}")
        try:
            return cls(**document)
        except TypeError as exc:  # a field of the wrong type
            raise ConfigError(f"chain config: {exc}") from exc

    def is_canonical(self, text: str | bytes) -> bool:
        """True when ``text`` is exactly this config's canonical JSON."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("ascii", errors="replace")
        return text == self.to_json()


def _list(value, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} is a list, got {type(value).__name__}")
    return list(value)


def _pairs(value, what: str = "allocations") -> list:
    pairs = _list(value, what)
    second = {"allocations": "amount", "contracts": "source hash"}.get(what, "weight")
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"{what[:-1]} {index} is a (key, {second}) pair, "
                              f"got {pair!r:.80}")
    return pairs


def _key(value, what: str) -> bytes:
    try:
        key = memoryview(value).tobytes()
    except TypeError as exc:
        raise ConfigError(f"an {what} key is {KEY_BYTES} bytes, got "
                          f"{type(value).__name__}") from exc
    if len(key) != KEY_BYTES:
        raise ConfigError(f"an {what} key is {KEY_BYTES} bytes, got {len(key)}")
    if not is_public_key(key):
        raise ConfigError(f"{what} key {key.hex()} is not a valid x-only secp256k1 key")
    return key


def _digest(value) -> bytes:
    try:
        digest = memoryview(value).tobytes()
    except TypeError as exc:
        raise ConfigError(f"a contract's source hash is 32 bytes, got "
                          f"{type(value).__name__}") from exc
    if len(digest) != 32:
        raise ConfigError(f"a contract's source hash is 32 bytes, got {len(digest)}")
    return digest


def _hex_digest(text) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise ConfigError(f"a contract's source hash is 64 hex digits, got {text!r:.80}")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"a contract's source hash is hex, got {text!r:.80}") from exc


def _validate_contracts(config: ChainConfig) -> None:
    names = [name for name, _ in config.contracts]
    if len(names) > limits.contracts_max:
        raise ConfigError(f"{len(names)} contracts; at most {limits.contracts_max}")
    for name in names:
        if not isinstance(name, str) or not CONTRACT_NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"a contract name is a lower-case letter then up to 31 of a-z, "
                              f"0-9 and _, got {name!r:.80}")
    if len(set(names)) != len(names):
        raise ConfigError("a contract is named twice; list each contract once")


def _hex_key(text, what: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * KEY_BYTES:
        raise ConfigError(f"an {what} key is {2 * KEY_BYTES} hex digits, got {text!r:.80}")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"an {what} key is hex, got {text!r}") from exc


def _integer(config: ChainConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} is an integer in [{low}, {high}], got {value!r}")


def _validate(config: ChainConfig) -> None:
    _validate_texts(config)
    _integer(config, "chain_id", 0, limits.u32_max)
    _integer(config, "decimals", 0, limits.decimals_max)
    _integer(config, "bits", 0, limits.u32_max)
    _integer(config, "block_records_max", 1, limits.block_records_max)
    _integer(config, "block_wait_ms", 0, limits.block_wait_ms_max)
    _integer(config, "genesis_time_s", 0, limits.u32_max)
    _validate_retarget(config)
    _validate_contracts(config)
    _validate_consortium(config)
    try:
        target = hashing.bits_to_target(config.bits)
    except EncodingError as exc:
        raise ConfigError(f"bits: {exc}") from exc
    if target == 0:
        raise ConfigError(f"bits 0x{config.bits:08x} encode a zero target: no block could "
                          "ever be mined")
    _validate_accounts(config)


def _validate_retarget(config: ChainConfig) -> None:
    _integer(config, "retarget_blocks", 0, limits.retarget_blocks_max)
    _integer(config, "block_interval_s", 1, limits.block_interval_s_max)
    _integer(config, "time_future_s", 0, limits.time_future_s_max)
    if config.retarget_blocks == 1:
        raise ConfigError("retarget_blocks is 0 (never retarget) or at least 2: a retarget "
                          "measures the time between the first and last block of its window")
    timespan = config.retarget_blocks * config.block_interval_s
    if config.retarget_blocks and timespan < 4:
        raise ConfigError(f"retarget_blocks * block_interval_s is the retarget's timespan, at "
                          f"least 4 s so that its quarter is a whole second; got {timespan}")


def _validate_consortium(config: ChainConfig) -> None:
    _integer(config, "timeout_propose_ms", 1, limits.timeout_ms_max)
    _integer(config, "timeout_prevote_ms", 1, limits.timeout_ms_max)
    _integer(config, "timeout_precommit_ms", 1, limits.timeout_ms_max)
    _integer(config, "timeout_delta_ms", 0, limits.timeout_ms_max)
    validators = config.validators
    if len(validators) > limits.validators_max:
        raise ConfigError(f"{len(validators)} validators; at most {limits.validators_max}")
    keys = [key for key, _ in validators]
    if len(set(keys)) != len(keys):
        raise ConfigError("a validator key is listed twice; list each validator once")
    for key, weight in validators:
        if not isinstance(weight, int) or isinstance(weight, bool) \
                or not 1 <= weight <= limits.validator_weight_max:
            raise ConfigError(f"the weight of validator {key.hex()} is an integer in "
                              f"[1, {limits.validator_weight_max}], got {weight!r}")
    if validators and config.retarget_blocks:
        raise ConfigError("a consortium chain (validators) has no proof of work to retarget: "
                          "leave retarget_blocks at 0")


def _validate_texts(config: ChainConfig) -> None:
    name = config.name
    if not (isinstance(name, str) and 0 < len(name) <= limits.chain_name_chars_max
            and name.isprintable() and name.strip() == name):
        raise ConfigError(f"name is 1..{limits.chain_name_chars_max} printable characters without "
                          f"surrounding spaces, got {name!r:.80}")
    if not (isinstance(config.asset_code, str)
            and ASSET_CODE_PATTERN.fullmatch(config.asset_code)):
        raise ConfigError(f"asset_code is 1..12 ASCII letters and digits, "
                          f"got {config.asset_code!r:.80}")
    if not (isinstance(config.address_prefix, str)
            and ADDRESS_PREFIX_PATTERN.fullmatch(config.address_prefix)):
        raise ConfigError(f"address_prefix is 1..31 lower-case ASCII letters and digits, "
                          f"got {config.address_prefix!r:.80}")


def _validate_accounts(config: ChainConfig) -> None:
    if len(set(config.issuers)) != len(config.issuers):
        raise ConfigError("an issuer key is listed twice; list each issuer once")
    keys = [key for key, _ in config.allocations]
    if len(set(keys)) != len(keys):
        raise ConfigError("an allocation key is listed twice; merge its amounts into one")
    for key, amount in config.allocations:
        if not isinstance(amount, int) or isinstance(amount, bool) \
                or not 0 < amount <= limits.u64_max:
            raise ConfigError(f"the allocation to {key.hex()} is an amount in "
                              f"[1, 2**64 - 1], got {amount!r}")
    total = sum(amount for _, amount in config.allocations)
    if total > limits.u64_max:
        raise ConfigError(f"the allocations add up to {total}, more than 2**64 - 1 units: "
                          "the supply must fit an unsigned 64-bit amount")
    accounts = len(config.issuers) + len(config.allocations)
    if accounts > limits.genesis_accounts_max:
        raise ConfigError(f"{accounts} genesis accounts; at most {limits.genesis_accounts_max}: "
                          "open the rest with ordinary records after genesis")
    genesis_count = len(config.issuers) + 2 * len(config.allocations)
    if genesis_count > config.block_records_max:
        raise ConfigError(f"the genesis block would hold {genesis_count} records, more than "
                          f"block_records_max ({config.block_records_max})")


def genesis_accounts(config: ChainConfig) -> tuple[bytes, ...]:
    """Owner keys of the genesis accounts: account number ``n`` is owned by item ``n - 1``."""
    return config.issuers + tuple(key for key, _ in config.allocations)


def genesis_records(config: ChainConfig) -> bytes:
    """The genesis block's records: opening every genesis account, then minting allocations.

    One ``open_account`` per issuer, then one per allocation key (its sequence is the account
    number it opens, so equal keys still give distinct records); then one ``mint`` per
    allocation from debit account 0 (genesis itself), sequence 1, 2, ... Deterministic.
    """
    chain_id = config.chain_id
    opened = [records.open_account(chain_id, key, sequence=number)
              for number, key in enumerate(genesis_accounts(config), start=1)]
    first_holder = len(config.issuers) + 1
    minted = [records.mint(chain_id, index + 1, 0, first_holder + index, amount)
              for index, (_, amount) in enumerate(config.allocations)]
    return b"".join(opened + minted)
