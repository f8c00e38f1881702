"""What a contract is written against: :class:`Contract`, the :func:`method` decorator,
:class:`Refuse`, the call's :class:`CallContext` and its :class:`ContractState` view.

A contract sees only its arguments, the context (the block time is its only clock) and its own
part of the world state, through a view that buffers every write: the runtime applies them when
the call succeeds and drops them when it does not. Every state access is charged to the call's
:class:`Meter`, and so is every loop iteration and function entry of contract code (the
registry compiles contracts with those charges inserted).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from tsunagi._native.sigverify import verify_batch
from tsunagi.contracts import encoding, limits
from tsunagi.errors import EncodingError

__all__ = ["CallContext", "Contract", "ContractState", "Event", "Meter", "OutOfBudget",
           "Refuse", "method"]


class OutOfBudget(BaseException):
    """A call spent its step budget. A BaseException, so that a contract's ``except
    Exception`` cannot swallow it (and the source check refuses bare ``except:``)."""


class Refuse(Exception):
    """Raised by a contract to turn a call down with its own ``code`` (an int from 1) and a
    message; the call changes nothing and its result is ``refused``."""

    def __init__(self, code: int, message: str = "") -> None:
        if type(code) is not int or not 0 < code <= limits.refuse_code_max:
            raise EncodingError(f"a refusal code is an int from 1 to {limits.refuse_code_max}, "
                                f"got {code!r}")
        self.code, self.message = code, str(message)
        super().__init__(code, self.message)


class CallContext(NamedTuple):
    """Who calls and when: the caller's account and public key, the block's height and time
    (seconds, the only clock a contract has), and the txid of the record that carries the call."""

    caller_account: int
    caller_key: bytes
    height: int
    block_time_s: int
    txid: bytes


class Event(NamedTuple):
    """Something a call reports to the block's receipts: a name and its fields, encoded."""

    name: str
    fields: bytes


class Meter:
    """The steps left to the call being run; shared by the runtime and compiled contracts."""

    __slots__ = ("steps_left",)

    def __init__(self) -> None:
        self.steps_left = 0

    def step(self) -> None:
        """One loop iteration or function entry of contract code."""
        self.steps_left -= 1
        if self.steps_left < 0:
            raise OutOfBudget

    def charge(self, steps: int) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            raise OutOfBudget

    def iterate(self, iterable):
        """Yields ``iterable``'s items at a step each (the loops of comprehensions)."""
        for item in iterable:
            self.steps_left -= 1
            if self.steps_left < 0:
                raise OutOfBudget
            yield item


class ContractState:
    """A contract's own keys of the world state, with the call's writes buffered.

    Keys are bytes or str (str is stored as its UTF-8 bytes); values are anything
    :mod:`tsunagi.contracts.encoding` encodes, stored canonical-encoded.
    """

    __slots__ = ("_meter", "_prefix", "_world", "_writes")

    def __init__(self, world, prefix: bytes, meter: Meter) -> None:
        self._world, self._prefix, self._meter = world, prefix, meter
        # full key -> encoded value (None: deleted); private, so contract code cannot reach it
        self._writes: dict[bytes, bytes | None] = {}

    def _key(self, key) -> bytes:
        if isinstance(key, str):
            key = key.encode("utf-8")
        elif not isinstance(key, bytes):
            raise EncodingError(f"a contract's state key is bytes or str, not "
                                f"{type(key).__name__}")
        full = self._prefix + key
        if not key or len(full) > limits.state_key_bytes_max:
            room = limits.state_key_bytes_max - len(self._prefix)
            raise EncodingError(f"a state key is 1 to {room} bytes for this contract, "
                                f"got {len(key)}")
        return full

    def get(self, key, default=None):
        """The value stored at ``key`` (this call's writes included), or ``default``."""
        self._meter.charge(limits.state_read_steps)
        full = self._key(key)
        stored = self._writes[full] if full in self._writes else self._world.get(full)
        return default if stored is None else encoding.decode(stored)

    def has(self, key) -> bool:
        self._meter.charge(limits.state_read_steps)
        full = self._key(key)
        return (self._writes[full] if full in self._writes else self._world.get(full)) is not None

    def set(self, key, value) -> None:
        """Stores ``value`` at ``key`` once the call succeeds."""
        full = self._key(key)
        encoded = encoding.encode(value)
        self._meter.charge(limits.state_write_steps
                           + len(encoded) // limits.state_write_bytes_per_step)
        self._writes[full] = encoded

    def delete(self, key) -> None:
        """Removes ``key`` once the call succeeds."""
        self._meter.charge(limits.state_write_steps)
        self._writes[self._key(key)] = None


def method(function):
    """Marks a contract method as callable by a call record; other methods are helpers."""
    function.tsunagi_callable = True
    return function


class Contract:
    """Base of every contract: subclasses set ``name`` and mark entry points with @method.

    The runtime makes a new instance for each call, with ``state`` (this contract's view),
    ``context`` (a :class:`CallContext`) and ``emit`` to report events; nothing an instance
    holds outlives its call.
    """

    name: ClassVar[str] = ""

    def __init__(self, state: ContractState, context: CallContext, meter: Meter) -> None:
        self.state, self.context = state, context
        self._meter = meter
        self._events: list[Event] = []

    def emit(self, name: str, /, **fields) -> None:
        """Reports an event ``name`` with ``fields`` (encodable values) if the call succeeds."""
        if not isinstance(name, str) or not name:
            raise EncodingError("an event's name is a non-empty str")
        if len(self._events) >= limits.call_events_max:
            raise EncodingError(f"a call emits at most {limits.call_events_max} events")
        self._meter.charge(limits.event_steps)
        self._events.append(Event(name, encoding.encode(fields)))

    def verify_signatures(self, messages: list, keys: list, signatures: list) -> int:
        """-1 when each ``signatures[i]`` (64 bytes) is a BIP340 signature of ``messages[i]``
        (32 bytes) under the x-only key ``keys[i]`` (32 bytes), else the first ``i`` that is
        not (a key that is no point of the curve included). All are checked in one call of the
        native batch verifier; each costs limits.signature_steps. Deterministic: a pure
        function of its bytes, as every node's answer must be."""
        count = len(messages)
        if len(keys) != count or len(signatures) != count:
            raise EncodingError(f"{count} messages need as many keys and signatures, got "
                                f"{len(keys)} and {len(signatures)}")
        self._meter.charge(limits.signature_steps * count)
        if not count:
            return -1
        for name, rows, size in (("message", messages, 32), ("key", keys, 32),
                                 ("signature", signatures, 64)):
            if any(type(row) is not bytes or len(row) != size for row in rows):
                raise EncodingError(f"each {name} is {size} bytes")
        good = verify_batch(np.frombuffer(b"".join(messages), np.uint8).reshape(count, 32),
                            np.frombuffer(b"".join(keys), np.uint8).reshape(count, 32),
                            np.frombuffer(b"".join(signatures), np.uint8).reshape(count, 64))
        bad = np.flatnonzero(~good)
        return int(bad[0]) if len(bad) else -1
