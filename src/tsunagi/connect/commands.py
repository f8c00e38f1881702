"""The ``tsunagi demo`` and ``tsunagi connect`` commands (registered by :mod:`tsunagi.cli`).

``tsunagi demo`` runs Fujitsu's ConnectionChain prototypes on the embedded store and prints
each transfer's trail as a table; ``tsunagi connect`` lists what a deployment's connection
chain holds (chains, rules, transfers, one transfer's trail and proofs), makes transfers and
adds rules as its operator, and serves the operators' REST API (``serve``, with OpenAPI).
"""

from __future__ import annotations

import argparse
import json
import secrets
import time

from tsunagi.errors import TsunagiError

__all__ = ["register_commands"]

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_DIRECTORY = "demo-connect"


def _short(hex_text: str, width: int = 12) -> str:
    return hex_text[:width] + "…" if len(hex_text) > width else hex_text or "—"


def _when(seconds: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _result_name(code: int) -> str:
    from tsunagi.core.codes import Result

    try:
        return Result(code).name
    except ValueError:
        return f"code {code}"


def trail_table(transfer: dict, title: str | None = None):
    """A transfer's trail as a rich Table: one row per step, where it is proven."""
    from rich.table import Table

    first = transfer["trail"][0]["time_s"] if transfer["trail"] else 0
    table = Table(title=(title or f"transfer {transfer.get('id')}: {transfer['state']}") +
                  time.strftime(" (%Y-%m-%d, times UTC)", time.gmtime(first)),
                  title_justify="left")
    for name, justify in (("#", "right"), ("step", "left"), ("chain", "left"),
                          ("txid", "left"), ("height", "right"), ("block", "left"),
                          ("time", "left")):
        # The step's name and the time in full; the hashes give way on a narrow terminal.
        whole = name in ("step", "time", "#", "height")
        table.add_column(name, justify=justify, no_wrap=whole, min_width=12 if name == "step"
                         else None)
    for step in transfer["trail"]:
        table.add_row(str(step["n"]), step["step"], step["chain_name"],
                      _short(step["txid"], 10), str(step["height"]),
                      _short(step["block_hash"], 10), _when(step["time_s"]))
    return table


def balances_table(before: list[dict], after: list[dict]):
    from rich.table import Table

    table = Table(title="balances on the linked chains", title_justify="left")
    for name, justify in (("chain", "left"), ("account", "left"), ("before", "right"),
                          ("after", "right"), ("on hold", "right")):
        table.add_column(name, justify=justify)
    for old, new in zip(before, after):
        table.add_row(new["chain_name"], f"{new['name']} ({new['account']})",
                      f"{old['balance']:,} {old['asset']}", f"{new['balance']:,} {new['asset']}",
                      f"{new['held']:,}")
    return table


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tsunagi.connect.demo import http_confirm, run_connect_demo

    console = Console()
    hook = http_confirm(args.shop_url) if args.shop_url else None
    if args.ethereum:
        return _demo_ethereum(args, console, hook)
    with console.status("ConnectionChain demo") as status:
        run = run_connect_demo(args.data, confirm=hook,
                               progress=lambda text: status.update(text))
    console.print("[bold]Demo 1, regional currency payment[/bold]: Hanako pays in currency A; "
                  "bookstore X takes only currency B. Every step on chain A or B is recorded "
                  "on the connection chain only with that chain's header and Merkle proof.")
    ok = True
    for transfer in run.transfers:
        item = run.items.get(transfer["id"], "")
        console.print(trail_table(transfer, f"{transfer['id']} ({item}): {transfer['amount']:,} "
                                            f"A -> {transfer['payout']:,} B, "
                                            f"{transfer['state']}"))
    console.print("[bold]Demo 2, usage billing[/bold]: each access to the city's traffic data "
                  "on chain D is charged 25 tokens on chain T, by a rule attached while both "
                  "run; the lab's access before it is not billed "
                  f"({_short(run.unbilled[0], 10)}).")
    for bill in run.bills:
        who = run.accessed_by.get(bill["access"], "?")
        refusal = f" ({_result_name(bill['refusal'])} on chain T)" if bill.get("refusal") \
            else ""
        console.print(trail_table(bill, f"access {_short(bill['access'], 10)} by the {who}: "
                                        f"{bill['price']} TOK, {bill['state']}{refusal}"))
    console.print(balances_table(run.balances_before, run.balances_after))
    states = [transfer["state"] for transfer in run.transfers]
    expected = ["complete", "refunded"] if hook is None else None
    if expected is not None and states != expected:
        console.print(f"[red]the transfers ended {states}, not {expected}[/red]")
        ok = False
    billed = [bill["state"] for bill in run.bills]
    if billed != ["complete", "complete", "complete", "unpaid"]:
        console.print(f"[red]the bills ended {billed}[/red]")
        ok = False
    console.print(f"deployment kept in {run.directory}: try `tsunagi connect --data "
                  f"{run.directory} transfers`, or `tsunagi connect --data {run.directory} "
                  "serve` for the REST API")
    return EXIT_OK if ok else EXIT_FAILED


def _demo_ethereum(args: argparse.Namespace, console, hook) -> int:
    """``tsunagi demo --ethereum``: demo 1 with chain B an in-process Ethereum chain."""
    from tsunagi.connect.demo import run_ethereum_demo

    with console.status("ConnectionChain demo on Ethereum") as status:
        run = run_ethereum_demo(args.data, confirm=hook,
                                progress=lambda text: status.update(text))
    console.print("[bold]Demo 1 on Ethereum[/bold]: Hanako pays in currency A; bookstore X "
                  "takes only currency B, a token on an Ethereum chain (eth-tester, in this "
                  "process). Every step on chain A is recorded on the connection chain with "
                  "A's header and Merkle proof, every step on Ethereum with the block's header "
                  "and the receipt's Merkle-Patricia proof.")
    for transfer in run.transfers:
        item = run.items.get(transfer["id"], "")
        console.print(trail_table(transfer, f"{transfer['id']} ({item}): {transfer['amount']:,} "
                                            f"A -> {transfer['payout']:,} B, "
                                            f"{transfer['state']}"))
    console.print(balances_table(run.balances_before, run.balances_after))
    states = [transfer["state"] for transfer in run.transfers]
    if hook is None and states != ["complete", "refunded"]:
        console.print(f"[red]the transfers ended {states}, not ['complete', 'refunded'][/red]")
        return EXIT_FAILED
    console.print(f"chain A and the connection chain kept in {run.directory}; the Ethereum "
                  "chain lived in this process only")
    return EXIT_OK


# --- tsunagi connect ----------------------------------------------------------------------------

def _open(args: argparse.Namespace):
    from tsunagi.connect.deployment import Deployment

    return Deployment.open(args.data)


def _print(args: argparse.Namespace, data, table) -> None:
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        from rich.console import Console

        Console().print(table)


def _table(title: str, rows: list[dict], columns: list[str]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    return table


def cmd_chains(args: argparse.Namespace) -> int:
    with _open(args) as deployment:
        chains = deployment.linked_chains()
    _print(args, chains, _table("linked chains", chains, [
        "chain_id", "name", "kind", "confirmations", "light_client_height"]))
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    with _open(args) as deployment:
        rules = deployment.rules()
    _print(args, rules, _table("transfer rules", rules, [
        "rule_id", "source", "target", "rate_numerator", "rate_denominator", "fee",
        "escrow_expiry_s", "payout_window_s"]))
    return EXIT_OK


def cmd_transfers(args: argparse.Namespace) -> int:
    with _open(args) as deployment:
        transfers = deployment.transfers()
    _print(args, transfers, _table("transfers", transfers, [
        "id", "state", "rule_id", "payer_name", "payee_name", "amount", "payout", "steps"]))
    return EXIT_OK


def cmd_bills(args: argparse.Namespace) -> int:
    with _open(args) as deployment:
        bills = deployment.bills(proofs=args.proofs)
    rows = [{**bill, "access": _short(bill["access"], 16), "steps": len(bill["trail"])}
            for bill in bills]
    _print(args, bills, _table("usage bills", rows, [
        "access", "state", "rule_id", "price", "consumer", "account", "payee", "steps"]))
    return EXIT_OK


def cmd_trail(args: argparse.Namespace) -> int:
    from tsunagi.connect.deployment import transfer_id_of

    with _open(args) as deployment:
        transfer = deployment.transfer(transfer_id_of(args.id), proofs=args.proofs)
    _print(args, transfer, trail_table(transfer))
    return EXIT_OK


def cmd_pay(args: argparse.Namespace) -> int:
    from tsunagi.connect.deployment import transfer_id_of

    transfer_id = transfer_id_of(args.id) if args.id else b"t-" + secrets.token_hex(8).encode()
    with _open(args) as deployment:
        rule = next((rule for rule in deployment.rules() if rule["rule_id"] == args.rule), None)
        if rule is None:
            raise TsunagiError(f"no rule {args.rule} on the connection chain: `tsunagi connect "
                               f"--data {args.data} rules` lists them")
        payer = deployment.account(rule["source"], args.payer)
        payee = deployment.account(rule["target"], args.payee)
        deployment.node.pay(transfer_id, args.rule, payer, payee, args.amount)
        transfer = deployment.transfer(transfer_id)
    _print(args, transfer, trail_table(transfer))
    return EXIT_OK if transfer["state"] in ("complete", "refunded") else EXIT_FAILED


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def cmd_add_rule(args: argparse.Namespace) -> int:
    rate = args.rate.split("/")
    if len(rate) != 2 or not all(part.isdigit() and int(part) > 0 for part in rate):
        raise TsunagiError(f"--rate takes an exact ratio N/D of positive integers, got "
                           f"{args.rate!r}")
    with _open(args) as deployment:
        rule = {"rule_id": args.id, "source": args.source, "target": args.target,
                "rate_numerator": int(rate[0]), "rate_denominator": int(rate[1]),
                "fee": args.fee,
                "settlement": deployment.account(args.source, args.settlement),
                "pool": deployment.account(args.target, args.pool),
                "escrow_authority": deployment.account(
                    args.source, deployment.spec(args.source).authority),
                "escrow_expiry_s": args.escrow_expiry, "payout_window_s": args.payout_window}
        result = deployment.node.call("add_rule", [rule])
        if result.refuse_code:
            from tsunagi.connect.codes import ConnectCode

            raise TsunagiError(f"the connection contract refused the rule: "
                               f"{ConnectCode(result.refuse_code).name} ({result.detail})")
        rules = deployment.rules()
    _print(args, rules, _table("transfer rules", rules, [
        "rule_id", "source", "target", "rate_numerator", "rate_denominator", "fee"]))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from tsunagi.extras import require

    require("http", "tsunagi connect serve")
    import uvicorn

    from tsunagi.connect.rest import make_app

    host, _, port = args.listen.rpartition(":")
    with _open(args) as deployment:
        app = make_app(deployment)
        print(json.dumps({"listening": f"http://{host}:{port}", "openapi": "/openapi.json",
                          "docs": "/docs"}), flush=True)
        uvicorn.run(app, host=host, port=int(port), log_level="warning")
    return EXIT_OK


def register_commands(commands, commit_demo=None, run_connection=None) -> None:
    """Adds ``demo`` (with ``demo commit``: ``commit_demo(subparser)`` fills it in) and
    ``connect`` to the ``tsunagi`` command's subparsers; ``run_connection(args)`` is the
    handler of ``connect run`` (the connection node as a process, in the node layer)."""
    demo = commands.add_parser(
        "demo", help="run ConnectionChain's two demonstrations on the embedded store",
        description="Starts chains A, B, D, T and a connection chain on the embedded store "
                    "(replacing an earlier demo's), links them, runs demo 1 (a payment from A "
                    "to B the bookstore fulfils, one it cannot) and demo 2 (usage billing: "
                    "accesses on D charged on T) and prints each trail. `tsunagi demo commit` "
                    "runs the batched-commit demonstration instead.")
    demo.add_argument("--data", default=DEFAULT_DIRECTORY,
                      help=f"the deployment's directory (default {DEFAULT_DIRECTORY})")
    demo.add_argument("--shop-url", metavar="URL",
                      help="ask the bookstore over HTTP (POST JSON, answer {\"accept\": true})")
    demo.add_argument("--ethereum", action="store_true",
                      help="run demo 1 with chain B an Ethereum chain in this process "
                           "(eth-tester; needs the ethereum extra)")
    demo.set_defaults(handler=cmd_demo)
    if commit_demo is not None:
        kinds = demo.add_subparsers(dest="demo", metavar="DEMO")
        commit_demo(kinds.add_parser(
            "commit", help="make a chain and commit batched and baseline transfers",
            description="Creates a chain on the embedded store (replacing an earlier demo's), "
                        "commits signed transfers one per block and in batches, prints both "
                        "rates and verifies the chain."))

    connect = commands.add_parser(
        "connect", help="a ConnectionChain deployment: chains, rules, transfers, trails, API",
        description="Reads and operates the deployment `tsunagi demo` made (its ledgers are "
                    "opened by this command: stop a running `tsunagi connect serve` first).")
    connect.add_argument("--data", default=DEFAULT_DIRECTORY,
                         help=f"the deployment's directory (default {DEFAULT_DIRECTORY})")
    actions = connect.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, handler, text: str):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=handler)
        return parser

    action("chains", cmd_chains, "the linked chains and their light clients' tips")
    action("rules", cmd_rules, "the transfer rules")
    action("transfers", cmd_transfers, "every transfer and its state")
    bills = action("bills", cmd_bills, "usage billing: every access billed, with its trail")
    bills.add_argument("--proofs", action="store_true",
                       help="with each step's header, record and Merkle path (with --json)")
    if run_connection is not None:
        run = actions.add_parser(
            "run", help="the connection node: drive the transfers a config names between "
                        "tsunagi node processes, resuming from its journal",
            description="Runs the connection node against node processes (the connection "
                        "chain's and each linked chain's, reached through the node client) "
                        "as its --config names them: it resumes what its journal and the "
                        "connection chain hold, drives the transfers listed, prints a JSON "
                        "line for each and ends. Killed anywhere and started again, it "
                        "finishes them and pays nothing twice.")
        run.add_argument("--config", required=True, metavar="FILE",
                         help="the connection node's config (JSON; see docs/CONNECT.md)")
        run.set_defaults(handler=run_connection)
    trail = action("trail", cmd_trail, "one transfer's trail, every step where it is proven")
    trail.add_argument("id", help="the transfer's id (its text, or 0x and hex)")
    trail.add_argument("--proofs", action="store_true",
                       help="with each step's header, record and Merkle path (with --json)")
    pay = action("pay", cmd_pay, "a cross-chain payment by a rule, driven to its end")
    pay.add_argument("--rule", type=_positive, required=True, help="the rule's id")
    pay.add_argument("--payer", required=True, help="the payer on the rule's source chain "
                                                    "(a name of the layout, or a number)")
    pay.add_argument("--payee", required=True, help="the payee on the target chain")
    pay.add_argument("--amount", type=_positive, required=True, help="in source units")
    pay.add_argument("--id", help="the transfer's id (default: a new random one)")
    rule = action("add-rule", cmd_add_rule, "add a transfer rule to the running chains")
    rule.add_argument("--id", type=_positive, required=True, help="the new rule's id")
    rule.add_argument("--source", type=_positive, required=True, help="source chain id")
    rule.add_argument("--target", type=_positive, required=True, help="target chain id")
    rule.add_argument("--rate", required=True, help="target units per source unit, N/D")
    rule.add_argument("--fee", type=int, default=0, help="fixed fee in source units")
    rule.add_argument("--settlement", required=True, help="settlement account (source)")
    rule.add_argument("--pool", required=True, help="pool account (target)")
    rule.add_argument("--escrow-expiry", type=_positive, default=3600, metavar="SECONDS")
    rule.add_argument("--payout-window", type=_positive, default=600, metavar="SECONDS")
    serve = action("serve", cmd_serve, "serve the operators' REST API (OpenAPI at "
                                       "/openapi.json, docs at /docs)")
    serve.add_argument("--listen", default="127.0.0.1:8600", metavar="HOST:PORT")
