"""The chart of a run (``--out STEM`` writes STEM.png): throughput over time, the latency
histogram and, when sampled, the node's memory. Needs matplotlib (the ``charts`` extra)."""

from __future__ import annotations

import numpy as np

from tsunagi.loadgen.limits import run_hours_from_s, run_minutes_from_s

__all__ = ["chart_figure", "draw_chart", "time_unit"]


def draw_chart(summary: dict, path) -> None:
    """Writes the chart of ``summary`` (a :func:`~tsunagi.loadgen.summary.summarize` dict) as a
    PNG to ``path``."""
    chart_figure(summary).savefig(path, dpi=110)


def chart_figure(summary: dict):
    """A matplotlib Figure: throughput over time, the latency histogram and, when sampled, the
    node's memory. Made without pyplot, so no global backend or figure is touched."""
    from matplotlib.figure import Figure

    rss = summary.get("node_rss") or []
    fig = Figure(figsize=(15 if rss else 11, 4.2))
    axes = fig.subplots(1, 3 if rss else 2)
    unit = time_unit(max([summary["elapsed_s"], *(sample[0] for sample in rss)]))
    _throughput_panel(axes[0], summary, unit)
    _latency_panel(axes[1], summary)
    if rss:
        _rss_panel(axes[2], rss, unit)
    fig.tight_layout()
    return fig


def time_unit(run_s: float) -> tuple[str, float]:
    """(name, seconds in one) of the unit the time axes of a run this long count in."""
    if run_s < run_minutes_from_s:
        return "seconds", 1.0
    return ("minutes", 60.0) if run_s < run_hours_from_s else ("hours", 3600.0)


def _throughput_panel(axis, summary: dict, unit: tuple[str, float]) -> None:
    from matplotlib.colors import to_rgba

    name, scale = unit
    title = (f"{summary['mode']}, {summary['clients']} clients, "
             f"{summary['batch_size']:,} per request")
    series = summary["series"]
    rates = np.asarray(series["records_per_s"], np.float64)
    edges = np.arange(len(rates) + 1) * series["bin_s"] / scale  # the bars tile the run
    axis.stairs(rates, edges, fill=True, facecolor=to_rgba("tab:blue", 0.25),
                edgecolor="tab:blue", linewidth=1.5)
    # The average over the run (records ok / its length) is the mean of the bars.
    axis.hlines(summary["records_per_s"], 0, edges[-1], color="tab:red", linestyle="--",
                label=f"run average {summary['records_per_s']:,.0f}/s")
    axis.set(title=f"transfers ok per second\n{title}", xlabel=f"{name} into the run",
             ylabel="transfers / s")
    axis.legend(loc="lower center")


def _latency_panel(axis, summary: dict) -> None:
    import matplotlib.ticker

    histogram = summary["latency_histogram"]
    edges = np.asarray(histogram["edges_ms"])
    if len(edges):
        axis.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge",
                 color="tab:green", alpha=0.7)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    latency = summary["latency_ms"]
    for name, colour in (("p50", "tab:blue"), ("p99", "tab:red"), ("max", "black")):
        if name in latency:
            axis.axvline(latency[name], color=colour, linestyle="--",
                         label=f"{name} {latency[name]:,.1f} ms")
    axis.set(title=f"request latency ({summary['requests_answered']:,} requests)",
             xlabel="ms from writing the request to reading its answer", ylabel="requests")
    axis.legend()


def _rss_panel(axis, rss: list, unit: tuple[str, float]) -> None:
    name, scale = unit
    samples = np.array(rss, dtype=np.float64)  # rows: seconds, resident, anonymous, file KiB
    times, mib = samples[:, 0] / scale, samples[:, 1:] / 1024
    axis.plot(times, mib[:, 0], color="tab:purple", label="resident")
    reference = float(np.median(mib[len(mib) // 10: max(2, len(mib) // 5), 0]))
    axis.axhspan(reference * 0.9, reference * 1.1, color="tab:purple", alpha=0.12,
                 label="resident within 10% of its median at 10-20% of the run")
    axis.set(xlabel=f"{name} into the run", ylabel="resident MiB",
             title=f"node memory: resident {mib[:, 0].min():,.0f} .. {mib[:, 0].max():,.0f} MiB"
                   + (f"\nanonymous {mib[:, 1].min():,.0f} .. {mib[:, 1].max():,.0f} MiB, "
                      "the rest file-backed (mapped files)" if mib.shape[1] > 1 else ""))
    axis.set_ylim(0, mib[:, 0].max() * 1.15)
    axis.legend(loc="upper left", fontsize="small")
    if mib.shape[1] > 1:  # anonymous memory on its own scale, or it is a flat line at zero
        right = axis.twinx()
        right.plot(times, mib[:, 1], color="tab:orange", label="anonymous (right scale)")
        right.set_ylim(0, mib[:, 1].max() * 1.6)
        right.set_ylabel("anonymous MiB")
        right.legend(loc="lower right", fontsize="small")
