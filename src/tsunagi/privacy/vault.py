"""The document vault on a tsunagi chain: the Python API its users call, and the
confidentiality service's side that follows the chain and opens parts (docs/drafts/vault.md).

:class:`Vault` is what a user calls: :meth:`~Vault.create_document` encrypts each secret part
under a fresh AES-256-GCM key (associated data: chain, document and part), splits the key k of
n (:mod:`tsunagi.privacy.shamir`), seals each holder's share to the holder with HPKE and stores
it all through the vault contract (:mod:`tsunagi.privacy.vault_contract`);
:meth:`~Vault.request_open`, :meth:`~Vault.approve`, :meth:`~Vault.deny` and
:meth:`~Vault.revoke` are call records signed by the acting account; :meth:`~Vault.outcome` and
:meth:`~Vault.audit_trail` read the chain. An approval unlocks the holder's device with its PIN
at the service, signs the approve call, opens the holder's sealed fragment and releases it to
the service over the authenticated channel (:mod:`tsunagi.privacy.service`).

:class:`VaultService` is the service's side: it reads the chain's blocks as they come
(:meth:`~VaultService.sync`), tells the ConfidentialityService which requests are open, checks
every released fragment against the part (share checksum, set id, index), and once k holders
whose approvals stand on chain have released, recombines the key, decrypts the part, seals it
to the requester's reply key, and drops the key. Refusals it answers off chain (a wrong PIN, a
replayed or foreign fragment, a damaged share or part) it records on chain with note_refusal.
"""

from __future__ import annotations

import inspect
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tsunagi import errors
from tsunagi.contracts import encoding
from tsunagi.contracts.chain import ChainContracts, call_record
from tsunagi.core import block as blk
from tsunagi.core.codes import Result
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import Kind
from tsunagi.errors import ConfigError, PartDamagedError, ShareError, StepRefusedError
from tsunagi.privacy import limits, shamir, vault_contract
from tsunagi.privacy.holders import (
    FRAGMENT_SUITE,
    DeviceFile,
    FragmentContext,
    HolderIdentity,
    HolderKeys,
    open_fragment,
    seal_fragment,
)
from tsunagi.privacy.service import ConfidentialityService, HolderClient, Refusal

__all__ = ["Outcome", "Part", "Step", "Vault", "VaultCode", "VaultService", "open_delivery",
           "part_associated_data"]

PART_DOMAIN = b"tsunagi/vault-part/1"
DELIVERY_DOMAIN = b"tsunagi/vault-delivery/1"
PART_KEY_BYTES = 32  # AES-256-GCM
CONTRACT_NAME = vault_contract.VaultContract.name
STATE_PREFIX = CONTRACT_NAME.encode() + b"\x00"


class VaultCode(IntEnum):
    """Why a step was refused: the contract's codes (1-14, as vault_contract names them), then
    the service's own (from 101), which it records on chain with note_refusal."""

    ok = 0  # not a refusal
    document_exists = 1  # a document with this id is stored already
    document_invalid = 2  # the document's fields are malformed
    document_unknown = 3  # no document with this id
    part_unknown = 4  # the document has no encrypted part with this id
    not_requester = 5  # the request policy does not let the caller request
    expiry_invalid = 6  # an expiry is 1 s to 24 h
    request_unknown = 7  # no request with this id
    request_closed = 8  # the request was opened or denied already
    request_expired = 9  # the request's expiry passed (block time)
    not_holder = 10  # the caller is not one of the document's holders
    already_approved = 11  # this holder approved the request already
    not_approved = 12  # a revocation of an approval not given
    not_service = 13  # only the document's service notes refusals
    reason_invalid = 14  # a reason or title is not short text
    pin_wrong = 101  # a wrong PIN at the service, counted
    holder_locked = 102  # too many wrong PINs: the holder is locked out
    fragment_replayed = 103  # a release for a closed (earlier) request
    fragment_foreign = 104  # a fragment of another document, part or holder index
    release_unsigned = 105  # a release not signed by the holder for this session and request
    share_damaged = 106  # a released share fails its checksum or is of another set
    part_damaged = 107  # the part's ciphertext fails its AEAD check under the recombined key
    service_refused = 108  # another refusal of the service (its message says which)


_SERVICE_CODES = {
    "PinError": VaultCode.pin_wrong, "HolderLockedError": VaultCode.holder_locked,
    "ReplayError": VaultCode.fragment_replayed, "FragmentError": VaultCode.fragment_foreign,
    "IdentityError": VaultCode.release_unsigned, "NotHolderError": VaultCode.not_holder}


@dataclass(frozen=True)
class Part:
    """A part of a document to store: open parts are text anyone on the chain reads; secret
    parts are bytes, stored encrypted."""

    part_id: int
    title: str
    content: str | bytes
    secret: bool = False


@dataclass(frozen=True)
class Step:
    """One call of the audit trail: where (height), when (block time), who (account), what
    (the method and its request), and the outcome (the record's code, the refusal's code and
    message; for note_refusal the service's code and the holder's key)."""

    height: int
    time_s: int
    account: int
    method: str
    request_id: bytes | None
    code: Result
    refusal: VaultCode
    message: str
    holder_key: bytes | None = None


@dataclass(frozen=True)
class Outcome:
    """Where a request stands: "open", "opened" (the threshold met at ``at_s``), "denied" or
    "expired" (at ``at_s``); ``approvals`` are the holder indexes whose approvals stand, and
    ``delivered`` says whether the service sealed the part to the requester."""

    status: str
    at_s: int
    approvals: tuple[int, ...]
    delivered: bool


def part_associated_data(chain_id: int, document_id: bytes, part_id: int) -> bytes:
    """What the AEAD of an encrypted part binds: the part, its document and its chain."""
    return PART_DOMAIN + struct.pack("<I", chain_id) + bytes(document_id) \
        + struct.pack("<I", part_id)


def _delivery_info(request_id: bytes) -> bytes:
    return DELIVERY_DOMAIN + bytes(request_id)


def open_delivery(sealed: bytes, reply_key: X25519PrivateKey, request_id: bytes) -> bytes:
    """The part the service sealed to the requester's reply key for ``request_id``."""
    try:
        return FRAGMENT_SUITE.decrypt(sealed, reply_key, info=_delivery_info(request_id))
    except (InvalidTag, ValueError) as exc:
        raise errors.FragmentError("the delivery does not open with this reply key for this "
                                   "request: it is another requester's") from exc


# How a call reaches the chain when the ledger has a writer of its own (a node's): takes the
# record, its signature and its payload, and answers (the record's code, its txid) once the
# record is committed. Without one, calls go to ledger.submit_batch in this thread.
Submitter = Callable[[bytes, bytes, bytes], tuple[Result, bytes]]


class _Chain:
    """Reads and writes of the vault contract on one ledger: call records and state."""

    def __init__(self, ledger, contracts: ChainContracts, clock: Callable[[], int] | None,
                 submitter: Submitter | None = None) -> None:
        if CONTRACT_NAME not in contracts.names:
            raise ConfigError(f"the chain runs no {CONTRACT_NAME!r} contract: name it in the "
                              "chain config and install tsunagi.privacy.vault_contract:"
                              "VaultContract")
        self.ledger, self.contracts, self.clock = ledger, contracts, clock
        self.submitter = submitter
        self.chain_id = ledger.config.chain_id
        self.number = contracts.names.index(CONTRACT_NAME) + 1

    def submit(self, signer: PrivateKey, account: int, method: str, args: dict):
        """Signs and submits one call; (record code, refusal code, message, txid)."""
        sequence = self.ledger.account(account).sequence + 1
        record, payload = call_record(self.chain_id, sequence, account, self.number, method,
                                      args)
        now_s = None if self.clock is None else self.clock()
        if self.submitter is not None:
            code, txid = self.submitter(record, signer.sign_record(record), payload)
        else:
            answer = self.ledger.submit_batch(record, signer.sign_record(record), now_s=now_s,
                                              payloads=[payload])
            code, txid = Result(int(answer.codes[0])), answer.txids[0].tobytes()
        result = self.contracts.results.get(txid)
        refusal = result.refuse_code if result is not None else 0
        return code, refusal, "" if result is None else result.detail, txid

    def read(self, key: bytes):
        stored = self.contracts.state.get(STATE_PREFIX + key)
        return None if stored is None else encoding.decode(stored)

    def tip_time_s(self) -> int:
        return blk.decode_block(self.ledger.block(self.ledger.height - 1)).time

    def block_hash(self, height: int) -> bytes:
        return blk.decode_block(self.ledger.block(height)).hash

    def calls(self, first: int, end: int | None = None):
        """(height, time, account, method, args, code, txid) of each vault call in blocks
        ``first`` up to ``end`` (default: the durable height), in chain order."""
        for height in range(first, self.ledger.height if end is None else end):
            block = blk.decode_block(self.ledger.block(height))
            records = block.records
            payloads = blk.block_payloads(block) if len(records) else {}
            txids = block.txids()
            for position in range(len(records)):
                if int(records["kind"][position]) != Kind.call \
                        or int(records["aux"][position]) != self.number:
                    continue
                method, args = _decoded_call(payloads.get(position, b""))
                yield (height, block.time, int(records["debit_account"][position]), method,
                       args, Result(int(block.codes[position])), txids[position].tobytes())


def _decoded_call(payload: bytes) -> tuple[str, dict]:
    """A vault call's method and its arguments by name (positional ones named as the
    contract's method names them); ("", {}) when it is not a call of a vault method."""
    try:
        method, args = encoding.decode(payload)
    except (errors.EncodingError, ValueError, TypeError):
        return "", {}
    function = getattr(vault_contract.VaultContract, method, None) \
        if isinstance(method, str) else None
    if not getattr(function, "tsunagi_callable", False):
        return "", {}
    if isinstance(args, list):
        names = list(inspect.signature(function).parameters)[1:]
        args = dict(zip(names, args))
    return method, args if isinstance(args, dict) else {}


class VaultService:
    """The confidentiality service's side of the vault: follows the chain through ``ledger``
    (with its ``contracts``), keeps ``service`` told of open requests, and opens a part once
    k approving holders released their fragments. ``account`` and ``signing`` are the
    service's own account on the chain, for the refusals it records."""

    def __init__(self, ledger, contracts: ChainContracts, service: ConfidentialityService, *,
                 account: int, signing: PrivateKey,
                 clock: Callable[[], int] | None = None,
                 submitter: Submitter | None = None) -> None:
        self.chain = _Chain(ledger, contracts, clock, submitter)
        self.service, self.account, self.signing = service, account, signing
        self._next_height = 1
        self._open: dict[bytes, dict] = {}  # request id -> its document id and part
        self._deliveries: dict[bytes, bytes] = {}
        # Calls that stand on chain but the service cannot act on (txid, why), newest last.
        self.ignored: deque[tuple[bytes, str]] = deque(maxlen=limits.refusals_kept_max)

    def sync(self) -> None:
        """Reads the blocks not read yet and acts on each vault call that stands; then
        closes expired requests and records the refusals the service answered."""
        first, self._next_height = self._next_height, self.chain.ledger.height
        for _, _, _, method, args, code, txid in self.chain.calls(first):
            if code == Result.ok:
                try:
                    self._act(method, args, txid)
                except (errors.VaultError, errors.EncodingError, errors.ConfigError,
                        KeyError) as exc:
                    # A document whose holder identities do not verify (the contract cannot
                    # check BIP340 signatures) never opens here; the chain keeps it as stored.
                    self.ignored.append((txid, f"{method}: {exc}"))
        now_s = self.chain.tip_time_s()
        for request_id in list(self._open):
            request = self.chain.read(b"req:" + request_id)
            if request["status"] == "open" and now_s > request["expires_s"]:
                self._close(request_id)  # expired: whatever was released is forgotten
        self.record_refusals()

    def _act(self, method: str, args: dict, txid: bytes) -> None:
        if method == "create_document":
            self._register(args["document_id"])
        elif method == "request_open":
            self.service.open_request(txid, self.chain.chain_id, args["document_id"],
                                      args.get("part_id"))
            self._open[txid] = {"document": args["document_id"], "part": args["part_id"]}
        elif method in ("approve", "revoke", "deny"):
            self._changed(args["request_id"])

    def _register(self, document_id: bytes) -> None:
        document = self.chain.read(b"doc:" + document_id)
        holders = [HolderIdentity.from_bytes(identity) for identity, _ in document["holders"]]
        self.service.register_document(self.chain.chain_id, document_id, holders,
                                       document["threshold"])

    def _changed(self, request_id: bytes) -> None:
        if request_id not in self._open:
            return
        request = self.chain.read(b"req:" + request_id)
        if request["status"] == "denied":
            self._close(request_id)
            return
        standing = {approval["holder"] for approval in request["approvals"]}
        for index in self.service.fragments(request_id):
            if index not in standing and index in {r["holder"] for r in request["revoked"]}:
                self.service.withdraw(request_id, index)  # revoked before the threshold
        self.try_open(request_id)

    def _close(self, request_id: bytes) -> None:
        self._open.pop(request_id, None)
        self.service.close_request(request_id)

    def try_open(self, request_id: bytes) -> bool:
        """Opens the part when the chain shows the request opened and k of its approving
        holders released good fragments; True once the part is delivered."""
        if request_id in self._deliveries:
            return True
        request = self.chain.read(b"req:" + request_id)
        if request is None or request["status"] != "opened" or request_id not in self._open:
            return False
        document = self.chain.read(b"doc:" + request["document"])
        part = self.chain.read(vault_contract.part_key(request["document"], request["part"]))
        approving = [approval["holder"] for approval in request["approvals"]]
        shares = self._good_shares(request_id, part, document["threshold"], approving)
        if len(shares) < document["threshold"]:
            return False
        key = shamir.combine(shares[:document["threshold"]])
        try:
            content = AESGCM(key).decrypt(part["nonce"], part["ciphertext"], part_associated_data(
                self.chain.chain_id, request["document"], request["part"]))
        except InvalidTag:
            self._note(request_id, b"\x00" * 32, VaultCode.part_damaged,
                       "the part's ciphertext fails its check under the recombined key: it "
                       "was changed on chain; nothing was released")
            self._close(request_id)
            raise PartDamagedError("the part's ciphertext does not open under its recombined "
                                   "key: it was changed; nothing was released") from None
        finally:
            del key  # the part key lives only for this decryption
        reply = X25519PublicKey.from_public_bytes(request["reply_key"])
        self._deliveries[request_id] = FRAGMENT_SUITE.encrypt(content, reply,
                                                              info=_delivery_info(request_id))
        self._close(request_id)
        return True

    def _good_shares(self, request_id: bytes, part: dict, threshold: int,
                     approving: Sequence[int]) -> list[bytes]:
        """The released fragments of approving holders that are shares of this part's key at
        their holder's index; a bad one is withdrawn and its refusal recorded."""
        good = []
        for index, fragment in sorted(self.service.fragments(request_id).items()):
            if index not in approving:
                continue
            problem = _share_problem(fragment, part["set_id"], threshold, index)
            if problem is None:
                good.append(fragment)
                continue
            self.service.withdraw(request_id, index)
            holder = self.chain.read(b"doc:" + self._open[request_id]["document"])["holders"]
            self._note(request_id, holder[index - 1][0][:32], VaultCode.share_damaged,
                       f"the fragment of holder {index} was refused: {problem}")
        return good

    def open_requests(self) -> list[bytes]:
        """The ids of the requests the service holds open (releases are taken for them)."""
        return list(self._open)

    def delivery(self, request_id: bytes) -> bytes | None:
        """The opened part sealed to the requester's reply key, or None (not opened)."""
        return self._deliveries.get(bytes(request_id))

    def record_refusals(self) -> None:
        """Puts the refusals the service answered on chain (note_refusal), for requests the
        chain knows; a refusal outside any request stays in the service's answer only."""
        for refusal in self.service.take_refusals():
            if refusal.request_id is None:
                continue
            try:  # a device key's session names its holder by the holder's signing key
                holder_key = self.service.pins.holder_of(refusal.peer_key)[0].signing_key
            except errors.NotFoundError:
                holder_key = refusal.peer_key
            self._note(refusal.request_id, holder_key, _refusal_code(refusal),
                       f"{refusal.kind}: {refusal.message}"[:vault_contract.TEXT_CHARS_MAX])

    def _note(self, request_id: bytes, holder_key: bytes, code: VaultCode, message: str) -> None:
        self.chain.submit(self.signing, self.account, "note_refusal", {
            "request_id": request_id, "holder_key": holder_key, "code": int(code),
            "message": message[:vault_contract.TEXT_CHARS_MAX]})


def _refusal_code(refusal: Refusal) -> VaultCode:
    return _SERVICE_CODES.get(refusal.error, VaultCode.service_refused)


def _share_problem(fragment: bytes, set_id: bytes, threshold: int, index: int) -> str | None:
    try:
        share = shamir.Share.from_bytes(fragment)
    except ShareError as exc:
        return str(exc)
    if share.set_id != set_id or share.threshold != threshold:
        return "it is a share of another key (another document or part)"
    if share.index != index - 1:
        return f"it is the share of holder {share.index + 1}, not of holder {index}"
    return None


class Vault:
    """The vault's Python API on one chain, for its users (and the pages): every step a call
    record signed by the acting account's owner key, then ``service`` follows the chain (a
    node would notify it of each block; here it syncs after every step)."""

    def __init__(self, ledger, contracts: ChainContracts, service: VaultService, *,
                 clock: Callable[[], int] | None = None,
                 submitter: Submitter | None = None) -> None:
        self.chain = _Chain(ledger, contracts, clock, submitter)
        self.service = service
        # The audit trail read so far: the steps of blocks 1 .. _trail_end - 1, whose last
        # block had the hash _trail_top (a block there that changed means a reorganised
        # chain: the trail is read again from the start). Pages read it at every change.
        self._trail: list[Step] = []
        self._by_request: dict[bytes | None, list[Step]] = {}
        self._trail_end, self._trail_top = 1, b""
        self._trail_lock = threading.Lock()

    def _step(self, signer: PrivateKey, account: int, method: str, args: dict) -> bytes:
        code, refusal, message, txid = self.chain.submit(signer, account, method, args)
        self.service.sync()
        if code != Result.ok:
            why = VaultCode(refusal).name if refusal in VaultCode._value2member_map_ \
                else code.name
            raise StepRefusedError(f"{method} was refused ({why}): {message or code.name}; "
                                   "the refusal is on the chain", refusal)
        return txid

    def create_document(self, creator: PrivateKey, account: int, title: str,
                        holders: Sequence[tuple[HolderIdentity, int]], threshold: int,
                        parts: Sequence[Part], *, requesters: Sequence[int] | None = None,
                        expiry_default_s: int = vault_contract.EXPIRY_DEFAULT_S) -> bytes:
        """Stores a document with ``holders`` (identity, account) of whom ``threshold`` open a
        secret part; returns its id. Each secret part gets a fresh key, split and sealed to
        the holders here; the key is dropped before the call is sent."""
        for identity, _ in holders:
            identity.check()
        document_id = os.urandom(vault_contract.DOCUMENT_ID_BYTES)
        stored = [_seal_part(self.chain.chain_id, document_id, part, holders, threshold)
                  for part in parts]
        self._step(creator, account, "create_document", {
            "document_id": document_id, "title": title, "threshold": threshold,
            "holders": [[identity.to_bytes(), holder_account] for identity, holder_account
                        in holders],
            "parts": stored, "requesters": None if requesters is None else list(requesters),
            "expiry_default_s": expiry_default_s, "service_account": self.service.account})
        return document_id

    def request_open(self, requester: PrivateKey, account: int, document_id: bytes,
                     part_id: int, reason: str, reply_key: bytes, *, expiry_s: int = 0) -> bytes:
        """Asks to open a secret part, the opened part to be sealed to ``reply_key`` (X25519
        public); returns the request id. The expiry is the document's default unless set."""
        return self._step(requester, account, "request_open", {
            "document_id": document_id, "part_id": part_id, "reason": reason,
            "reply_key": bytes(reply_key), "expiry_s": expiry_s})

    def unlock(self, device_path: str | os.PathLike | DeviceFile, pin: str,
               request_id: bytes) -> HolderKeys:
        """The holder's keys from its device file (a path, or the file read already), with
        the PIN checked (and counted) by the service; a refusal is recorded on the chain for
        ``request_id``."""
        device = device_path if isinstance(device_path, DeviceFile) \
            else DeviceFile.load(Path(device_path))
        client = HolderClient(self.service.service, device.service_key, device.device)
        try:
            answer = client.request({"type": "unlock", "pin": pin,
                                     "request_id": bytes(request_id).hex()})
        finally:
            self.service.record_refusals()
        return device.unwrap(bytes.fromhex(answer["key"]))

    def approve(self, device_path: str | os.PathLike | DeviceFile, pin: str, account: int,
                request_id: bytes) -> Outcome:
        """A holder approves: unlocks its keys with ``pin``, signs the approve call, opens its
        sealed fragment of the part and releases it to the service over the channel."""
        holder = self.unlock(device_path, pin, request_id)
        self._step(holder.signing, account, "approve", {"request_id": request_id})
        self.release(holder, request_id)
        return self.outcome(request_id)

    def release(self, holder: HolderKeys, request_id: bytes,
                fragment: bytes | None = None) -> None:
        """Releases the holder's fragment for ``request_id`` (``fragment`` overrides the one
        opened from the chain: for tests of what the service refuses)."""
        request = self.chain.read(b"req:" + request_id)
        if request is None:
            raise errors.NotFoundError("no such request on the chain")
        document = self.chain.read(b"doc:" + request["document"])
        index = _holder_index(document, holder)
        context = FragmentContext(self.chain.chain_id, request["document"], request["part"],
                                  index)
        if fragment is None:
            part = self.chain.read(vault_contract.part_key(request["document"],
                                                           request["part"]))
            fragment = open_fragment(part["fragments"][index - 1], holder, context)
        service = self.service.service
        client = HolderClient(service, service.identity.signing_key, holder.signing)
        try:
            client.release(request_id, context, fragment, holder)
        finally:
            self.service.record_refusals()
        self.service.try_open(request_id)

    def deny(self, holder: HolderKeys, account: int, request_id: bytes,
             reason: str = "") -> Outcome:
        """A holder's veto: the request closes and releases nothing."""
        self._step(holder.signing, account, "deny", {"request_id": request_id,
                                                     "reason": reason})
        return self.outcome(request_id)

    def revoke(self, holder: HolderKeys, account: int, request_id: bytes) -> Outcome:
        """Takes a holder's approval back before the threshold; the service drops its
        fragment."""
        self._step(holder.signing, account, "revoke", {"request_id": request_id})
        return self.outcome(request_id)

    def outcome(self, request_id: bytes) -> Outcome:
        """Where the request stands on the chain, as of the tip's block time."""
        request = self.chain.read(b"req:" + bytes(request_id))
        if request is None:
            raise errors.NotFoundError("no such request on the chain")
        status, at_s = request["status"], request["closed_s"]
        if status == "open" and self.chain.tip_time_s() > request["expires_s"]:
            status, at_s = "expired", request["expires_s"]
        return Outcome(status, at_s, tuple(a["holder"] for a in request["approvals"]),
                       self.service.delivery(request_id) is not None)

    def receive(self, request_id: bytes, reply_key: X25519PrivateKey) -> bytes:
        """The opened part, for the requester holding the reply key's private half."""
        sealed = self.service.delivery(request_id)
        if sealed is None:
            raise errors.NotFoundError("the part of this request was not opened: see outcome()")
        return open_delivery(sealed, reply_key, request_id)

    def document(self, document_id: bytes) -> dict:
        """The document record on chain (title, holders, threshold, policy, parts)."""
        document = self.chain.read(b"doc:" + bytes(document_id))
        if document is None:
            raise errors.NotFoundError("no such document on the chain")
        return document

    def open_part(self, document_id: bytes, part_id: int) -> str:
        """An open part's text, as anyone on the chain reads it."""
        part = self.chain.read(vault_contract.part_key(bytes(document_id), part_id))
        if part is None or "text" not in part:
            raise errors.NotFoundError(f"the document has no open part {part_id}")
        return part["text"]

    def audit_trail(self, request_id: bytes | None = None) -> list[Step]:
        """Every vault call on the chain (or those of one request), oldest first. Blocks read
        once are not read again: only those committed since the last call are."""
        with self._trail_lock:
            self._read_trail()
            return list(self._trail if request_id is None
                        else self._by_request.get(request_id, ()))

    def _read_trail(self) -> None:
        end = self.chain.ledger.height
        if self._trail_end > 1 and (end < self._trail_end or self.chain.block_hash(
                self._trail_end - 1) != self._trail_top):
            # the chain was reorganised below the tip
            self._trail, self._by_request, self._trail_end = [], {}, 1
        if end == self._trail_end:
            return
        for height, time_s, account, method, args, code, txid in self.chain.calls(
                self._trail_end, end):
            named = txid if method == "request_open" else args.get("request_id")
            if not isinstance(named, bytes):
                named = None  # a call naming no request (or garbage, which the contract refused)
            result = self.chain.contracts.results.get(txid)
            refusal, message = (result.refuse_code, result.detail) if result else (0, "")
            holder_key = None
            if method == "note_refusal" and code == Result.ok:
                refusal, message = args.get("code", 0), args.get("message", "")
                holder_key = args.get("holder_key")
            known = refusal in VaultCode._value2member_map_
            step = Step(height, time_s, account, method, named, code,
                        VaultCode(refusal) if known else VaultCode.service_refused, message,
                        holder_key)
            self._trail.append(step)
            self._by_request.setdefault(named, []).append(step)
        self._trail_end, self._trail_top = end, self.chain.block_hash(end - 1)


def _holder_index(document: dict, holder: HolderKeys) -> int:
    key = holder.signing.public_key
    for index, (identity, _) in enumerate(document["holders"], start=1):
        if identity[:32] == key:
            return index
    raise errors.NotHolderError("this holder is not one of the document's: only they hold "
                                "its fragments")


def _seal_part(chain_id: int, document_id: bytes, part: Part,
               holders: Sequence[tuple[HolderIdentity, int]], threshold: int) -> dict:
    if not part.secret:
        return {"id": part.part_id, "title": part.title, "text": str(part.content)}
    if not isinstance(part.content, bytes):
        raise errors.EncodingError("a secret part's content is bytes: encode text first")
    key = AESGCM.generate_key(bit_length=8 * PART_KEY_BYTES)
    nonce = os.urandom(vault_contract.NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, part.content, part_associated_data(
        chain_id, document_id, part.part_id))
    shares = shamir.split(key, threshold, len(holders))
    del key  # from here only the holders' shares can give it back
    fragments = [seal_fragment(share, identity, FragmentContext(chain_id, document_id,
                                                               part.part_id, index))
                 for index, (share, (identity, _)) in enumerate(zip(shares, holders), start=1)]
    return {"id": part.part_id, "title": part.title, "nonce": nonce, "ciphertext": ciphertext,
            "set_id": shamir.Share.from_bytes(shares[0]).set_id, "fragments": fragments}

