"""The load generator: drives a running node with prepared, pre-signed transfers and draws it.

``tsunagi loadgen --target HOST:PORT`` (also ``python -m tsunagi.loadgen``) opens ``--clients``
connections, spread over ``--processes`` processes, and keeps ``--window`` requests in flight on
each until ``--count`` transfers are answered or ``--duration`` is up. It is a layer above the
node: it talks to a node over the wire protocol as any client does, and nothing below imports
it. Its modules, by concern:

- :mod:`~tsunagi.loadgen.plan`: keys and accounts (``--seed``, ``--keys``, ``--accounts``), a
  chain made for them (``--prepare``) or accounts opened on a running node (``--setup``);
- :mod:`~tsunagi.loadgen.signing`: BIP340 signing of the traffic on a pool of processes;
- :mod:`~tsunagi.loadgen.traffic`: the three modes' requests, built and encoded before the run;
- :mod:`~tsunagi.loadgen.driver`: one connection a client, ``--window`` requests in flight;
- :mod:`~tsunagi.loadgen.run`: a whole run in one or several processes;
- :mod:`~tsunagi.loadgen.summary` and :mod:`~tsunagi.loadgen.charts`: its figures and chart;
- :mod:`~tsunagi.loadgen.spawn` and :mod:`~tsunagi.loadgen.memory`: a node in a child process
  (``--spawn``) and its resident memory (``--rss-every``);
- :mod:`~tsunagi.loadgen.cli`: the ``tsunagi loadgen`` command; limits and defaults live in
  :mod:`~tsunagi.loadgen.limits`.

Throughput counts transfers answered ``ok`` per second of the run; latency is per request, from
writing its frame to reading its answer. ``--out STEM`` writes STEM.json and STEM.png (throughput
over time, latency histogram, and the node's resident memory when sampled).

Names load on first use, so registering the command with ``tsunagi`` costs nothing.
"""

from importlib import import_module as _import_module

_EXPORTS = {
    "ClientRun": "driver",
    "funding_units": "limits",
    "LoadResult": "run",
    "LoadSpec": "traffic",
    "NodeProcess": "spawn",
    "Plan": "plan",
    "RssSampler": "memory",
    "Traffic": "traffic",
    "build_traffic": "traffic",
    "chart_figure": "charts",
    "draw_chart": "charts",
    "drive": "driver",
    "drive_traffic": "run",
    "loadgen_key": "plan",
    "main": "cli",
    "memory_kib": "memory",
    "prebuild_bytes_max": "run",
    "prepare_chain": "plan",
    "register_commands": "cli",
    "run_load": "run",
    "setup_accounts": "plan",
    "summarize": "summary",
    "target_plan": "plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tsunagi.loadgen' has no attribute {name!r}")
    value = getattr(_import_module(f"tsunagi.loadgen.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
