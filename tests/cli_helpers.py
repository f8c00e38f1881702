"""Helpers of the command line tests: run `python -m tsunagi`, make keys, run a real node.

Key files are written with a low scrypt cost (the file says it, so the CLI opens them in
milliseconds); everything else goes through the command line as a user types it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tsunagi.core.address import encode_address
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey

PASSPHRASE = "correct horse"
ENV = {**os.environ, "TSUNAGI_PASSPHRASE": PASSPHRASE}
ENV.pop("TSUNAGI_NODE", None)


def tsunagi(*args, env=None, check=True, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tsunagi", *map(str, args)],
                          capture_output=True, text=True, env=env or ENV, timeout=120,
                          cwd=cwd)
    if check:
        assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def answer(*args, **options):
    """The JSON a command prints."""
    return json.loads(tsunagi(*args, **options).stdout)


def make_key(path: Path) -> str:
    """A key file at ``path`` (cheap to open); returns its address."""
    key = PrivateKey.generate()
    save_key(path, key, PASSPHRASE, scrypt_n=2**10)
    return encode_address(key.public_key)


class NodeProcess:
    """`tsunagi node` serving a data directory on 127.0.0.1 (port 0) in its own process;
    ``flags`` are more of its flags (``"--http", "127.0.0.1:0"``)."""

    def __init__(self, data: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tsunagi", "node", "--data", str(data), "--listen",
             "127.0.0.1:0", *map(str, flags)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV)
        line = self.process.stdout.readline()  # one JSON line once it serves
        if not line:
            raise AssertionError(f"the node did not start: {self.process.stderr.read()}")
        self.ready = json.loads(line)
        self.address = self.ready["node"]

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                assert self.process.wait(60) == 0, self.process.stderr.read()
            finally:
                if self.process.poll() is None:
                    self.process.kill()
        self.process.stdout.close()
        self.process.stderr.close()
