"""A Python client of the vault's HTTPS routes (``tsunagi node --vault``): what the holder's
page does in the browser (static/vault.js), from a program such as a benchmark or a script.

:class:`VaultHttpClient` keeps one keep-alive HTTPS connection (the standard library's: no
dependency past the package's own) and the session a browser would have, the cookie and CSRF
token a document page hands out. It is a channel transport for
:class:`~tsunagi.privacy.service.HolderClient` (open, authenticate, exchange); it unlocks a
holder's device file with a PIN through the service, prepares a step's call record, signs it
and submits it, opens the holder's sealed fragment and releases it, and receives the opened
part sealed to the requester's reply key. The holder's private keys stay in the caller's
process, as they stay in the browser.

:func:`document_call` seals a document on the client as Vault.create_document does (a fresh
key a secret part, split k of n, each share HPKE-sealed to its holder) and makes its
create_document call record, for a client of the binary protocol (Client.submit_calls).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tsunagi import errors
from tsunagi.contracts.chain import call_record
from tsunagi.core.keys import PrivateKey
from tsunagi.privacy import vault_contract
from tsunagi.privacy.holders import (
    DeviceFile,
    FragmentContext,
    HolderIdentity,
    HolderKeys,
    open_fragment,
)
from tsunagi.privacy.service import HolderClient
from tsunagi.privacy.vault import Part, _seal_part, open_delivery

__all__ = ["VaultHttpClient", "document_call"]

SESSION_COOKIE = "tsunagi_vault_session"  # vault_pages.SESSION_COOKIE (that module needs fastapi)
_TOKEN = re.compile(r'name="csrf-token" content="([0-9a-f]+)"')
_CHAIN_ID = re.compile(r'data-chain-id="([0-9]+)"')
# A refusal's error class by the name the routes answer with; any other is a NodeError.
_REFUSALS = {name: getattr(errors, name) for name in (
    "NotFoundError", "StepRefusedError", "NotHolderError", "ReplayError", "EncodingError",
    "FragmentError", "IdentityError", "ChannelError", "ShareError", "PartDamagedError")}


def document_call(creator_account: int, sequence: int, chain_id: int, contract: int,
                  title: str, holders: Sequence[tuple[HolderIdentity, int]], threshold: int,
                  parts: Sequence[Part], *, service_account: int,
                  requesters: Sequence[int] | None = None,
                  expiry_default_s: int = vault_contract.EXPIRY_DEFAULT_S,
                  ) -> tuple[bytes, bytes, bytes]:
    """(document id, call record, payload) of a create_document call from ``creator_account``
    at ``sequence``; ``contract`` is the vault contract's number on the chain (1 for the
    config's first). Sign the record and send it with its payload."""
    for identity, _ in holders:
        identity.check()
    document_id = os.urandom(vault_contract.DOCUMENT_ID_BYTES)
    # The sealing Vault.create_document does, so the two cannot store different documents.
    stored = [_seal_part(chain_id, document_id, part, holders, threshold) for part in parts]
    record, payload = call_record(chain_id, sequence, creator_account, contract,
                                  "create_document", {
        "document_id": document_id, "title": title, "threshold": threshold,
        "holders": [[identity.to_bytes(), account] for identity, account in holders],
        "parts": stored, "requesters": None if requesters is None else list(requesters),
        "expiry_default_s": expiry_default_s, "service_account": service_account})
    return document_id, record, payload


class VaultHttpClient:
    """One browser's worth of the vault at ``base_url`` (``https://host:port``, the node's
    --http listener), trusting the certificate in ``cafile`` (the --tls-dev one, say) or the
    system's. Call :meth:`begin` with a document first: its page gives the session."""

    def __init__(self, base_url: str, cafile: str | os.PathLike | None = None, *,
                 timeout_s: float = 60.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "https" or not url.hostname:
            raise errors.ConfigError(f"the vault is served over HTTPS: give https://HOST:PORT, "
                                     f"not {base_url!r}")
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
        self.connection = http.client.HTTPSConnection(url.hostname, url.port or 443,
                                                      timeout=timeout_s, context=context)
        self.cookie = ""
        self.token = ""
        self.chain_id = 0
        # The service's key each unlocked holder's device file pins, by holder signing key.
        self._service_keys: dict[bytes, bytes] = {}

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> VaultHttpClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- HTTP ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None = None,
              headers: dict | None = None) -> tuple[int, bytes]:
        sent = {"Accept": "application/json", **(headers or {})}
        if self.cookie:
            sent["Cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        self.connection.request(method, path, body=body, headers=sent)
        response = self.connection.getresponse()
        data = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith(SESSION_COOKIE + "="):
                self.cookie = value.split(";", 1)[0].split("=", 1)[1]
        return response.status, data

    def begin(self, document_id: bytes) -> None:
        """Opens ``document_id``'s page as a browser would: its session cookie, its CSRF
        token and the chain's id."""
        status, data = self._send("GET", f"/vault/documents/{bytes(document_id).hex()}",
                                  headers={"Accept": "text/html"})
        page = data.decode()
        token, chain = _TOKEN.search(page), _CHAIN_ID.search(page)
        if status != 200 or token is None or chain is None or not self.cookie:
            raise errors.NodeError(f"the document page answered {status} without a session: "
                                   "is this a node with --vault, and the document on its chain?")
        self.token, self.chain_id = token.group(1), int(chain.group(1))

    def get(self, path: str) -> dict:
        status, data = self._send("GET", path)
        return _answer(path, status, data)

    def post(self, path: str, body: dict) -> dict:
        """A state-changing route, with the session's token; the answer, or its refusal
        raised as the error the route names."""
        status, data = self._send("POST", path, json.dumps(body).encode(), {
            "Content-Type": "application/json", "X-CSRF-Token": self.token})
        return _answer(path, status, data)

    # --- the channel's transport (HolderClient) ------------------------------------------

    def open_session(self, hello: bytes) -> tuple[bytes, bytes]:
        answer = self.post("/vault/api/channel/open", {"hello": bytes(hello).hex()})
        return bytes.fromhex(answer["session"]), bytes.fromhex(answer["reply"])

    def authenticate(self, session_id: bytes, auth: bytes) -> None:
        self.post("/vault/api/channel/authenticate", {"session": bytes(session_id).hex(),
                                                      "auth": bytes(auth).hex()})

    def exchange(self, session_id: bytes, frame: bytes) -> bytes:
        return bytes.fromhex(self.post("/vault/api/channel/exchange", {
            "session": bytes(session_id).hex(), "frame": bytes(frame).hex()})["frame"])

    # --- the holder's steps ----------------------------------------------------------------

    def unlock(self, device: str | os.PathLike | DeviceFile, pin: str,
               request_id: bytes | None = None) -> HolderKeys:
        """The holder's keys from its device file, opened with the K the service answers to
        ``pin`` (Argon2id on the service; a wrong PIN is counted and, for ``request_id``,
        recorded on chain): PinError or HolderLockedError when refused."""
        device = device if isinstance(device, DeviceFile) else DeviceFile.load(Path(device))
        message = {"type": "unlock", "pin": pin}
        if request_id is not None:
            message["request_id"] = bytes(request_id).hex()
        answer = HolderClient(self, device.service_key, device.device).request(message)
        holder = device.unwrap(bytes.fromhex(answer["key"]))
        self._service_keys[holder.signing.public_key] = device.service_key
        return holder

    def step(self, signing: PrivateKey, method: str, args: dict) -> dict:
        """A step (request_open, approve, deny, revoke) prepared by the node, signed here,
        submitted; StepRefusedError when the chain refused it (the refusal is on chain)."""
        prepared = self.post("/vault/api/calls/prepare", {
            "key": signing.public_key.hex(), "method": method, "args": args})
        answer = self.post("/vault/api/calls/submit", {
            "record": prepared["record"],
            "signature": signing.sign(bytes.fromhex(prepared["txid"])).hex()})
        if not answer["stands"]:
            raise errors.StepRefusedError(f"{method} was refused ({answer['refusal']}): "
                                          f"{answer['message'] or answer['code']}; the "
                                          "refusal is on the chain")
        return answer

    def request_open(self, requester: PrivateKey, document_id: bytes, part_id: int,
                     reason: str, reply_key: X25519PrivateKey, expiry_s: int = 0) -> bytes:
        """Asks to open a secret part, sealed for ``reply_key``; returns the request id."""
        return bytes.fromhex(self.step(requester, "request_open", {
            "document_id": bytes(document_id).hex(), "part_id": part_id, "reason": reason,
            "reply_key": reply_key.public_key().public_bytes_raw().hex(),
            "expiry_s": expiry_s})["txid"])

    def holder_index(self, document_id: bytes, signing_key: bytes) -> int:
        """The holder's index in the document's holder list (its share's), as the document's
        page shows it; NotHolderError when the key is not one of the document's holders."""
        document = self.get(f"/vault/api/documents/{bytes(document_id).hex()}")
        mine = bytes(signing_key).hex()
        for holder in document["holders"]:
            if holder["key"] == mine:
                return holder["index"]
        raise errors.NotHolderError("this holder is not one of the document's: only they "
                                    "hold its fragments")

    def release(self, holder: HolderKeys, request_id: bytes, document_id: bytes,
                part_id: int, index: int | None = None) -> bool:
        """Opens the holder's sealed fragment of the part (fetched from the node) and releases
        it to the service over a session of the holder's identity key; then asks the service
        to open the part. True once the part is opened for the requester. ``index`` is the
        holder's in the document (read from the document when not given, as a page does
        when it loads)."""
        document_id, request_id = bytes(document_id), bytes(request_id)
        service_key = self._service_keys.get(holder.signing.public_key)
        if service_key is None:
            raise errors.ConfigError("unlock the holder's device file with this client first: "
                                     "it pins the service's key the release is sealed to")
        if index is None:
            index = self.holder_index(document_id, holder.signing.public_key)
        sealed = bytes.fromhex(self.get(f"/vault/api/documents/{document_id.hex()}/parts/"
                                        f"{part_id}/fragments/{index}")["sealed"])
        context = FragmentContext(self.chain_id, document_id, part_id, index)
        fragment = open_fragment(sealed, holder, context)
        HolderClient(self, service_key, holder.signing).release(request_id, context, fragment,
                                                                holder)
        return self.post("/vault/api/requests/open-part",
                         {"request_id": request_id.hex()})["delivered"]

    def receive(self, request_id: bytes, reply_key: X25519PrivateKey) -> bytes:
        """The opened part, for the requester holding ``reply_key``: NotFoundError until it
        is opened."""
        answer = self.get(f"/vault/api/requests/{bytes(request_id).hex()}/delivery")
        return open_delivery(bytes.fromhex(answer["sealed"]), reply_key, bytes(request_id))


def _answer(path: str, status: int, data: bytes) -> dict:
    try:
        answer = json.loads(data)
    except ValueError:
        raise errors.NodeError(f"{path} answered {status} with no JSON: is this the vault's "
                               "node?") from None
    if status == 200 and not (isinstance(answer, dict) and answer.get("ok") is False):
        return answer
    message = str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)
    name = answer.get("error") if isinstance(answer, dict) else None
    if name == "PinError":
        raise errors.PinError(message, int(answer.get("tries_left", 0)))
    if name == "HolderLockedError":
        raise errors.HolderLockedError(message)
    raise _REFUSALS.get(name, errors.NodeError)(f"{path}: {message}")
