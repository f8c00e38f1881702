"""`tsunagi pow` run as a user runs it: the real console command in a subprocess.

Method: each run's printed header is checked with the library (check_pow, header_hash,
header_fields), a real mainnet header must give back its real nonce, and bad arguments must end
with exit code 2 and a one-line message rather than a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import bitcoin
from tsunagi import hashing

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_pow(*args: str, portable: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TSUNAGI_SHA256_PORTABLE", None)
    if portable:
        env["TSUNAGI_SHA256_PORTABLE"] = "1"
    return subprocess.run([sys.executable, "-m", "tsunagi", "pow", *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def check_mined(result: dict) -> bytes:
    """The printed header meets its target and agrees with the printed nonce and hash."""
    header = bytes.fromhex(result["header"])
    assert result["check_pow"] is True
    assert hashing.check_pow(header)
    version, prev, root, time, bits, nonce = hashing.header_fields(header)
    assert nonce == result["nonce"]
    assert f"0x{bits:08x}" == result["bits"]
    assert hashing.header_hash(header)[::-1].hex() == result["hash"]
    assert bitcoin.sha256d(header)[::-1].hex() == result["hash"]
    return header


@pytest.mark.parametrize("portable", [False, True])
def test_json_form_mines_a_fresh_header_with_16_zero_bits(portable):
    done = run_pow("--zero-bits", "16", "--json", portable=portable)
    assert done.returncode == EXIT_OK, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON object
    header = check_mined(result)
    assert int(result["hash"], 16) < 2**240  # 16 leading zero bits
    assert hashing.bits_to_target(hashing.header_fields(header)[4]) < 2**240
    assert result["backend"] == ("portable" if portable else hashing.backend())
    assert result["hashes"] >= 1 and result["threads"] >= 1


def test_plain_form_prints_the_same_fields():
    done = run_pow("--zero-bits", "16", "--threads", "1")
    assert done.returncode == EXIT_OK, done.stderr
    fields = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    assert fields["threads"] == "1"
    check_mined({"header": fields["header"], "nonce": int(fields["nonce"]),
                 "hash": fields["hash"], "bits": fields["bits"],
                 "check_pow": fields["check_pow"] == "True"})


@pytest.mark.parametrize("threads", ["1", "2"])
def test_real_header_gives_back_its_real_nonce(bitcoin_dir, threads):
    (block,) = bitcoin.read_blocks(bitcoin_dir / "277647.dat.bz2")
    blank = block.header[:76] + bytes(4)
    done = run_pow("--header", blank.hex(), "--start", str(block.nonce - 300_000),
                   "--count", "600000", "--threads", threads, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(done.stdout)
    assert result["nonce"] == block.nonce
    assert bytes.fromhex(result["header"]) == block.header
    assert result["hash"] == block.hash[::-1].hex()
    check_mined(result)


def test_range_without_a_nonce_exits_1_with_advice(bitcoin_dir):
    (block,) = bitcoin.read_blocks(bitcoin_dir / "277647.dat.bz2")
    done = run_pow("--header", block.header.hex(), "--start", str(block.nonce + 1),
                   "--count", "1000", "--json")
    assert done.returncode == EXIT_FAILED
    assert json.loads(done.stdout)["nonce"] is None
    assert "no nonce in the range" in done.stderr and "Traceback" not in done.stderr


BAD_ARGUMENTS = {
    "short header": (["--header", "00" * 79], "80 bytes"),
    "long header": (["--header", "00" * 81], "80 bytes"),
    "header not hex": (["--header", "zz" * 80], "must be hex"),
    "zero bits 0": (["--zero-bits", "0"], "--zero-bits"),
    "zero bits 256": (["--zero-bits", "256"], "--zero-bits"),
    "negative start": (["--start", "-1"], "--start"),
    "start past 2**32": (["--start", str(2**32)], "--start"),
    "bits not a number": (["--bits", "zz"], "--bits"),
    "header and bits": (["--header", "00" * 80, "--bits", "0x1d00ffff"], "not allowed"),
    "negative count": (["--zero-bits", "8", "--count", "-5"], "--count"),
    "count 0": (["--zero-bits", "8", "--count", "0"], "--count"),
    "count past 2**32": (["--zero-bits", "8", "--count", str(2**32 + 1)], "--count"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_a_message(name):
    args, message = BAD_ARGUMENTS[name]
    done = run_pow(*args)
    assert done.returncode == EXIT_USAGE
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_negative_bits_are_refused_with_a_message():
    done = run_pow("--bits", "0x1d80ffff")
    assert done.returncode == EXIT_FAILED
    assert "negative target" in done.stderr and "Traceback" not in done.stderr
