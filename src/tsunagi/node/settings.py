"""Settings of the node's REST API, shared by the app (node/rest.py) and the service that runs it
(node/service.py), so neither imports the other. The binary server's settings, NodeSettings,
live beside the server they tune (node/server.py), with their defaults in node/limits.py."""

from __future__ import annotations

from dataclasses import dataclass

from tsunagi.errors import ConfigError

__all__ = ["RestSettings"]


@dataclass(frozen=True)
class RestSettings:
    """Limits of the REST API (node/rest.py): each bounds what one client can make it hold."""

    # A JSON batch spells each byte as two hex digits: 65,536 signed records are about 26 MB.
    json_body_bytes_max: int = 32 * 1024 * 1024
    # Every other request body is one small JSON object.
    small_body_bytes_max: int = 64 * 1024
    # Open server-sent event streams; each costs a task and a read of every new block.
    event_streams_max: int = 256
    # A comment line this often keeps proxies from closing a quiet event stream.
    event_ping_s: float = 15.0
    # What a 503 asks the client to wait before retrying.
    retry_after_s: int = 1
    # How long a stopping node lets HTTP requests in flight finish before cancelling them.
    shutdown_grace_s: float = 5.0
    # Open HTTP connections and requests; past it uvicorn answers 503 at once.
    http_connections_max: int = 1024

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"rest setting {name} is a number > 0, got {value!r}")
