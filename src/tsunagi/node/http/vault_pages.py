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
- ``/vault/api/documents/{id}/parts/{part}/fragments/{index}``: a holder's sealed fragment
- ``POST /vault/api/channel/{open,authenticate,exchange}``: the channel to the confidentiality
  service (tsunagi.privacy.channel), its bytes in hex: the holder's page unlocks its keys and
  releases its fragment through it
- ``POST /vault/api/calls/{prepare,submit}``: a step's call record, made here for the holder's
  page to sign (BIP340, in the browser) and then submitted with that signature
- ``POST /vault/api/requests/open-part``: the service tries to open the part of a request

The holder's private keys never reach the node: the page opens them from its device file with
the K the service answers to the PIN, signs in the browser and opens its fragment there
(static/vault.js, static/vault_bip340.js).

Every state-changing route needs the session's CSRF token (a cookie names the session; the
page carries the token; the script sends it as ``X-CSRF-Token``). A refusal is a JSON answer
with the HTTP status, the error's class and a message saying what to do; a wrong PIN says how
many tries are left.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from tsunagi import errors
from tsunagi.node import limits
from tsunagi.node.http.events import format_time, sse_event
from tsunagi.node.http.pages import PageRefusal
from tsunagi.node.http.vault_node import NodeVault

__all__ = ["SESSION_COOKIE", "add_vault_pages"]

SESSION_COOKIE = "tsunagi_vault_session"
CSRF_HEADER = "x-csrf-token"
SESSION_BYTES = 16  # a session id: random, so no page can guess another's token
TOKEN_HEX_DIGITS = 32  # the CSRF token: HMAC-SHA256 of the session id, cut to 128 bits
DOCUMENT_ID_HEX_DIGITS = 64
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


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if len(body) > limits.vault_body_bytes_max:
        raise errors.EncodingError(f"a step's body is at most {limits.vault_body_bytes_max} bytes")
    try:
        found = json.loads(body)
    except ValueError:
        raise errors.EncodingError("a step's body is a JSON object: reload the page") from None
    if not isinstance(found, dict):
        raise errors.EncodingError("a step's body is a JSON object: reload the page")
    return found


def _hex_field(body: dict, name: str) -> bytes:
    try:
        return bytes.fromhex(body[name])
    except (KeyError, TypeError, ValueError):
        raise errors.EncodingError(f"the body needs {name} in hex") from None


def _add_steps(app: FastAPI, vault: NodeVault, sessions: _Sessions) -> None:
    """The browser-side holder's routes: the channel to the service (its three messages, as
    bytes in hex), calls prepared for the holder to sign and then submitted, the sealed
    fragments, and the service's attempt to open a part."""
    confidential = vault.confidential

    def post(path: str):
        def register(function):
            async def route(request: Request):
                refused = sessions.refused(request)
                if refused is not None:
                    return refused
                try:
                    body = await _json_body(request)
                    return JSONResponse({"ok": True, **await function(body)})
                except errors.TsunagiError as exc:
                    return _refusal(exc)
            app.add_api_route(path, route, methods=["POST"], include_in_schema=False)
            return function
        return register

    @post("/vault/api/channel/open")
    async def channel_open(body: dict) -> dict:
        session, reply = await vault.run(confidential.open_session, _hex_field(body, "hello"),
                                         changes=False)
        return {"session": session.hex(), "reply": reply.hex()}

    @post("/vault/api/channel/authenticate")
    async def channel_authenticate(body: dict) -> dict:
        await vault.run(confidential.authenticate, _hex_field(body, "session"),
                        _hex_field(body, "auth"), changes=False)
        return {}

    @post("/vault/api/channel/exchange")
    async def channel_exchange(body: dict) -> dict:
        frame = await vault.run(vault.exchange, _hex_field(body, "session"),
                                _hex_field(body, "frame"))
        return {"frame": frame.hex()}

    @post("/vault/api/calls/prepare")
    async def prepare(body: dict) -> dict:
        method, args = body.get("method"), body.get("args")
        if not isinstance(method, str) or not isinstance(args, dict):
            raise errors.EncodingError("a step names its method and its args")
        return await vault.run(vault.prepare_call, _hex_field(body, "key"), method, args,
                               changes=False)

    @post("/vault/api/calls/submit")
    async def submit(body: dict) -> dict:
        return await vault.run(vault.submit_call, _hex_field(body, "record"),
                               _hex_field(body, "signature"))

    @post("/vault/api/requests/open-part")
    async def try_open(body: dict) -> dict:
        return await vault.run(vault.try_open, _hex_field(body, "request_id"))

    @app.get("/vault/api/documents/{document_id}/parts/{part_id}/fragments/{index}",
             include_in_schema=False)
    async def fragment(document_id: str, part_id: int, index: int):
        try:
            sealed = await vault.run(vault.sealed_fragment, _document_id(document_id),
                                     part_id, index, changes=False)
        except errors.NotFoundError as exc:
            return _refusal(exc)
        return {"ok": True, "sealed": sealed.hex()}


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
