"""The ``tsunagi`` command: a thin shell over the library, one library call and a printer each."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tsunagi import __version__, limits

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _int(text: str) -> int:
    return int(text, 0)


def _positive(text: str) -> int:
    value = int(text, 0)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {text}")
    return value


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

        search = hashing.NonceSearch(header, args.start,
                                     min(args.count, limits.nonce_end - args.start))
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


def _key(args: argparse.Namespace):
    from tsunagi.core.keyfile import load_key

    return load_key(args.key, _passphrase(args))


def _emit(args: argparse.Namespace, value) -> None:
    """Prints the answer as one JSON line, or with --print FIELD that field of it as text."""
    field = getattr(args, "print_field", None)
    if field is None:
        print(json.dumps(value))
        return
    for row in value if isinstance(value, list) else [value]:
        if field not in row:  # the work is done: show all of the answer, then say why
            print(json.dumps(value))
            raise _Reworded(f"--print {field}: the answer has no such field (it has "
                            f"{', '.join(row)})")
        item = row[field]
        print(item if isinstance(item, str) else json.dumps(item))


class _UsageError(Exception):
    """A command line that cannot work as given: exit 2 with the message."""


class _Reworded(Exception):
    """A library error in the words of the command line: exit 1 with the message."""


# --- where the chain is: a data directory or a node ---------------------------------------------

NODE_ENV = "TSUNAGI_NODE"


def _chain(args: argparse.Namespace):
    """The chain the command names: its data directory, or --node (or $TSUNAGI_NODE)."""
    from tsunagi.errors import LockedError, StorageError
    from tsunagi.node.access import LedgerAccess
    from tsunagi.node.service import no_chain_hint

    if args.data is not None:
        if args.node is not None:
            raise _UsageError("name the chain once: a data directory or --node HOST:PORT, "
                              "not both")
        try:
            return LedgerAccess(args.data)
        except LockedError as exc:
            raise _Reworded(_in_use(args, exc)) from exc
        except StorageError as exc:
            hint = no_chain_hint(args.data)
            raise _Reworded(f"{exc}: {hint}" if hint else str(exc)) from exc
    node = args.node or os.environ.get(NODE_ENV)
    if not node:
        raise _UsageError(f"name the chain: a data directory ({args.command_parser.prog} DIR "
                          f"...) or a running node (--node HOST:PORT, or set {NODE_ENV})")
    return _node_access(node)


def _node_access(node: str):
    from tsunagi.errors import NodeError
    from tsunagi.node.access import NodeAccess
    from tsunagi.node.service import parse_address

    host, port = parse_address(node, "--node")
    try:
        return NodeAccess(host, port, retries=2)
    except NodeError as exc:
        source = "--node" if node != os.environ.get(NODE_ENV) else NODE_ENV
        raise _Reworded(f"cannot reach a node at {host}:{port} ({exc}): start one with "
                        f"`tsunagi node --data DIR --listen {host}:{port}`, or check {source}"
                        ) from exc


def _in_use(args: argparse.Namespace, exc) -> str:
    from tsunagi.node.service import running_node_address

    address = running_node_address(args.data)
    if address is None:
        return (f"{exc} If it is a `tsunagi node`, add --node HOST:PORT (the address it "
                "listens on) instead of the data directory.")
    return (f"the data directory {args.data} is in use by a running node: add --node "
            f"{address} instead of the directory ({args.command_parser.prog} --node {address} "
            "...)")


def _not_owner(args: argparse.Namespace, exc) -> str:
    """KeyNotOwnerError in the words of the command line: which flag to change."""
    flag = getattr(args, "debit_flag", None)
    said = f"{args.key} ({exc.key_address}) {exc.what()}; {exc.owns()}"
    if exc.slot:
        return f"{said}: sign with the key that slot holds (--key), or pick another --key-slot"
    if flag is None:  # post and void debit the hold's authority
        return f"{said}: sign with the key of account {exc.account}, the hold's authority (--key)"
    if len(exc.owned) == 1:
        return f"{said}: use {flag} {exc.owned[0]}"
    if exc.owned:
        return f"{said}: use {flag} with one of them"
    return f"{said}: sign with the owner's key file (--key)"


# --- keys and chains ----------------------------------------------------------------------------

def cmd_keygen(args: argparse.Namespace) -> int:
    from tsunagi.core.address import encode_address
    from tsunagi.core.keyfile import save_key
    from tsunagi.core.keys import PrivateKey

    key = PrivateKey.generate()
    save_key(args.out, key, _passphrase(args, confirm=True), address_prefix=args.prefix)
    _emit(args, {"key_file": str(args.out), "public_key": key.public_key.hex(),
                 "address": encode_address(key.public_key, args.prefix)})
    return EXIT_OK


def _contracts_of(items: list[str]) -> tuple[tuple[str, bytes], ...]:
    """--contract NAME=MODULE:CLASS flags as a config's (name, source SHA-256) pairs."""
    from tsunagi.contracts.runtime import source_sha256
    from tsunagi.errors import ConfigError

    found = []
    for item in items:
        name, _, target = item.partition("=")
        if not name or not target:
            raise _UsageError(f"--contract takes NAME=MODULE:CLASS, got {item!r}")
        try:
            found.append((name, bytes.fromhex(source_sha256(target))))
        except ConfigError as exc:
            raise _Reworded(f"--contract {item}: {exc}") from exc
    return tuple(found)


def _config_from_args(args: argparse.Namespace):
    from tsunagi.core.address import decode_address
    from tsunagi.core.amounts import parse_amount
    from tsunagi.core.config import ChainConfig
    from tsunagi.errors import EncodingError

    if args.config:
        try:
            with open(args.config, "rb") as handle:
                return ChainConfig.from_json(handle.read())
        except OSError as exc:
            raise _Reworded(f"cannot read --config {args.config}: {exc.strerror}") from exc
    allocations, issuers = [], []
    for item in args.alloc:
        address, _, amount = item.partition("=")
        if not amount:
            raise _UsageError(f"--alloc takes ADDRESS=AMOUNT, got {item!r}")
        try:
            allocations.append((decode_address(address, args.prefix),
                                parse_amount(amount, args.decimals)))
        except EncodingError as exc:
            raise _Reworded(f"--alloc {item}: {exc}") from exc
    for address in args.issuer:
        try:
            issuers.append(decode_address(address, args.prefix))
        except EncodingError as exc:
            raise _Reworded(f"--issuer {address}: {exc}") from exc
    validators = []
    for item in (part for group in args.validators for part in group.split(",") if part):
        address, _, weight = item.partition("=")
        try:
            validators.append((decode_address(address, args.prefix),
                               int(weight) if weight else 1))
        except (EncodingError, ValueError) as exc:
            raise _Reworded(f"--validators {item}: {exc} (give ADDRESS or ADDRESS=WEIGHT, "
                            "the address of a `tsunagi keygen` key)") from exc
    consortium = {"validators": tuple(validators)} if validators else {}
    if args.block_wait_ms is not None:
        consortium["block_wait_ms"] = args.block_wait_ms
    if args.contract:
        consortium["contracts"] = _contracts_of(args.contract)
    return ChainConfig(
        name=args.name, chain_id=args.chain_id, asset_code=args.asset, decimals=args.decimals,
        issuers=tuple(issuers), allocations=tuple(allocations), address_prefix=args.prefix,
        genesis_time_s=int(time.time()), **({"bits": args.bits} if args.bits else {}),
        **consortium)


def cmd_init(args: argparse.Namespace) -> int:
    from tsunagi.core.address import encode_address
    from tsunagi.core.config import genesis_accounts
    from tsunagi.ledger.ledger import Ledger

    if not (args.config or args.alloc or args.issuer):
        raise _UsageError("a chain needs accounts at genesis: pass --alloc ADDRESS=AMOUNT "
                          "(funds for an address), --issuer ADDRESS (may mint), or --config "
                          "FILE (a chain config); make an address with `tsunagi keygen`")
    config = _config_from_args(args)
    with Ledger.create(args.data, config) as ledger:
        accounts = {number: encode_address(key, config.address_prefix)
                    for number, key in enumerate(genesis_accounts(config), start=1)}
        _emit(args, {"data": str(args.data), "chain": config.name, "chain_id": config.chain_id,
                     "genesis_hash": ledger.tip_hash[::-1].hex(), "accounts": accounts})
    return EXIT_OK


# --- commands that sign -------------------------------------------------------------------------

def _signed_out(signed, hold: bool = False) -> dict:
    """What a signing command prints: the record's code, txid, block, and what it made."""
    from tsunagi.core.codes import Result

    answer = signed.answer
    result = {"code": answer.code.name, "txid": answer.txids[0].tobytes()[::-1].hex(),
              "height": answer.height}
    if 0 in answer.originals:
        result["original_code"] = Result(answer.originals[0]).name
    if answer.account:
        result["account"] = answer.account
    if hold and answer.code == Result.ok:
        fields = signed.fields
        result["hold"] = f"{fields['debit_account']}:{fields['sequence']}"
    return result


def _sign(args: argparse.Namespace, operation, hold: bool = False) -> int:
    """Runs ``operation(chain, key)`` (one signed record) and prints its answer; with
    ``--confirmations N`` (against a node) once N blocks of its best chain hold it."""
    with _chain(args) as chain:
        wanted = getattr(args, "confirmations", 1)
        client = getattr(chain, "client", None)
        if wanted > 1 and client is None:  # said before anything is signed or sent
            raise _UsageError("--confirmations above 1 needs a node of a network "
                              "(--node HOST:PORT): a data directory's blocks are final")
        signed = operation(chain, _key(args))
        if wanted > 1 and signed.answer.height is not None:
            txid = bytes(signed.answer.txids[0])
            try:
                found = client.wait_confirmed(txid, wanted, timeout_s=args.confirm_timeout_s)
            except TimeoutError as exc:
                raise _Reworded(f"{exc}: it is committed (txid {txid[::-1].hex()}); wait "
                                "longer with --confirm-timeout-s, or ask later") from None
            signed.answer.height, signed.answer.block_hash = found.height, found.block_hash
    _emit(args, _signed_out(signed, hold))
    return EXIT_OK if signed.answer.code == 0 else EXIT_FAILED


def cmd_open_account(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.open_account(key))


def cmd_send(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.transfer(
        key, args.from_, args.to, args.amount, key_slot=args.key_slot,
        user_data=args.user_data))


def cmd_mint(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.mint(
        key, args.from_, args.to, args.amount, user_data=args.user_data))


def cmd_burn(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.burn(
        key, args.from_, args.amount, user_data=args.user_data))


def cmd_hold(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.hold(
        key, args.from_, args.to, args.amount, expiry_s=int(time.time()) + args.expires_in,
        authority=args.authority, hashlock=args.hashlock or b"", user_data=args.user_data),
        hold=True)


def cmd_post(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.post(
        key, *args.hold, args.amount, preimage=args.preimage or b""))


def cmd_void(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.void(key, *args.hold))


def cmd_policy_set(args: argparse.Namespace) -> int:
    expiry_s = 0 if args.expires_in is None else int(time.time()) + args.expires_in
    return _sign(args, lambda chain, key: chain.set_policy(
        key, args.account, args.slot, args.policy_key, amount_max=args.amount_max or 0,
        allowance=args.allowance or 0, expiry_s=expiry_s, recipients=tuple(args.recipient)))


def cmd_policy_revoke(args: argparse.Namespace) -> int:
    return _sign(args, lambda chain, key: chain.revoke_policy(key, args.account, args.slot))


# --- commands that read -------------------------------------------------------------------------

def cmd_balance(args: argparse.Namespace) -> int:
    from tsunagi.core.amounts import format_amount

    with _chain(args) as chain:
        config = chain.config
        rows = [{"account": row.account, "address": chain.address(row.owner_key),
                 "balance": format_amount(row.balance, config.decimals),
                 "held": format_amount(row.held, config.decimals),
                 "asset": config.asset_code, "sequence": row.sequence}
                for row in chain.balances(args.account)]
    if not rows:
        raise _Reworded(f"address {args.account} owns no account on chain {config.name!r}: "
                        "open one with `tsunagi open-account`")
    _emit(args, rows if len(rows) != 1 else rows[0])
    return EXIT_OK


def cmd_holds(args: argparse.Namespace) -> int:
    from tsunagi.core.amounts import format_amount

    with _chain(args) as chain:
        decimals = chain.config.decimals
        number = chain.account_number(args.account)
        found = chain.open_holds(number)
    holds = [{"hold": f"{h['payer']}:{h['sequence']}", "payer": h["payer"],
              "payee": h["payee"], "authority": h["authority"],
              "amount": format_amount(h["amount"], decimals), "expiry_s": h["expiry_s"],
              "hashlock": bytes(h["hashlock"]).hex() if any(h["hashlock"]) else None}
             for h in found.holds]
    _emit(args, {"account": number, "held": format_amount(found.held, decimals),
                 "open_holds": found.open_count, "holds": holds})
    return EXIT_OK


def _progress():
    """A progress bar on stderr where stderr is a terminal; none in a log or a pipe (a rich
    bar there leaves a stray empty line)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not console.is_terminal)


def cmd_verify(args: argparse.Namespace) -> int:

    # Progress goes to stderr, so the report is all that stdout carries.
    with _chain(args) as chain, \
            _progress() as progress:
        task = progress.add_task("verifying blocks", total=chain.height)
        report = chain.verify(lambda done, total: progress.update(task, completed=done))
        ledger = getattr(chain, "ledger", None)  # a data directory's: it records damage found
        damage = None if ledger is None else ledger.damage
        finality = _check_certificates(chain, progress) if report.ok else None
    print(report)
    if finality is not None:
        print(finality[1])
        if not finality[0]:
            return EXIT_FAILED
    if damage is not None:
        print(f"tsunagi: {damage.advice(ledger.directory)}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


def _check_certificates(chain, progress) -> tuple[bool, str] | None:
    """A consortium chain's commit certificates, checked as a light client checks them (from
    the headers and seals alone, trusting only the genesis block's validators): (ok, what)."""
    from tsunagi import hashing
    from tsunagi.consensus.certificate import ValidatorSet
    from tsunagi.consensus.light import LightClient, LightResult
    from tsunagi.core.block import decode_block
    from tsunagi.core.config import ChainConfig

    genesis = decode_block(chain.block(0))
    config = ChainConfig.from_json(bytes(genesis.extension))
    if not config.is_consortium:
        return None
    genesis_hash = hashing.header_hash(genesis.data[:80])
    client = LightClient(genesis_hash, genesis_hash, ValidatorSet.from_config(config))
    task = progress.add_task("checking certificates", total=chain.height)
    step = 4096
    for first in range(1, chain.height, step):
        blocks = [decode_block(chain.block(h)) for h in range(first, min(chain.height,
                                                                         first + step))]
        found = client.check_many(b"".join(bytes(b.data[:80]) for b in blocks),
                                  [bytes(b.seal) for b in blocks])
        if found.result is not LightResult.ok:
            return False, (f"certificates: block {found.height} fails: {found.result.name} "
                           "(it is not shown final by the validators of its height)")
        progress.update(task, completed=first + len(blocks))
    return True, f"certificates: ok, blocks 1..{chain.height - 1} final"


def cmd_repair(args: argparse.Namespace) -> int:
    from tsunagi.ledger.repair import repair_blocks

    source = _copy_source(args.source)
    try:
        with _progress() as progress:
            task = progress.add_task("checking blocks", total=None)
            report = repair_blocks(args.data, source.read,
                                   lambda done, total: progress.update(task, completed=done,
                                                                       total=total))
    finally:
        source.close()
    print(json.dumps({"data": str(args.data), "blocks": report.blocks,
                      "damaged": report.damaged, "repaired": report.repaired,
                      "failed": {str(h): why for h, why in report.failed.items()}}))
    if not report.damaged:
        print("tsunagi: no damaged block found", file=sys.stderr)
    elif report.failed:
        print(f"tsunagi: {len(report.failed)} damaged block(s) could not be repaired from "
              f"{args.source}: try another copy of this chain with --from", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


def _copy_source(text: str):
    """--from: a data directory (a backup, or another node's), or HOST:PORT of a node."""
    from pathlib import Path

    from tsunagi.errors import ConfigError
    from tsunagi.ledger.log import LogCopy

    if Path(text).is_dir():
        return LogCopy(text)
    if ":" not in text:
        raise ConfigError(f"--from {text}: no such directory, and not HOST:PORT of a node")
    from tsunagi.node.client import Client
    from tsunagi.node.service import parse_address

    host, port = parse_address(text, "--from")

    class _NodeCopy:
        def __init__(self) -> None:
            self.client = Client(host, port)

        def read(self, height: int) -> bytes | None:
            return self.client.block(height)

        def close(self) -> None:
            self.client.close()

    try:
        return _NodeCopy()
    except OSError as exc:
        raise ConfigError(f"--from {text}: cannot reach a node there ({exc})") from exc


def _add_repair_command(commands) -> None:
    repair = commands.add_parser(
        "repair", help="write damaged blocks again from a good copy of the chain",
        description="Checks every committed block of DATA and writes each damaged one again "
                    "from --from: a backup of the data directory, another node's data "
                    "directory, or HOST:PORT of a running node of the same chain. A copy is "
                    "taken only if it hashes to what the chain names. Stop the node first.")
    repair.add_argument("data", help="data directory with damaged blocks")
    repair.add_argument("--from", dest="source", required=True, metavar="DIR|HOST:PORT",
                        help="where to copy good blocks from")
    repair.set_defaults(handler=cmd_repair)


def cmd_blocks(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    with _chain(args) as chain:
        found = chain.blocks(args.last, args.count)
    table = Table("height", "hash", "time", "records", "failed", "batches")
    for height, block in found:
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


# --- the command line ---------------------------------------------------------------------------

def _positive(text: str) -> int:
    value = _int_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _height(text: str) -> int:
    value = _int_argument(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a height is 0 or more, got {text}")
    return value


def _int_argument(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration_s(text: str) -> int:
    """Seconds, as a number (3600) or a duration (90s, 30m, 1h, 2d, 1w, 1h30m)."""
    import re

    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:\d+[smhdw])+", text) and re.findall(r"(\d+)([smhdw])", text)
    if not parts:
        raise argparse.ArgumentTypeError(
            f"a duration is seconds (3600) or a number with s, m, h, d or w (90s, 1h30m, 2d), "
            f"got {text!r}")
    return sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _hex32(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise argparse.ArgumentTypeError(f"32 bytes as 64 hex digits, got {text!r}")
    return value


def _hold_name(text: str) -> tuple[int, int]:
    payer, _, sequence = text.partition(":")
    if not (payer.isdigit() and sequence.isdigit()):
        raise argparse.ArgumentTypeError(
            f"a hold is PAYER:SEQUENCE, as `tsunagi hold` prints it, got {text!r}")
    return int(payer), int(sequence)


def _slot(text: str) -> int:
    value = _int_argument(text)
    if not 1 <= value <= 7:
        raise argparse.ArgumentTypeError(f"a policy key slot is 1..7, got {text}")
    return value


def _key_slot(text: str) -> int:
    value = _int_argument(text)
    if not 0 <= value <= 7:
        raise argparse.ArgumentTypeError(f"a key slot is 0 (the owner key) or 1..7, got {text}")
    return value


def _with_passphrase(parser):
    parser.add_argument("--passphrase-env", default="TSUNAGI_PASSPHRASE",
                        help="environment variable holding the key file passphrase "
                             "(default TSUNAGI_PASSPHRASE; asked on the terminal if unset)")
    return parser


def _with_print(parser):
    parser.add_argument("--print", dest="print_field", metavar="FIELD",
                        help="print only FIELD of the JSON answer, as text (for scripts: "
                             "ALICE=$(tsunagi keygen alice.key --print address))")
    return parser


def _with_chain(parser, *rest):
    """DATA (the chain's directory), or --node HOST:PORT / $TSUNAGI_NODE; then ``rest``."""
    parser.add_argument("data", nargs="?", metavar="DATA",
                        help="data directory of the chain (leave it out with --node)")
    for name, help_text in rest:
        parser.add_argument(name, metavar=name.upper(), help=help_text)
    parser.add_argument("--node", metavar="HOST:PORT",
                        help="talk to a running `tsunagi node` instead of opening DATA "
                             f"(default ${NODE_ENV} when no DATA is given)")
    parser.set_defaults(command_parser=parser)
    return parser


def _signing(commands, name: str, help_text: str, handler, debit_flag: str | None = "--from",
             key_help: str = "key file that signs"):
    parser = _with_print(_with_passphrase(_with_chain(commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."))))
    parser.add_argument("--key", required=True, help=key_help)
    parser.set_defaults(handler=handler, debit_flag=debit_flag)
    return parser


def _user_data(parser) -> None:
    parser.add_argument("--user-data", type=_int, default=0, metavar="N",
                        help="a number stored with the record, e.g. an invoice number")


def _add_keys_and_chains(commands) -> None:
    keygen = _with_print(_with_passphrase(commands.add_parser(
        "keygen", help="make a key file", description="Make a new key and save it encrypted "
                                                      "under a passphrase; print its address.")))
    keygen.add_argument("out", help="key file to write (refuses to overwrite)")
    keygen.add_argument("--prefix", default="tsu", help="address prefix of the chain")
    keygen.set_defaults(handler=cmd_keygen, command_parser=keygen)

    init = _with_print(commands.add_parser(
        "init", help="create a chain in a new data directory",
        description="Create a chain: its genesis block funds --alloc addresses and names "
                    "--issuer addresses (or a --config file says all of it)."))
    init.add_argument("data", help="data directory (must not exist or be empty)")
    init.add_argument("--config", help="chain config JSON file (instead of the flags below)")
    init.add_argument("--name", default="dev", help="the chain's name (default dev)")
    init.add_argument("--chain-id", type=_int, default=1, help="chain id (default 1)")
    init.add_argument("--asset", default="TSU", help="asset code (default TSU)")
    init.add_argument("--decimals", type=int, default=2,
                      help="decimals of the asset's amounts (default 2: 12.50)")
    init.add_argument("--issuer", action="append", default=[], metavar="ADDRESS",
                      help="an issuer: its account may mint and burn (repeat for more)")
    init.add_argument("--alloc", action="append", default=[], metavar="ADDRESS=AMOUNT",
                      help="an account funded at genesis (repeat for more)")
    init.add_argument("--bits", type=_int, default=None, help="proof-of-work bits")
    init.add_argument("--validators", action="append", default=[],
                      metavar="ADDRESS[=WEIGHT],...",
                      help="make a consortium chain: these keys' validators agree on every "
                           "block (BFT, final at once; weight 1 unless given; one validator "
                           "is the development mode). Run each with `tsunagi node "
                           "--validator-key FILE`")
    init.add_argument("--contract", action="append", default=[], metavar="NAME=MODULE:CLASS",
                      help="a contract the chain runs, named by the SHA-256 of its source "
                           "(repeat for more; its nodes install the same code with `tsunagi "
                           "node --contract NAME=MODULE:CLASS`)")
    init.add_argument("--block-wait-ms", type=int, default=None, metavar="MS",
                      help="how long a block waits to fill before it is cut (default 100)")
    init.add_argument("--prefix", default="tsu", help="address prefix (default tsu)")
    init.set_defaults(handler=cmd_init, command_parser=init)


def _add_signing_commands(commands) -> None:
    _signing(commands, "open-account", "open an account owned by a key", cmd_open_account,
             key_help="key file of the new account's owner")

    send = _signing(commands, "send", "sign and commit a transfer", cmd_send)
    send.add_argument("--from", dest="from_", required=True, metavar="ACCOUNT",
                      help="debit account or address")
    send.add_argument("--to", required=True, metavar="ACCOUNT", help="credit account or address")
    send.add_argument("--amount", required=True, help="amount in the asset's units, e.g. 12.50")
    send.add_argument("--key-slot", type=_key_slot, default=0, metavar="SLOT",
                      help="0: the owner key signs (default); 1..7: the policy key of that slot")
    send.add_argument("--confirmations", type=_positive, default=1, metavar="N",
                      help="answer once N blocks of the node's best chain hold the transfer or "
                           "build on its block (default 1: once it is in one)")
    send.add_argument("--confirm-timeout-s", type=float, default=600.0, metavar="S",
                      help="give up waiting for --confirmations after S seconds (default 600)")
    _user_data(send)

    mint = _signing(commands, "mint", "make new units for an account (issuer key)", cmd_mint)
    mint.add_argument("--from", dest="from_", required=True, metavar="ACCOUNT",
                      help="the issuer's account")
    mint.add_argument("--to", required=True, metavar="ACCOUNT",
                      help="account or address that gets the units")
    mint.add_argument("--amount", required=True, help="amount in the asset's units")
    _user_data(mint)

    burn = _signing(commands, "burn", "destroy units of an issuer's own balance", cmd_burn)
    burn.add_argument("--from", dest="from_", required=True, metavar="ACCOUNT",
                      help="the issuer's account")
    burn.add_argument("--amount", required=True, help="amount in the asset's units")
    _user_data(burn)

    hold = _signing(commands, "hold", "put an amount on hold for a payee until posted, "
                    "voided or expired", cmd_hold)
    hold.add_argument("--from", dest="from_", required=True, metavar="ACCOUNT",
                      help="payer account or address")
    hold.add_argument("--to", required=True, metavar="ACCOUNT", help="payee account or address")
    hold.add_argument("--amount", required=True, help="amount in the asset's units")
    hold.add_argument("--expires-in", type=_duration_s, required=True, metavar="DURATION",
                      help="seconds or a duration (90s, 30m, 1h, 2d): then it returns to the "
                           "payer")
    hold.add_argument("--authority", metavar="ACCOUNT",
                      help="the account whose key posts or voids it (default: the payee)")
    hold.add_argument("--hashlock", type=_hex32, metavar="HEX",
                      help="SHA-256 of a 32-byte preimage (64 hex digits): posting then needs "
                           "the preimage")
    _user_data(hold)

    post = _signing(commands, "post", "pay a hold (or part of it) to its payee", cmd_post,
                    debit_flag=None, key_help="key file of the hold's authority")
    post.add_argument("--hold", type=_hold_name, required=True, metavar="PAYER:SEQUENCE",
                      help="the hold, as `tsunagi hold` prints it")
    post.add_argument("--amount", help="amount to pay (default: all of it); the rest returns "
                                       "to the payer")
    post.add_argument("--preimage", type=_hex32, metavar="HEX",
                      help="the 32-byte preimage of a hashlocked hold (64 hex digits)")

    void = _signing(commands, "void", "return a hold to its payer", cmd_void,
                    debit_flag=None, key_help="key file of the hold's authority")
    void.add_argument("--hold", type=_hold_name, required=True, metavar="PAYER:SEQUENCE",
                      help="the hold, as `tsunagi hold` prints it")
    _add_policy_commands(commands)


def _add_policy_commands(commands) -> None:
    policy = commands.add_parser(
        "policy", help="set or revoke a policy key: another key that may send from an account",
        description="A policy key in slot 1..7 of an account may sign transfers from it "
                    "(send --key-slot N), within the limits set here.")
    actions = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    owner_help = "key file of the account's owner"
    put = _signing(actions, "set", "let a key send from an account, within limits",
                   cmd_policy_set, debit_flag="--account", key_help=owner_help)
    put.add_argument("--account", required=True, help="the account (number or address)")
    put.add_argument("--slot", type=_slot, required=True, help="policy key slot 1..7")
    put.add_argument("--policy-key", required=True, metavar="ADDRESS",
                     help="address of the key that may sign")
    put.add_argument("--amount-max", metavar="AMOUNT",
                     help="largest amount per transfer (default: no limit)")
    put.add_argument("--allowance", metavar="AMOUNT",
                     help="total it may send (default: no limit)")
    put.add_argument("--expires-in", type=_duration_s, metavar="DURATION",
                     help="seconds or a duration (30m, 1h, 7d) (default: never)")
    put.add_argument("--recipient", action="append", default=[], metavar="ACCOUNT",
                     help="an account it may pay (repeat, up to 4; default: any)")
    revoke = _signing(actions, "revoke", "empty a policy key slot", cmd_policy_revoke,
                      debit_flag="--account", key_help=owner_help)
    revoke.add_argument("--account", required=True, help="the account (number or address)")
    revoke.add_argument("--slot", type=_slot, required=True, help="policy key slot 1..7")


def _add_reading_commands(commands) -> None:
    balance = _with_print(_with_chain(
        commands.add_parser("balance", help="balance and held amount of an account or address",
                            description="Balance, held amount and sequence of an account, or "
                                        "of every account an address owns."),
        ("account", "account number or address")))
    balance.set_defaults(handler=cmd_balance)

    holds = _with_print(_with_chain(
        commands.add_parser("holds", help="open holds an account pays, receives or resolves",
                            description="The open holds naming an account, oldest first."),
        ("account", "account number or address")))
    holds.set_defaults(handler=cmd_holds)

    verify = _with_chain(commands.add_parser(
        "verify", help="re-check a whole chain",
        description="Re-execute the chain from genesis: hashes, links, work, Merkle roots, "
                    "signatures and result codes. With --node the blocks are downloaded and "
                    "checked here, trusting nothing the node says."))
    verify.set_defaults(handler=cmd_verify)

    blocks = _with_chain(commands.add_parser("blocks", help="list the newest blocks"))
    blocks.add_argument("--last", type=_height, default=None, metavar="HEIGHT",
                        help="newest height to show (default: the tip)")
    blocks.add_argument("--count", type=_positive, default=20, metavar="N",
                        help="how many blocks (default 20)")
    blocks.set_defaults(handler=cmd_blocks)


def _add_ledger_commands(commands) -> None:
    _add_keys_and_chains(commands)
    _add_signing_commands(commands)
    _add_reading_commands(commands)

    from tsunagi.connect.commands import register_commands as register_connect

    def commit_demo(demo) -> None:
        demo.add_argument("--data", default="demo-chain",
                          help="the demo's chain directory (default demo-chain)")
        demo.add_argument("--accounts", type=_positive, default=1000)
        demo.add_argument("--transfers", type=_positive, default=48_000,
                          help="batched transfers")
        demo.add_argument("--baseline", type=_positive, default=500,
                          help="transfers one per block")
        demo.add_argument("--batch", type=_positive, default=8000, help="transfers per batch")
        demo.set_defaults(handler=cmd_demo)

    def run_connection(args: argparse.Namespace) -> int:
        from tsunagi.node.connection import main

        return main(["--config", args.config])
    register_connect(commands, commit_demo, run_connection)


def _validators_client(args: argparse.Namespace):
    from tsunagi.node.client import Client
    from tsunagi.node.service import parse_address

    node = args.node or os.environ.get(NODE_ENV)
    if not node:
        raise _UsageError(f"name a node of the consortium chain: --node HOST:PORT (or set "
                          f"{NODE_ENV})")
    host, port = parse_address(node, "--node")
    return Client(host, port)


def _validator_set(client):
    """(chain id: the genesis hash, height the set decides, the set)."""
    from tsunagi import hashing
    from tsunagi.consensus.certificate import ValidatorSet
    from tsunagi.errors import NodeError

    try:
        found = client.validators()
    except NodeError as exc:
        raise _Reworded(f"{exc}: --node must name a node of a consortium chain") from exc
    genesis = client.block(0)
    return hashing.header_hash(genesis[:80]), found.height, \
        ValidatorSet.decode(found.validator_set)


def _update_fields(args: argparse.Namespace, chain_prefix: str) -> tuple[bytes, int, int]:
    from tsunagi.core.address import decode_address
    from tsunagi.errors import EncodingError

    try:
        key = decode_address(args.validator, chain_prefix)
    except EncodingError as exc:
        raise _Reworded(f"--validator {args.validator}: {exc}") from exc
    return key, args.weight, args.effective_height


def cmd_validators(args: argparse.Namespace) -> int:
    from tsunagi.consensus.validators import sign_update
    from tsunagi.core.address import encode_address
    from tsunagi.core.entries import ValidatorUpdate, encode_entries
    from tsunagi.core.keyfile import load_key

    with _validators_client(args) as client:
        chain_id, height, validators = _validator_set(client)
        if args.action == "show":
            _emit(args, {"height": height, "total_weight": validators.total, "validators": [
                {"index": n, "address": encode_address(v.key, args.prefix), "weight": v.weight}
                for n, v in enumerate(validators.validators)]})
            return EXIT_OK
        if not args.validator or args.effective_height is None:
            raise _UsageError(f"validators {args.action} needs --validator ADDRESS and "
                              "--effective-height HEIGHT")
        key, weight, effective = _update_fields(args, args.prefix)
        approvals = []
        for path in args.approver_key or ():
            approver = load_key(path, _passphrase(args))
            index = validators.index_of(approver.public_key)
            if index is None:
                raise _Reworded(f"--approver-key {path}: not a validator of height {height}")
            approvals.append((index, sign_update(approver, chain_id, key, weight, effective)))
        for item in args.approval or ():
            index, _, signature = item.partition(":")
            try:
                approvals.append((int(index), bytes.fromhex(signature)))
            except ValueError as exc:
                raise _UsageError(f"--approval takes INDEX:SIGNATURE_HEX, got {item!r}") from exc
        if args.action == "approve":
            _emit(args, [{"index": i, "approval": f"{i}:{sig.hex()}"} for i, sig in approvals])
            return EXIT_OK
        entry = ValidatorUpdate(key, weight, effective, tuple(sorted(approvals)))
        from tsunagi.errors import NodeError

        try:
            final = client.submit_entries(encode_entries([entry]))
        except NodeError as exc:
            raise _Reworded(f"the validator refused the update: {exc}") from exc
        _emit(args, {"height": final.height, "block_hash": bytes(final.block_hash)[::-1].hex(),
                     "validator": args.validator, "weight": weight,
                     "effective_height": effective})
    return EXIT_OK


def _add_validators_command(commands) -> None:
    parser = _with_print(_with_passphrase(commands.add_parser(
        "validators", help="show or change a consortium chain's validators",
        description="show: the set that decides the next height. approve: sign a change with "
                    "--approver-key files (print INDEX:SIGNATURE for whoever submits it). "
                    "update: submit a change (a key's new weight, 0 to remove it, from "
                    "--effective-height on) approved by validators holding more than two "
                    "thirds of the weight; it answers once a final block holds it.")))
    parser.add_argument("action", choices=("show", "approve", "update"))
    parser.add_argument("--node", metavar="HOST:PORT", help="a validator of the chain")
    parser.add_argument("--validator", metavar="ADDRESS", help="the key whose weight changes")
    parser.add_argument("--weight", type=int, default=1, help="its new weight; 0 removes it")
    parser.add_argument("--effective-height", type=_height, metavar="HEIGHT",
                        help="the first height it holds: at least two after the block "
                             "that records it")
    parser.add_argument("--approver-key", action="append", metavar="FILE",
                        help="a validator's key file that approves (repeat)")
    parser.add_argument("--approval", action="append", metavar="INDEX:SIGNATURE",
                        help="an approval signed elsewhere (`validators approve`)")
    parser.add_argument("--prefix", default="tsu", help="address prefix (default tsu)")
    parser.set_defaults(handler=cmd_validators, command_parser=parser)


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
    pow_.add_argument("--count", type=_int, default=limits.nonce_end, help="nonces to try at most")
    pow_.add_argument("--json", action="store_true", help="print one JSON object")
    pow_.set_defaults(handler=cmd_pow)
    _add_ledger_commands(commands)
    _add_validators_command(commands)
    _add_repair_command(commands)
    from tsunagi.loadgen.cli import register_commands as register_loadgen
    from tsunagi.node import service

    service.register_commands(commands)
    register_loadgen(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "header", None):
        try:
            if len(bytes.fromhex(args.header)) != limits.header_bytes:
                parser.error("--header must be 80 bytes (160 hex digits)")
        except ValueError:
            parser.error("--header must be hex")
    if getattr(args, "zero_bits", None) is not None and not 1 <= args.zero_bits <= 255:
        parser.error("--zero-bits must be between 1 and 255")
    if args.handler is cmd_pow:
        if not 0 <= args.start < limits.nonce_end:
            parser.error("--start must be a 32-bit nonce (0 to 4294967295)")
        if not 1 <= args.count <= limits.nonce_end:
            parser.error("--count must be between 1 and 4294967296")
    from tsunagi.errors import KeyNotOwnerError, TsunagiError

    try:
        return args.handler(args)
    except _UsageError as exc:
        getattr(args, "command_parser", parser).error(str(exc))
    except KeyNotOwnerError as exc:
        print(f"tsunagi: {_not_owner(args, exc)}", file=sys.stderr)
        return EXIT_FAILED
    except (TsunagiError, _Reworded) as exc:
        print(f"tsunagi: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("tsunagi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
