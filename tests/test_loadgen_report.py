"""What the load generator reports about a run is true to the run: the chart's bars, its run
average and its time axes, a run that ended before its --duration says so, and progress shows
where stderr is not a terminal.

Method: connections with known answer times (ClientRun, as the driver records them) go
through ``summarize`` and ``chart_figure``, and the tests read the numbers the chart draws:
the bars' heights and edges, the average line, the axes' labels and data. Progress lines are
read off a console writing to a string, with a made-up clock. No node is needed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import StepPatch
from rich.console import Console

from tsunagi.loadgen import LoadSpec, chart_figure, summarize
from tsunagi.loadgen.cli import _Display
from tsunagi.loadgen.driver import ClientRun

START_S = 1000.0  # time.monotonic() when the run started


def answered_at(times_s, records: int = 8000) -> ClientRun:
    """One connection whose requests of ``records`` transfers were answered ok at these times
    (seconds into the run), each sent 10 ms before."""
    answered = START_S + np.asarray(times_s, np.float64)
    codes = np.zeros(256, np.int64)
    codes[0] = records * len(answered)
    full = np.full(len(answered), records, np.int64)
    return ClientRun(answered - 0.01, answered, full, full.copy(), codes)


def throughput_drawn(summary: dict) -> tuple[np.ndarray, np.ndarray, float, tuple]:
    """The throughput panel as drawn: bar heights, bar edges, the average line's height and
    the span it is drawn over."""
    axis = chart_figure(summary).axes[0]
    (bars,) = [patch for patch in axis.patches if isinstance(patch, StepPatch)]
    heights, edges, _ = bars.get_data()
    (average,) = [c for c in axis.collections if isinstance(c, LineCollection)]
    (((x0, y0), (x1, y1)),) = average.get_segments()
    assert y0 == y1
    return np.asarray(heights), np.asarray(edges), y0, (x0, x1)


def test_the_run_average_is_the_mean_of_the_bars_and_lies_among_them():
    """A short run that starts slowly: before, its average line stood above every bar, as the
    last bar held 40 ms of answers spread over a whole half second."""
    times = np.concatenate([[0.1], np.arange(0.12, 0.541, 0.02)])
    spec = LoadSpec(mode="batched", clients=1, count=8000 * len(times), batch_size=8000)
    summary = summarize([answered_at(times)], spec, START_S)
    rates, bin_s = np.asarray(summary["series"]["records_per_s"]), summary["series"]["bin_s"]
    assert summary["elapsed_s"] == pytest.approx(0.54)
    assert summary["records_per_s"] == pytest.approx(8000 * len(times) / 0.54, rel=1e-3)
    assert rates.min() - 0.1 <= summary["records_per_s"] <= rates.max() + 0.1  # to 0.1/s
    assert len(rates) * bin_s == pytest.approx(summary["elapsed_s"], abs=1e-3)  # the whole run
    assert rates.mean() == pytest.approx(summary["records_per_s"], rel=1e-3)
    heights, edges, average, span = throughput_drawn(summary)
    assert np.allclose(heights, rates) and average == summary["records_per_s"]
    assert edges[0] == 0 and edges[-1] == pytest.approx(0.54, abs=1e-3)
    assert span == pytest.approx((0, 0.54), abs=1e-3)


def test_long_runs_keep_bars_of_about_the_chosen_width_covering_the_run():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 61.3, 3000))
    spec = LoadSpec(mode="batched", clients=1, count=8000 * 3000, batch_size=8000)
    summary = summarize([answered_at(times)], spec, START_S)
    series = summary["series"]
    assert 0.5 <= series["bin_s"] < 0.51 and len(series["records_per_s"]) == 122
    assert sum(series["records_per_s"]) * series["bin_s"] == pytest.approx(8000 * 3000)
    assert np.mean(series["records_per_s"]) == pytest.approx(summary["records_per_s"], rel=1e-3)


@pytest.mark.parametrize("run_s, unit, scale", [
    (3.0, "seconds", 1), (1800.0, "minutes", 60), (3 * 3600.0, "hours", 3600)])
def test_every_time_axis_counts_in_a_unit_that_suits_the_run(run_s, unit, scale):
    times = np.linspace(run_s / 100, run_s, 100)
    spec = LoadSpec(mode="batched", clients=1, count=800_000, batch_size=8000)
    summary = summarize([answered_at(times)], spec, START_S)
    summary["node_rss"] = [[t, 90_000, 40_000, 50_000] for t in np.linspace(0, run_s, 50)]
    throughput, _, memory = chart_figure(summary).axes[:3]
    assert throughput.get_xlabel() == memory.get_xlabel() == f"{unit} into the run"
    assert memory.lines[0].get_xdata().max() == pytest.approx(run_s / scale)
    heights, edges, _, _ = throughput_drawn(summary)
    assert edges[-1] == pytest.approx(run_s / scale, rel=1e-3)


def test_a_run_that_used_up_its_prepared_transfers_before_its_duration_says_so():
    spec = LoadSpec(mode="batched", clients=1, count=8000 * 27, batch_size=8000, duration_s=5)
    summary = summarize([answered_at(np.arange(1, 28) * 0.02)], spec, START_S)
    assert summary["ended_early"] == (
        "the 216,000 prepared transfers ran out: the run ended after 0.54 s of the 5 s asked "
        "(--duration); prepare about 2,000,000 (--count 2000000) for 5 s at this rate")
    authorized = LoadSpec(mode="batch-authorized", clients=1, count=8000 * 27,
                          batch_size=8000, duration_s=5)
    summary = summarize([answered_at(np.arange(1, 28) * 0.02)], authorized, START_S)
    assert summary["ended_early"].endswith(", or build them during the run (--live)")
    whole = summarize([answered_at(np.arange(1, 28) * 0.2)], spec, START_S)  # 5.4 s
    assert whole["ended_early"] is None
    unbounded = LoadSpec(mode="batched", clients=1, count=8000 * 27, batch_size=8000)
    assert summarize([answered_at(np.arange(1, 28) * 0.02)], unbounded, START_S)[
        "ended_early"] is None


def test_progress_off_a_terminal_is_a_line_a_tenth_at_most_one_a_second_and_the_last():
    out = io.StringIO()
    clock = [0.0]
    with _Display(Console(file=out, width=40), clock=lambda: clock[0]) as display:
        display.say("signing and encoding the traffic")
        for done in range(0, 400_001, 8192):  # 8,192 signatures a chunk, 0.25 s each
            display.progress("prepared", done, 400_000, f"prepared {done:,} of 400,000")
            clock[0] += 0.25
        display.progress("prepared", 400_000, 400_000, "prepared 400,000 of 400,000")
        display.progress("prepared", 400_000, 400_000, "prepared 400,000 of 400,000")
    lines = out.getvalue().splitlines()
    assert lines[0] == "signing and encoding the traffic"
    counts = [int(line.split()[1].replace(",", "")) for line in lines[1:]]
    assert counts[-1] == 400_000 and counts.count(400_000) == 1  # the last, once, unwrapped
    assert len(counts) == 10 and all(b - a >= 40_000 for a, b in zip(counts, counts[1:-1]))
    fast = io.StringIO()  # a step that races: at most a line a second, whatever its tenths
    with _Display(Console(file=fast), clock=lambda: clock[0]) as display:
        for done in range(0, 101, 5):
            display.progress("opened", done, 100, f"opened {done}")
            clock[0] += 0.3
    assert fast.getvalue().splitlines() == [
        "opened 10", "opened 30", "opened 50", "opened 70", "opened 90", "opened 100"]
