"""The document vault inside a node (``tsunagi node --vault``): the confidentiality service and
the vault's follower beside the ledger, calls through the node's own writer.

The data directory keeps the vault's durable parts in ``vault/``: ``vault/service/`` is the
ConfidentialityService's store (its keys, the PIN store), and ``vault/account.key`` the BIP340
key of the service's account on the chain (hex, mode 0600), with which it records the
refusals it makes off chain. The chain's config must run the vault contract and give that key
an account; :func:`prepare_vault` writes the key before the node first starts (a test, or an
operator, enrols holders and stores documents through the Python API against the same
directory, see tests/test_vault_browser.py).

The vault's Python objects are not thread-safe, so every vault step and read runs on one
thread of its own (:meth:`NodeVault.run`); a step's call record goes to the node's writer on
the event loop (``NodeServer.submit`` with its payload) and the thread waits for the answer.
A follower task syncs the vault at every block the node makes, so requests from any client
reach the service, and each change bumps :attr:`NodeVault.version`, which the pages' event
stream sends to every open page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tsunagi import errors
from tsunagi.contracts.chain import call_record
from tsunagi.core import keys
from tsunagi.core.codes import Result
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.privacy import vault as vault_api
from tsunagi.privacy.holders import write_secret_file
from tsunagi.privacy.service import ConfidentialityService
from tsunagi.privacy.vault import STATE_PREFIX, Vault, VaultService

__all__ = ["VAULT_CONTRACT", "NodeVault", "account_key_path", "prepare_vault",
           "service_directory"]

log = logging.getLogger("tsunagi.node.http.vault_node")

VAULT_CONTRACT = ("vault", "tsunagi.privacy.vault_contract:VaultContract")
VAULT_DIRECTORY = "vault"
ACCOUNT_KEY_FILE = "account.key"
SERVICE_DIRECTORY = "service"
# The steps a browser may prepare, and the arguments each takes that are bytes (sent in hex).
STEP_METHODS = {"request_open": ("document_id", "reply_key"), "approve": ("request_id",),
                "deny": ("request_id",), "revoke": ("request_id",)}


def service_directory(data: str | Path) -> Path:
    """Where the node keeps the ConfidentialityService's store."""
    return Path(data) / VAULT_DIRECTORY / SERVICE_DIRECTORY


def account_key_path(data: str | Path) -> Path:
    return Path(data) / VAULT_DIRECTORY / ACCOUNT_KEY_FILE


def prepare_vault(data: str | Path, account_key: keys.PrivateKey) -> Path:
    """Writes the service account's key into ``data`` (made by ``tsunagi init`` or
    Ledger.create with that key allocated); returns the vault directory."""
    path = account_key_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret_file(path, (account_key.to_bytes().hex() + "\n").encode())
    return path.parent


def _load_account_key(data: Path) -> keys.PrivateKey:
    path = account_key_path(data)
    try:
        return keys.PrivateKey.from_bytes(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        raise errors.ConfigError(
            f"--vault needs the service account's key in {path}: write it once with "
            "tsunagi.node.http.vault_node.prepare_vault(DATA, key), the key of an account "
            "of this chain") from None
    except (OSError, ValueError, errors.EncodingError) as exc:
        raise errors.KeyFileError(f"{path} is not a BIP340 key in hex ({exc}): restore it "
                                  "from a copy") from exc


class NodeVault:
    """The vault of one node: ``service`` (VaultService) follows the chain and opens parts,
    ``vault`` (Vault) takes the pages' steps; both on the vault thread."""

    def __init__(self, node, contracts, data: str | Path) -> None:
        if contracts is None or vault_api.CONTRACT_NAME not in contracts.names:
            raise errors.ConfigError("--vault runs on a chain whose config names the vault "
                                     "contract ('vault', the SHA-256 of "
                                     "tsunagi/privacy/vault_contract.py)")
        self.node, self.contracts, self.data = node, contracts, Path(data)
        self.ledger = node.ledger
        self.version = 0  # bumped at every change a page may show
        self.changed: asyncio.Event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tsunagi-vault")
        self._follower: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self.confidential: ConfidentialityService | None = None
        self.service: VaultService | None = None
        self.vault: Vault | None = None
        self._prepared: OrderedDict[bytes, bytes] = OrderedDict()  # txid -> payload

    async def start(self) -> None:
        await self._loop.run_in_executor(self._thread, self._open)
        await self.run(self.service.sync)
        self._follower = self._loop.create_task(self._follow())

    def _open(self) -> None:
        signing = _load_account_key(self.data)
        accounts = self.ledger.accounts_of(signing.public_key)
        if not accounts:
            raise errors.ConfigError(f"the key in {account_key_path(self.data)} owns no "
                                     "account of this chain: allocate it one at init")
        self.confidential = ConfidentialityService(service_directory(self.data))
        self.service = VaultService(self.ledger, self.contracts, self.confidential,
                                    account=accounts[0], signing=signing,
                                    submitter=self._submit)
        self.vault = Vault(self.ledger, self.contracts, self.service, submitter=self._submit)

    async def run(self, function, *args, changes: bool = True):
        """``function(*args)`` on the vault thread; then, when it ``changes`` what pages show,
        every page is told."""
        try:
            return await self._loop.run_in_executor(self._thread, function, *args)
        finally:
            if changes:
                self._bump()

    def _bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def _submit(self, record: bytes, signature: bytes, payload: bytes) -> tuple[Result, bytes]:
        """On the vault thread: one call through the node's writer, waited for."""
        future = asyncio.run_coroutine_threadsafe(
            self.node.submit(record, signature, np.zeros(0, np.uint32), payloads=(payload,)),
            self._loop)
        answer = future.result(limits.vault_submit_wait_s)
        if isinstance(answer, p.Error):
            raise errors.NodeError(f"the node did not take the call: {answer.message}; retry "
                                   "when it is not overloaded or stopping")
        return Result(answer.codes[0]), keys.txid(record)

    async def _follow(self) -> None:
        """Syncs the vault at every new block (and every limits.vault_follow_poll_s, for expiries)."""
        height = self.ledger.height
        while not self._stopping.is_set():
            signal = self.node.block_signal()
            moved = self.ledger.height != height
            if moved or self._has_open_requests():
                height = self.ledger.height
                try:  # a quiet chain's sync only closes expired requests: pages time those
                    await self.run(self.service.sync, changes=moved)
                except Exception:  # the pages go on; the next block tries again
                    log.exception("the vault could not follow the chain")
            waiter = asyncio.ensure_future(signal.wait())
            stopped = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({waiter, stopped}, timeout=limits.vault_follow_poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopped.cancel()

    def _has_open_requests(self) -> bool:
        return bool(self.service is not None and self.service.open_requests())

    async def close(self) -> None:
        self._stopping.set()
        if self._follower is not None:
            with contextlib.suppress(Exception):
                await self._follower
        await self._loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self.confidential is not None:
            self.confidential.close()

    # --- reads for the pages, on the vault thread ----------------------------------------

    def _entries(self, prefix: bytes):
        return self.contracts.decoded_under(STATE_PREFIX + prefix)

    def documents(self) -> list[dict]:
        """Every document on the chain, oldest first: id, title, threshold, holders, parts."""
        found = [{"id": document_id.hex(), "title": entry["title"],
                  "threshold": entry["threshold"], "holder_count": len(entry["holders"]),
                  "part_count": len(entry["parts"]), "created_s": entry["created_s"],
                  "creator": entry["creator"]}
                 for document_id, entry in self._entries(b"doc:")]
        return sorted(found, key=lambda document: document["created_s"])

    def document(self, document_id: bytes) -> dict:
        """A document with its parts (open text; encrypted ones as their size only), its
        holders and its requests (each with its audit trail)."""
        entry = self.vault.document(document_id)
        parts = []
        for part_id, secret, title in entry["parts"]:
            part = self.vault.chain.read(vault_api.vault_contract.part_key(document_id,
                                                                           part_id))
            parts.append({"id": part_id, "title": title, "secret": secret,
                          "text": None if secret else part["text"],
                          "size": len(part["ciphertext"]) - 16 if secret else None})
        holders = [{"index": index, "account": account, "key": identity[:32].hex()}
                   for index, (identity, account) in enumerate(entry["holders"], start=1)]
        requests = [self._request(request_id, request, self.vault.audit_trail(request_id))
                    for request_id, request in self._entries(b"req:")
                    if request["document"] == document_id]
        requests.sort(key=lambda request: request["created_s"], reverse=True)
        return {"id": document_id.hex(), "title": entry["title"],
                "threshold": entry["threshold"], "holders": holders, "parts": parts,
                "requests": requests, "created_s": entry["created_s"],
                "creator": entry["creator"], "expiry_default_s": entry["expiry_default_s"],
                "service_account": entry["service_account"]}

    def _request(self, request_id: bytes, request: dict, trail) -> dict:
        status, at_s = request["status"], request["closed_s"]
        # The next block's time is at least the clock's, so past the expiry no approval can
        # land any more: the page says so before that block is made.
        now_s = max(self.vault.chain.tip_time_s(), int(time.time()))
        if status == "open" and now_s > request["expires_s"]:
            status, at_s = "expired", request["expires_s"]
        steps = [{"height": step.height, "time_s": step.time_s, "account": step.account,
                  "method": step.method, "ok": step.code == Result.ok and not step.refusal,
                  "code": step.refusal.name if step.refusal else step.code.name,
                  "message": step.message}
                 for step in trail]
        return {"id": request_id.hex(), "part": request["part"],
                "requester": request["requester"], "reason": request["reason"],
                "created_s": request["created_s"], "expires_s": request["expires_s"],
                "status": status, "at_s": at_s,
                "approvals": [approval["holder"] for approval in request["approvals"]],
                "denial": request["denial"],
                "delivered": self.service.delivery(request_id) is not None, "trail": steps}

    def request(self, request_id: bytes) -> tuple[dict, dict]:
        """(the request's view, its document's record)."""
        request = self.vault.chain.read(b"req:" + request_id)
        if request is None:
            raise errors.NotFoundError(f"no request {request_id.hex()[:16]}... on this chain")
        return (self._request(request_id, request, self.vault.audit_trail(request_id)),
                self.vault.document(request["document"]))

    # --- the browser-side holder's steps, on the vault thread ------------------------------

    def prepare_call(self, signing_key: bytes, method: str, args: dict) -> dict:
        """The call record of a step for the holder of ``signing_key`` to sign: its bytes and
        txid (what BIP340 signs), the account it acts from and its sequence."""
        if method not in STEP_METHODS:
            raise errors.EncodingError(f"a step is one of {', '.join(STEP_METHODS)}, not "
                                       f"{method!r}")
        accounts = self.ledger.accounts_of(bytes(signing_key))
        if not accounts:
            raise errors.NotFoundError("this holder's key owns no account of this chain: ask "
                                       "the operator for one")
        decoded = dict(args)
        for name in STEP_METHODS[method]:
            try:
                decoded[name] = bytes.fromhex(args[name])
            except (KeyError, TypeError, ValueError):
                raise errors.EncodingError(f"{method} needs {name} in hex") from None
        sequence = self.ledger.account(accounts[0]).sequence + 1
        record, payload = call_record(self.ledger.config.chain_id, sequence, accounts[0],
                                      self.vault.chain.number, method, decoded)
        txid = keys.txid(record)
        self._prepared[txid] = payload
        while len(self._prepared) > limits.vault_prepared_calls_max:
            self._prepared.popitem(last=False)
        return {"record": record.hex(), "txid": txid.hex(), "account": accounts[0],
                "sequence": sequence}

    def submit_call(self, record: bytes, signature: bytes) -> dict:
        """Submits a prepared call with the holder's signature; the record's code and, for a
        refused call, the contract's refusal code and message."""
        txid = keys.txid(record)
        payload = self._prepared.pop(txid, None)
        if payload is None:
            raise errors.NotFoundError("this call was not prepared here (or was sent "
                                       "already): prepare the step again")
        code, txid = self._submit(record, signature, payload)
        self.service.sync()
        result = self.contracts.results.get(txid)
        refusal = 0 if result is None else result.refuse_code
        name = vault_api.VaultCode(refusal).name \
            if refusal in vault_api.VaultCode._value2member_map_ else code.name
        return {"txid": txid.hex(), "code": code.name, "refusal": name,
                "message": "" if result is None else result.detail,
                "stands": code == Result.ok}

    def sealed_fragment(self, document_id: bytes, part_id: int, index: int) -> bytes:
        """The HPKE-sealed fragment of holder ``index`` for a part, as the chain keeps it."""
        part = self.vault.chain.read(vault_api.vault_contract.part_key(document_id, part_id))
        if part is None or "fragments" not in part:
            raise errors.NotFoundError(f"the document has no encrypted part {part_id}")
        if not 1 <= index <= len(part["fragments"]):
            raise errors.NotFoundError(f"the part has fragments of holders 1 to "
                                       f"{len(part['fragments'])}, not {index}")
        return part["fragments"][index - 1]

    def exchange(self, session_id: bytes, frame: bytes) -> bytes:
        """One channel frame to the service; the refusals it answered go on the chain."""
        try:
            return self.confidential.exchange(session_id, frame)
        finally:
            self.service.record_refusals()

    def try_open(self, request_id: bytes) -> dict:
        """Opens the part when the threshold of approving holders released their fragments."""
        return {"delivered": self.service.try_open(request_id)}
