"""Installing contracts (:class:`Registry`) and running a block's calls (:class:`Runtime`).

A chain config names each contract with the module it lives in and the SHA-256 of that
module's source. The registry reads the source, refuses it when its hash differs from the
config's or when the source check refuses it (:mod:`tsunagi.contracts.check`), and compiles it
with step charges inserted. :meth:`Runtime.execute_block` runs a block's calls in order; a call
that fails for any reason changes nothing (its writes were buffered), and every node that runs
the same calls on the same state reaches the same root.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from tsunagi.contracts import check, encoding, limits
from tsunagi.contracts.base import (
    CallContext,
    Contract,
    ContractState,
    Event,
    Meter,
    OutOfBudget,
    Refuse,
)
from tsunagi.errors import ConfigError, EncodingError

__all__ = ["Call", "CallCode", "CallResult", "InstalledContract", "Registry", "Runtime",
           "source_sha256"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
# What every contract instance holds: a method of one of these names would be shadowed.
_BASE_NAMES = frozenset({"state", "context", "emit", "name"})


class CallCode(IntEnum):
    """Why a call did or did not change the state."""

    ok = 0  # the call ran; its writes and events stand
    unknown_contract = 1  # no contract of that name is installed
    unknown_method = 2  # the contract has no callable method of that name
    bad_arguments = 3  # the arguments do not decode, or do not fit the method's parameters
    out_of_budget = 4  # the call took more than its step budget
    refused = 5  # the contract raised Refuse(code, message)
    failed = 6  # the contract raised another exception (its name is kept), or returned a
    # value that cannot be encoded


class Call(NamedTuple):
    """One call as a block carries it: contract and method names, the arguments (a list for
    positional, a dict for keyword ones, or their canonical encoding as bytes), and who made it
    in which record."""

    contract: str
    method: str
    args: list | dict | bytes
    caller_account: int
    caller_key: bytes
    txid: bytes


class CallResult(NamedTuple):
    """What a call did: its code, its return value encoded (b"" unless ok), its events (empty
    unless ok), the steps it took, and for refused the contract's code and message, for failed
    and bad_arguments the reason (an exception's name for failed)."""

    code: CallCode
    value: bytes = b""
    events: tuple[Event, ...] = ()
    steps: int = 0
    refuse_code: int = 0
    detail: str = ""

    def receipt(self) -> bytes:
        """What a block commits of the result, canonical-encoded: ``[code, refuse_code,
        steps, value, [[event name, event fields], ...]]``. ``detail`` is left out: it is for
        people, and Python's own messages may change between versions."""
        return encoding.encode([int(self.code), self.refuse_code, self.steps, self.value,
                                [[event.name, event.fields] for event in self.events]])


class InstalledContract(NamedTuple):
    """A contract class as the registry installed it, with its callable methods' signatures
    (without ``self``) and the SHA-256 of its module's source (hex)."""

    name: str
    cls: type[Contract]
    methods: dict[str, inspect.Signature]
    source_sha256: str
    prefix: bytes


def _resolve(target: str) -> tuple[Path, str]:
    """The source file and class name of ``module:Class`` or ``path/to/file.py:Class``."""
    module, _, class_name = target.rpartition(":")
    if not module or not class_name:
        raise ConfigError(f"a contract is named module:Class or file.py:Class, not {target!r}")
    if module.endswith(".py"):
        return Path(module), class_name
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ConfigError(f"contract module {module} is not installed as Python source: "
                          "install it with the node, or name its file (path.py:Class)")
    return Path(spec.origin), class_name


def _read_source(path: Path) -> bytes:
    try:
        if path.stat().st_size > limits.contract_source_bytes_max:
            raise ConfigError(f"contract source {path} is above "
                              f"{limits.contract_source_bytes_max} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read contract source {path}: {exc.strerror}") from None


def source_sha256(target: str) -> str:
    """The SHA-256 (hex) of the source of ``target``, as a chain config names it."""
    return hashlib.sha256(_read_source(_resolve(target)[0])).hexdigest()


class Registry:
    """The contracts a node runs, by name. ``metering=False`` compiles contracts without step
    charges (for measuring what the charges cost; a chain always meters)."""

    def __init__(self, metering: bool = True) -> None:
        self.meter = Meter()
        self.metering = metering
        self._contracts: dict[str, InstalledContract] = {}

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, str]]) -> Registry:
        """A registry of a chain config's contracts: each {"module": ..., "sha256": ...}."""
        registry = cls()
        for entry in entries:
            try:
                target, digest = entry["module"], entry["sha256"]
            except (KeyError, TypeError):
                raise ConfigError("each contract entry of a chain config has 'module' "
                                  "(module:Class) and 'sha256'") from None
            registry.install(target, digest)
        return registry

    def get(self, name: str) -> InstalledContract | None:
        return self._contracts.get(name)

    def names(self) -> list[str]:
        return sorted(self._contracts)

    def install(self, target: str, sha256_hex: str) -> InstalledContract:
        """Installs the contract class ``target`` (module:Class) whose source must hash to
        ``sha256_hex``; ConfigError says why one is refused."""
        path, class_name = _resolve(target)
        source = _read_source(path)
        digest = hashlib.sha256(source).hexdigest()
        if not isinstance(sha256_hex, str) or sha256_hex.lower() != digest:
            raise ConfigError(f"contract {target}: its source {path} hashes to {digest}, the "
                              f"chain config says {sha256_hex}; install the reviewed version "
                              "or update the config")
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"contract source {path} is not UTF-8") from None
        cls = self._compile(text, path, class_name)
        name = cls.name
        if name in self._contracts:
            raise ConfigError(f"two contracts are named {name!r}: names are state prefixes")
        installed = InstalledContract(name, cls, _methods(cls), digest,
                                      name.encode() + b"\x00")
        self._contracts[name] = installed
        return installed

    def _compile(self, text: str, path: Path, class_name: str) -> type[Contract]:
        tree = check.check_source(text, str(path))
        if self.metering:
            tree = check.instrument(tree)
        module_name = f"tsunagi_contract.{path.stem}"
        namespace = {"__name__": module_name, "__file__": str(path),
                     check.STEP_NAME: self.meter.step, check.ITERATE_NAME: self.meter.iterate}
        exec(compile(tree, str(path), "exec"), namespace)  # the checked, instrumented source
        cls = namespace.get(class_name)
        if not (isinstance(cls, type) and issubclass(cls, Contract)
                and cls.__module__ == module_name):
            raise ConfigError(f"{path} defines no Contract subclass {class_name}")
        if not (isinstance(cls.name, str) and _NAME.fullmatch(cls.name)
                and len(cls.name) <= limits.contract_name_chars_max):
            raise ConfigError(f"contract {class_name}'s name {cls.name!r} is not 1 to "
                              f"{limits.contract_name_chars_max} of a-z, 0-9 and _, "
                              "starting with a letter")
        return cls


def _methods(cls: type[Contract]) -> dict[str, inspect.Signature]:
    methods = {}
    for klass in reversed(cls.__mro__):
        for name, function in vars(klass).items():
            if getattr(function, "tsunagi_callable", False):
                if name in _BASE_NAMES:
                    raise ConfigError(f"contract {cls.__name__} marks {name} callable, a name "
                                      "the Contract base uses: rename the method")
                signature = inspect.signature(function)
                methods[name] = signature.replace(
                    parameters=list(signature.parameters.values())[1:])
    if not methods:
        raise ConfigError(f"contract {cls.__name__} marks no method with @method")
    return methods


class Runtime:
    """Runs calls against a :class:`~tsunagi.contracts.state.WorldState` with the contracts
    of ``registry``, each within ``steps_max`` steps."""

    def __init__(self, registry: Registry, steps_max: int = limits.call_steps_max) -> None:
        if not 0 < steps_max <= limits.call_steps_max:
            raise ConfigError(f"a call's step budget is 1 to {limits.call_steps_max}")
        self.registry, self.steps_max = registry, steps_max

    def execute_block(self, state, height: int, block_time_s: int,
                      calls: Sequence[Call]) -> list[CallResult]:
        """Opens block ``height`` on ``state``, runs ``calls`` in order, ends the block (its
        root is then ``state.root``) and returns one result per call."""
        state.begin_block(height)
        try:
            results = [self.execute(state, height, block_time_s, call) for call in calls]
        except BaseException:  # interrupted (Ctrl-C, a bug here): the block never happened
            state.end_block()
            state.undo_block(height)
            raise
        state.end_block()
        return results

    def execute(self, state, height: int, block_time_s: int, call: Call) -> CallResult:
        """Runs one call inside the block open on ``state``; applies its writes if it is ok."""
        installed = self.registry.get(call.contract)
        if installed is None:
            return CallResult(CallCode.unknown_contract, detail=str(call.contract))
        if call.method not in installed.methods:
            return CallResult(CallCode.unknown_method, detail=str(call.method))
        try:
            args, kwargs = _arguments(call.args)
        except EncodingError as exc:
            return CallResult(CallCode.bad_arguments, detail=str(exc))
        meter = self.registry.meter
        meter.steps_left = self.steps_max
        view = ContractState(state, installed.prefix, meter)
        context = CallContext(call.caller_account, call.caller_key, height, block_time_s,
                              call.txid)
        instance = installed.cls(view, context, meter)
        try:
            value = encoding.encode(getattr(instance, call.method)(*args, **kwargs))
        except OutOfBudget:
            return CallResult(CallCode.out_of_budget, steps=self.steps_max)
        except Refuse as refusal:
            return CallResult(CallCode.refused, steps=self._used(meter),
                              refuse_code=refusal.code, detail=refusal.message)
        except Exception as exc:  # a contract's bug is the call's failure, not the node's
            if isinstance(exc, TypeError) and _at_call_site(exc):
                return CallResult(CallCode.bad_arguments, detail=str(exc))
            return CallResult(CallCode.failed, steps=self._used(meter), detail=type(exc).__name__)
        for key, stored in view._writes.items():
            if stored is None:
                state.delete(key)
            else:
                state.set(key, stored)
        return CallResult(CallCode.ok, value, tuple(instance._events), self._used(meter))

    def _used(self, meter: Meter) -> int:
        return self.steps_max - max(meter.steps_left, 0)


def _arguments(args) -> tuple[list, dict]:
    if isinstance(args, bytes | bytearray):
        args = encoding.decode(args)
    else:  # decoded already: held to what an encoding can carry, as bytes from a block are
        encoding.encode(args)
    if isinstance(args, list):
        return args, {}
    if isinstance(args, dict):
        if not all(isinstance(key, str) for key in args):
            raise EncodingError("keyword arguments are named by str keys")
        return [], args
    raise EncodingError(f"a call's arguments are a list or a dict, not {type(args).__name__}")


def _at_call_site(exc: TypeError) -> bool:
    """True when ``exc`` was raised by the call itself, binding the arguments to the method's
    parameters, before any line of the method ran (its traceback has no frame below the
    caller's); a TypeError from inside the method is the method's failure."""
    traceback = exc.__traceback__
    return traceback is not None and traceback.tb_next is None
