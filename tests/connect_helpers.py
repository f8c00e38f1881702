"""What the ConnectionChain tests share: a crash injected at the connection node's k-th
external action, and a clock moved by hand."""

from __future__ import annotations

from tsunagi.connect.codes import ConnectCode
from tsunagi.contracts.runtime import CallCode

START_S = 1_800_000_000


class Crash(BaseException):
    """The connection node killed at an injected point."""


class Clock:
    """The one clock of a test's chains, moved by hand."""

    def __init__(self, now: int = START_S) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def arm_actions(crash_at: int | None, actions) -> list:
    """Wraps each ``(owner, method name)`` of ``actions`` (a journal write made durable, a
    record or transaction sent to a linked chain, a call on the connection chain) so that the
    ``crash_at``-th of them, counted together, is the node's last: it happens, then Crash is
    raised; a ``send`` may die just before it goes out. Returns the list of points passed
    (with ``crash_at`` None: every point of a run, to count them)."""
    passed: list = []

    def wrap(owner, name):
        inner = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if crash_at is not None and len(passed) + 1 == crash_at and name == "send":
                passed.append(name + " (before)")
                raise Crash  # killed just before the record went out
            result = inner(*args, **kwargs)
            passed.append(name)
            if crash_at is not None and len(passed) == crash_at:
                raise Crash
            return result
        setattr(owner, name, wrapped)

    for owner, name in actions:
        wrap(owner, name)
    return passed


class NodeCalls:
    """A test world's calls of the connection contract through its ``node``, asserting the
    outcome: ``ok`` (the result) or ``refused`` (the contract's code)."""

    def ok(self, method, args):
        result = self.node.call(method, args)
        assert result.code is CallCode.ok, result
        return result

    def refused(self, method, args) -> ConnectCode:
        result = self.node.call(method, args)
        assert result.code is CallCode.refused, result
        return ConnectCode(result.refuse_code)
