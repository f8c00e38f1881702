"""An example contract: a registry of names, each owned by the account that registered it.

Installed like any contract (``tsunagi.contracts.examples:NameRegistry`` and the SHA-256 of
this file in the chain config); it passes the same source check, so it imports only the
contract API. A name is 1 to 64 characters of a-z, 0-9, "-" and "."; it points at a target
(bytes: an address, a hash) that its owner may change, hand to another account, or release.
"""

from __future__ import annotations

from tsunagi.contracts import Contract, Refuse, method

# Refusal codes of this contract (Refuse(code, message)); 0 is never a refusal.
NAME_TAKEN = 1  # the name is registered already
NAME_INVALID = 2  # the name is empty, too long, or has a character outside a-z 0-9 - .
NOT_OWNER = 3  # only the name's owner may change it
NAME_UNKNOWN = 4  # no such name
TARGET_INVALID = 5  # a target is bytes of at most 64

NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-."
NAME_CHARS_MAX = 64
TARGET_BYTES_MAX = 64


def check_name(name) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= NAME_CHARS_MAX:
        raise Refuse(NAME_INVALID, "a name is 1 to 64 characters")
    for character in name:
        if character not in NAME_CHARACTERS:
            raise Refuse(NAME_INVALID, "a name has only a-z, 0-9, - and .")
    return name


def check_target(target) -> bytes:
    if not isinstance(target, bytes) or len(target) > TARGET_BYTES_MAX:
        raise Refuse(TARGET_INVALID, "a target is at most 64 bytes")
    return target


class NameRegistry(Contract):
    """Names and their owners; the count of registered names is kept beside them."""

    name = "names"

    def owned(self, name: str) -> dict:
        entry = self.state.get("name:" + check_name(name))
        if entry is None:
            raise Refuse(NAME_UNKNOWN, "no such name")
        if entry["owner"] != self.context.caller_account:
            raise Refuse(NOT_OWNER, "only the owner may change a name")
        return entry

    @method
    def register(self, name: str, target: bytes = b"") -> int:
        """Registers ``name`` to the caller; returns how many names are registered."""
        key = "name:" + check_name(name)
        if self.state.has(key):
            raise Refuse(NAME_TAKEN, "the name is taken")
        self.state.set(key, {"owner": self.context.caller_account, "target": check_target(target),
                             "since": self.context.block_time_s})
        count = self.state.get("count", 0) + 1
        self.state.set("count", count)
        self.emit("registered", name=name, owner=self.context.caller_account)
        return count

    @method
    def point(self, name: str, target: bytes) -> None:
        """Points the caller's ``name`` at ``target``."""
        entry = self.owned(name)
        entry["target"] = check_target(target)
        self.state.set("name:" + name, entry)

    @method
    def transfer(self, name: str, new_owner: int) -> None:
        """Hands the caller's ``name`` to account ``new_owner``."""
        entry = self.owned(name)
        if not isinstance(new_owner, int) or isinstance(new_owner, bool) or new_owner < 0:
            raise Refuse(NOT_OWNER, "the new owner is an account number")
        entry["owner"] = new_owner
        self.state.set("name:" + name, entry)
        self.emit("transferred", name=name, owner=new_owner)

    @method
    def release(self, name: str) -> int:
        """Frees the caller's ``name``; returns how many names remain."""
        self.owned(name)
        self.state.delete("name:" + name)
        count = self.state.get("count", 0) - 1
        self.state.set("count", count)
        self.emit("released", name=name)
        return count

    @method
    def lookup(self, name: str) -> dict | None:
        """The owner, target and registration time of ``name``, or None."""
        return self.state.get("name:" + check_name(name))
