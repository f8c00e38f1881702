"""The ``tsunagi`` command: a thin shell over the library, one library call and a printer each."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tsunagi import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _int(text: str) -> int:
    return int(text, 0)


def _fresh_header(bits: int) -> bytes:
    from tsunagi import hashing

    # A header nobody has mined: random previous hash and Merkle root, current time.
    return hashing.make_header(1, os.urandom(32), os.urandom(32), int(time.time()), bits, 0)


def _pow_bits(args: argparse.Namespace) -> int:
    from tsunagi import hashing

    if args.bits is not None:
        return args.bits
    return hashing.target_to_bits((1 << (256 - args.zero_bits)) - 1)


def cmd_pow(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from tsunagi import hashing

    if args.header:
        header = bytes.fromhex(args.header)
    else:
        header = _fresh_header(_pow_bits(args))
    version, prev, root, stamp, bits, _ = hashing.header_fields(header)
    expected = hashing.work_from_bits(bits)
    threads = args.threads or hashing.cpu_count()
    started = time.perf_counter()
    # Progress goes to stderr and only to a terminal, so --json and pipes stay clean.
    console = Console(stderr=True, quiet=args.json)
    with Live(console=console, transient=True, refresh_per_second=10) as live:

        def show(done: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            share = min(done / expected, 9.99) if expected else 0
            live.update(Text(
                f"mining bits=0x{bits:08x} on {threads} threads: {done:,} hashes "
                f"({share:.0%} of expected {expected:,}), {done / elapsed / 1e6:.2f} MH/s"
            ))

        search = hashing.NonceSearch(header, args.start, min(args.count, 2**32 - args.start))
        nonce = _run_search(search, threads, show)
    elapsed = time.perf_counter() - started
    done = search.hashes_done
    result = {"bits": f"0x{bits:08x}", "threads": threads, "hashes": done,
              "seconds": round(elapsed, 3), "hash_rate": round(done / elapsed),
              "backend": hashing.backend(), "nonce": nonce}
    if nonce is not None:
        mined = hashing.make_header(version, prev, root, stamp, bits, nonce)
        result.update(hash=hashing.header_hash(mined)[::-1].hex(), header=mined.hex(),
                      check_pow=hashing.check_pow(mined))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>10}: {value}")
    if nonce is None:
        print("no nonce in the range meets the target: widen --count or lower the difficulty",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_search(search, threads: int, show) -> int | None:
    """Runs a NonceSearch on a worker thread, redrawing progress until it ends."""
    import threading

    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(nonce=search.run(threads)), daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            show(search.hashes_done)
    except KeyboardInterrupt:
        search.cancel()
        worker.join()
        raise
    return outcome.get("nonce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsunagi", description="tsunagi: a performance-first ledger for Python")
    parser.add_argument("--version", action="version", version=f"tsunagi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    pow_ = commands.add_parser(
        "pow", help="mine a nonce for a header on all cores",
        description="Search the nonce of an 80-byte header (or of a fresh test header) until "
                    "its hash meets the target of its bits.")
    source = pow_.add_mutually_exclusive_group()
    source.add_argument("--header", help="80-byte header as hex (fields little-endian)")
    source.add_argument("--bits", type=_int, help="compact difficulty bits for a fresh header")
    source.add_argument("--zero-bits", type=int, default=26,
                        help="difficulty of a fresh header as leading zero bits (default 26: "
                             "a few seconds on 2 cores)")
    pow_.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    pow_.add_argument("--start", type=_int, default=0, help="first nonce to try")
    pow_.add_argument("--count", type=_int, default=2**32, help="nonces to try at most")
    pow_.add_argument("--json", action="store_true", help="print one JSON object")
    pow_.set_defaults(handler=cmd_pow)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "header", None):
        try:
            if len(bytes.fromhex(args.header)) != 80:
                parser.error("--header must be 80 bytes (160 hex digits)")
        except ValueError:
            parser.error("--header must be hex")
    if getattr(args, "zero_bits", None) is not None and not 1 <= args.zero_bits <= 255:
        parser.error("--zero-bits must be between 1 and 255")
    if getattr(args, "start", 0) < 0 or getattr(args, "start", 0) >= 2**32:
        parser.error("--start must be a 32-bit nonce")
    from tsunagi.errors import TsunagiError

    try:
        return args.handler(args)
    except TsunagiError as exc:
        print(f"tsunagi: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("tsunagi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
