"""One chain, reached the same way in a data directory or through a running node.

:class:`ChainAccess` is what the ``tsunagi`` commands are written against, once:
:class:`LedgerAccess` opens a data directory (this process then owns it, as a node would), and
:class:`NodeAccess` talks to a ``tsunagi node`` over the wire protocol, so the commands keep
working while a node serves the chain. Both answer in the ledger's own types
(:class:`~tsunagi.ledger.AccountInfo`, hold and policy dicts, :class:`BatchAnswer`).

The operations that sign (``transfer``, ``mint``, ``hold``...) build the record, check that
the key may sign for the account it debits (its owner key, or the policy key of the record's
slot) and raise :class:`~tsunagi.errors.KeyNotOwnerError` before anything is signed or sent
when it may not; then they sign and submit. Accounts are numbers or addresses owning exactly
one account; amounts are units (int) or decimal text in the asset's units ("12.50").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tsunagi import hashing
from tsunagi.core import records
from tsunagi.core.address import decode_address, encode_address
from tsunagi.core.amounts import parse_amount
from tsunagi.core.answer import BatchAnswer
from tsunagi.core.block import Block, decode_block
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import EncodingError, KeyNotOwnerError, NodeError, NotFoundError
from tsunagi.ledger import AccountInfo, Ledger, VerifyReport
from tsunagi.ledger.ledger import verify_log
from tsunagi.node import protocol as p
from tsunagi.node.client import Client

__all__ = ["AccountBalance", "ChainAccess", "LedgerAccess", "NodeAccess", "Signed"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Signed:
    """A record this process signed and submitted, and the chain's answer to it."""

    record: bytes
    answer: BatchAnswer

    @property
    def fields(self) -> dict:
        return records.unpack(self.record)


@dataclass(frozen=True)
class AccountBalance:
    account: int
    owner_key: bytes
    balance: int  # units the account may spend
    held: int  # units in open holds it pays: out of its balance until posted or voided
    sequence: int
    issuer: bool


@dataclass(frozen=True)
class OpenHolds:
    held: int  # units in open holds the account pays
    open_count: int  # open holds naming the account (it pays, receives or resolves them)
    holds: list[dict]  # the oldest of them (a node lists at most holds_per_answer_max)


class ChainAccess:
    """Queries and signed operations on one chain; subclasses give the primitives."""

    config: ChainConfig

    def __enter__(self) -> ChainAccess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- primitives --

    @property
    def height(self) -> int:
        """Number of blocks, genesis included."""
        raise NotImplementedError

    def account(self, account: int) -> AccountInfo:
        """The account's state; NotFoundError when there is no such account."""
        raise NotImplementedError

    def accounts_of(self, owner_key: bytes) -> list[int]:
        raise NotImplementedError

    def open_holds(self, account: int) -> OpenHolds:
        raise NotImplementedError

    def find_hold(self, payer: int, sequence: int) -> dict | None:
        """The hold named by its payer and its record's sequence, whatever its status."""
        raise NotImplementedError

    def policy(self, account: int, slot: int) -> dict | None:
        raise NotImplementedError

    def block(self, height: int) -> bytes | None:
        raise NotImplementedError

    def submit(self, record: bytes, signature: bytes) -> BatchAnswer:
        raise NotImplementedError

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- reading --

    def address(self, key: bytes) -> str:
        return encode_address(key, self.config.address_prefix)

    def account_number(self, account: int | str) -> int:
        """An account given as its number, or as an address owning exactly one account."""
        if isinstance(account, int):
            return account
        if account.isdigit():
            return int(account)
        owned = self.accounts_of(decode_address(account, self.config.address_prefix))
        if len(owned) != 1:
            raise EncodingError(f"address {account} owns {len(owned)} accounts "
                                f"({', '.join(map(str, owned)) or 'none'}): give the number")
        return owned[0]

    def balances(self, account: int | str) -> list[AccountBalance]:
        """The account's balance and held units; for an address, those of each account it
        owns (none: an empty list)."""
        if isinstance(account, str) and not account.isdigit():
            numbers = self.accounts_of(decode_address(account, self.config.address_prefix))
        else:
            numbers = [int(account)]
        found = []
        for number in numbers:
            info = self.account(number)
            found.append(AccountBalance(number, info.owner_key, info.balance,
                                        self.open_holds(number).held, info.sequence,
                                        info.issuer))
        return found

    def blocks(self, last: int | None = None, count: int = 20) -> list[tuple[int, Block]]:
        """(height, block) of up to ``count`` blocks, newest first, from ``last`` down."""
        newest = self.height - 1 if last is None else min(last, self.height - 1)
        found = []
        for height in range(newest, max(0, newest - count + 1) - 1, -1):
            data = self.block(height)
            if data is None:
                raise NotFoundError(f"block {height} is missing")
            found.append((height, decode_block(data)))
        return found

    # -- signing --

    def open_account(self, key: PrivateKey, *, user_data: int = 0) -> Signed:
        """Opens a new account owned by ``key``; ``answer.account`` is its number."""
        record = records.open_account(self.config.chain_id, key.public_key,
                                      sequence=_now_us(), user_data=user_data)
        return self._submit(key, record)

    def transfer(self, key: PrivateKey, debit: int | str, credit: int | str,
                 amount: int | str, *, key_slot: int = 0, user_data: int = 0) -> Signed:
        debit = self.account_number(debit)
        record = records.transfer(self.config.chain_id, self._next_sequence(debit), debit,
                                  self.account_number(credit), self._units(amount),
                                  key_slot=key_slot, user_data=user_data)
        return self._submit(key, record)

    def mint(self, key: PrivateKey, issuer: int | str, credit: int | str, amount: int | str,
             *, user_data: int = 0) -> Signed:
        """New units for ``credit``, signed by an issuer account's key."""
        issuer = self.account_number(issuer)
        record = records.mint(self.config.chain_id, self._next_sequence(issuer), issuer,
                              self.account_number(credit), self._units(amount),
                              user_data=user_data)
        return self._submit(key, record)

    def burn(self, key: PrivateKey, issuer: int | str, amount: int | str, *,
             user_data: int = 0) -> Signed:
        """Destroys units from an issuer account's own balance."""
        issuer = self.account_number(issuer)
        record = records.burn(self.config.chain_id, self._next_sequence(issuer), issuer,
                              self._units(amount), user_data=user_data)
        return self._submit(key, record)

    def hold(self, key: PrivateKey, payer: int | str, payee: int | str, amount: int | str, *,
             expiry_s: int, authority: int | str | None = None, hashlock: bytes = b"",
             user_data: int = 0) -> Signed:
        """Moves ``amount`` from the payer into a hold that the authority account (by default
        the payee) posts or voids before ``expiry_s``; after it, it returns to the payer.
        The hold is named by the payer and the record's sequence (``fields["sequence"]``)."""
        payer, payee = self.account_number(payer), self.account_number(payee)
        authority = payee if authority is None else self.account_number(authority)
        record = records.hold(self.config.chain_id, self._next_sequence(payer), payer, payee,
                              self._units(amount), authority_account=authority,
                              expiry_s=expiry_s, hashlock=hashlock, user_data=user_data)
        return self._submit(key, record)

    def post(self, key: PrivateKey, payer: int, sequence: int,
             amount: int | str | None = None, *, preimage: bytes = b"") -> Signed:
        """Pays ``amount`` of a hold (all of it by default) to its payee, signed by the hold's
        authority; the rest returns to the payer."""
        found = self._named_hold(payer, sequence)
        authority = found["authority"]
        units = found["amount"] if amount is None else self._units(amount)
        record = records.post(self.config.chain_id, self._next_sequence(authority), authority,
                              payer, sequence, units, preimage=preimage)
        return self._submit(key, record)

    def void(self, key: PrivateKey, payer: int, sequence: int) -> Signed:
        """Returns a whole hold to its payer, signed by the hold's authority."""
        authority = self._named_hold(payer, sequence)["authority"]
        record = records.void(self.config.chain_id, self._next_sequence(authority), authority,
                              payer, sequence)
        return self._submit(key, record)

    def set_policy(self, key: PrivateKey, account: int | str, slot: int,
                   policy_key: bytes | str, *, amount_max: int | str = 0,
                   allowance: int | str = 0, expiry_s: int = 0,
                   recipients: tuple[int | str, ...] = ()) -> Signed:
        """Lets ``policy_key`` (32 bytes or its address) sign transfers from the account in
        ``slot`` (1..7), within its limits (0: none); signed by the account's owner key."""
        account = self.account_number(account)
        if isinstance(policy_key, str):
            policy_key = decode_address(policy_key, self.config.address_prefix)
        record = records.set_policy_key(
            self.config.chain_id, self._next_sequence(account), account, slot, policy_key,
            amount_max=self._units(amount_max), allowance=self._units(allowance),
            expiry_s=expiry_s, recipients=tuple(map(self.account_number, recipients)))
        return self._submit(key, record)

    def revoke_policy(self, key: PrivateKey, account: int | str, slot: int) -> Signed:
        """Empties policy slot ``slot`` of the account; signed by the account's owner key."""
        return self.set_policy(key, account, slot, bytes(32))

    def check_signer(self, key: PrivateKey, account: int, slot: int = 0) -> None:
        """KeyNotOwnerError unless ``key`` may sign for ``account`` with ``slot``."""
        info = self.account(account)
        if slot:
            policy = self.policy(account, slot)
            signer = None if policy is None else bytes(policy["key"])
        else:
            signer = bytes(info.owner_key)
        if signer != key.public_key:
            raise KeyNotOwnerError(self.address(key.public_key), account, slot,
                                   None if signer is None else self.address(signer),
                                   self.accounts_of(key.public_key))

    def _submit(self, key: PrivateKey, record: bytes) -> Signed:
        fields = records.unpack(record)
        if fields["kind"] != records.Kind.open_account:
            # set_policy_key names the slot it sets; the owner key (slot 0) signs it.
            slot = 0 if fields["kind"] == records.Kind.set_policy_key else fields["key_slot"]
            self.check_signer(key, fields["debit_account"], slot)
        return Signed(record, self.submit(record, key.sign_record(record)))

    def _named_hold(self, payer: int, sequence: int) -> dict:
        found = self.find_hold(payer, sequence)
        if found is None:
            raise NotFoundError(f"no hold {payer}:{sequence} on chain {self.config.name!r} "
                                "(a hold is named PAYER:SEQUENCE of its hold record)")
        return found

    def _next_sequence(self, account: int) -> int:
        # Microseconds since the epoch: above any earlier sequence of this account, even from
        # another client, without asking the chain for the last one first.
        return max(self.account(account).sequence + 1, _now_us())

    def _units(self, amount: int | str) -> int:
        return amount if isinstance(amount, int) else parse_amount(amount,
                                                                   self.config.decimals)


def _now_us() -> int:
    return time.time_ns() // 1000


class LedgerAccess(ChainAccess):
    """A chain in a data directory, opened by this process (no node may serve it meanwhile)."""

    def __init__(self, path) -> None:
        self.ledger = Ledger.open(path)
        self.config = self.ledger.config

    @property
    def height(self) -> int:
        return self.ledger.height

    def account(self, account: int) -> AccountInfo:
        return self.ledger.account(account)

    def accounts_of(self, owner_key: bytes) -> list[int]:
        return self.ledger.accounts_of(owner_key)

    def open_holds(self, account: int) -> OpenHolds:
        self.ledger.account(account)  # NotFoundError for an unknown account, as a node says
        listed = [hold for hold in self.ledger.holds(account) if hold["status"] == "open"]
        return OpenHolds(self.ledger.held(account), len(listed), listed)

    def find_hold(self, payer: int, sequence: int) -> dict | None:
        return self.ledger.hold(payer, sequence)

    def policy(self, account: int, slot: int) -> dict | None:
        return self.ledger.policy(account, slot)

    def block(self, height: int) -> bytes | None:
        return self.ledger.block(height)

    def submit(self, record: bytes, signature: bytes) -> BatchAnswer:
        return self.ledger.submit(record, signature)

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        return self.ledger.verify(progress)

    def close(self) -> None:
        self.ledger.close()


class NodeAccess(ChainAccess):
    """A chain served by a running node. The chain's config comes from its genesis block;
    ``verify`` downloads every block and checks it here, trusting nothing the node says."""

    def __init__(self, host: str, port: int, **client_options) -> None:
        self.client = Client(host, port, auto_batch=False, **client_options)
        try:
            genesis = self.client.block(0)
            if genesis is None:
                raise NodeError(f"the node at {host}:{port} has no genesis block")
            self.config = ChainConfig.from_json(decode_block(genesis).extension)
            if self.config.chain_id != self.client.welcome.chain_id:
                raise NodeError(f"the node at {host}:{port} serves chain "
                                f"{self.client.welcome.chain_id}, its genesis says "
                                f"{self.config.chain_id}")
        except BaseException:
            self.client.close()
            raise

    @property
    def height(self) -> int:
        return self.client.status().height + 1

    def account(self, account: int) -> AccountInfo:
        found = self.client.account(account)
        if found is None:
            raise NotFoundError(f"no account {account} on chain {self.config.name!r}")
        return AccountInfo(found.account, found.owner_key, found.balance, found.sequence,
                           found.issuer, found.held, found.height)

    def accounts_of(self, owner_key: bytes) -> list[int]:
        return self.client.accounts_of(owner_key)

    def open_holds(self, account: int) -> OpenHolds:
        found = self.client.holds(account)
        if found is None:
            raise NotFoundError(f"no account {account} on chain {self.config.name!r}")
        return OpenHolds(found.held, found.open_count, [_hold_dict(h) for h in found.holds])

    def find_hold(self, payer: int, sequence: int) -> dict | None:
        found = self.client.hold(payer, sequence)
        return None if found is None else _hold_dict(found)

    def policy(self, account: int, slot: int) -> dict | None:
        found = self.client.policy(account, slot)
        if found is None:
            return None
        return {"key": found.policy_key, "amount_max": found.amount_max,
                "allowance": found.allowance, "allowance_left": found.allowance_left,
                "expiry_s": found.expiry_s, "recipients": found.recipients}

    def block(self, height: int) -> bytes | None:
        return self.client.block(height)

    def submit(self, record: bytes, signature: bytes) -> BatchAnswer:
        return self.client.submit(record, signature)

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-executes the node's chain from genesis here, as ``tsunagi verify`` does a data
        directory's: every block's hash, link, work, Merkle root, signatures and codes."""
        source = _NodeBlocks(self.client, self.height)
        try:
            return verify_log(source, self.config, hashing.cpu_count(), progress)
        finally:
            source.close()

    def close(self) -> None:
        self.client.close()


def _hold_dict(hold: p.Hold) -> dict:
    """A wire hold in the ledger's form (Ledger.holds)."""
    return {"payer": hold.payer, "sequence": hold.sequence, "payee": hold.payee,
            "authority": hold.authority, "amount": hold.amount, "expiry_s": hold.expiry_s,
            "hashlock": hold.hashlock, "status": hold.status_name}


class _NodeBlocks:
    """A node's blocks as verify_log reads a block log (``height``, ``read(h)`` in height
    order), streamed by one subscription with the blocks' bytes."""

    def __init__(self, client: Client, height: int) -> None:
        self.client, self.height = client, height
        self._notices = client.subscribe(0, with_blocks=True)
        self._next = 0

    def read(self, height: int) -> bytes:
        if height == self._next:
            notice = next(self._notices)
            self._next += 1
            if notice.height == height and notice.block is not None:
                return notice.block
        data = self.client.block(height)
        if data is None:
            raise NodeError(f"the node has no block {height} below its height {self.height}")
        return data

    def close(self) -> None:
        self._notices.close()
