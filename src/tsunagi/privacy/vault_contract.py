"""The document vault's contract: documents with open and encrypted parts, and the workflow of
every request to open a part (request, approvals, a veto, revocations, the outcome).

Installed like any contract (``tsunagi.privacy.vault_contract:VaultContract`` and the SHA-256 of
this file in the chain config), it passes the contracts source check, so it imports only the
contract API. It never sees a key: an encrypted part is stored as its AES-256-GCM ciphertext
and each holder's HPKE-sealed fragment of the part key, all made by the creator's client
(tsunagi.privacy.vault). Every step is a call record, so the chain holds who did what and when;
a step this contract turns down is a refused call with one of the codes below, on the chain as
well. Time is the block time only. The confidentiality service has an account named by each
document; it alone may add the refusals it made off chain (a wrong PIN, a replayed fragment).
"""

from __future__ import annotations

from tsunagi.contracts import Contract, Refuse, method

# Refusal codes (Refuse(code, message)), mirrored by tsunagi.privacy.vault.VaultCode; 0 is never
# a refusal.
DOCUMENT_EXISTS = 1  # a document with this id is stored already
DOCUMENT_INVALID = 2  # the document's fields are malformed (holders, threshold, parts, policy)
DOCUMENT_UNKNOWN = 3  # no document with this id
PART_UNKNOWN = 4  # the document has no encrypted part with this id
NOT_REQUESTER = 5  # the request policy does not let the caller request
EXPIRY_INVALID = 6  # an expiry is 1 s to EXPIRY_MAX_S
REQUEST_UNKNOWN = 7  # no request with this id
REQUEST_CLOSED = 8  # the request was opened or denied already
REQUEST_EXPIRED = 9  # the request's expiry passed (block time)
NOT_HOLDER = 10  # the caller is not one of the document's holders
ALREADY_APPROVED = 11  # this holder approved the request already
NOT_APPROVED = 12  # a revocation of an approval the holder has not given
NOT_SERVICE = 13  # only the document's confidentiality service may note a refusal
REASON_INVALID = 14  # a reason or title is not text of at most TEXT_CHARS_MAX

DOCUMENT_ID_BYTES = 32  # a hash-sized id the creator's client draws at random
IDENTITY_BYTES = 128  # a holder identity: signing key, X25519 key, signature
KEY_BYTES = 32  # an X25519 key a requester receives the opened part under
SET_ID_BYTES = 8  # a Shamir set identifier (tsunagi.privacy.shamir)
NONCE_BYTES = 12  # AES-GCM's nonce
# A request lives 2 hours unless its requester asks for less or more, and at most 24 hours,
# as approval workflows of custody services do: long enough for holders to answer, short
# enough that a forgotten request cannot be approved weeks later.
EXPIRY_DEFAULT_S = 2 * 3600
EXPIRY_MAX_S = 24 * 3600
# Titles, reasons and refusal messages are for people; 500 characters hold a paragraph.
TEXT_CHARS_MAX = 500
# An open part's text: a few pages; a create call carries all its parts in one payload of at
# most 64 KiB (tsunagi.contracts.limits.encoded_bytes_max), so a long text would crowd it.
OPEN_TEXT_CHARS_MAX = 16_000
# Parts one document holds; each is a state entry, so a document stays a few reads to show.
PARTS_MAX = 64
HOLDERS_MAX = 255  # Shamir over GF(256)


def text(value, what: str) -> str:
    if not isinstance(value, str) or len(value) > TEXT_CHARS_MAX:
        raise Refuse(REASON_INVALID, what + " is text of at most 500 characters")
    return value


def sized(value, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise Refuse(DOCUMENT_INVALID, what + " is " + str(size) + " bytes")
    return value


def whole(value, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Refuse(DOCUMENT_INVALID, what + " is an int from " + str(low) + " to " + str(high))
    return value


def check_holders(holders, threshold) -> list:
    if not isinstance(holders, list) or not 2 <= len(holders) <= HOLDERS_MAX:
        raise Refuse(DOCUMENT_INVALID, "a document has 2 to 255 holders")
    whole(threshold, 2, len(holders), "the threshold")
    accounts = []
    checked = []
    for holder in holders:
        if not isinstance(holder, list) or len(holder) != 2:
            raise Refuse(DOCUMENT_INVALID, "a holder is [identity, account]")
        identity = sized(holder[0], IDENTITY_BYTES, "a holder identity")
        account = whole(holder[1], 1, 2**32 - 1, "a holder's account")
        if account in accounts:
            raise Refuse(DOCUMENT_INVALID, "each holder has an account of its own")
        accounts.append(account)
        checked.append([identity, account])
    return checked


def check_part(part, holder_count: int) -> dict:
    """A part is {"id", "title", "text"} (open) or {"id", "title", "nonce", "ciphertext",
    "set_id", "fragments"} (encrypted: one sealed fragment per holder, in holder order)."""
    if not isinstance(part, dict):
        raise Refuse(DOCUMENT_INVALID, "a part is a dict")
    entry = {"id": whole(part.get("id"), 0, 2**32 - 1, "a part id"),
             "title": text(part.get("title", ""), "a part's title")}
    if "text" in part:
        if not isinstance(part["text"], str) or len(part["text"]) > OPEN_TEXT_CHARS_MAX:
            raise Refuse(DOCUMENT_INVALID, "an open part is text of at most 16,000 characters")
        entry["text"] = part["text"]
        return entry
    entry["nonce"] = sized(part.get("nonce"), NONCE_BYTES, "a part's nonce")
    entry["set_id"] = sized(part.get("set_id"), SET_ID_BYTES, "a part's key set id")
    ciphertext = part.get("ciphertext")
    if not isinstance(ciphertext, bytes) or len(ciphertext) < 16:
        raise Refuse(DOCUMENT_INVALID, "a ciphertext is bytes with its 16-byte tag")
    entry["ciphertext"] = ciphertext
    fragments = part.get("fragments")
    if not isinstance(fragments, list) or len(fragments) != holder_count:
        raise Refuse(DOCUMENT_INVALID, "an encrypted part has one fragment per holder")
    for fragment in fragments:
        if not isinstance(fragment, bytes) or not fragment:
            raise Refuse(DOCUMENT_INVALID, "a sealed fragment is bytes")
    entry["fragments"] = fragments
    return entry


def part_key(document_id: bytes, part_id: int) -> bytes:
    return b"part:" + document_id + part_id.to_bytes(4, "big")


class VaultContract(Contract):
    """Documents by id (``doc:``), their parts (``part:``) and requests by the txid of the
    request's call record (``req:``)."""

    name = "vault"

    @method
    def create_document(self, document_id: bytes, title: str, holders: list, threshold: int,
                        parts: list, requesters: list | None = None,
                        expiry_default_s: int = EXPIRY_DEFAULT_S,
                        service_account: int = 0) -> int:
        """Stores a document; ``requesters`` are the accounts that may request (None: its
        holders). Returns the number of parts."""
        sized(document_id, DOCUMENT_ID_BYTES, "a document id")
        if self.state.has(b"doc:" + document_id):
            raise Refuse(DOCUMENT_EXISTS, "a document with this id exists: draw another id")
        holders = check_holders(holders, threshold)
        if requesters is not None:
            if not isinstance(requesters, list) or len(requesters) > HOLDERS_MAX:
                raise Refuse(DOCUMENT_INVALID, "requesters are a list of at most 255 accounts")
            for account in requesters:
                whole(account, 1, 2**32 - 1, "a requester's account")
        whole(expiry_default_s, 1, EXPIRY_MAX_S, "the default expiry")
        whole(service_account, 0, 2**32 - 1, "the service's account")
        if not isinstance(parts, list) or not 0 < len(parts) <= PARTS_MAX:
            raise Refuse(DOCUMENT_INVALID, "a document has 1 to 64 parts")
        listed = []
        for part in parts:
            entry = check_part(part, len(holders))
            if entry["id"] in [each[0] for each in listed]:
                raise Refuse(DOCUMENT_INVALID, "part ids are distinct")
            listed.append([entry["id"], "text" not in entry, entry["title"]])
            self.state.set(part_key(document_id, entry["id"]), entry)
        self.state.set(b"doc:" + document_id, {
            "title": text(title, "a title"), "creator": self.context.caller_account,
            "holders": holders, "threshold": threshold, "requesters": requesters,
            "expiry_default_s": expiry_default_s, "service_account": service_account,
            "parts": listed, "created_s": self.context.block_time_s})
        self.emit("document", id=document_id, creator=self.context.caller_account)
        return len(listed)

    def document(self, document_id) -> dict:
        if not isinstance(document_id, bytes):
            raise Refuse(DOCUMENT_UNKNOWN, "a document id is bytes")
        entry = self.state.get(b"doc:" + document_id)
        if entry is None:
            raise Refuse(DOCUMENT_UNKNOWN, "no such document")
        return entry

    def holder_index(self, document: dict) -> int:
        for index, holder in enumerate(document["holders"]):
            if holder[1] == self.context.caller_account:
                return index + 1
        raise Refuse(NOT_HOLDER, "the caller's account is not one of the document's holders")

    @method
    def request_open(self, document_id: bytes, part_id: int, reason: str, reply_key: bytes,
                     expiry_s: int = 0) -> bytes:
        """Opens a request for an encrypted part; the opened part will be sealed to
        ``reply_key`` (X25519). Returns the request id: this call's txid."""
        document = self.document(document_id)
        entry = self.state.get(part_key(document_id, part_id)) if isinstance(part_id, int) \
            and not isinstance(part_id, bool) and 0 <= part_id < 2**32 else None
        if entry is None or "text" in entry:
            raise Refuse(PART_UNKNOWN, "the document has no encrypted part with this id")
        allowed = document["requesters"]
        if allowed is None:
            allowed = [holder[1] for holder in document["holders"]]
        if self.context.caller_account not in allowed:
            raise Refuse(NOT_REQUESTER, "the document's policy does not let this account "
                         "request")
        if expiry_s == 0:
            expiry_s = document["expiry_default_s"]
        if not isinstance(expiry_s, int) or isinstance(expiry_s, bool) \
                or not 0 < expiry_s <= EXPIRY_MAX_S:
            raise Refuse(EXPIRY_INVALID, "an expiry is 1 to 86400 seconds")
        if not isinstance(reply_key, bytes) or len(reply_key) != KEY_BYTES:
            raise Refuse(DOCUMENT_INVALID, "a reply key is a 32-byte X25519 key")
        now = self.context.block_time_s
        self.state.set(b"req:" + self.context.txid, {
            "document": document_id, "part": part_id, "requester": self.context.caller_account,
            "reply_key": reply_key, "reason": text(reason, "a reason"), "created_s": now,
            "expires_s": now + expiry_s, "approvals": [], "revoked": [], "denial": None,
            "status": "open", "closed_s": 0})
        self.emit("request", id=self.context.txid, document=document_id, part=part_id)
        return self.context.txid

    def open_request(self, request_id) -> list:
        """The request and its document, when it may still change; refusals otherwise."""
        if not isinstance(request_id, bytes):
            raise Refuse(REQUEST_UNKNOWN, "a request id is bytes")
        request = self.state.get(b"req:" + request_id)
        if request is None:
            raise Refuse(REQUEST_UNKNOWN, "no such request")
        if request["status"] != "open":
            raise Refuse(REQUEST_CLOSED, "the request is " + request["status"] + " already")
        if self.context.block_time_s > request["expires_s"]:
            raise Refuse(REQUEST_EXPIRED, "the request expired at block time "
                         + str(request["expires_s"]))
        return [request, self.document(request["document"])]

    @method
    def approve(self, request_id: bytes) -> int:
        """The caller, a holder, releases its fragment for the request; at the threshold the
        request is opened at this block's time. Returns the approvals counted."""
        request, document = self.open_request(request_id)
        index = self.holder_index(document)
        if index in [each["holder"] for each in request["approvals"]]:
            raise Refuse(ALREADY_APPROVED, "this holder approved the request already")
        now = self.context.block_time_s
        request["approvals"].append({"holder": index, "at_s": now})
        if len(request["approvals"]) >= document["threshold"]:
            request["status"], request["closed_s"] = "opened", now
            self.emit("opened", id=request_id)
        self.state.set(b"req:" + request_id, request)
        return len(request["approvals"])

    @method
    def revoke(self, request_id: bytes) -> int:
        """Takes the caller's approval back (before the threshold). Returns those left."""
        request, document = self.open_request(request_id)
        index = self.holder_index(document)
        kept = [each for each in request["approvals"] if each["holder"] != index]
        if len(kept) == len(request["approvals"]):
            raise Refuse(NOT_APPROVED, "this holder has not approved the request")
        request["approvals"] = kept
        request["revoked"].append({"holder": index, "at_s": self.context.block_time_s})
        self.state.set(b"req:" + request_id, request)
        return len(kept)

    @method
    def deny(self, request_id: bytes, reason: str = "") -> None:
        """A holder's veto: the request is closed as denied and releases nothing."""
        request, document = self.open_request(request_id)
        index = self.holder_index(document)
        now = self.context.block_time_s
        request["denial"] = {"holder": index, "at_s": now, "reason": text(reason, "a reason")}
        request["status"], request["closed_s"] = "denied", now
        self.state.set(b"req:" + request_id, request)
        self.emit("denied", id=request_id)

    @method
    def note_refusal(self, request_id: bytes, holder_key: bytes, code: int,
                     message: str) -> None:
        """The service puts a refusal it made off chain on the chain (the refusal lives in
        this call's record and payload; the state keeps no copy)."""
        if not isinstance(request_id, bytes):
            raise Refuse(REQUEST_UNKNOWN, "a request id is bytes")
        request = self.state.get(b"req:" + request_id)
        if request is None:
            raise Refuse(REQUEST_UNKNOWN, "no such request")
        document = self.document(request["document"])
        if document["service_account"] != self.context.caller_account:
            raise Refuse(NOT_SERVICE, "only the document's service notes refusals")
        sized(holder_key, KEY_BYTES, "a holder key")
        whole(code, 1, 2**32 - 1, "a refusal code")
        text(message, "a refusal message")
