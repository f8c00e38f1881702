"""The 128-byte record: its byte layout (docs/FORMAT.md), numpy view, and builders.

A batch of records is one contiguous buffer, seen as a numpy structured array: no Python object
per record on the hot path. The builders here are for clients and tests; they return bytes.
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum, IntFlag

import numpy as np

from tsunagi import limits
from tsunagi.errors import EncodingError

RECORD_BYTES = 128
SIGNATURE_BYTES = 64
KEY_SLOTS = 8  # slot 0 is the owner key; 1..7 policy keys
POLICY_RECIPIENTS_MAX = 4  # what fits in a record's `extra` field


class Kind(IntEnum):
    open_account = 1
    transfer = 2
    mint = 3
    burn = 4
    hold = 5
    post = 6
    void = 7
    set_policy_key = 8
    call = 9  # a contract call: its arguments ride in the block's payload section


class Flags(IntFlag):
    linked = 1  # this record and the next succeed or fail together
    batch_authorized = 2  # covered by its batch's signature instead of its own


FLAGS_KNOWN = int(Flags.linked | Flags.batch_authorized)

RECORD_DTYPE = np.dtype([
    ("kind", "u1"),
    ("flags", "u1"),
    ("key_slot", "<u2"),
    ("chain_id", "<u4"),
    ("sequence", "<u8"),
    ("debit_account", "<u8"),
    ("credit_account", "<u8"),
    ("amount", "<u8"),
    ("aux", "<u8"),
    ("data", "u1", (32,)),
    ("aux2", "<u8"),
    ("extra", "<u8", (4,)),
    ("user_data", "<u8"),
])
assert RECORD_DTYPE.itemsize == RECORD_BYTES

_LAYOUT = struct.Struct("<BBHIQQQQQ32sQ4QQ")
assert _LAYOUT.size == RECORD_BYTES


def as_records(buffer) -> np.ndarray:
    """A read-only structured view of a buffer of whole 128-byte records (no copy)."""
    view = memoryview(buffer)
    if not view.c_contiguous:
        raise EncodingError("a record buffer must be contiguous")
    if view.nbytes % RECORD_BYTES:
        raise EncodingError(
            f"a record buffer is a whole number of {RECORD_BYTES}-byte records, "
            f"got {view.nbytes} bytes")
    return np.frombuffer(view.cast("B"), dtype=RECORD_DTYPE)


def pack(kind: Kind, *, chain_id: int, sequence: int = 0, debit_account: int = 0,
         credit_account: int = 0, amount: int = 0, aux: int = 0, data: bytes = b"",
         aux2: int = 0, extra: tuple[int, ...] = (), user_data: int = 0, key_slot: int = 0,
         flags: int = 0) -> bytes:
    """One record's 128 bytes. Values out of their field's range raise EncodingError."""
    if len(data) > 32:
        raise EncodingError(f"data is at most 32 bytes, got {len(data)}")
    if len(extra) > 4:
        raise EncodingError(f"extra holds at most 4 values, got {len(extra)}")
    extra4 = tuple(extra) + (0,) * (4 - len(extra))
    try:
        return _LAYOUT.pack(int(kind), flags, key_slot, chain_id, sequence, debit_account,
                            credit_account, amount, aux, data.ljust(32, b"\0"), aux2, *extra4,
                            user_data)
    except struct.error as exc:
        raise EncodingError(f"a record field is out of range: {exc}") from exc


def pack_many(count: int, kind: Kind, *, chain_id: int, sequence, debit_account, credit_account,
              amount, batch_authorized: bool = False) -> np.ndarray:
    """``count`` records of one kind as a structured array, each field set in bulk (a scalar
    or an array of ``count``); other fields zero. No Python object per record."""
    view = np.zeros(count, dtype=RECORD_DTYPE)
    view["kind"] = kind
    view["flags"] = Flags.batch_authorized if batch_authorized else 0
    view["chain_id"] = chain_id
    view["sequence"] = sequence
    view["debit_account"] = debit_account
    view["credit_account"] = credit_account
    view["amount"] = amount
    return view


def unpack(record: bytes) -> dict:
    """The fields of one record as a dict (for display and tests, not the hot path)."""
    if len(record) != RECORD_BYTES:
        raise EncodingError(f"a record is {RECORD_BYTES} bytes, got {len(record)}")
    (kind, flags, key_slot, chain_id, sequence, debit, credit, amount, aux, data, aux2,
     e0, e1, e2, e3, user_data) = _LAYOUT.unpack(record)
    return {"kind": kind, "flags": flags, "key_slot": key_slot, "chain_id": chain_id,
            "sequence": sequence, "debit_account": debit, "credit_account": credit,
            "amount": amount, "aux": aux, "data": data, "aux2": aux2,
            "extra": (e0, e1, e2, e3), "user_data": user_data}


def _flags(linked: bool, batch_authorized: bool) -> int:
    return (Flags.linked if linked else 0) | (Flags.batch_authorized if batch_authorized else 0)


def open_account(chain_id: int, owner_key: bytes, *, sequence: int = 0,
                 user_data: int = 0) -> bytes:
    """Opens a new account owned by a 32-byte x-only public key."""
    if len(owner_key) != 32:
        raise EncodingError(f"an owner key is 32 bytes (x-only), got {len(owner_key)}")
    return pack(Kind.open_account, chain_id=chain_id, sequence=sequence, data=owner_key,
                user_data=user_data)


def transfer(chain_id: int, sequence: int, debit_account: int, credit_account: int,
             amount: int, *, linked: bool = False, batch_authorized: bool = False,
             key_slot: int = 0, user_data: int = 0) -> bytes:
    return pack(Kind.transfer, chain_id=chain_id, sequence=sequence,
                debit_account=debit_account, credit_account=credit_account, amount=amount,
                key_slot=key_slot, user_data=user_data,
                flags=_flags(linked, batch_authorized))


def mint(chain_id: int, sequence: int, issuer_account: int, credit_account: int,
         amount: int, *, linked: bool = False, user_data: int = 0) -> bytes:
    return pack(Kind.mint, chain_id=chain_id, sequence=sequence, debit_account=issuer_account,
                credit_account=credit_account, amount=amount, user_data=user_data,
                flags=_flags(linked, False))


def burn(chain_id: int, sequence: int, issuer_account: int, amount: int, *,
         linked: bool = False, user_data: int = 0) -> bytes:
    return pack(Kind.burn, chain_id=chain_id, sequence=sequence, debit_account=issuer_account,
                amount=amount, user_data=user_data, flags=_flags(linked, False))


def hold(chain_id: int, sequence: int, debit_account: int, credit_account: int, amount: int,
         *, authority_account: int, expiry_s: int, hashlock: bytes = b"",
         linked: bool = False, user_data: int = 0) -> bytes:
    """Moves amount from the payer into a hold that only authority_account may resolve."""
    if hashlock and len(hashlock) != 32:
        raise EncodingError(f"a hashlock is a 32-byte SHA-256, got {len(hashlock)} bytes")
    return pack(Kind.hold, chain_id=chain_id, sequence=sequence, debit_account=debit_account,
                credit_account=credit_account, amount=amount, aux=expiry_s, data=hashlock,
                aux2=authority_account, user_data=user_data, flags=_flags(linked, False))


def post(chain_id: int, sequence: int, authority_account: int, payer_account: int,
         hold_sequence: int, amount: int, *, preimage: bytes = b"", linked: bool = False,
         user_data: int = 0) -> bytes:
    """Posts amount of the hold (payer_account, hold_sequence); the rest returns to the payer.

    A hashlocked hold needs the 32-byte preimage whose SHA-256 is the hashlock (as in HTLCs).
    """
    if preimage and len(preimage) != 32:
        raise EncodingError(f"a preimage is 32 bytes (its SHA-256 is the hold's hashlock), "
                            f"got {len(preimage)}")
    return pack(Kind.post, chain_id=chain_id, sequence=sequence,
                debit_account=authority_account, credit_account=payer_account, amount=amount,
                aux=hold_sequence, data=preimage, user_data=user_data,
                flags=_flags(linked, False))


def void(chain_id: int, sequence: int, authority_account: int, payer_account: int,
         hold_sequence: int, *, linked: bool = False, user_data: int = 0) -> bytes:
    return pack(Kind.void, chain_id=chain_id, sequence=sequence,
                debit_account=authority_account, credit_account=payer_account,
                aux=hold_sequence, user_data=user_data, flags=_flags(linked, False))


def set_policy_key(chain_id: int, sequence: int, owner_account: int, slot: int,
                   policy_key: bytes, *, amount_max: int = 0, allowance: int = 0,
                   expiry_s: int = 0, recipients: tuple[int, ...] = (),
                   user_data: int = 0) -> bytes:
    """Registers (or, with a zero key, revokes) the policy key in slot 1..7 of an account."""
    if not 1 <= slot < KEY_SLOTS:
        raise EncodingError(f"a policy key slot is 1..{KEY_SLOTS - 1}, got {slot}")
    if len(policy_key) != 32:
        raise EncodingError(f"a policy key is 32 bytes (x-only), got {len(policy_key)}")
    if len(recipients) > POLICY_RECIPIENTS_MAX:
        raise EncodingError(f"a policy names at most {POLICY_RECIPIENTS_MAX} recipients")
    return pack(Kind.set_policy_key, chain_id=chain_id, sequence=sequence,
                debit_account=owner_account, amount=amount_max, aux=expiry_s,
                data=policy_key, aux2=allowance, extra=tuple(recipients), key_slot=slot,
                user_data=user_data)


def payload_digest(payload) -> bytes:
    """SHA-256d of a call's payload: what its record carries in ``data``."""
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()


def call_count(records) -> int:
    """How many call records a buffer of whole records holds (one pass over the kind bytes):
    each needs its payload."""
    return int(np.count_nonzero(np.frombuffer(records, dtype=np.uint8)[0::RECORD_BYTES]
                                == Kind.call))


def call(chain_id: int, sequence: int, caller_account: int, contract: int, payload: bytes, *,
         linked: bool = False, batch_authorized: bool = False, user_data: int = 0) -> bytes:
    """A call of contract number ``contract`` (the chain config's) by ``caller_account``,
    whose arguments, ``payload``, travel beside the record and go in its block's payload
    section: the record carries their digest and length, so its signature covers them."""
    if len(payload) > limits.payload_bytes_max:
        raise EncodingError(f"a payload is at most {limits.payload_bytes_max} bytes, got "
                            f"{len(payload)}")
    return pack(Kind.call, chain_id=chain_id, sequence=sequence, debit_account=caller_account,
                aux=contract, data=payload_digest(payload), aux2=len(payload),
                user_data=user_data, flags=_flags(linked, batch_authorized))
