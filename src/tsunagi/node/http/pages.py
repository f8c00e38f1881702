"""The node's web pages: server-rendered views of the chain, its blocks and its accounts.

Routes (on the REST app's listener, beside ``/v1``):

- ``/``: the overview (chain, height, tip, the newest blocks, updating live)
- ``/blocks/{height or hash}``: a block's header fields and its records (``?start=`` pages on)
- ``/accounts/{number}``: an account's balance and its recent history (``?before=`` pages back)
- ``/search?q=``: a height, block hash or ``#account`` typed into the header's box
- ``/events/blocks``: the live block feed (events.py) the overview listens to
- ``/static/...``: the stylesheet and the script, served by the node itself

Every page extends ``templates/base.html``. A refusal (an unknown block or account, a malformed
address) is a page of its own with the HTTP status, saying what was asked and what to do.
Reads run on the REST app's reader threads; nothing here writes.
"""

from __future__ import annotations

import string
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from tsunagi import __version__
from tsunagi.core import records as rec
from tsunagi.core.address import encode_address
from tsunagi.core.amounts import format_amount
from tsunagi.core.block import decode_block
from tsunagi.core.codes import Result
from tsunagi.limits import u32_max, u64_max
from tsunagi.node import limits
from tsunagi.node.http.events import BlockFeed, block_summary
from tsunagi.node.rest import ApiError

__all__ = ["STATIC_PATH", "PageContext", "PageRefusal", "SecurityHeaders", "add_pages"]

HERE = Path(__file__).parent
STATIC_PATH = "/static"
EVENTS_PATH = "/events/blocks"
# Everything a page uses comes from the node: no other host may serve a script, a style, a font
# or an image, and no page may be framed by another site.
CONTENT_SECURITY_POLICY = ("default-src 'self'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'; object-src 'none'")
# Swagger UI and ReDoc (fastapi-offline) start with an inline script, which the policy above
# forbids; their pages keep the headers they have.
_UNGUARDED_PREFIXES = ("/docs", "/redoc")
_HASH_DIGITS = 64


class PageRefusal(Exception):
    """A page that cannot be shown: its status, a title and a message saying what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class SecurityHeaders:
    """ASGI middleware: the Content-Security-Policy and its companions on every answer but
    the API documentation pages; a route that sets one of them itself keeps its own."""

    HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
               (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin"))

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UNGUARDED_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in self.HEADERS if pair[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, guarded_send)


class PageContext:
    """What the pages share, at ``app.state.pages`` once ``add_pages`` ran: the REST app's
    reads and settings (``api``), the ledger and its config, the templates, the block feed.

    A later page adds its routes to the same app and uses ``render`` (a template under
    templates/ extending base.html), ``read`` (a ledger read on a reader thread) and
    ``PageRefusal`` for whatever it cannot show.
    """

    def __init__(self, app: FastAPI, feed: BlockFeed | None) -> None:
        self.api = app.state.api
        self.ledger, self.config = self.api.ledger, self.api.config
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(tsunagi_version=__version__, chain=self.config,
                                          static=STATIC_PATH)
        self.feed = feed or BlockFeed(self.api.node, self.api.read, self.api.stopping,
                                      ping_s=self.api.settings.event_ping_s)

    def render(self, request: Request, name: str, status: int = 200, **context):
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    async def read(self, function, *args, missing: str = "Not found"):
        """A ledger read on a reader thread; the API's refusals become page refusals
        (``missing`` titles a 404)."""
        try:
            return await self.api.read(function, *args)
        except ApiError as error:
            title = missing if error.status == 404 else "Cannot show this page"
            raise PageRefusal(error.status, title, error.message) from None

    def amount(self, units: int) -> str:
        return f"{format_amount(units, self.config.decimals)} {self.config.asset_code}"


def add_pages(app: FastAPI, feed: BlockFeed | None = None) -> BlockFeed:
    """Adds the pages to a REST app made by ``tsunagi.node.rest.create_app``; returns the
    block feed they use (made here unless given)."""
    pages = PageContext(app, feed)
    app.state.pages = pages
    app.add_middleware(SecurityHeaders)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(PageRefusal)
    async def on_refusal(request: Request, refusal: PageRefusal) -> HTMLResponse:
        pages.api.rejected("page_" + ("not_found" if refusal.status == 404 else "refused"))
        return pages.render(request, "refusal.html", refusal.status, title=refusal.title,
                            message=refusal.message)

    api_refusal = app.exception_handlers[StarletteHTTPException]

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException):
        """A browser asking for a page that is not there gets a page; the API answers JSON."""
        wants_page = "text/html" in request.headers.get("accept", "")
        if error.status_code != 404 or not wants_page or request.url.path.startswith("/v1/"):
            return await api_refusal(request, error)
        return await on_refusal(request, PageRefusal(
            404, "No such page", f"this node has no page {request.url.path[:80]}: start from "
                                 "the overview, or look for a block or an account above"))

    _add_chain_pages(app, pages)
    _add_account_pages(app, pages)
    _add_event_route(app, pages)
    return pages.feed


def _add_chain_pages(app: FastAPI, pages: PageContext) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def overview(request: Request):
        found = await pages.read(_overview, pages.ledger, limits.page_blocks_shown)
        return pages.render(request, "overview.html", **found, events=EVENTS_PATH,
                            rows_max=limits.page_blocks_shown)

    @app.get("/blocks/{block_id}", response_class=HTMLResponse, include_in_schema=False)
    async def block(request: Request, block_id: str, start: str = "0"):
        key = _block_key(block_id)
        first = _whole_number(start, "start", u32_max)
        found = await pages.read(_block_page, pages.ledger, key, first,
                                 limits.page_records_shown)
        if found is None:
            raise PageRefusal(404, "No such block", _unknown_block(block_id, pages.ledger))
        return pages.render(request, "block.html", **found, amount=pages.amount)

    @app.get("/search", include_in_schema=False)
    async def search(q: str = ""):
        text = q.strip().removeprefix("#")
        if text.isdigit() and q.strip().startswith("#"):
            return RedirectResponse(f"/accounts/{text}", status_code=303)
        if text.isdigit() or len(text) == _HASH_DIGITS and _is_hex(text):
            return RedirectResponse(f"/blocks/{text.lower()}", status_code=303)
        raise PageRefusal(400, "Nothing to look for",
                          f"{q.strip()[:80]!r} is not a block height (digits), a block hash "
                          f"({_HASH_DIGITS} hex digits) or an account (# and its number, "
                          "as #2)")


def _add_account_pages(app: FastAPI, pages: PageContext) -> None:
    @app.get("/accounts/{account}", response_class=HTMLResponse, include_in_schema=False)
    async def account(request: Request, account: str, before: str | None = None):
        number = _whole_number(account, "an account number", u64_max)
        if number == 0:
            raise PageRefusal(400, "No such account", "accounts are numbered from 1")
        place = None if before is None else _history_place(before)
        info, entries = await pages.read(_account_reads, pages.ledger, number, place,
                                         missing="No such account")
        rows = [_history_row(number, entry, pages.amount) for entry in entries]
        older = None
        if len(entries) == limits.page_history_shown:
            older = f"{entries[-1].height}.{entries[-1].position}"
        return pages.render(
            request, "account.html", number=number, info=info, rows=rows, older=older,
            address=encode_address(bytes(info.owner_key), pages.config.address_prefix),
            balance=pages.amount(info.balance), held=pages.amount(info.held),
            height=info.height - 1, paged=place is not None)


def _add_event_route(app: FastAPI, pages: PageContext) -> None:
    @app.get(EVENTS_PATH, include_in_schema=False)
    async def block_events(request: Request, from_height: str | None = None):
        api = pages.api
        last_id = request.headers.get("last-event-id", "")
        first = None if from_height is None else _whole_number(from_height, "from_height",
                                                               u64_max)
        if last_id.isdigit() and len(last_id) <= 20:
            first = int(last_id) + 1  # a reconnecting EventSource goes on after its last
        if api.stopping.is_set():
            raise ApiError(503, "shutting_down", "the node is stopping",
                           api.settings.retry_after_s)
        if api.streams + len(pages.feed.subscribers) >= api.settings.event_streams_max:
            raise ApiError(503, "overloaded", "too many event streams are open; retry later",
                           api.settings.retry_after_s)
        return StreamingResponse(pages.feed.stream(first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})


# --- reads, on a reader thread ----------------------------------------------------------------

def _overview(ledger, count: int) -> dict:
    height, tip_hash = ledger.tip
    blocks = []
    for block_height in range(height - 1, max(height - 1 - count, -1), -1):
        data = ledger.block(block_height)
        if data is not None:
            blocks.append(block_summary(block_height, bytes(data)))
    return {"height": height - 1, "tip_hash": bytes(tip_hash)[::-1].hex(), "blocks": blocks,
            "next_height": height}


def _block_page(ledger, key: int | bytes, first: int, count: int) -> dict | None:
    height = key if isinstance(key, int) else ledger.block_height(key)
    data = None if height is None else ledger.block(height)
    if data is None:
        return None
    block = decode_block(bytes(data))
    summary = block_summary(height, bytes(data))
    txids = block.txids()[first:first + count, ::-1]
    rows = []
    for offset, (record, code) in enumerate(zip(block.records[first:first + count],
                                                block.codes[first:first + count])):
        fields = rec.unpack(record.tobytes())
        rows.append({"position": first + offset, "txid": txids[offset].tobytes().hex(),
                     "kind": _kind_name(fields["kind"]), "debit": fields["debit_account"],
                     "credit": fields["credit_account"], "amount_units": fields["amount"],
                     "code": _code_name(int(code)), "ok": int(code) == Result.ok})
    shown_end = first + len(rows)
    return {**summary, "merkle_root": bytes(block.merkle_root)[::-1].hex(),
            "version": block.version, "bits": f"0x{block.bits:08x}", "nonce": block.nonce,
            "batch_count": len(block.batch_array), "rows": rows, "first": first,
            "shown_end": shown_end, "next_start": shown_end if shown_end < len(block) else None,
            "tip_height": ledger.height - 1}


def _account_reads(ledger, number: int, place: tuple[int, int] | None) -> tuple:
    """The account (NotFoundError when there is none) and a page of its history."""
    return ledger.account(number), ledger.history(number, limits.page_history_shown, place)


def _history_row(account: int, entry, amount) -> dict:
    fields = rec.unpack(bytes(entry.record))
    debit, credit = fields["debit_account"], fields["credit_account"]
    outgoing = debit == account
    shown = amount(fields["amount"])
    return {"height": entry.height, "position": entry.position,
            "txid": bytes(entry.txid)[::-1].hex(), "kind": _kind_name(fields["kind"]),
            "counterparty": credit if outgoing else debit,
            "direction": "to" if outgoing else "from",
            "amount": ("−" if outgoing else "+") + shown if fields["amount"] else shown,
            "code": _code_name(int(entry.code)), "ok": int(entry.code) == Result.ok}


# --- what the address says ----------------------------------------------------------------------

def _is_hex(text: str) -> bool:
    return all(character in string.hexdigits for character in text)


def _block_key(text: str) -> int | bytes:
    if text.isdigit() and len(text) <= 20 and int(text) <= u64_max:
        return int(text)
    if len(text) == _HASH_DIGITS and _is_hex(text):
        return bytes.fromhex(text)[::-1]
    raise PageRefusal(400, "Not a block", f"{text[:80]!r} is neither a block height (digits) "
                                          f"nor a block hash ({_HASH_DIGITS} hex digits)")


def _unknown_block(text: str, ledger) -> str:
    height = ledger.height
    if text.isdigit():
        return (f"there is no block at height {text}: the chain's heights are 0 to "
                f"{height - 1} so far, and a block appears here once it is committed")
    return f"no block on this chain has the hash {text}"


def _whole_number(text: str, what: str, largest: int) -> int:
    if not text.isdigit() or len(text) > 20 or int(text) > largest:
        raise PageRefusal(400, "Cannot show this page",
                          f"{what} is a whole number from 0 to {largest}, not {text[:80]!r}")
    return int(text)


def _history_place(text: str) -> tuple[int, int]:
    height, _, position = text.partition(".")
    return (_whole_number(height, "before's height", u64_max),
            _whole_number(position, "before's position", u32_max))


def _kind_name(kind: int) -> str:
    try:
        return rec.Kind(kind).name.replace("_", " ")
    except ValueError:
        return f"kind {kind}"


def _code_name(value: int) -> str:
    try:
        return Result(value).name
    except ValueError:
        return str(value)

