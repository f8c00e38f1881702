"""One run, in one or several processes: prepare the traffic, drive the node, summarise.

Driving processes are started with multiprocessing's ``spawn``: a script that calls
:func:`run_load` with ``processes > 1`` must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tsunagi import hashing
from tsunagi.errors import ConfigError, NodeError
from tsunagi.loadgen.driver import COUNTERS, ClientRun, drive
from tsunagi.loadgen.limits import prebuild_bytes_default, prebuild_memory_share, progress_tick_s
from tsunagi.loadgen.plan import Plan, _sequence_base
from tsunagi.loadgen.summary import summarize
from tsunagi.loadgen.traffic import LoadSpec, Traffic, build_traffic

__all__ = ["LoadResult", "drive_traffic", "prebuild_bytes_max", "run_load"]


@dataclass
class LoadResult:
    """A finished run: the summary (what --out writes as JSON) and the per-connection runs."""

    summary: dict
    runs: list[ClientRun]
    traffics: list[Traffic] = field(default_factory=list)  # in-process runs with spec.keep


def _sign_workers(spec: LoadSpec) -> int:
    if spec.sign_workers:
        return spec.sign_workers
    return hashing.cpu_count() if spec.processes == 1 else 1


def _clients_of(spec: LoadSpec, process: int) -> list[int]:
    return list(range(process, spec.clients, spec.processes))


def _build_all(plan: Plan, spec: LoadSpec, clients: list[int],
               progress: Callable[[int], None] | None = None) -> list[Traffic]:
    base = _sequence_base()
    return [build_traffic(plan, spec, client, base, _sign_workers(spec), progress)
            for client in clients]


def _counter(progress: Callable[[int, int], None] | None, total: int
             ) -> Callable[[int], None] | None:
    """A ``count(n)`` that adds up the transfers prepared and tells ``progress(done, total)``."""
    if progress is None:
        return None
    done = [0]

    def count(number: int) -> None:
        done[0] += number
        progress(done[0], total)

    return count


def _relay(messages, process: int) -> Callable[..., None]:
    """A driving process's ``count(n)`` of transfers prepared: carried to the parent, at most
    one message every progress_tick_s; ``count(flush=True)`` sends what is left."""
    pending = [0, time.monotonic()]

    def count(number: int = 0, flush: bool = False) -> None:
        pending[0] += number
        now_s = time.monotonic()
        if pending[0] and (flush or now_s - pending[1] >= progress_tick_s):
            messages.put(("built", process, pending[0]))
            pending[:] = [0, now_s]

    return count


def new_runner() -> asyncio.Runner:
    from tsunagi.node.server import new_event_loop

    return asyncio.Runner(loop_factory=new_event_loop)


def _worker(host: str, port: int, plan: Plan, spec: LoadSpec, process: int, counters,
            messages, go, start_value) -> None:
    """A driving process: builds its clients' traffic, connects, waits for go, drives."""
    try:
        relay = _relay(messages, process)
        traffics = _build_all(plan, spec, _clients_of(spec, process), relay)
        relay(flush=True)

        async def wait_for_go() -> float:
            messages.put(("ready", process, None))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            return start_value.value

        with new_runner() as runner:
            _, runs = runner.run(drive(host, port, traffics, spec, counters=counters,
                                       slot=process, go=wait_for_go))
        messages.put(("done", process, runs))
    except Exception as exc:  # the parent reports it; a traceback here would be lost
        messages.put(("failed", process, f"{type(exc).__name__}: {exc}"))


class _Ticker:
    """Calls ``tick(elapsed_s, totals)`` every progress_tick_s on a thread while it runs."""

    def __init__(self, counters, tick: Callable[[float, np.ndarray], None] | None) -> None:
        self.counters, self.tick = counters, tick
        self.start_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def totals(self) -> np.ndarray:
        return np.array(self.counters[:], np.int64).reshape(-1, COUNTERS).sum(axis=0)

    def __enter__(self) -> _Ticker:
        if self.tick is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(progress_tick_s):
            if self.start_s is not None:
                self.tick(time.monotonic() - self.start_s, self.totals())


def prebuild_bytes_max() -> int:
    """How many bytes of prepared traffic a run may hold: a share of MemAvailable."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * prebuild_memory_share)
    except (OSError, ValueError, IndexError):
        pass
    return prebuild_bytes_default


def run_load(host: str, port: int, plan: Plan, spec: LoadSpec, *,
             tick: Callable[[float, np.ndarray], None] | None = None,
             phase: Callable[[str], None] | None = None,
             progress: Callable[[int, int], None] | None = None) -> LoadResult:
    """Prepares the traffic, drives the node at ``host:port`` and summarises the run.

    ``tick(elapsed_s, totals)`` sees the running totals (records answered, ok, requests,
    failed records) a few times a second; ``phase(text)`` hears what is being done;
    ``progress(prepared, total)`` hears how many transfers are prepared, while they are.
    """
    if spec.prepared_bytes() > (allowed := prebuild_bytes_max()):
        raise ConfigError(f"{spec.count:,} prepared transfers need "
                          f"{spec.prepared_bytes() >> 20:,} MiB, more than the "
                          f"{allowed >> 20:,} MiB allowed ({prebuild_memory_share:.0%} of the "
                          f"memory available): lower --count, or use --live")
    if spec.clients > len(plan.accounts):
        raise ConfigError("each client needs its own payer accounts: clients <= accounts")
    if spec.processes == 1:
        if phase:
            phase("signing and encoding the traffic")
        traffics = _build_all(plan, spec, _clients_of(spec, 0), _counter(progress, spec.count))
        if phase:
            phase("driving")
        return drive_traffic(host, port, traffics, spec, tick=tick)
    counters = multiprocessing.RawArray("q", COUNTERS * spec.processes)
    status_before = _status(host, port)
    with _Ticker(counters, tick) as ticker:
        start_s, runs = _run_processes(host, port, plan, spec, counters, ticker, phase,
                                       _counter(progress, spec.count))
    return _result(host, port, spec, start_s, runs, status_before, [])


def drive_traffic(host: str, port: int, traffics: list[Traffic], spec: LoadSpec, *,
                  tick: Callable[[float, np.ndarray], None] | None = None) -> LoadResult:
    """Drives traffic built already, one connection each, from this process."""
    counters = multiprocessing.RawArray("q", COUNTERS)
    status_before = _status(host, port)
    with _Ticker(counters, tick) as ticker:

        async def go() -> float:
            ticker.start_s = time.monotonic()
            return ticker.start_s

        with new_runner() as runner:
            start_s, runs = runner.run(drive(host, port, traffics, spec,
                                             counters=counters, go=go))
    return _result(host, port, spec, start_s, runs, status_before,
                   traffics if spec.keep else [])


def _result(host, port, spec, start_s, runs, status_before, traffics) -> LoadResult:
    summary = summarize(runs, spec, start_s)
    summary["node_before"], summary["node_after"] = status_before, _status(host, port)
    summary["target"] = f"{host}:{port}"
    return LoadResult(summary, runs, traffics)


def _run_processes(host, port, plan, spec, counters, ticker, phase, count_built):
    context = multiprocessing.get_context("spawn")
    messages, go = context.Queue(), context.Event()
    start_value = context.RawValue("d", 0.0)
    workers = [context.Process(target=_worker, daemon=True, args=(
        host, port, plan, spec, n, counters, messages, go, start_value))
        for n in range(spec.processes)]
    for worker in workers:
        worker.start()
    if phase:
        phase(f"signing and encoding the traffic in {spec.processes} processes")
    try:
        _collect(messages, workers, "ready", count_built)
        ticker.start_s = start_value.value = time.monotonic()
        go.set()
        if phase:
            phase("driving")
        runs = [run for part in _collect(messages, workers, "done") for run in part]
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    return start_value.value, runs


def _collect(messages, workers, kind: str, count_built=None) -> list:
    """Waits for one ``kind`` message of every worker, in worker order; fails on a failure.
    ``count_built(n)`` hears of the transfers the workers report prepared meanwhile."""
    import queue

    got: dict[int, object] = {}
    while len(got) < len(workers):
        try:
            what, number, value = messages.get(timeout=1.0)
        except queue.Empty:
            dead = [w.exitcode for w in workers if not w.is_alive() and w.exitcode]
            if dead:
                raise NodeError(f"a load process died with exit code {dead[0]}") from None
            continue
        if what == "failed":
            raise NodeError(f"load process {number}: {value}")
        if what == "built" and count_built is not None:
            count_built(value)
        if what == kind:
            got[number] = value
    return [got[n] for n in range(len(workers))]


def _status(host: str, port: int) -> dict | None:
    """The node's status counters, or None when it does not answer."""
    from tsunagi.node.client import AsyncClient

    async def ask():
        async with AsyncClient(host, port, auto_batch=False, retries=0, timeout_s=3) as c:
            return await c.status()

    try:
        with new_runner() as runner:
            status = runner.run(ask())
    except (NodeError, OSError):
        return None
    return {"height": status.height, "groups_committed": status.groups_committed,
            "records_committed": status.records_committed, "connections": status.connections}
