"""The document vault's pages (``tsunagi node --vault``), under ``/vault`` beside the chain's.

Routes:

- ``/vault``: the documents on the chain
- ``/vault/documents/{id}``: a document, its open parts, its encrypted parts (locked), its
  requests with their audit trails, the forms to request, approve, deny and revoke
- ``/vault/documents/{id}/requests``: the requests part of that page alone (the script puts it
  in place at every change)
- ``/vault/events``: server-sent ``changed`` events, one per change of the vault
- ``/vault/api/documents/{id}``, ``/vault/api/requests/{id}``: the same as JSON;
  ``/vault/api/requests/{id}/delivery``: the opened part, HPKE-sealed to the requester's reply
  key (the requester's browser opens it with WebCrypto; nobody else can)
- ``POST /vault/api/dev/...``: the steps that change state, on the **development path**: the
  browser sends its device file and PIN and this node unlocks the holder's keys, signs the
  call and opens the holder's fragment itself (see docs/drafts/vaultpages.md: the browser-side
  holder is not written yet, and until it is, these routes are named for what they are)

Every state-changing route needs the session's CSRF token (a cookie names the session; the
page carries the token; the script sends it as ``X-CSRF-Token``). A refusal is a JSON answer
with the HTTP status, the error's class and a message saying what to do; a wrong PIN says how
many tries are left.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tsunagi import errors
from tsunagi.node.http.events import format_time, sse_event
from tsunagi.node.http.pages import PageRefusal
from tsunagi.node.http.vault_node import NodeVault
from tsunagi.privacy.holders import DeviceFile
from tsunagi.privacy.service import HolderClient

__all__ = ["SESSION_COOKIE", "add_vault_pages"]

SESSION_COOKIE = "tsunagi_vault_session"
CSRF_HEADER = "x-csrf-token"
SESSION_BYTES = 16  # a session id: random, so no page can guess another's token
TOKEN_HEX_DIGITS = 32  # the CSRF token: HMAC-SHA256 of the session id, cut to 128 bits
DOCUMENT_ID_HEX_DIGITS = 64
# A step's JSON body: a device file (a few hundred bytes), a PIN and a reason fit in 8 KiB.
STEP_BODY_BYTES_MAX = 8 * 1024
# What each refusal answers with: its HTTP status (the first matching class counts).
_STATUS = ((errors.HolderLockedError, 423), (errors.PinError, 403),
           (errors.StepRefusedError, 409), (errors.NotHolderError, 403),
           (errors.NotFoundError, 404), (errors.ReplayError, 409),
           (errors.NodeError, 503), (errors.TsunagiError, 400))


def _status_of(exc: Exception) -> int:
    return next(status for kind, status in _STATUS if isinstance(exc, kind))


def _refusal(exc: Exception) -> JSONResponse:
    body = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, errors.PinError) and not isinstance(exc, errors.HolderLockedError):
        body["tries_left"] = exc.tries_left
    if isinstance(exc, errors.StepRefusedError) and exc.args[1:]:
        body["code"] = exc.args[1]
    return JSONResponse(body, status_code=_status_of(exc))


class _Sessions:
    """CSRF tokens: a token is the HMAC of the session id under this node's secret, so a page
    of another site, which can neither read the cookie nor the page, cannot make one."""

    def __init__(self) -> None:
        self.secret = os.urandom(32)

    def token(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()[
            :TOKEN_HEX_DIGITS]

    def ensure(self, request: Request) -> tuple[str, bool]:
        """The request's session id, and whether it is new (to set as a cookie)."""
        session = request.cookies.get(SESSION_COOKIE, "")
        if len(session) == 2 * SESSION_BYTES and all(c in "0123456789abcdef" for c in session):
            return session, False
        return os.urandom(SESSION_BYTES).hex(), True

    def refused(self, request: Request) -> JSONResponse | None:
        """None when the request carries its session's token; the refusal otherwise."""
        session = request.cookies.get(SESSION_COOKIE, "")
        given = request.headers.get(CSRF_HEADER, "")
        if session and hmac.compare_digest(given.encode(), self.token(session).encode()):
            return None
        return JSONResponse({"ok": False, "error": "csrf", "message": "this form's session "
                             "token is missing or stale (a page of another site cannot send "
                             "it): reload the page and try again"}, status_code=403)


def _document_id(text: str) -> bytes:
    if len(text) != DOCUMENT_ID_HEX_DIGITS or not all(c in "0123456789abcdefABCDEF"
                                                      for c in text):
        raise PageRefusal(400, "Not a document", f"{text[:80]!r} is not a document or request "
                          f"id ({DOCUMENT_ID_HEX_DIGITS} hex digits)")
    return bytes.fromhex(text)


async def add_vault_pages(app: FastAPI, contracts, data: str | Path) -> NodeVault:
    """Starts the vault of the node behind ``app`` (made by create_app, with add_pages run)
    and adds its routes; returns it (``await vault.close()`` when the node stops)."""
    pages = app.state.pages
    vault = NodeVault(pages.api.node, contracts, data)
    await vault.start()
    sessions = _Sessions()
    pages.templates.env.globals.update(format_time=format_time)
    _add_views(app, pages, vault, sessions)
    _add_json_routes(app, pages, vault)
    _add_steps(app, vault, sessions)
    _add_events(app, pages, vault)
    return vault


async def _read(vault: NodeVault, function, *args):
    try:
        return await vault.run(function, *args, changes=False)
    except errors.NotFoundError as exc:
        raise PageRefusal(404, "Not in the vault", f"{exc}: start from the list of documents "
                          "at /vault") from None


def _add_views(app: FastAPI, pages, vault: NodeVault, sessions: _Sessions) -> None:
    def render(request: Request, name: str, **context):
        session, new = sessions.ensure(request)
        response = pages.render(request, name, csrf_token=sessions.token(session), **context)
        if new:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/vault")
        return response

    @app.get("/vault", response_class=HTMLResponse, include_in_schema=False)
    async def documents(request: Request):
        return render(request, "vault_list.html", documents=await _read(vault,
                                                                         vault.documents))

    @app.get("/vault/documents/{document_id}", response_class=HTMLResponse,
             include_in_schema=False)
    async def document(request: Request, document_id: str):
        found = await _read(vault, vault.document, _document_id(document_id))
        return render(request, "vault_document.html", document=found)

    @app.get("/vault/documents/{document_id}/requests", response_class=HTMLResponse,
             include_in_schema=False)
    async def requests(request: Request, document_id: str):
        found = await _read(vault, vault.document, _document_id(document_id))
        return pages.render(request, "vault_requests.html", document=found)


def _add_json_routes(app: FastAPI, pages, vault: NodeVault) -> None:
    @app.get("/vault/api/documents/{document_id}", include_in_schema=False)
    async def document_json(document_id: str):
        return await _read(vault, vault.document, _document_id(document_id))

    @app.get("/vault/api/requests/{request_id}", include_in_schema=False)
    async def request_json(request_id: str):
        found, _ = await _read(vault, vault.request, _document_id(request_id))
        return found

    @app.get("/vault/api/requests/{request_id}/delivery", include_in_schema=False)
    async def delivery(request_id: str):
        key = _document_id(request_id)
        sealed = await vault.run(vault.service.delivery, key, changes=False)
        if sealed is None:
            return JSONResponse({"ok": False, "error": "NotFoundError", "message":
                                 "the part of this request was not opened (yet): it opens "
                                 "when enough holders approve"}, status_code=404)
        return {"ok": True, "request_id": request_id, "sealed": sealed.hex(),
                "info_domain": "tsunagi/vault-delivery/1"}


async def _step_body(request: Request) -> dict:
    body = await request.body()
    if len(body) > STEP_BODY_BYTES_MAX:
        raise errors.EncodingError(f"a step's body is at most {STEP_BODY_BYTES_MAX} bytes")
    try:
        import json

        found = json.loads(body)
    except ValueError:
        raise errors.EncodingError("a step's body is a JSON object: reload the page") from None
    if not isinstance(found, dict) or not isinstance(found.get("pin"), str) \
            or not isinstance(found.get("device"), str):
        raise errors.EncodingError("a step needs your device file (import it on this page "
                                   "first) and your PIN")
    return found


def _add_steps(app: FastAPI, vault: NodeVault, sessions: _Sessions) -> None:
    steps = _DevSteps(vault)

    async def guarded(request: Request, function, *args):
        refused = sessions.refused(request)
        if refused is not None:
            return refused
        try:
            body = await _step_body(request)
            return JSONResponse({"ok": True, **await vault.run(function, body, *args)})
        except errors.TsunagiError as exc:
            return _refusal(exc)

    @app.post("/vault/api/dev/documents/{document_id}/requests", include_in_schema=False)
    async def request_open(request: Request, document_id: str):
        return await guarded(request, steps.request_open, _document_id(document_id))

    @app.post("/vault/api/dev/requests/{request_id}/{action}", include_in_schema=False)
    async def act(request: Request, request_id: str, action: str):
        function = {"approve": steps.approve, "deny": steps.deny,
                    "revoke": steps.revoke}.get(action)
        if function is None:
            raise PageRefusal(404, "No such step", "a request is approved, denied or revoked")
        return await guarded(request, function, _document_id(request_id))


class _DevSteps:
    """The development path, on the vault thread: the holder's device file and PIN come from
    the browser, and this node unlocks the keys, signs and releases for the holder. It keeps
    nothing after the step; but while it runs, the node holds the holder's private keys,
    which the security design gives to the holder's device alone."""

    def __init__(self, vault: NodeVault) -> None:
        self.vault = vault

    def _device(self, body: dict) -> tuple[DeviceFile, int]:
        device = DeviceFile.from_json(body["device"])
        accounts = self.vault.ledger.accounts_of(device.identity.signing_key)
        if not accounts:
            raise errors.NotFoundError("the key of this device file owns no account of this "
                                       "chain: ask the operator for one")
        return device, accounts[0]

    def _unlock(self, device: DeviceFile, pin: str, request_id: bytes | None):
        if request_id is not None:
            return self.vault.vault.unlock(device, pin, request_id)
        client = HolderClient(self.vault.confidential, device.service_key, device.device)
        answer = client.request({"type": "unlock", "pin": pin})
        return device.unwrap(bytes.fromhex(answer["key"]))

    def request_open(self, body: dict, document_id: bytes) -> dict:
        device, account = self._device(body)
        part, expiry = body.get("part"), body.get("expiry_s", 0)
        reason, reply = body.get("reason", ""), body.get("reply_key", "")
        if not isinstance(part, int) or not isinstance(expiry, int) \
                or not isinstance(reason, str) or not isinstance(reply, str):
            raise errors.EncodingError("a request names a part (a number), a reason, an "
                                       "expiry in seconds (0: the document's) and a reply key")
        try:
            reply_key = bytes.fromhex(reply)
        except ValueError:
            reply_key = b""
        if len(reply_key) != 32:
            raise errors.EncodingError("the reply key is an X25519 public key (32 bytes in "
                                       "hex): the page makes it; reload it")
        holder = self._unlock(device, body["pin"], None)
        request_id = self.vault.vault.request_open(holder.signing, account, document_id, part,
                                                   reason, reply_key, expiry_s=expiry)
        return {"request_id": request_id.hex()}

    def approve(self, body: dict, request_id: bytes) -> dict:
        device, account = self._device(body)
        outcome = self.vault.vault.approve(device, body["pin"], account, request_id)
        return {"status": outcome.status, "approvals": list(outcome.approvals),
                "delivered": outcome.delivered}

    def deny(self, body: dict, request_id: bytes) -> dict:
        device, account = self._device(body)
        holder = self._unlock(device, body["pin"], request_id)
        reason = body.get("reason", "")
        outcome = self.vault.vault.deny(holder, account, request_id,
                                        reason if isinstance(reason, str) else "")
        return {"status": outcome.status}

    def revoke(self, body: dict, request_id: bytes) -> dict:
        device, account = self._device(body)
        holder = self._unlock(device, body["pin"], request_id)
        outcome = self.vault.vault.revoke(holder, account, request_id)
        return {"status": outcome.status, "approvals": list(outcome.approvals)}


def _add_events(app: FastAPI, pages, vault: NodeVault) -> None:
    api = pages.api
    streams = {"open": 0}

    async def stream():
        streams["open"] += 1
        try:
            yield b"retry: 1000\n\n"
            seen = vault.version
            yield sse_event("changed", {"version": seen})
            while not api.stopping.is_set():
                changed = vault.changed  # before the version is read: no change slips by
                if vault.version != seen:
                    seen = vault.version
                    yield sse_event("changed", {"version": seen})
                    continue
                stopping = asyncio.ensure_future(api.stopping.wait())
                waiting = asyncio.ensure_future(changed.wait())
                try:
                    done, _ = await asyncio.wait({stopping, waiting},
                                                 timeout=api.settings.event_ping_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                    waiting.cancel()
                if not done:
                    yield b": ping\n\n"
        finally:
            streams["open"] -= 1

    @app.get("/vault/events", include_in_schema=False)
    async def events():
        if streams["open"] >= api.settings.event_streams_max:
            return JSONResponse({"ok": False, "error": "overloaded", "message": "too many "
                                 "event streams are open; retry later"}, status_code=503)
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
