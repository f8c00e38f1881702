"""Contracts run deterministically: a call that fails in any way changes nothing, work per call
is bounded, only reviewed source is installed, and every node replaying the same calls reaches
the same root.

Method: the example name registry and small contracts written to files for each test run
through Runtime.execute_block on a WorldState; outcomes are result codes, returned values,
events and state roots (a failed call's block must have the root of an empty block). Two
independent registries and runtimes replay the same random calls (hypothesis) and must agree.
"""

from __future__ import annotations

import hashlib
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.contracts import (
    Call,
    CallCode,
    Registry,
    Runtime,
    WorldState,
    decode,
    source_sha256,
    verify_proof,
)
from tsunagi.contracts import examples as names_module
from tsunagi.errors import ConfigError

NAMES = "tsunagi.contracts.examples:NameRegistry"
KEY = bytes(range(32))
TXID = bytes(32)


def names_runtime(**options) -> Runtime:
    registry = Registry()
    registry.install(NAMES, source_sha256(NAMES))
    return Runtime(registry, **options)


def call(method: str, args, account: int = 1, contract: str = "names") -> Call:
    return Call(contract, method, args, account, KEY, TXID)


def contract_file(tmp_path, body: str, name: str = "probe", class_name: str = "Probe"):
    """Writes a contract module and returns its target (file.py:Class)."""
    source = "from tsunagi.contracts import Contract, Refuse, method\n\n\n" \
        f"class {class_name}(Contract):\n    name = {name!r}\n\n" \
        + textwrap.indent(textwrap.dedent(body), "    ")
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return f"{path}:{class_name}"


def probe_runtime(tmp_path, body: str, **options) -> Runtime:
    target = contract_file(tmp_path, body)
    registry = Registry()
    registry.install(target, source_sha256(target))
    return Runtime(registry, **options)


def empty_block_root(height: int = 0) -> bytes:
    state = WorldState()
    state.begin_block(height)
    return state.end_block()


def test_the_name_registry_keeps_owners_and_refuses_others():
    runtime, state = names_runtime(), WorldState()
    results = runtime.execute_block(state, 0, 1_700_000_000, [
        call("register", ["alice.example", b"\x01"], account=1),
        call("register", ["alice.example"], account=2),
        call("transfer", ["alice.example", 2], account=2),
        call("transfer", ["alice.example", 2], account=1),
        call("point", {"name": "alice.example", "target": b"\x02"}, account=2),
        call("register", ["Bad Name"], account=3),
        call("lookup", ["alice.example"]),
    ])
    codes = [result.code for result in results]
    assert codes == [CallCode.ok, CallCode.refused, CallCode.refused, CallCode.ok, CallCode.ok,
                     CallCode.refused, CallCode.ok]
    assert [result.refuse_code for result in results] == \
        [0, names_module.NAME_TAKEN, names_module.NOT_OWNER, 0, 0, names_module.NAME_INVALID, 0]
    assert decode(results[0].value) == 1  # names registered
    assert decode(results[6].value) == {"owner": 2, "target": b"\x02", "since": 1_700_000_000}
    assert [(event.name, decode(event.fields)) for event in results[3].events] == \
        [("transferred", {"name": "alice.example", "owner": 2})]
    assert results[1].events == () and results[1].detail == "the name is taken"
    assert decode(results[1].receipt()) == [CallCode.refused, names_module.NAME_TAKEN,
                                            results[1].steps, b"", []]
    assert decode(results[3].receipt())[4] == [["transferred", results[3].events[0].fields]]
    stored = state.get(b"names\x00name:alice.example")
    assert decode(stored)["owner"] == 2
    assert verify_proof(state.root, b"names\x00name:alice.example", stored,
                        state.prove(b"names\x00name:alice.example"))


def test_a_call_that_fails_after_writing_changes_nothing(tmp_path):
    runtime = probe_runtime(tmp_path, """
        @method
        def write_then_fail(self, how):
            self.state.set("k", 1)
            self.emit("wrote")
            if how == "refuse":
                raise Refuse(7, "no")
            if how == "raise":
                raise ValueError("boom")
            if how == "divide":
                return self.bad()
            if how == "tuple":
                return (1, 2)
            while True:
                self.state.get("k")

        def bad(self):
            return 3 // 0
    """)
    state = WorldState()
    hows = ("refuse", "raise", "divide", "tuple", "spin")
    results = runtime.execute_block(state, 0, 0, [call("write_then_fail", [how], contract="probe")
                                                  for how in hows])
    assert [(r.code, r.refuse_code, r.detail) for r in results] == [
        (CallCode.refused, 7, "no"), (CallCode.failed, 0, "ValueError"),
        (CallCode.failed, 0, "ZeroDivisionError"), (CallCode.failed, 0, "EncodingError"),
        (CallCode.out_of_budget, 0, "")]
    assert all(result.events == () and result.value == b"" for result in results)
    assert len(state) == 0 and state.root == empty_block_root()


def test_the_budget_stops_loops_comprehensions_recursion_and_large_writes(tmp_path):
    runtime = probe_runtime(tmp_path, """
        @method
        def loop(self):
            total = 0
            for item in range(10 ** 9):
                total += item
            return total

        @method
        def comprehension(self):
            return len([item for item in range(10 ** 9)])

        @method
        def recurse(self, depth):
            return self.recurse(depth + 1)

        @method
        def write(self):
            for index in range(100):
                self.state.set(index.to_bytes(2, "big"), bytes(60_000))

        @method
        def swallow(self):
            try:
                while True:
                    pass
            except Exception:
                self.state.set("k", "caught")
            return "caught"

        @method
        def cheap(self):
            return sum([1, 2, 3])
    """, steps_max=800)
    state = WorldState()
    results = runtime.execute_block(state, 0, 0, [
        call(name, args, contract="probe") for name, args in
        [("loop", []), ("comprehension", []), ("recurse", [0]), ("write", []), ("swallow", []),
         ("cheap", [])]])
    assert [result.code for result in results] == [CallCode.out_of_budget] * 5 + [CallCode.ok]
    assert results[0].steps == 800 and 0 < results[5].steps < 10
    assert decode(results[5].value) == 6 and len(state) == 0


def test_arguments_that_do_not_fit_are_bad_arguments_and_inner_type_errors_are_failures(
        tmp_path):
    runtime = probe_runtime(tmp_path, """
        @method
        def add(self, left, right=0):
            return left + right
    """)
    state = WorldState()
    cases = [([1], CallCode.ok), ([1, 2, 3], CallCode.bad_arguments),
             ({"left": 1, "other": 2}, CallCode.bad_arguments), ([], CallCode.bad_arguments),
             (b"\x07\x01\x03\x01\x05", CallCode.ok), (b"\xff", CallCode.bad_arguments),
             ("text", CallCode.bad_arguments), (["a", 1], CallCode.failed),
             ([1.5], CallCode.bad_arguments)]
    results = runtime.execute_block(state, 0, 0, [call("add", args, contract="probe")
                                                  for args, _ in cases])
    assert [result.code for result in results] == [code for _, code in cases]
    assert decode(results[4].value) == 5 and results[7].detail == "TypeError"


def test_a_block_interrupted_between_calls_leaves_the_state_as_it_was(monkeypatch):
    runtime, state = names_runtime(), WorldState()
    runtime.execute_block(state, 0, 0, [call("register", ["first"])])
    before, execute = state.root, runtime.execute

    def interrupted(state_, height, block_time_s, one_call):
        if one_call.args == ["third"]:
            raise KeyboardInterrupt
        return execute(state_, height, block_time_s, one_call)

    monkeypatch.setattr(runtime, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runtime.execute_block(state, 1, 0, [call("register", [name])
                                            for name in ("second", "third")])
    assert (state.height, state.root, state.get(b"names\x00name:second")) == (0, before, None)


def test_unknown_contracts_and_methods_and_helpers_are_not_callable():
    runtime, state = names_runtime(), WorldState()
    results = runtime.execute_block(state, 0, 0, [
        call("register", ["x"], contract="nobody"), call("owned", ["x"]), call("emit", ["x"]),
        call("missing", [])])
    assert [result.code for result in results] == [
        CallCode.unknown_contract, CallCode.unknown_method, CallCode.unknown_method,
        CallCode.unknown_method]


def test_a_contract_sees_its_context_and_only_its_own_keys(tmp_path):
    target = contract_file(tmp_path, """
        @method
        def remember(self):
            self.state.set("name:x", [self.context.caller_account, self.context.height,
                                      self.context.block_time_s, self.context.txid])
            return self.state.get("count")
    """)
    registry = Registry()
    registry.install(NAMES, source_sha256(NAMES))
    registry.install(target, source_sha256(target))
    runtime, state = Runtime(registry), WorldState()
    runtime.execute_block(state, 0, 0, [call("register", ["x"])])
    results = runtime.execute_block(state, 1, 99, [
        Call("probe", "remember", [], 9, KEY, b"\x05" * 32)])
    assert decode(results[0].value) is None  # the registry's "count" is not the probe's
    assert decode(state.get(b"probe\x00name:x")) == [9, 1, 99, b"\x05" * 32]
    assert decode(state.get(b"names\x00name:x"))["owner"] == 1


def test_a_source_whose_hash_differs_from_the_config_is_refused(tmp_path):
    target = contract_file(tmp_path, """
        @method
        def ping(self):
            return 1
    """)
    path = tmp_path / "probe.py"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source_sha256(target) == digest
    path.write_text(path.read_text().replace("return 1", "return 2"))
    with pytest.raises(ConfigError, match=f"the chain config says {digest}"):
        Registry().install(target, digest)
    with pytest.raises(ConfigError, match="'module'"):
        Registry.from_config([{"module": target}])
    assert Registry.from_config([{"module": NAMES, "sha256": source_sha256(NAMES)}]).names() \
        == ["names"]


@pytest.mark.parametrize("line, why", [
    ("import os", "imports os"), ("from os import path", "imports os"),
    ("x = 1.5", "float literal"), ("x = 3 / 2", "divides with /"), ("x = {1, 2}", "set"),
    ("x = {i for i in []}", "set"), ("print(1)", "uses print"), ("x = open", "uses open"),
    ("x = getattr(1, 'real')", "uses getattr"), ("x = (1).__class__", "names __class__"),
    ("x = hash('a')", "uses hash"), ("global y", "global"), ("_hidden = 1", "names _hidden"),
    ("try:\n    pass\nexcept:\n    pass", "bare except"),
    ("from . import x", "imports ."), ("x = eval('1')", "uses eval"),
    ("import typing", "whole"), ("from typing import sys", "import the names"),
    ("from tsunagi.contracts import WorldState", "from tsunagi.contracts"),
    ("import tsunagi.contracts", "whole"), ("from hashlib import *", "import the names"),
    ("def peek(gen):\n    return gen.gi_frame", "gi_frame"),
    ("def back(frame):\n    return frame.f_back", "f_back"),
])
def test_the_source_check_refuses_what_would_break_determinism(tmp_path, line, why):
    path = tmp_path / "bad.py"
    path.write_text("from tsunagi.contracts import Contract, method\n" + line + "\n\n\n"
                    "class Bad(Contract):\n    name = 'bad'\n\n    @method\n"
                    "    def ping(self):\n        return 1\n")
    target = f"{path}:Bad"
    with pytest.raises(ConfigError, match=why):
        Registry().install(target, source_sha256(target))


@pytest.mark.parametrize("class_body, why", [
    ("    name = 'Bad Name'\n\n    @method\n    def ping(self):\n        return 1\n", "name"),
    ("    name = 'bad'\n\n    def ping(self):\n        return 1\n", "no method"),
    ("    name = 'bad'\n\n    @method\n    def emit(self):\n        return 1\n", "rename"),
])
def test_a_contract_without_a_valid_name_or_methods_is_refused(tmp_path, class_body, why):
    path = tmp_path / "bad.py"
    path.write_text("from tsunagi.contracts import Contract, method\n\n\nclass Bad(Contract):\n"
                    + class_body)
    with pytest.raises(ConfigError, match=why):
        Registry().install(f"{path}:Bad", source_sha256(f"{path}:Bad"))
    with pytest.raises(ConfigError, match="no Contract subclass Other"):
        Registry().install(f"{path}:Other", source_sha256(f"{path}:Bad"))
    with pytest.raises(ConfigError, match="not installed"):
        Registry().install("tsunagi.no_such_module:Bad", "00")


name_strategy = st.sampled_from(["a", "b", "c", "d.e", "BAD"])
calls_strategy = st.lists(st.tuples(
    st.sampled_from(["register", "transfer", "release", "point", "lookup"]),
    name_strategy, st.integers(0, 3)), max_size=12)


def as_call(method: str, name: str, account: int) -> Call:
    args = {"register": [name, b"t"], "transfer": [name, (account + 1) % 4],
            "release": [name], "point": [name, bytes([account])], "lookup": [name]}[method]
    return call(method, args, account=account)


@settings(deadline=None, max_examples=40, suppress_health_check=list(HealthCheck))
@given(st.lists(calls_strategy, min_size=1, max_size=4))
def test_two_nodes_replaying_the_same_calls_reach_the_same_roots(blocks):
    first, second = (names_runtime(), WorldState()), (names_runtime(), WorldState())
    roots = []
    for height, block in enumerate(blocks):
        calls = [as_call(*entry) for entry in block]
        one = first[0].execute_block(first[1], height, 1000 + height, calls)
        two = second[0].execute_block(second[1], height, 1000 + height, calls)
        assert one == two and first[1].root == second[1].root
        assert [result.receipt() for result in one] == [result.receipt() for result in two]
        roots.append(first[1].root)
    state, last = first[1], len(blocks) - 1
    state.undo_block(last)
    redo = first[0].execute_block(state, last, 1000 + last, [as_call(*e) for e in blocks[last]])
    assert state.root == roots[-1] and redo == one
