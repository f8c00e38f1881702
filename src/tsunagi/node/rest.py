"""The node's REST/JSON API (FastAPI): submit, read, prove, follow the chain over HTTP.

Submissions join the same group-commit queue as the binary protocol's (``NodeServer.submit``):
one writer per ledger, one block and one fsync per group, whoever sent the records. Reads run
on a small pool of reader threads, as the ledger allows reads from any thread.

Conventions, also on the OpenAPI page at ``/docs``:

- Hashes (txid, block hash, Merkle root and proof) are hex in display order: byte-reversed,
  as Bitcoin shows them (docs/FORMAT.md). Reverse the bytes before hashing with them.
- Records, signatures and keys are their bytes as hex or as base64; records are never
  reversed. ``POST /v1/batches`` also takes a raw ``application/octet-stream`` body laid out
  as the wire protocol's submit_batch payload (docs/PROTOCOL.md), the fast way in.
- Amounts come twice: ``*_units`` (integer smallest units) and a decimal string with the
  asset's decimals (``"12.50"``). Never floats.
- A rejected record is a result code in a 200 answer, not an HTTP error. HTTP errors are
  ``{"error": {"code", "message"}}``: 400 malformed, 404 not_found, 413 too_large, 503
  overloaded or shutting_down (with Retry-After), 500 internal. A committed block found damaged
  answers ``damaged`` (the message names its height and byte offset and what to do): 500 for a
  read of that block, 503 for a submission, which the node refuses until it is repaired.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
from asyncio import FIRST_COMPLETED
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tsunagi import __version__, hashing
from tsunagi.core import records as rec
from tsunagi.core.address import encode_address
from tsunagi.core.amounts import format_amount
from tsunagi.core.block import COUNTS_OFFSET, HEADER_BYTES, decode_block, pack_batches
from tsunagi.core.codes import UNSTORED, Result
from tsunagi.errors import CorruptLogError, EncodingError, NotFoundError, ProtocolError
from tsunagi.limits import u32_max, u64_max
from tsunagi.node import limits
from tsunagi.node import protocol as p
from tsunagi.node.settings import RestSettings

__all__ = ["ApiError", "create_app"]

BATCHES_PATH = "/v1/batches"
OCTET_STREAM = "application/octet-stream"
DOCS_ASSETS_PATH = "/docs/assets"  # Swagger UI's and ReDoc's scripts and styles
_HEAD = struct.Struct("<IIII")  # submit_batch payload: record, signature, batch counts, zero


class ApiError(Exception):
    """An HTTP error answer: status, a stable code word, a message that says what to do."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s


# --- models: what the OpenAPI page shows ---------------------------------------------------------

def _bytes_pattern(size: int) -> str:
    """``size`` bytes as hex, or as base64 (standard or URL-safe, padding optional)."""
    whole, rest = divmod(size, 3)
    characters = 4 * whole + (rest + 1 if rest else 0)
    padding = "=" * ((3 - rest) % 3)
    return f"^(?:[0-9a-fA-F]{{{2 * size}}}|[A-Za-z0-9+/_-]{{{characters}}}(?:{padding})?)$"


RecordText = Annotated[str, Field(pattern=_bytes_pattern(rec.RECORD_BYTES),
                                  description="128-byte record: hex (256 digits) or base64")]
SignatureText = Annotated[str, Field(pattern=_bytes_pattern(rec.SIGNATURE_BYTES),
                                     description="64-byte BIP340 signature: hex or base64")]
KeyText = Annotated[str, Field(pattern=_bytes_pattern(32),
                               description="32-byte x-only public key: hex or base64")]
HASH_PATTERN = "^[0-9a-fA-F]{64}$"


class ErrorDetail(BaseModel):
    code: str = Field(description="malformed, not_found, too_large, overloaded, "
                                  "shutting_down, internal, ...")
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class SubmitIn(BaseModel):
    record: RecordText
    signature: SignatureText = Field(description="BIP340 signature over the record's txid")


class SubmitOut(BaseModel):
    code: str = Field(description="result code name; ok means applied")
    code_value: int
    applied: bool
    stored: bool = Field(description="the record is in a block (applied or not)")
    txid: str
    height: int | None = Field(description="block holding the record; null when not stored")
    block_hash: str | None
    original_code: str | None = Field(None, description="for already_committed: the code it "
                                                        "was first committed with")
    account: int | None = Field(None, description="account opened by an open_account record")


class BatchAuthIn(BaseModel):
    first: int = Field(ge=0, le=u32_max, description="first record it covers, in this batch")
    count: int = Field(ge=1, le=u32_max)
    signer_key: KeyText
    signature: SignatureText = Field(description="signature over the batch root")


class BatchIn(BaseModel):
    # More records than the limit are a 413 (checked by hand), so the schema alone says so.
    records: list[RecordText] = Field(min_length=1, json_schema_extra={
        "maxItems": limits.request_records_max})
    signatures: list[SignatureText] = Field(default=[], description="one per record without "
                                            "the batch_authorized flag, in order")
    batches: list[BatchAuthIn] = []


class IndexCode(BaseModel):
    index: int
    code: str
    code_value: int


class IndexAccount(BaseModel):
    index: int
    account: int


class BatchOut(BaseModel):
    height: int | None
    block_hash: str | None
    count: int
    applied: int = Field(description="records answered ok")
    codes: list[int] = Field(description="one result code per record, in request order")
    failures: list[IndexCode]
    originals: list[IndexCode] = Field(description="already_committed records: first code")
    opened: list[IndexAccount]


class BalanceOut(BaseModel):
    account: int
    asset: str
    balance_units: int
    balance: str


class AccountOut(BalanceOut):
    address: str
    owner_key: str
    held_units: int = Field(description="in open holds this account pays")
    held: str
    sequence: int
    issuer: bool


class HoldOut(BaseModel):
    payer: int
    sequence: int
    payee: int
    authority: int
    amount_units: int
    amount: str
    expiry_s: int
    hashlock: str | None
    status: str


class HoldsOut(BaseModel):
    account: int
    holds: list[HoldOut]


class RecordFields(BaseModel):
    kind: str
    flags: int
    key_slot: int
    chain_id: int
    sequence: int
    debit_account: int
    credit_account: int
    amount_units: int
    amount: str
    aux: int
    data: str
    aux2: int
    extra: list[int]
    user_data: int


class TxOut(BaseModel):
    txid: str
    record: str = Field(description="the record's 128 bytes as hex")
    fields: RecordFields
    code: str
    code_value: int
    height: int
    position: int
    block_hash: str
    merkle_root: str | None = None
    proof: list[str] | None = Field(None, description="Merkle path from the txid to the "
                                                      "root, bottom first, display order")


class HistoryOut(BaseModel):
    account: int
    entries: list[TxOut] = Field(description="newest first")
    next: str | None = Field(description="URL of the next (older) page; null at the end")


class AccountsOut(BaseModel):
    address: str
    accounts: list[int]


class BlockOut(BaseModel):
    height: int
    hash: str
    prev_hash: str
    merkle_root: str
    version: int
    time: int
    bits: str
    nonce: int
    record_count: int
    failed_count: int
    batch_count: int
    txids: list[str]
    codes: list[int]


class DamageOut(BaseModel):
    height: int = Field(description="the damaged committed block")
    offset: int | None = Field(description="byte offset of its frame in blocks.log")
    reason: str
    found_by: str = Field(description="open, read, scrub or verify")
    found_at_s: float
    message: str = Field(description="what the node does, and what to do")


class ScrubOut(BaseModel):
    passes: int = Field(description="full passes over the committed blocks since the start")
    blocks_checked: int
    bytes_checked: int
    last_pass_s: float | None = Field(description="when the last pass ended (Unix time)")
    rate_bytes_s: float
    interval_s: float


class ValidatorOut(BaseModel):
    height: int = Field(description="the height being decided")
    round: int
    validator_index: int | None = Field(description="this key's index in the height's set; "
                                                    "null while it only follows")
    decided: int = Field(description="heights final since the node started")
    rounds_above_zero: int = Field(description="heights that needed more than one round")
    signatures_prechecked: int = Field(description="signatures checked as they entered the "
                                                   "mempool")
    signatures_skipped: int = Field(description="signatures a block did not check again")
    evidence_waiting: int = Field(description="equivocation evidence not yet on chain")
    byzantine: str | None = None


class NetworkOut(BaseModel):
    mines: bool = Field(description="whether this node makes blocks")
    peers: int = Field(description="peer connections past the handshake")
    peer_addresses: list[str]
    tip: str = Field(description="hash of the ledger's best block (display order)")
    work: str = Field(description="cumulative proof of work of the best chain (decimal)")
    best_header_height: int = Field(description="height of the best header known (ahead of "
                                                "height while blocks download)")
    reorgs: int = Field(description="reorgs since the node started")
    reorg_depth_last: int
    reorg_depth_max: int
    side_blocks: int = Field(description="blocks of other branches kept on disk")
    pending_blocks: int
    orphans: int
    invalid: int = Field(description="blocks found invalid (their senders were banned)")
    banned: int = Field(description="peer addresses refused right now")
    bans: int
    blocks_in_flight: int
    blocks_received: int
    mempool_records: int = Field(description="records waiting for a block")
    mempool_bytes: int
    relay_dropped: int = Field(description="relayed records dropped for a full queue")
    consensus: str = Field("proof-of-work", description="proof-of-work, or consortium "
                                                         "(validators decide every block)")
    validators: int | None = Field(None, description="a consortium chain's validators for "
                                                     "the next height")
    validator_weight: int | None = None
    validator: ValidatorOut | None = Field(None, description="this node's consensus, when it "
                                                             "runs with --validator-key")


class StatusOut(BaseModel):
    chain: str
    chain_id: int
    asset: str
    decimals: int
    height: int
    tip_hash: str
    protocol_version: int
    version: str
    wire_connections: int
    queued_records: int
    groups_committed: int
    records_committed: int
    damage: DamageOut | None = Field(description="a committed block known to be damaged: the "
                                                 "node takes no records until it is repaired")
    scrub: ScrubOut | None = Field(description="the background re-read of committed blocks")
    network: NetworkOut | None = Field(None, description="peers, best chain and mempool of a "
                                                         "node of a network")


# --- helpers -------------------------------------------------------------------------------------

def _network_out(node) -> dict | None:
    found = node.network_status()
    if found is None:
        return None
    return {**{key: value for key, value in found.items() if key not in ("height",)},
            "work": str(found["work"])}


def _show(hash_bytes) -> str:
    """A hash in display order."""
    return bytes(hash_bytes)[::-1].hex()


def _decode_item(text: str, size: int, what: str) -> bytes:
    """``size`` bytes given as hex (2 x size digits) or base64 (standard or URL-safe)."""
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass  # 2 x size characters of base64 are simply the wrong size, said below
    text = text.replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        data = None
    if data is None or len(data) != size:
        raise ApiError(400, "malformed", f"{what} is {size} bytes as hex ({2 * size} digits) or "
                                         f"base64 ({(size + 2) // 3 * 4} characters)")
    return data


def _decode_items(texts: list[str], size: int, what: str) -> bytes:
    """Many items as one buffer: all-hex lists in one fromhex call, others one by one."""
    if all(len(text) == 2 * size for text in texts):
        try:
            return bytes.fromhex("".join(texts))
        except ValueError:
            pass
    return b"".join(_decode_item(text, size, f"{what} {i}") for i, text in enumerate(texts))


def _decode_hash(text: str, what: str) -> bytes:
    """A display-order hex hash as internal bytes."""
    if len(text) != 64:
        raise ApiError(400, "malformed", f"a {what} is 64 hex digits, got {len(text)} characters")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise ApiError(400, "malformed", f"a {what} is 64 hex digits") from None


def _check_record_count(count: int) -> None:
    """More records than one request may hold is a 413 (split the batch), not a malformed body."""
    if count > limits.request_records_max:
        raise ApiError(413, "too_large", f"a batch holds at most {limits.request_records_max} "
                                         f"records, got {count}: split it")


def _check_structure(records: bytes, signatures: bytes, batches: bytes) -> None:
    p.check_submit_batch(records, signatures, batches, error=_malformed)


def _malformed(message: str) -> ApiError:
    return ApiError(400, "malformed", message)


_PROTOCOL_STATUS = {p.ErrorCode.overloaded: 503, p.ErrorCode.shutting_down: 503,
                    p.ErrorCode.malformed: 400, p.ErrorCode.too_large: 413,
                    p.ErrorCode.not_found: 404, p.ErrorCode.damaged: 503}


def _from_protocol(error: p.Error, retry_after_s: int) -> ApiError:
    status = _PROTOCOL_STATUS.get(error.code, 500)
    retry = status == 503 and error.code is not p.ErrorCode.damaged
    return ApiError(status, error.code.name, error.message, retry_after_s if retry else None)


def _code_name(value: int) -> str:
    try:
        return Result(value).name
    except ValueError:
        return str(value)


def _index_codes(pairs) -> list[dict]:
    return [{"index": int(i), "code": _code_name(int(c)), "code_value": int(c)}
            for i, c in pairs]


def _batch_out(answer: p.SubmitAnswer) -> dict:
    codes = answer.codes_array()
    return {"height": answer.height,
            "block_hash": None if answer.block_hash is None else _show(answer.block_hash),
            "count": len(codes), "applied": int(np.count_nonzero(codes == Result.ok)),
            "codes": codes.tolist(), "failures": _index_codes(answer.failures),
            "originals": _index_codes(answer.originals),
            "opened": [{"index": i, "account": a} for i, a in answer.opened]}


def _one_out(answer: p.SubmitAnswer, record: bytes) -> dict:
    code = answer.code
    original = dict(answer.originals).get(0)
    return {"code": code.name, "code_value": int(code), "applied": code is Result.ok,
            "stored": code not in UNSTORED, "txid": _show(hashing.sha256d(record)),
            "height": answer.height,
            "block_hash": None if answer.block_hash is None else _show(answer.block_hash),
            "original_code": None if original is None else _code_name(original),
            "account": answer.account or None}


def _fields(record: bytes, decimals: int) -> dict:
    fields = rec.unpack(record)
    kind = fields["kind"]
    fields["kind"] = rec.Kind(kind).name if kind in rec.Kind._value2member_map_ else str(kind)
    fields["amount_units"] = fields.pop("amount")
    fields["amount"] = format_amount(fields["amount_units"], decimals)
    fields["data"] = fields["data"].hex()
    fields["extra"] = list(fields["extra"])
    return fields


def _tx_out(info, decimals: int, with_proof: bool) -> dict:
    record = bytes(info.record)
    out = {"txid": _show(info.txid), "record": record.hex(), "fields": _fields(record, decimals),
           "code": Result(int(info.code)).name, "code_value": int(info.code),
           "height": info.height, "position": info.position,
           "block_hash": _show(info.block_hash)}
    if with_proof:
        out["merkle_root"] = _show(info.merkle_root)
        out["proof"] = [_show(h) for h in info.proof]
    return out


def _error_response(error: ApiError) -> JSONResponse:
    headers = {} if error.retry_after_s is None else {"Retry-After": str(error.retry_after_s)}
    return JSONResponse({"error": {"code": error.code, "message": error.message}},
                        status_code=error.status, headers=headers)


def _block_height(ledger, block_id: int | bytes) -> tuple[int, bytes] | None:
    """(height, bytes) of a block by height or hash; runs on a reader thread."""
    height = block_id if isinstance(block_id, int) else ledger.block_height(block_id)
    data = None if height is None else ledger.block(height)
    return None if data is None else (height, data)


def _block_out(height: int, data: bytes) -> dict:
    block = decode_block(data)
    shown = block.txids()[:, ::-1].tobytes().hex()
    return {"height": height, "hash": _show(block.hash), "prev_hash": _show(block.prev_hash),
            "merkle_root": _show(block.merkle_root), "version": block.version,
            "time": block.time, "bits": f"0x{block.bits:08x}", "nonce": block.nonce,
            "record_count": len(block), "failed_count": int(np.count_nonzero(block.codes)),
            "batch_count": len(block.batch_array),
            "txids": [shown[i:i + 64] for i in range(0, len(shown), 64)],
            "codes": block.codes.tolist()}


def _block_event(height: int, data: bytes) -> bytes:
    """One server-sent event for a block: its id is the height, to resume from."""
    header = memoryview(data)
    (time_s,) = struct.unpack_from("<I", header, 68)
    (record_count,) = struct.unpack_from("<I", header, COUNTS_OFFSET)
    block_hash = hashing.header_hash(header[:HEADER_BYTES])
    payload = json.dumps({"height": height, "hash": _show(block_hash),
                          "prev_hash": _show(header[4:36]), "time": time_s,
                          "record_count": record_count}, separators=(",", ":"))
    return f"id: {height}\nevent: block\ndata: {payload}\n\n".encode()


def _validation_message(errors) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not match the API (see /docs)"


class _BodyLimit:
    """ASGI middleware: refuses a body above its limit (413) before it is held whole.

    The raw batch route takes a frame's worth (``frame_bytes_max``), JSON batches
    ``json_body_bytes_max``, everything else ``small_body_bytes_max``; a body without a
    Content-Length is counted as it arrives.
    """

    def __init__(self, app, settings: RestSettings, frame_bytes_max: int) -> None:
        self.app, self.settings, self.frame_bytes_max = app, settings, frame_bytes_max

    def limit(self, scope) -> int:
        if scope["path"] != BATCHES_PATH:
            return self.settings.small_body_bytes_max
        for name, value in scope["headers"]:
            if name == b"content-type" and value.split(b";")[0].strip() == OCTET_STREAM.encode():
                return self.frame_bytes_max
        return self.settings.json_body_bytes_max

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        message = f"the request body is above {limit} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            error = ApiError(413 if length.isdigit() else 400,
                             "too_large" if length.isdigit() else "malformed",
                             message if length.isdigit() else "a bad Content-Length")
            await _error_response(error)(scope, receive, send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    from fastapi import HTTPException

                    raise HTTPException(413, message)
            return event

        await self.app(scope, counted_receive, send)


class _Api:
    """What the routes share: the node, reader threads, settings, and the stop signal."""

    def __init__(self, node, settings: RestSettings, metrics) -> None:
        self.node = node
        self.ledger = node.ledger
        self.config = node.ledger.config
        self.settings = settings
        self.metrics = metrics
        self.readers = ThreadPoolExecutor(node.settings.reader_threads,
                                          thread_name_prefix="tsunagi-http-read")
        self.stopping = asyncio.Event()
        self.streams = 0

    def amount(self, units: int) -> str:
        return format_amount(units, self.config.decimals)

    async def read(self, function, *args):
        """``function(*args)`` on a reader thread; the ledger's NotFoundError is a 404."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.readers, function, *args)
        except NotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except CorruptLogError as exc:  # the ledger has logged and recorded it
            raise ApiError(500, "damaged", str(exc)) from None

    async def submit(self, records: bytes, signatures: bytes, batches: bytes = b""):
        """Commits through the node's group-commit writer; refusals become ApiErrors."""
        if self.stopping.is_set():
            raise ApiError(503, "shutting_down", "the node is stopping; retry later or "
                           "elsewhere", self.settings.retry_after_s)
        answer = await self.node.submit(records, signatures, pack_batches(batches))
        if isinstance(answer, p.Error):
            raise _from_protocol(answer, self.settings.retry_after_s)
        return answer

    def rejected(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.count_rejected("http", code)

    def close(self) -> None:
        self.readers.shutdown(wait=True)


_ERRORS = {status: {"model": ErrorOut, "description": text} for status, text in (
    (400, "malformed request"), (404, "not found"), (413, "above a size limit"),
    (503, "overloaded or shutting down: retry after Retry-After seconds"))}
# Routes that also answer raw bytes (when asked to) document that second content type.
_WITH_RAW = {**_ERRORS, 200: {"content": {OCTET_STREAM: {
    "schema": {"type": "string", "format": "binary"}}}}}

def create_app(node, *, settings: RestSettings | None = None, metrics=None) -> FastAPI:
    """The REST app over a started NodeServer; serve it on the node's event loop.

    ``metrics`` (a NodeMetrics) adds ``GET /metrics`` and counts refused HTTP requests.
    Call ``app.state.api.stopping.set()`` before stopping the server: submissions are then
    refused and event streams end; ``app.state.api.close()`` after it has stopped.
    """
    settings = settings or RestSettings()
    api = _Api(node, settings, metrics)
    # /docs (Swagger UI) and /redoc load their scripts and styles from the node itself
    # (fastapi-offline ships them), so the pages work without reaching a CDN.
    app = FastAPIOffline(title="tsunagi node", version=__version__,
                         summary="Submit records, read accounts and blocks, prove transactions.",
                         description=__doc__.split("\n\n", 1)[1], static_url=DOCS_ASSETS_PATH)
    app.state.api = api
    app.add_middleware(_BodyLimit, settings=settings,
                       frame_bytes_max=node.settings.frame_bytes_max)
    _add_error_handlers(app, api)
    _add_submit_routes(app, api)
    _add_account_routes(app, api)
    _add_chain_routes(app, api)
    _add_event_route(app, api)
    if metrics is not None:
        from tsunagi.node.metrics import CONTENT_TYPE

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, plus the two bodies POST /v1/batches reads by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(batch.pop("$defs", {}))
        components["BatchIn"] = batch
        schema["paths"][BATCHES_PATH]["post"]["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}},
            OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}}
        app.openapi_schema = schema
    return app.openapi_schema


def _add_error_handlers(app: FastAPI, api: _Api) -> None:
    names = {400: "malformed", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
             415: "unsupported_media_type"}

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        api.rejected(error.code)
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        api.rejected("malformed")
        return _error_response(ApiError(400, "malformed", _validation_message(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = names.get(error.status_code, "http_error")
        api.rejected(code)
        message = str(error.detail)
        if error.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no {request.method} {request.url.path}: the API is listed at /docs"
        response = _error_response(ApiError(error.status_code, code, message))
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(Exception)
    async def on_bug(request: Request, error: Exception) -> JSONResponse:
        api.rejected("internal")
        return _error_response(ApiError(500, "internal", f"{type(error).__name__}: {error}"))


def _add_submit_routes(app: FastAPI, api: _Api) -> None:
    @app.post("/v1/transactions", response_model=SubmitOut, responses=_ERRORS,
              tags=["submit"], summary="Submit one signed record")
    async def submit_transaction(body: SubmitIn) -> dict:
        """Commits one record in the next group. A record the ledger rejects is answered
        200 with its result code; sending it again answers already_committed."""
        record = _decode_item(body.record, rec.RECORD_BYTES, "record")
        signature = _decode_item(body.signature, rec.SIGNATURE_BYTES, "signature")
        _check_structure(record, signature, b"")
        return _one_out(await api.submit(record, signature), record)

    @app.post(BATCHES_PATH, response_model=BatchOut, responses=_WITH_RAW, tags=["submit"],
              summary="Submit a batch of records (JSON, or raw bytes for speed)")
    async def submit_batch(request: Request):
        """JSON (BatchIn), or ``application/octet-stream``: the wire protocol's submit_batch
        payload (counts u32 x 4, records, signatures, batch entries). With ``Accept:
        application/octet-stream`` the answer is the wire's submit_answer payload."""
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        body = await request.body()
        if kind == OCTET_STREAM:
            records, signatures, batches = _parse_raw_batch(body)
        elif kind == "application/json":
            records, signatures, batches = _parse_json_batch(body)
            _check_structure(records, signatures, batches)
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"send application/json or {OCTET_STREAM}, not {kind}")
        answer = await api.submit(records, signatures, batches)
        if OCTET_STREAM in request.headers.get("accept", ""):
            frame = p.encode(answer, 0)
            return Response(frame[limits.frame_prefix_bytes:], media_type=OCTET_STREAM)
        return _batch_out(answer)


def _parse_raw_batch(body: bytes) -> tuple[bytes, bytes, bytes]:
    if len(body) < _HEAD.size:
        raise ApiError(400, "malformed", f"a raw batch starts with {_HEAD.size} bytes of "
                                         "counts (docs/PROTOCOL.md, submit_batch)")
    _check_record_count(_HEAD.unpack_from(body)[0])
    try:
        batch = p.decode(p.Frame(1, p.MessageType.submit_batch, 0, 0, memoryview(body)))
    except ProtocolError as exc:
        raise ApiError(400, "malformed", str(exc)) from None
    return bytes(batch.records), bytes(batch.signatures), bytes(batch.batches)


def _parse_json_batch(body: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        batch = BatchIn.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(400, "malformed", _validation_message(exc.errors())) from None
    _check_record_count(len(batch.records))
    records = _decode_items(batch.records, rec.RECORD_BYTES, "record")
    signatures = _decode_items(batch.signatures, rec.SIGNATURE_BYTES, "signature")
    entries = pack_batches([
        (entry.first, entry.count, _decode_item(entry.signer_key, 32, "signer_key"),
         _decode_item(entry.signature, rec.SIGNATURE_BYTES, "batch signature"))
        for entry in batch.batches])
    return records, signatures, entries.tobytes()


def _add_account_routes(app: FastAPI, api: _Api) -> None:
    account_path = PathParam(ge=1, le=u64_max, description="account number")

    @app.get("/v1/accounts/{account}", response_model=AccountOut, responses=_ERRORS,
             tags=["accounts"], summary="An account: owner, balance, held, sequence")
    async def account_info(account: int = account_path) -> dict:
        info = await api.read(api.ledger.account, account)
        held = info.held  # read with the balance, at the same durable height
        return {"account": account, "asset": api.config.asset_code,
                "balance_units": info.balance, "balance": api.amount(info.balance),
                "address": encode_address(bytes(info.owner_key), api.config.address_prefix),
                "owner_key": bytes(info.owner_key).hex(), "held_units": held,
                "held": api.amount(held), "sequence": info.sequence, "issuer": info.issuer}

    @app.get("/v1/accounts/{account}/balance", response_model=BalanceOut, responses=_ERRORS,
             tags=["accounts"], summary="An account's balance")
    async def balance(account: int = account_path) -> dict:
        units = await api.read(api.ledger.balance, account)
        return {"account": account, "asset": api.config.asset_code, "balance_units": units,
                "balance": api.amount(units)}

    @app.get("/v1/accounts/{account}/holds", response_model=HoldsOut, responses=_ERRORS,
             tags=["accounts"], summary="Holds the account pays, receives or resolves")
    async def holds(account: int = account_path) -> dict:
        await api.read(api.ledger.account, account)  # 404 for an unknown account
        found = await api.read(api.ledger.holds, account)
        return {"account": account, "holds": [
            {**{k: h[k] for k in ("payer", "sequence", "payee", "authority", "expiry_s",
                                  "status")},
             "amount_units": h["amount"], "amount": api.amount(h["amount"]),
             "hashlock": h["hashlock"].hex() if any(h["hashlock"]) else None} for h in found]}

    @app.get("/v1/accounts/{account}/history", response_model=HistoryOut, responses=_ERRORS,
             tags=["accounts"], summary="Records debiting or crediting the account, paged")
    async def history(account: int = account_path,
                      limit: int = Query(100, ge=1, le=limits.history_limit_max),
                      before_height: int | None = Query(None, ge=0, le=u64_max),
                      before_position: int = Query(0, ge=0, le=u32_max)) -> dict:
        """Newest first. ``next`` is the URL of the following older page."""
        await api.read(api.ledger.account, account)
        before = None if before_height is None else (before_height, before_position)
        entries = await api.read(lambda: api.ledger.history(account, limit, before))
        decimals = api.config.decimals
        last = entries[-1] if len(entries) == limit else None
        return {"account": account,
                "entries": [_tx_out(e, decimals, with_proof=False) for e in entries],
                "next": None if last is None else
                f"/v1/accounts/{account}/history?limit={limit}&before_height={last.height}"
                f"&before_position={last.position}"}

    @app.get("/v1/addresses/{address}/accounts", response_model=AccountsOut,
             responses=_ERRORS, tags=["accounts"], summary="Accounts an address owns")
    async def accounts_of(address: str = PathParam(
            pattern="^[a-z0-9]{1,31}1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{6,}$",
            description="bech32m address")) -> dict:
        try:
            numbers = await api.read(api.ledger.accounts_of, address)
        except EncodingError as exc:
            raise ApiError(400, "malformed", str(exc)) from None
        return {"address": address, "accounts": numbers}


def _add_chain_routes(app: FastAPI, api: _Api) -> None:
    @app.get("/v1/transactions/{txid}", response_model=TxOut, responses=_ERRORS,
             tags=["chain"], summary="A committed record with its Merkle proof")
    async def transaction(txid: str = PathParam(pattern=HASH_PATTERN)) -> dict:
        """Check the proof with ``hashing.verify_merkle_proof(txid, proof, position, root)``
        after reversing each hash to internal byte order."""
        info = await api.read(api.ledger.transaction, _decode_hash(txid, "txid"))
        if info is None:
            raise ApiError(404, "not_found", f"no committed transaction {txid}")
        return _tx_out(info, api.config.decimals, with_proof=True)

    @app.get("/v1/blocks/{block_id}", response_model=BlockOut, responses=_WITH_RAW,
             tags=["chain"], summary="A block by height or by hash")
    async def block(block_id: str = PathParam(pattern="^(?:[0-9]{1,20}|[0-9a-fA-F]{64})$"),
                    format: str = Query("json", pattern="^(?:json|raw)$")):
        """``block_id`` is a height (digits) or a block hash (64 hex digits);
        ``format=raw`` answers the encoded block (docs/FORMAT.md) as octet-stream."""
        if block_id.isdigit() and len(block_id) <= 20 and int(block_id) <= u64_max:
            key: int | bytes = int(block_id)
        else:
            key = _decode_hash(block_id, "block hash or height")
        found = await api.read(_block_height, api.ledger, key)
        if found is None:
            raise ApiError(404, "not_found", f"no block {block_id}")
        if format == "raw":
            return Response(bytes(found[1]), media_type=OCTET_STREAM)
        return await api.read(_block_out, *found)

    @app.get("/v1/status", response_model=StatusOut, tags=["chain"],
             summary="The chain, its tip and the node's queues")
    async def status() -> dict:
        node, config = api.node, api.config
        height, tip_hash = node.tip()
        return {"chain": config.name, "chain_id": config.chain_id, "asset": config.asset_code,
                "decimals": config.decimals, "height": height, "tip_hash": _show(tip_hash),
                "protocol_version": max(limits.protocol_versions), "version": __version__,
                "wire_connections": len(node.connections),
                "queued_records": node.queued_records,
                "groups_committed": node.groups_committed,
                "records_committed": node.records_committed, **api.ledger.health(),
                "network": _network_out(node)}


def _add_event_route(app: FastAPI, api: _Api) -> None:
    @app.get("/v1/events/blocks", tags=["chain"], summary="New blocks as server-sent events",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "one `block` event per block, id = height"},
                        503: _ERRORS[503]})
    async def block_events(request: Request,
                           from_height: int | None = Query(None, ge=0, le=u64_max)):
        """Blocks from ``from_height`` on (default: the next new block): those already
        there first, then each one as it is committed. A reconnecting EventSource resumes
        after its ``Last-Event-ID``. The stream ends when the node stops."""
        last_id = request.headers.get("last-event-id", "")
        if last_id.isdigit() and len(last_id) <= 20:
            from_height = int(last_id) + 1
        if from_height is None:
            from_height = api.ledger.height
        if api.stopping.is_set():
            raise ApiError(503, "shutting_down", "the node is stopping",
                           api.settings.retry_after_s)
        if api.streams >= api.settings.event_streams_max:
            raise ApiError(503, "overloaded", f"{api.streams} event streams are open; retry "
                           "later", api.settings.retry_after_s)
        return StreamingResponse(_block_stream(api, from_height), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})


async def _block_stream(api: _Api, next_height: int):
    """Yields events for blocks from ``next_height`` on until the node stops."""
    ledger, node = api.ledger, api.node
    api.streams += 1  # here, not in the route: a stream never started never ends either
    stopped = asyncio.ensure_future(api.stopping.wait())
    try:
        yield b"retry: 1000\n\n"
        while not api.stopping.is_set():
            committed = node.block_signal()  # before reading the height: nothing slips by
            while next_height < ledger.height and not api.stopping.is_set():
                data = await api.read(ledger.block, next_height)
                if data is None:
                    break
                yield _block_event(next_height, bytes(data))
                next_height += 1
            waiter = asyncio.ensure_future(committed.wait())
            try:
                done, _ = await asyncio.wait({waiter, stopped}, return_when=FIRST_COMPLETED,
                                             timeout=api.settings.event_ping_s)
            finally:
                waiter.cancel()  # also when the client went away and this task is cancelled
            if not done:
                yield b": ping\n\n"  # a quiet stream stays open through proxies
    finally:
        stopped.cancel()
        api.streams -= 1
