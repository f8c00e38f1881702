"""``tsunagi loadgen``: prepare a chain, drive a node with prepared transfers, draw the result.

Registering the command loads nothing heavy: the library modules load when it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tsunagi.errors import ConfigError, TsunagiError
from tsunagi.extras import require
from tsunagi.loadgen.limits import (
    chain_id_default,
    count_defaults,
    modes,
    progress_line_s,
    progress_line_share,
    seed_default,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from tsunagi.loadgen.plan import Plan
    from tsunagi.loadgen.traffic import LoadSpec

__all__ = ["cmd_loadgen", "main", "register_commands"]


def register_commands(commands) -> None:
    """Adds ``loadgen`` to the ``tsunagi`` command's subparsers."""
    parser = commands.add_parser(
        "loadgen", help="drive a node with prepared transfers and draw the result",
        description="Drive a running node (--target) or one started here on a prepared data "
                    "directory (--spawn) with signed transfers prepared before the timed phase; "
                    "print throughput and latency, write JSON and a PNG chart with --out. The "
                    "transfers are signed with keys made from --seed, so the chain must hold "
                    "accounts of those keys: make it with `tsunagi loadgen --prepare DIR`, serve "
                    "it with `tsunagi node --data DIR` and drive it with --target HOST:PORT (or "
                    "--spawn DIR), or open new ones on such a chain with --setup.")
    where = parser.add_argument_group("where")
    where.add_argument("--target", metavar="HOST:PORT",
                       help="a running node serving a chain made by --prepare (with the same "
                            "--seed, --accounts and --keys), or give --setup")
    where.add_argument("--spawn", metavar="DIR",
                       help="start a node on DIR (127.0.0.1) and drive it")
    where.add_argument("--prepare", metavar="DIR",
                       help="create a chain in DIR with the load accounts (then stop, unless "
                            "--spawn or --target is given)")
    where.add_argument("--setup", action="store_true",
                       help="open and fund --accounts new accounts of --keys keys on the "
                            "target first, and drive those: its chain must come from --prepare "
                            "with the same --seed, whose issuer key funds them")
    where.add_argument("--chain-id", type=int, default=chain_id_default, help="for --prepare")
    load = parser.add_argument_group("load")
    load.add_argument("--mode", choices=modes, default="batched")
    load.add_argument("--clients", type=int, default=4, help="connections (default 4)")
    load.add_argument("--processes", type=int, default=1, help="driving processes (default 1)")
    load.add_argument("--batch-size", type=int, default=8000, help="records a request")
    load.add_argument("--window", type=int, default=0,
                      help="requests in flight a connection (default 1 baseline, 2 batched)")
    load.add_argument("--accounts", type=int, default=10_000, help="load accounts")
    load.add_argument("--keys", type=int, default=8, help="owner keys of the accounts")
    load.add_argument("--skew", type=float, default=0.0,
                      help="Zipf exponent of payers and payees (0 uniform, 1 classic Zipf)")
    load.add_argument("--count", type=int, default=None,
                      help="transfers to prepare (default by mode: " + ", ".join(
                          f"{m} {n:,}" for m, n in count_defaults.items()) + ")")
    load.add_argument("--duration", type=float, default=0.0,
                      help="stop sending after this many seconds (default: when all are sent);"
                           " a run whose prepared transfers run out sooner says so")
    load.add_argument("--live", action="store_true",
                      help="batch-authorized: build requests during the run (long runs)")
    load.add_argument("--seed", type=int, default=seed_default, help="of keys and draws")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="STEM", help="write STEM.json and STEM.png (the chart "
                     "needs the charts extra: pip install 'tsunagi[charts]')")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--rss-every", type=float, default=0.0, metavar="S",
                     help="sample the node's resident memory every S seconds (needs --spawn "
                          "or --node-pid)")
    out.add_argument("--node-pid", type=int, default=None, help="the target node's process id")
    parser.set_defaults(handler=cmd_loadgen)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--target is HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _spec_of(args: argparse.Namespace) -> LoadSpec:
    from tsunagi.loadgen.traffic import LoadSpec

    count = args.count if args.count is not None else count_defaults[args.mode]
    return LoadSpec(mode=args.mode, clients=args.clients, processes=args.processes,
                    batch_size=args.batch_size, window=args.window, count=count,
                    duration_s=args.duration, skew=args.skew, seed=args.seed, live=args.live)


def cmd_loadgen(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tsunagi.loadgen.spawn import NodeProcess

    console = Console(stderr=True, quiet=args.json)
    if args.out:  # before anything runs, not after a long run with nothing to draw it
        require("charts", "loadgen --out")
    if not (args.prepare or args.target or args.spawn):
        raise ConfigError("give --target HOST:PORT, --spawn DIR or --prepare DIR")
    if args.target and args.spawn:
        raise ConfigError("--target and --spawn exclude each other")
    if args.prepare:
        _prepare_shown(args, console)
        if not (args.target or args.spawn):
            return 0
    spec = _spec_of(args)
    node = NodeProcess(args.spawn).start() if args.spawn else None
    try:
        host, port = (node.host, node.port) if node else _host_port(args.target)
        plan = _plan_shown(args, host, port, console)
        pid = node.pid if node else args.node_pid
        if args.rss_every and pid is None:
            raise ConfigError("--rss-every needs --spawn or --node-pid")
        summary = _run_shown(host, port, plan, spec, console, pid, args.rss_every)
    finally:
        if node is not None:
            stopping_s = time.perf_counter()
            with console.status("stopping the node: it finishes indexing what it committed"):
                node.stop()
            stop_s = time.perf_counter() - stopping_s
    summary["accounts"], summary["keys"] = len(plan.accounts), plan.key_count
    if node is not None:
        # What the node sustains: committed and indexed, not only committed and answered.
        summary["node_stop_s"] = round(stop_s, 2)
        summary["records_per_s_indexed"] = round(
            summary["records_ok"] / (summary["elapsed_s"] + stop_s), 1)
    _report(summary, args, console)
    return 0


class _Display:
    """What the command is doing, on stderr: a live line on a terminal; elsewhere (a log, CI)
    plain lines, a progress line each time another progress_line_share of a step is done, at
    most one every progress_line_s, and the step's last. Quiet with --json."""

    def __init__(self, console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.clock = console, clock
        self.live = None
        self._shown: dict[str, tuple[float, float]] = {}  # step -> (done, time) of its line

    def __enter__(self) -> _Display:
        from rich.live import Live
        from rich.text import Text

        if self.console.is_terminal and not self.console.quiet:
            self.live = Live(Text(""), console=self.console, transient=True,
                             refresh_per_second=8).__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live is not None:
            self.live.__exit__(*exc_info)

    def say(self, text: str) -> None:
        """A new step: shown at once."""
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(text))
        else:
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def progress(self, step: str, done: float, total: float, text) -> bool:
        """``done`` of ``total`` of ``step``, described by ``text`` (a string, or a function
        that makes it, called only when it is shown). Says whether it was shown."""
        if self.live is None:
            last_done, last_s = self._shown.get(step, (0.0, -math.inf))
            now_s = self.clock()
            if last_done >= total or done < total and (
                    done - last_done < total * progress_line_share
                    or now_s - last_s < progress_line_s):
                return False
            self._shown[step] = (done, now_s)
        self.say(text() if callable(text) else text)
        return True


def _prepare_shown(args, console) -> None:
    from tsunagi.loadgen.plan import prepare_chain

    started = time.perf_counter()
    with _Display(console) as display:

        def show(what: str, done: int, total: int) -> None:
            display.progress(what, done, total, f"preparing {args.prepare}: {what} {done:,} of "
                                                f"{total:,} accounts")

        prepare_chain(args.prepare, args.accounts, keys=args.keys, seed=args.seed,
                      chain_id=args.chain_id, progress=show)
    console.print(f"prepared {args.prepare}: chain {args.chain_id}, {args.accounts:,} funded "
                  f"accounts (2..{args.accounts + 1}) of {args.keys} keys, seed {args.seed}, "
                  f"in {time.perf_counter() - started:.1f} s", soft_wrap=True)


def _plan_shown(args, host: str, port: int, console) -> Plan:
    from tsunagi.loadgen.plan import setup_accounts, target_plan
    from tsunagi.loadgen.run import new_runner
    from tsunagi.node.client import AsyncClient

    with _Display(console) as display, new_runner() as runner:

        def show(what: str, done: int, total: int) -> None:
            display.progress(what, done, total, f"setup on the target: {what} {done:,} of "
                                                f"{total:,} accounts")

        async def plan() -> Plan:
            async with AsyncClient(host, port, auto_batch=False) as client:
                if args.setup:
                    return await setup_accounts(client, args.accounts, keys=args.keys,
                                                seed=args.seed, progress=show)
                return await target_plan(client, args.accounts, keys=args.keys,
                                         seed=args.seed)

        display.say("opening and funding the accounts" if args.setup
                    else "checking the load accounts")
        return runner.run(plan())


def _run_shown(host, port, plan, spec, console, pid, rss_every_s) -> dict:
    from tsunagi.loadgen.memory import RssSampler
    from tsunagi.loadgen.run import run_load

    last = [0.0, 0]  # elapsed_s and records ok at the last tick
    # Memory is sampled from the start of the timed phase, not while the traffic is signed.
    sampler = RssSampler(pid, rss_every_s) if rss_every_s else None
    with _Display(console) as display:

        def phase(text: str) -> None:
            display.say(text)
            if text == "driving" and sampler is not None:
                sampler.start()

        def prepared(done: int, total: int) -> None:
            display.progress("prepared", done, total,
                             f"prepared {done:,} of {total:,} transfers")

        def tick(elapsed_s: float, totals: np.ndarray) -> None:
            answered, ok, requests, failed = totals.tolist()
            # "now" is the rate since the last line shown: a tick's on a terminal.
            now_rate = (ok - last[1]) / max(elapsed_s - last[0], 1e-9)
            done, total = (elapsed_s, spec.duration_s) if spec.duration_s \
                else (answered, spec.count)
            if display.progress("driving", done, total, lambda: (
                    f"{spec.mode}: {elapsed_s:6.1f} s  {ok:>12,} ok  {now_rate:>12,.0f}/s now  "
                    f"{ok / max(elapsed_s, 1e-9):>12,.0f}/s average  {requests:,} requests  "
                    f"{failed:,} failed")):
                last[:] = elapsed_s, ok

        try:
            result = run_load(host, port, plan, spec, tick=tick, phase=phase, progress=prepared)
        finally:
            if sampler is not None:
                sampler.stop()
    if sampler is not None:
        result.summary["node_rss"] = sampler.samples
    return result.summary


def _report(summary: dict, args, console) -> None:
    if args.out:
        stem = Path(args.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        from tsunagi.loadgen.charts import draw_chart

        draw_chart(summary, stem.with_suffix(".png"))
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        _print_summary(summary, args)
    if summary["ended_early"]:  # on stderr with --json too: a short run is never silent
        print(f"tsunagi loadgen: ended early: {summary['ended_early']}", file=sys.stderr)


def _print_summary(summary: dict, args) -> None:
    from rich.console import Console

    out = Console(soft_wrap=True)  # a log keeps each line whole
    latency = summary["latency_ms"]
    before, after = summary.get("node_before"), summary.get("node_after")
    out.print(f"[bold]{summary['records_per_s']:,.0f} transfers/s ok[/bold]  "
              f"({summary['records_ok']:,} of {summary['records_sent']:,} sent, "
              f"{summary['elapsed_s']:.2f} s, {summary['mode']}, {summary['clients']} clients, "
              f"{summary['batch_size']:,} a request)")
    if latency:
        out.print(f"latency per request: p50 {latency['p50']:,.2f} ms  p99 {latency['p99']:,.2f}"
                  f" ms  max {latency['max']:,.2f} ms")
    out.print("codes: " + ", ".join(f"{k} {v:,}" for k, v in summary["codes"].items()))
    for name in ("errors", "lost"):
        if summary[name]:
            out.print(f"[red]{name}: {summary[name]}[/red]")
    if before and after and after["groups_committed"] > before["groups_committed"]:
        groups = after["groups_committed"] - before["groups_committed"]
        records = after["records_committed"] - before["records_committed"]
        out.print(f"node: {groups:,} commit groups, {records / groups:,.0f} records each")
    if "node_stop_s" in summary:
        out.print(f"node stopped {summary['node_stop_s']:,.1f} s after the run (indexing what it "
                  f"committed): {summary['records_per_s_indexed']:,.0f} transfers/s committed "
                  "and indexed")
    if summary.get("node_rss"):
        kib = [sample[1] for sample in summary["node_rss"]]
        out.print(f"node memory: {min(kib) / 1024:,.0f} .. {max(kib) / 1024:,.0f} MiB")
    if args.out:
        out.print(f"wrote {Path(args.out).with_suffix('.json')} and "
                  f"{Path(args.out).with_suffix('.png')}")


def main(argv: list[str] | None = None) -> int:
    """``python -m tsunagi.loadgen ...``: the ``tsunagi loadgen`` command on its own."""
    parser = argparse.ArgumentParser(prog="tsunagi")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadgen", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except TsunagiError as exc:
        print(f"tsunagi loadgen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tsunagi loadgen: interrupted", file=sys.stderr)
        return 130
