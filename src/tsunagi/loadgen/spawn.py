"""A node in a child process, for ``tsunagi loadgen --spawn``, benchmarks and crash tests."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path

from tsunagi.errors import NodeError
from tsunagi.loadgen.limits import node_start_timeout_s, node_stop_timeout_s
from tsunagi.loadgen.memory import memory_kib

__all__ = ["NodeProcess"]

_NODE_SCRIPT = """
import json, sys
from tsunagi.node.server import NodeSettings, run_node
run_node(sys.argv[1], sys.argv[2], int(sys.argv[3]), NodeSettings(**json.loads(sys.argv[4])),
         on_ready=lambda server: print(server.port, flush=True))
"""


class NodeProcess:
    """A node serving ``data_dir`` in a child process, for benchmarks and crash tests.

    ``prefix`` goes before the Python command (``["ip", "netns", "exec", "ns1"]`` runs the
    node in a network namespace). ``settings`` are NodeSettings fields.
    """

    def __init__(self, data_dir, host: str = "127.0.0.1", port: int = 0, *,
                 settings: dict | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.data_dir, self.host, self.port = Path(data_dir), host, port
        self.settings, self.prefix = dict(settings or {}), tuple(prefix)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout_s: float = node_start_timeout_s) -> NodeProcess:
        """Starts the node and waits until it listens; ``self.port`` is its port then."""
        command = [*self.prefix, sys.executable, "-c", _NODE_SCRIPT, str(self.data_dir),
                   self.host, str(self.port), json.dumps(self.settings)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.kill()
            raise NodeError(f"the node on {self.data_dir} did not start (exit code "
                            f"{self.process.returncode}); see its messages above")
        self.port = int(line)
        return self

    def __enter__(self) -> NodeProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout_s: float = node_stop_timeout_s) -> int | None:
        """SIGTERM, then waits; SIGKILL if it takes longer than ``timeout_s``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def rss_kib(self) -> int | None:
        memory = memory_kib(self.pid)
        return None if memory is None else memory[0]
