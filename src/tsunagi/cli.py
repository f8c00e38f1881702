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


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> str:
    """The key file passphrase: from the environment variable named, or asked on the terminal."""
    from tsunagi.errors import KeyFileError

    value = os.environ.get(args.passphrase_env)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise KeyFileError(f"no passphrase: set {args.passphrase_env} or run in a terminal")
    import getpass

    value = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != value:
        raise KeyFileError("the two passphrases differ; nothing was written")
    return value


def _account_number(ledger, text: str) -> int:
    """An account given as its number, or as an address owning exactly one account."""
    from tsunagi.errors import EncodingError

    if text.isdigit():
        return int(text)
    accounts = ledger.accounts_of(text)
    if len(accounts) != 1:
        raise EncodingError(f"address {text} owns {len(accounts)} accounts "
                            f"({', '.join(map(str, accounts)) or 'none'}): give the number")
    return accounts[0]


def cmd_keygen(args: argparse.Namespace) -> int:
    from tsunagi.core.address import encode_address
    from tsunagi.core.keyfile import save_key
    from tsunagi.core.keys import PrivateKey

    key = PrivateKey.generate()
    save_key(args.out, key, _passphrase(args, confirm=True), address_prefix=args.prefix)
    print(json.dumps({"key_file": str(args.out), "public_key": key.public_key.hex(),
                      "address": encode_address(key.public_key, args.prefix)}))
    return EXIT_OK


def _config_from_args(args: argparse.Namespace):
    from tsunagi.core.address import decode_address
    from tsunagi.core.amounts import parse_amount
    from tsunagi.core.config import ChainConfig
    from tsunagi.errors import EncodingError

    if args.config:
        with open(args.config, "rb") as handle:
            return ChainConfig.from_json(handle.read())
    allocations = []
    for item in args.alloc:
        address, _, amount = item.partition("=")
        if not amount:
            raise EncodingError(f"--alloc takes ADDRESS=AMOUNT, got {item!r}")
        allocations.append((decode_address(address, args.prefix),
                            parse_amount(amount, args.decimals)))
    return ChainConfig(
        name=args.name, chain_id=args.chain_id, asset_code=args.asset, decimals=args.decimals,
        issuers=tuple(decode_address(text, args.prefix) for text in args.issuer),
        allocations=tuple(allocations), address_prefix=args.prefix,
        genesis_time_s=int(time.time()), **({"bits": args.bits} if args.bits else {}))


def cmd_init(args: argparse.Namespace) -> int:
    from tsunagi.core.address import encode_address
    from tsunagi.core.config import genesis_accounts
    from tsunagi.ledger.ledger import Ledger

    config = _config_from_args(args)
    with Ledger.create(args.data, config) as ledger:
        accounts = {number: encode_address(key, config.address_prefix)
                    for number, key in enumerate(genesis_accounts(config), start=1)}
        print(json.dumps({"data": str(args.data), "chain": config.name,
                          "chain_id": config.chain_id,
                          "genesis_hash": ledger.tip_hash[::-1].hex(), "accounts": accounts}))
    return EXIT_OK


def _submit_one(ledger, record: bytes, key) -> dict:
    from tsunagi.core.codes import Result

    answer = ledger.submit(record, key.sign_record(record))
    code = Result(int(answer.codes[0]))
    result = {"code": code.name, "txid": answer.txids[0].tobytes()[::-1].hex(),
              "height": answer.height}
    if 0 in answer.originals:
        result["original_code"] = Result(answer.originals[0]).name
    if int(answer.opened[0]):
        result["account"] = int(answer.opened[0])
    return result


def _next_sequence(ledger, account: int) -> int:
    # Microseconds since the epoch: above any earlier sequence of this account, even from
    # another client, without asking the ledger for the last one first.
    return max(ledger.account(account).sequence + 1, time.time_ns() // 1000)


def cmd_open_account(args: argparse.Namespace) -> int:
    from tsunagi.core import records
    from tsunagi.core.keyfile import load_key
    from tsunagi.ledger.ledger import Ledger

    key = load_key(args.key, _passphrase(args))
    with Ledger.open(args.data) as ledger:
        record = records.open_account(ledger.config.chain_id, key.public_key,
                                      sequence=time.time_ns() // 1000)
        result = _submit_one(ledger, record, key)
    print(json.dumps(result))
    return EXIT_OK if result["code"] == "ok" else EXIT_FAILED


def cmd_send(args: argparse.Namespace) -> int:
    from tsunagi.core import records
    from tsunagi.core.amounts import parse_amount
    from tsunagi.core.keyfile import load_key
    from tsunagi.ledger.ledger import Ledger

    key = load_key(args.key, _passphrase(args))
    with Ledger.open(args.data) as ledger:
        config = ledger.config
        debit = _account_number(ledger, args.from_)
        credit = _account_number(ledger, args.to)
        record = records.transfer(config.chain_id, _next_sequence(ledger, debit), debit, credit,
                                  parse_amount(args.amount, config.decimals),
                                  key_slot=args.key_slot, user_data=args.user_data)
        result = _submit_one(ledger, record, key)
    print(json.dumps(result))
    return EXIT_OK if result["code"] == "ok" else EXIT_FAILED


def cmd_balance(args: argparse.Namespace) -> int:
    from tsunagi.core.address import encode_address
    from tsunagi.core.amounts import format_amount
    from tsunagi.ledger.ledger import Ledger

    with Ledger.open(args.data) as ledger:
        config = ledger.config
        numbers = ([int(args.account)] if args.account.isdigit()
                   else ledger.accounts_of(args.account))
        rows = []
        for number in numbers:
            info = ledger.account(number)
            held = sum(hold["amount"] for hold in ledger.holds(number)
                       if hold.get("status") == "open" and hold.get("payer") == number)
            rows.append({"account": number,
                         "address": encode_address(info.owner_key, config.address_prefix),
                         "balance": format_amount(info.balance, config.decimals),
                         "held": format_amount(held, config.decimals),
                         "asset": config.asset_code, "sequence": info.sequence})
    print(json.dumps(rows if len(rows) != 1 else rows[0]))
    return EXIT_OK if rows else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tsunagi.ledger.ledger import Ledger

    with Ledger.open(args.data) as ledger, Progress(transient=True) as progress:
        task = progress.add_task("verifying blocks", total=ledger.height)
        report = ledger.verify(lambda done, total: progress.update(task, completed=done))
    print(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_blocks(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tsunagi.core.block import decode_block
    from tsunagi.ledger.ledger import Ledger

    with Ledger.open(args.data) as ledger:
        last = ledger.height - 1 if args.last is None else min(args.last, ledger.height - 1)
        first = max(0, last - args.count + 1)
        table = Table("height", "hash", "time", "records", "failed", "batches")
        for height in range(last, first - 1, -1):
            block = decode_block(ledger.block(height))
            table.add_row(str(height), block.hash[::-1].hex()[:24] + "…",
                          time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(block.time)),
                          str(len(block)), str(int((block.codes != 0).sum())),
                          str(len(block.batches)))
    Console().print(table)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.table import Table

    from tsunagi.demo import run_demo

    console = Console()
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), TaskProgressColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = run_demo(args.data, accounts=args.accounts, transfers=args.transfers,
                          baseline_transfers=args.baseline, batch_size=args.batch,
                          progress=progress)
    table = Table(title=f"tsunagi demo: {result.accounts} accounts, signed transfers, "
                        "durable (fsync per block)")
    table.add_column("commit")
    table.add_column("transfers", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("transfers/s", justify="right")
    table.add_row("baseline (1 per block)", f"{result.baseline_transfers:,}",
                  f"{result.baseline_seconds:.2f}", f"{result.baseline_rate:,.0f}")
    table.add_row(f"batched ({result.batch_size:,} per block)", f"{result.batched_transfers:,}",
                  f"{result.batched_seconds:.2f}", f"{result.batched_rate:,.0f}")
    console.print(table)
    console.print(f"batched / baseline: {result.batched_rate / result.baseline_rate:.1f}x; "
                  f"{result.blocks} blocks; verify: {'ok' if result.verified else 'FAILED'} "
                  f"in {result.verify_seconds:.2f} s")
    console.print(f"chain kept in {result.directory}: try `tsunagi blocks {result.directory}`")
    return EXIT_OK if result.verified else EXIT_FAILED


def _add_ledger_commands(commands) -> None:
    def with_passphrase(parser):
        parser.add_argument("--passphrase-env", default="TSUNAGI_PASSPHRASE",
                            help="environment variable holding the key file passphrase "
                                 "(default TSUNAGI_PASSPHRASE; asked on the terminal if unset)")
        return parser

    keygen = with_passphrase(commands.add_parser("keygen", help="make a key file"))
    keygen.add_argument("out", help="key file to write (refuses to overwrite)")
    keygen.add_argument("--prefix", default="tsu", help="address prefix of the chain")
    keygen.set_defaults(handler=cmd_keygen)

    init = commands.add_parser("init", help="create a chain in a new data directory")
    init.add_argument("data", help="data directory (must not exist or be empty)")
    init.add_argument("--config", help="chain config JSON file (instead of the flags below)")
    init.add_argument("--name", default="dev")
    init.add_argument("--chain-id", type=_int, default=1)
    init.add_argument("--asset", default="TSU")
    init.add_argument("--decimals", type=int, default=2)
    init.add_argument("--issuer", action="append", default=[], help="issuer address")
    init.add_argument("--alloc", action="append", default=[], help="ADDRESS=AMOUNT at genesis")
    init.add_argument("--bits", type=_int, default=None, help="proof-of-work bits")
    init.add_argument("--prefix", default="tsu", help="address prefix")
    init.set_defaults(handler=cmd_init)

    opener = with_passphrase(commands.add_parser("open-account", help="open an account"))
    opener.add_argument("data")
    opener.add_argument("--key", required=True, help="key file of the new account's owner")
    opener.set_defaults(handler=cmd_open_account)

    send = with_passphrase(commands.add_parser("send", help="sign and commit a transfer"))
    send.add_argument("data")
    send.add_argument("--key", required=True, help="key file that signs")
    send.add_argument("--from", dest="from_", required=True, help="debit account or address")
    send.add_argument("--to", required=True, help="credit account or address")
    send.add_argument("--amount", required=True, help="amount in the asset's units, e.g. 12.50")
    send.add_argument("--key-slot", type=int, default=0, help="policy key slot (0: owner)")
    send.add_argument("--user-data", type=_int, default=0, help="a number for the payee")
    send.set_defaults(handler=cmd_send)

    balance = commands.add_parser("balance", help="balance of an account or address")
    balance.add_argument("data")
    balance.add_argument("account", help="account number or address")
    balance.set_defaults(handler=cmd_balance)

    verify = commands.add_parser("verify", help="re-check a whole chain")
    verify.add_argument("data")
    verify.set_defaults(handler=cmd_verify)

    blocks = commands.add_parser("blocks", help="list the newest blocks")
    blocks.add_argument("data")
    blocks.add_argument("--last", type=int, default=None, help="newest height to show")
    blocks.add_argument("--count", type=int, default=20)
    blocks.set_defaults(handler=cmd_blocks)

    demo = commands.add_parser(
        "demo", help="make a chain and commit batched and baseline transfers",
        description="Creates a chain on the embedded store (replacing an earlier demo's), "
                    "commits signed transfers one per block and in batches, prints both "
                    "rates and verifies the chain.")
    demo.add_argument("--data", default="demo-chain",
                      help="the demo's chain directory (default demo-chain)")
    demo.add_argument("--accounts", type=int, default=1000)
    demo.add_argument("--transfers", type=int, default=48_000, help="batched transfers")
    demo.add_argument("--baseline", type=int, default=500, help="transfers one per block")
    demo.add_argument("--batch", type=int, default=8000, help="transfers per batch")
    demo.set_defaults(handler=cmd_demo)


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
    _add_ledger_commands(commands)
    from tsunagi.node import loadgen, service

    service.register_commands(commands)
    loadgen.register_commands(commands)
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
    if args.handler is cmd_pow:
        if not 0 <= args.start < 2**32:
            parser.error("--start must be a 32-bit nonce (0 to 4294967295)")
        if not 1 <= args.count <= 2**32:
            parser.error("--count must be between 1 and 4294967296")
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
