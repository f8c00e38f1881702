"""``tsunagi node``: one process serving a ledger over the wire protocol, REST/JSON and metrics.

The binary server (:class:`NodeServer`), the REST app (uvicorn) and the Prometheus endpoint run
on one event loop (uvloop when installed), so REST submissions join the binary clients' groups
in the single writer. SIGINT or SIGTERM stops the node cleanly: HTTP stops taking requests and
lets those in flight finish, the writer commits and answers the group it holds, queued work is
answered ``shutting_down`` (never acknowledged, so a retry is safe), and the ledger is closed
with a fresh snapshot. Nothing acknowledged is lost.

Settings come from a config file (TOML, or JSON when the name ends in .json), and flags
override it. Relative paths in the file are taken from the file's folder::

    data = "chain"                  # the data directory (`tsunagi init` made it)
    listen = "127.0.0.1:7650"       # the binary protocol (docs/PROTOCOL.md)
    http = "127.0.0.1:7651"         # REST API, OpenAPI page at /docs, web pages at /
    tls_dev = true                  # HTTPS with a development certificate (or, for a real one:)
    # tls_cert = "cert.pem"         #   tls_cert and tls_key, PEM files
    # tls_key = "key.pem"
    metrics = true                  # /metrics on the http listener, or "HOST:PORT" of its own
    log_level = "info"

    [node]                          # NodeSettings: any field, e.g.
    group_records_max = 8192
    group_wait_ms = 2.0

    [rest]                          # RestSettings: any field, e.g.
    event_streams_max = 256

Every field of both tables is also a flag (``--group-wait-ms 1.5``).

While it serves, the node keeps ``node.json`` in the data directory: its pid and the address
clients reach it on, so a command that finds the directory in use can name that address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import socket
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsunagi.errors import ConfigError, StorageError, TsunagiError
from tsunagi.node.server import DEFAULT_PORT, NodeServer, NodeSettings, new_event_loop
from tsunagi.node.settings import RestSettings

__all__ = ["RestSettings", "Service", "ServiceConfig", "load_config", "main",
           "register_commands", "run_service"]

log = logging.getLogger("tsunagi.node.service")

DEFAULT_HTTP_PORT = DEFAULT_PORT + 1
EXIT_OK, EXIT_FAILED = 0, 1
LOG_LEVELS = ("debug", "info", "warning", "error")
# Pending connections the kernel keeps for each HTTP listener before accept().
HTTP_BACKLOG = 512
# In the data directory while a node serves it: its pid and the address to reach it on.
NODE_FILE = "node.json"


def connect_address(host: str, port: int) -> str:
    """HOST:PORT a client on this machine reaches a listener on (0.0.0.0 and :: as loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def no_chain_hint(data: str | Path) -> str | None:
    """For a data directory without a chain: the command that makes one (else None)."""
    from tsunagi.ledger.ledger import CONFIG_FILE

    if (Path(data) / CONFIG_FILE).is_file():
        return None
    return f"`tsunagi init {data} --alloc ADDRESS=AMOUNT` makes one"


def running_node_address(data: str | Path) -> str | None:
    """HOST:PORT of the running node that serves the data directory ``data``, or None."""
    try:
        document = json.loads((Path(data) / NODE_FILE).read_text())
        os.kill(int(document["pid"]), 0)  # a node killed without stopping left its file
        return str(document["node"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ServiceConfig:
    """Where one node keeps its data and listens, and its tunable limits."""

    data: Path
    listen: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT)
    http: tuple[str, int] | None = None  # REST API listener; None: no REST API
    metrics: bool | tuple[str, int] = False  # True: /metrics on the http listener
    node: NodeSettings = field(default_factory=NodeSettings)
    rest: RestSettings = field(default_factory=RestSettings)
    log_level: str = "warning"
    # Other nodes of the chain to dial and keep dialing (HOST:PORT each).
    peers: tuple[tuple[str, int], ...] = ()
    # Whether this node makes blocks: None mines when no peers are given (a node of its own),
    # and not when they are (a network has its miners, named with --mine).
    mine: bool | None = None
    mine_threads: int = 0  # nonce search threads; 0: every core
    # A consortium chain's validator: its key file (passphrase in the environment variable
    # named by validator_passphrase_env); no key: the node follows the validators.
    validator_key: Path | None = None
    validator_passphrase_env: str = "TSUNAGI_PASSPHRASE"
    byzantine: str | None = None  # a test mode of the validator ("equivocate")
    # HTTPS on the http listener: a certificate and its key (PEM files), or tls_dev for a
    # self-signed one for this machine that the node makes and keeps in the data directory.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_dev: bool = False
    # The code of the contracts the chain's config names, installed with this node:
    # (name, module:Class) pairs (tsunagi.contracts.chain.ChainContracts checks each hash).
    contracts: tuple[tuple[str, str], ...] = ()
    # The document vault beside the ledger (its service's keys and PIN store in DATA/vault/,
    # its pages under /vault on the http listener): the chain's config runs its contract.
    vault: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_dev or self.tls_cert is not None

    def _check_tls(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: the certificate and its "
                              "private key (PEM files)")
        if self.tls_dev and self.tls_cert is not None:
            raise ConfigError("--tls-dev makes a certificate of its own: give it, or "
                              "--tls-cert and --tls-key, not both")
        if self.vault and self.http is None:
            raise ConfigError("--vault serves its pages on the --http listener: set --http "
                              "too (with --tls-dev or --tls-cert: holders type PINs there)")
        if self.tls and self.http is None:
            raise ConfigError("TLS serves the --http listener over HTTPS: set --http too")

    @property
    def mines(self) -> bool:
        return not self.peers if self.mine is None else self.mine

    def __post_init__(self) -> None:
        if self.metrics is True and self.http is None:
            raise ConfigError("metrics = true serves /metrics on the http listener: set http "
                              "too, or give metrics a HOST:PORT of its own")
        self._check_tls()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level is one of {', '.join(LOG_LEVELS)}, "
                              f"got {self.log_level!r}")


def parse_address(text, what: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (loopback) as (host, port)."""
    text = str(text).strip()
    host, _, port = text.rpartition(":")
    if not host and not _:
        host, port = "127.0.0.1", text
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} is HOST:PORT (port 0..65535; 0 picks a free one), "
                          f"got {text!r}")
    return host, int(port)


def load_config(path: str | Path) -> dict:
    """A config file as a dict: JSON when the name ends in .json, TOML otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        document = json.loads(raw) if path.suffix.lower() == ".json" \
            else tomllib.loads(raw.decode())
    except OSError as exc:
        raise ConfigError(f"cannot read the node config {path}: {exc.strerror}") from exc
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the node config {path} is not valid "
                          f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") \
            from exc
    if not isinstance(document, dict):
        raise ConfigError(f"the node config {path} holds one table (object) of settings")
    data = document.get("data")
    if isinstance(data, str) and not Path(data).is_absolute():
        document["data"] = str(path.parent / data)
    return document


def _settings(cls, table, what: str):
    if table is None:
        return cls()
    if not isinstance(table, dict):
        raise ConfigError(f"[{what}] is a table of settings")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown [{what}] settings: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    return cls(**table)


def build_config(document: dict) -> ServiceConfig:
    """A ServiceConfig from a config document (a loaded file with flags merged in)."""
    known = {f.name for f in dataclasses.fields(ServiceConfig)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ConfigError(f"unknown node config keys: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    if not document.get("data"):
        raise ConfigError("no data directory: pass --data DIR or set data in the config")
    metrics = document.get("metrics", False)
    if not isinstance(metrics, bool):
        metrics = parse_address(metrics, "metrics")
    http = document.get("http")
    return ServiceConfig(
        data=Path(document["data"]),
        listen=parse_address(document.get("listen", DEFAULT_PORT), "listen"),
        http=None if http in (None, False, "") else parse_address(http, "http"),
        metrics=metrics,
        node=_settings(NodeSettings, document.get("node"), "node"),
        rest=_settings(RestSettings, document.get("rest"), "rest"),
        log_level=str(document.get("log_level", "warning")).lower(),
        peers=tuple(parse_address(peer, "peer") for peer in _peer_list(document)),
        mine=_optional_bool(document.get("mine"), "mine"),
        mine_threads=_count(document.get("mine_threads", 0), "mine_threads"),
        validator_key=Path(document["validator_key"]) if document.get("validator_key")
        else None,
        validator_passphrase_env=str(document.get("validator_passphrase_env",
                                                  "TSUNAGI_PASSPHRASE")),
        byzantine=_byzantine(document.get("byzantine")),
        tls_cert=_optional_path(document.get("tls_cert")),
        tls_key=_optional_path(document.get("tls_key")),
        tls_dev=bool(_optional_bool(document.get("tls_dev"), "tls_dev")),
        contracts=_contracts(document.get("contracts")),
        vault=bool(_optional_bool(document.get("vault"), "vault")))


def _contracts(value) -> tuple[tuple[str, str], ...]:
    """``--contract NAME=MODULE:CLASS`` flags (a list), or a config table name -> target."""
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, dict) else (
        str(item).partition("=")[::2] for item in value)
    found = tuple((str(name), str(target)) for name, target in pairs)
    if any(not name or not target for name, target in found):
        raise ConfigError("a contract is given as NAME=MODULE:CLASS (--contract), the code "
                          "this node installs for the chain config's contract NAME")
    return found


def _contract_runner(config: ServiceConfig):
    """The contract runtime of a chain whose config names contracts, with the code this node
    installs (--contract, and the vault's contract with --vault); None for a chain that names
    none."""
    from tsunagi.core.config import ChainConfig
    from tsunagi.ledger.ledger import CONFIG_FILE

    path = config.data / CONFIG_FILE
    if not path.exists():
        return None  # Ledger.open says what is wrong with the directory
    chain = ChainConfig.from_json(path.read_bytes())
    if not chain.contracts:
        return None
    from tsunagi.contracts.chain import ChainContracts

    installed = dict(config.contracts)
    if config.vault:
        from tsunagi.node.http.vault_node import VAULT_CONTRACT

        installed.setdefault(*VAULT_CONTRACT)
    return ChainContracts(chain, installed)


def _optional_path(value) -> Path | None:
    return Path(value) if value else None


def _byzantine(value) -> str | None:
    if value in (None, "", False):
        return None
    if value != "equivocate":
        raise ConfigError(f"byzantine is a test mode: equivocate, got {value!r}")
    return "equivocate"


def _peer_list(document: dict) -> list:
    peers = document.get("peers", [])
    if isinstance(peers, str):
        peers = [peers]
    if not isinstance(peers, (list, tuple)):
        raise ConfigError("peers is a list of HOST:PORT addresses")
    return list(peers)


def _optional_bool(value, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{what} is true or false, got {value!r}")


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} is a whole number >= 0, got {value!r}")
    return value


# --- running it ----------------------------------------------------------------------------------

def _bind(host: str, port: int, what: str) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=HTTP_BACKLOG)
    except OSError as exc:
        raise ConfigError(f"cannot listen for {what} on {host}:{port}: "
                          f"{exc.strerror or exc}; pick another address or port") from exc


def _http_server(app, rest_settings, tls: tuple[Path, Path] | None = None):
    import uvicorn

    class HttpServer(uvicorn.Server):
        """uvicorn on the node's loop: the node owns the signals, so uvicorn takes none."""

        @contextlib.contextmanager
        def capture_signals(self):
            yield

        def install_signal_handlers(self) -> None:  # uvicorn before 0.29
            pass

    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                            server_header=False,
                            timeout_graceful_shutdown=rest_settings.shutdown_grace_s,
                            limit_concurrency=rest_settings.http_connections_max,
                            ssl_certfile=None if tls is None else str(tls[0]),
                            ssl_keyfile=None if tls is None else str(tls[1]))
    return HttpServer(config)


class Service:
    """A NodeServer with its REST app and metrics on one loop: ``await start()``, then
    ``await stop()`` (``run_service`` does both around a wait for SIGINT or SIGTERM)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.rest_settings = config.rest
        self.node: NodeServer | None = None
        self.metrics = None
        self.app = None
        self.http_address: tuple[str, int] | None = None
        self.tls_files: tuple[Path, Path] | None = None  # (certificate, key) of HTTPS
        self.metrics_address: tuple[str, int] | None = None
        self._http: list[tuple[object, asyncio.Task]] = []
        self._ledger = None
        self.contracts = None  # the chain's contract runtime, when its config names contracts
        self.vault = None  # the vault beside the ledger (--vault)

    async def start(self) -> None:
        from tsunagi.ledger import Ledger

        loop = asyncio.get_running_loop()
        config = self.config
        # Opening replays the log after the newest snapshot: seconds at most, off the loop.
        self.contracts = _contract_runner(config)
        self._ledger = await loop.run_in_executor(None, functools.partial(
            Ledger.open, config.data, calls=self.contracts))
        try:
            await self._start_servers()
        except BaseException:
            await self.stop()
            raise

    def _consortium_node(self) -> NodeServer:
        from tsunagi.consensus.consortium import ConsortiumChain
        from tsunagi.node.peers import PeerSettings

        config = self.config
        chain = ConsortiumChain(self._ledger)
        key = None
        if config.validator_key is not None:
            key = _validator_key(config, chain.validators_at(chain.base))
        elif config.mine:
            raise ConfigError("--mine: blocks of a consortium chain are made by its "
                              "validators; give --validator-key FILE instead")
        return NodeServer(self._ledger, *config.listen, config.node, events=self.metrics,
                          chain=chain, peers=PeerSettings(peers=config.peers,
                                                          mines=key is not None),
                          validator_key=key, byzantine=config.byzantine,
                          contracts=self.contracts)

    async def _start_servers(self) -> None:
        config = self.config
        if config.metrics:
            from tsunagi.node.metrics import NodeMetrics

            self.metrics = NodeMetrics()
        from tsunagi.consensus.chain import Chain
        from tsunagi.node.peers import PeerSettings

        loop = asyncio.get_running_loop()
        if self._ledger.config.is_consortium:
            self.node = await loop.run_in_executor(None, self._consortium_node)
        else:
            chain = await loop.run_in_executor(None, Chain, self._ledger)
            threads = config.mine_threads or None
            self.node = NodeServer(self._ledger, *config.listen, config.node,
                                   events=self.metrics, chain=chain,
                                   peers=PeerSettings(peers=config.peers, mines=config.mines),
                                   seal=_seal(chain, threads), contracts=self.contracts)
        try:
            await self.node.start()
        except OSError as exc:
            self.node = None
            raise ConfigError(f"cannot listen on {config.listen[0]}:{config.listen[1]}: "
                              f"{exc.strerror or exc}; pick another address or port") from exc
        if config.http is not None:
            from tsunagi.node.http.pages import add_pages
            from tsunagi.node.rest import create_app

            self.tls_files = await loop.run_in_executor(None, self._tls_files)
            self.app = create_app(self.node, settings=self.rest_settings,
                                  metrics=self.metrics if config.metrics is True else None)
            add_pages(self.app)
            if config.vault:
                from tsunagi.node.http.vault_pages import add_vault_pages

                self.vault = await add_vault_pages(self.app, self.contracts, config.data)
            self.http_address = await self._serve(self.app, config.http, "HTTP",
                                                  self.tls_files)
        if isinstance(config.metrics, tuple):
            from tsunagi.node.metrics import metrics_app

            self.metrics_address = await self._serve(metrics_app(self.metrics),
                                                     config.metrics, "metrics")
        if self.metrics is not None:
            self.metrics.attach(self.node, self._http_connections)
        self._write_node_file()

    def _write_node_file(self) -> None:
        path = self.config.data / NODE_FILE
        temporary = path.with_name(f".{NODE_FILE}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"pid": os.getpid(), "node": connect_address(
            self.node.host, self.node.port)}) + "\n")
        os.replace(temporary, path)

    def _remove_node_file(self) -> None:
        path = self.config.data / NODE_FILE
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(path.read_text())["pid"] == os.getpid():
                path.unlink()

    def _tls_files(self) -> tuple[Path, Path] | None:
        from tsunagi.node.http import tls

        config = self.config
        if config.tls_dev:
            return tls.dev_certificate(config.data)
        if config.tls_cert is not None:
            tls.check_pair(config.tls_cert, config.tls_key)
            return config.tls_cert, config.tls_key
        return None

    def _http_connections(self) -> int:
        return sum(len(server.server_state.connections) for server, _ in self._http)

    async def _serve(self, app, address: tuple[str, int], what: str,
                     tls: tuple[Path, Path] | None = None) -> tuple[str, int]:
        sock = _bind(*address, what)
        bound = sock.getsockname()[:2]
        server = _http_server(app, self.rest_settings, tls)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        self._http.append((server, task))
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise ConfigError(f"the {what} server stopped while starting")
            await asyncio.sleep(0.005)
        return bound

    async def stop(self) -> None:
        """HTTP first (requests in flight finish), then the node and the ledger."""
        if self.app is not None:
            self.app.state.api.stopping.set()
        for server, _ in self._http:
            server.should_exit = True
        for _, task in self._http:
            try:
                await task
            except Exception:  # one server failing must not keep the ledger open
                log.exception("an HTTP server failed while stopping")
        self._http.clear()
        loop = asyncio.get_running_loop()
        if self.vault is not None:
            await self.vault.close()
            self.vault = None
        if self.app is not None:
            await loop.run_in_executor(None, self.app.state.api.close)
            self.app = None
        if self.node is not None:
            self._remove_node_file()
            await self.node.stop()  # closes the ledger too
        elif self._ledger is not None:
            await loop.run_in_executor(None, self._ledger.close)
        self._ledger = self.node = None

    def addresses(self) -> dict:
        """Where this node listens, as printed when it is ready."""
        node = self.node
        found = {"node": f"{node.host}:{node.port}", "chain": node.ledger.config.name,
                 "chain_id": node.chain_id, "height": node.ledger.height - 1}
        if self.http_address is not None:
            base = _url(self.http_address, "https" if self.tls_files else "http")
            found.update(http=base, docs=f"{base}/docs", pages=f"{base}/")
            if self.tls_files is not None:
                found["tls_cert"] = os.path.abspath(self.tls_files[0])  # to trust it by
            if self.config.metrics is True:
                found["metrics"] = f"{base}/metrics"
        if self.metrics_address is not None:
            found["metrics"] = f"{_url(self.metrics_address)}/metrics"
        return found


def _validator_key(config: ServiceConfig, validators):
    """The validator's key from its file, checked to be one of the chain's validators."""
    from tsunagi.core.keyfile import load_key

    passphrase = os.environ.get(config.validator_passphrase_env)
    if passphrase is None:
        raise ConfigError(f"--validator-key {config.validator_key}: set the passphrase in "
                          f"${config.validator_passphrase_env} (the node asks no terminal)")
    key = load_key(config.validator_key, passphrase)
    if validators.index_of(key.public_key) is None:
        log.warning("--validator-key %s: this key is not a validator of the next height; the "
                    "node follows the chain until an update (`tsunagi validators update`) "
                    "adds it", config.validator_key)
    return key


def _seal(chain, threads: int | None):
    """The miner's seal: the nonce search on ``threads`` threads, stopped when a block
    arrives that may beat the one being sealed."""
    from tsunagi.consensus.pow import ProofOfWork
    from tsunagi.core.block import BITS_OFFSET

    sealer = ProofOfWork()

    def seal(block) -> bool:
        bits = int.from_bytes(bytes(block[BITS_OFFSET:BITS_OFFSET + 4]), "little")
        return sealer.seal(block, bits, stop=chain.mining_stop, threads=threads)
    return seal


def _url(address: tuple[str, int], scheme: str = "http") -> str:
    host, port = address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def run_service(config: ServiceConfig,
                on_ready: Callable[[Service], None] | None = None) -> dict:
    """Serves until SIGINT or SIGTERM, then stops cleanly; returns the node's counts."""

    async def serve() -> dict:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)  # before start: no signal is missed
        service = Service(config)
        await service.start()
        node = service.node
        try:
            if on_ready is not None:
                on_ready(service)
            await stop.wait()
        finally:
            await service.stop()
        return {"groups": node.groups_committed, "records": node.records_committed}

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve())


# --- the command ---------------------------------------------------------------------------------

DESCRIPTION = ("Serve the chain in --data over the binary protocol, and optionally a REST/JSON "
               "API and Prometheus metrics, until SIGINT or SIGTERM.")
_SETTING_PREFIX = {"node": "node__", "rest": "rest__"}


# What each setting flag does, for `tsunagi node --help` (a test checks every field has one).
SETTING_HELP = {
    "group_records_max": "records in one commit group: one block, one fsync",
    "group_wait_ms": "how long a group waits for more after its first submission",
    "groups_in_flight": "groups begun and not yet durable: the next is built while one syncs",
    "queue_records_max": "records waiting for the writer; past half of it reading pauses, "
                         "past all of it submissions are answered overloaded",
    "connections_max": "open client connections",
    "inflight_per_connection_max": "unanswered requests per connection before it is paused",
    "frame_bytes_max": "largest frame either side accepts, in bytes",
    "frame_timeout_s": "seconds a started frame may take to arrive whole",
    "handshake_timeout_s": "seconds a new connection has to send its hello",
    "idle_timeout_s": "seconds a connection may stay silent with nothing in flight",
    "write_buffer_bytes_max": "unread answer bytes past which a client is dropped",
    "subscriptions_per_connection_max": "block subscriptions per connection",
    "reader_threads": "threads that serve queries",
    "scrub_rate_bytes_s": "bytes a second the background scrub re-reads committed blocks at "
                          "(0: no scrub)",
    "scrub_interval_s": "seconds from the start of one scrub pass to the next (0: no scrub)",
    "scrub_cpu_share": "share of one core the scrub may spend, e.g. 0.02 (0: no scrub)",
    "json_body_bytes_max": "largest JSON batch body, in bytes",
    "small_body_bytes_max": "largest other request body, in bytes",
    "event_streams_max": "open server-sent event streams",
    "event_ping_s": "seconds between keep-alive comments on a quiet event stream",
    "retry_after_s": "seconds a 503 answer asks the client to wait",
    "shutdown_grace_s": "seconds a stopping node lets HTTP requests finish",
    "http_connections_max": "open HTTP connections and requests; past it: 503",
}


def _add_setting_flags(parser: argparse.ArgumentParser, table: str, cls, title: str) -> None:
    group = parser.add_argument_group(title)
    for item in dataclasses.fields(cls):
        kind = float if isinstance(item.default, float) else int
        group.add_argument("--" + item.name.replace("_", "-"), type=kind, metavar="N",
                           dest=_SETTING_PREFIX[table] + item.name, default=None,
                           help=f"{SETTING_HELP.get(item.name, item.name)} "
                                f"(default {item.default})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tsunagi node``."""
    parser.add_argument("--config", help="node config file, TOML or JSON (flags override it)")
    parser.add_argument("--data", help="data directory of the chain (made by `tsunagi init`)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help=f"binary protocol listener (default 127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="REST API listener, OpenAPI page at /docs, web pages at / "
                             "(default: none; needs the http extra: pip install "
                             "'tsunagi[http]')")
    parser.add_argument("--tls-cert", metavar="FILE", default=None,
                        help="serve --http over HTTPS with this certificate (PEM; with "
                             "--tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", default=None,
                        help="the private key of --tls-cert (PEM, unencrypted)")
    parser.add_argument("--tls-dev", action="store_const", const=True, default=None,
                        help="serve --http over HTTPS with a self-signed development "
                             "certificate for localhost, 127.0.0.1 and ::1, made once and "
                             "kept in DATA/tls/ (its path is printed: trust it there)")
    parser.add_argument("--metrics", nargs="?", const=True, default=None, metavar="HOST:PORT",
                        help="serve Prometheus /metrics: on the --http listener, or on "
                             "HOST:PORT of its own (needs the http extra)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None)
    parser.add_argument("--peer", action="append", metavar="HOST:PORT", dest="peers",
                        default=None, help="another node of the chain to connect to and keep "
                                           "in sync with (repeat for several; config: peers)")
    parser.add_argument("--mine", action=argparse.BooleanOptionalAction, default=None,
                        help="make blocks from the records this node and its peers receive "
                             "(default: on without --peer, off with it)")
    parser.add_argument("--mine-threads", type=int, metavar="N", default=None,
                        help="threads searching nonces (default: every core)")
    parser.add_argument("--validator-key", metavar="FILE", default=None,
                        help="run as a validator of a consortium chain with this key file "
                             "(`tsunagi keygen`; its passphrase in $TSUNAGI_PASSPHRASE, or "
                             "the variable --validator-passphrase-env names)")
    parser.add_argument("--validator-passphrase-env", metavar="NAME", default=None,
                        help="environment variable holding the validator key's passphrase")
    parser.add_argument("--contract", action="append", metavar="NAME=MODULE:CLASS",
                        dest="contracts", default=None,
                        help="the code of contract NAME of the chain's config, installed with "
                             "this node (repeat for each; its source must hash to the "
                             "config's; config: [contracts] table)")
    parser.add_argument("--vault", action="store_const", const=True, default=None,
                        help="run the document vault beside the ledger: its confidentiality "
                             "service (keys and PIN store in DATA/vault/) and its pages under "
                             "/vault (needs --http; the chain's config runs the vault "
                             "contract)")
    parser.add_argument("--byzantine", choices=("equivocate",), default=None,
                        help=argparse.SUPPRESS)  # a test mode: a validator that equivocates
    _add_setting_flags(parser, "node", NodeSettings,
                       "node settings (also in the config file's [node] table)")
    _add_setting_flags(parser, "rest", RestSettings,
                       "REST API settings (also in the config file's [rest] table)")
    parser.set_defaults(handler=cmd_node)


def register_commands(subparsers) -> None:
    """Adds ``tsunagi node`` to the tsunagi command's subparsers."""
    parser = subparsers.add_parser(
        "node", help="serve a chain: binary protocol, REST API, metrics",
        description=DESCRIPTION)
    add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The config file (if any) with every flag given on the command line laid over it."""
    document = load_config(args.config) if args.config else {}
    for key in ("data", "listen", "http", "metrics", "log_level", "peers", "mine",
                "mine_threads", "validator_key", "validator_passphrase_env", "byzantine",
                "tls_cert", "tls_key", "tls_dev", "contracts", "vault"):
        if getattr(args, key) is not None:
            document[key] = getattr(args, key)
    for table, prefix in _SETTING_PREFIX.items():
        given = {name.removeprefix(prefix): value for name, value in vars(args).items()
                 if name.startswith(prefix) and value is not None}
        if given:
            existing = document.get(table) or {}
            if not isinstance(existing, dict):
                raise ConfigError(f"[{table}] is a table of settings")
            document[table] = {**existing, **given}
    return build_config(document)


def cmd_node(args: argparse.Namespace) -> int:
    from tsunagi.extras import require

    config = config_from_args(args)
    if config.http is not None or config.metrics:
        require("http", "node --http" if config.http is not None else "node --metrics")
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(service: Service) -> None:
        # One JSON line on stdout: scripts (and tests) read the bound ports from it.
        print(json.dumps(service.addresses()), flush=True)
        if config.tls_dev:
            print(f"tsunagi node: HTTPS with the development certificate "
                  f"{os.path.abspath(service.tls_files[0])} (self-signed for localhost, 127.0.0.1 and ::1): "
                  "trust it in your browser, or pass it to curl --cacert", file=sys.stderr,
                  flush=True)

    try:
        counts = run_service(config, on_ready=ready)
    except StorageError as exc:
        hint = no_chain_hint(config.data)
        if hint is None:
            raise
        raise StorageError(f"{exc}: {hint}") from exc
    print(f"tsunagi node: stopped cleanly after {counts['groups']} groups, "
          f"{counts['records']} records stored", file=sys.stderr, flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m tsunagi.node.service`` takes the flags of ``tsunagi node``."""
    parser = argparse.ArgumentParser(prog="tsunagi node", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TsunagiError as exc:
        print(f"tsunagi: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
