"""The figures of a finished run, as the JSON-ready dict that ``--out`` writes."""

from __future__ import annotations

import os
import sys

import numpy as np

from tsunagi.core.codes import Result
from tsunagi.loadgen.driver import ClientRun
from tsunagi.loadgen.limits import series_bars_max, series_bin_choices_s
from tsunagi.loadgen.traffic import LoadSpec

__all__ = ["summarize"]


def _percentiles(latency_ms: np.ndarray) -> dict:
    if not len(latency_ms):
        return {}
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "max": round(float(latency_ms.max()), 3),
            "mean": round(float(latency_ms.mean()), 3)}


def _latency_histogram(latency_ms: np.ndarray, bins: int = 60) -> dict:
    if not len(latency_ms):
        return {"edges_ms": [], "counts": []}
    low, high = max(float(latency_ms.min()), 1e-3), max(float(latency_ms.max()), 2e-3)
    edges = np.geomspace(low, high * 1.0001, bins + 1)
    counts, _ = np.histogram(np.clip(latency_ms, low, None), edges)
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def _series(answered_s: np.ndarray, ok: np.ndarray, elapsed_s: float) -> dict:
    """Transfers ok per second in bars of equal width that cover the run exactly, from its
    start to its last answer, so the mean of the bars is the run's average: a last bar that
    held a sliver of the run but counted as a whole one would pull the bars below it."""
    choice_s = next((b for b in series_bin_choices_s if elapsed_s / b <= series_bars_max),
                    series_bin_choices_s[-1])
    if not len(answered_s):
        return {"bin_s": choice_s, "records_per_s": []}
    bars = max(1, int(elapsed_s / choice_s))
    bin_s = elapsed_s / bars
    counts, _ = np.histogram(answered_s, np.linspace(0, elapsed_s, bars + 1), weights=ok)
    return {"bin_s": bin_s, "records_per_s": (counts / bin_s).tolist()}


def _ended_early(spec: LoadSpec, sent: int, records_ok: int, elapsed_s: float) -> str | None:
    """Why a run with a --duration stopped before it, when every prepared transfer was sent."""
    if not spec.duration_s or spec.live or sent < spec.count or elapsed_s >= spec.duration_s:
        return None
    needed = max(1, int(records_ok / max(elapsed_s, 1e-9) * spec.duration_s))
    step = 10 ** max(0, len(str(needed)) - 2)  # two significant digits, rounded up
    needed = -(-needed // step) * step
    text = (f"the {spec.count:,} prepared transfers ran out: the run ended after "
            f"{elapsed_s:.2f} s of the {spec.duration_s:g} s asked (--duration); prepare about "
            f"{needed:,} (--count {needed}) for {spec.duration_s:g} s at this rate")
    return text + (", or build them during the run (--live)"
                   if spec.mode == "batch-authorized" else "")


def summarize(runs: list[ClientRun], spec: LoadSpec, start_s: float) -> dict:
    """The figures of a run as a JSON-ready dict (throughput counts records answered ok)."""
    sent = np.concatenate([r.sent_s for r in runs])
    answered = np.concatenate([r.answered_s for r in runs])
    counts = np.concatenate([r.counts for r in runs])
    ok = np.concatenate([r.ok for r in runs])
    done = ~np.isnan(answered)
    elapsed_s = max(float(answered[done].max()) - start_s, 1e-9) if done.any() else 0.0
    latency_ms = (answered[done] - sent[done]) * 1000
    code_counts = np.sum([r.code_counts for r in runs], axis=0)
    errors: dict[str, int] = {}
    for run in runs:
        for name, number in run.errors.items():
            errors[name] = errors.get(name, 0) + number
    records_ok = int(ok.sum())
    return {
        "mode": spec.mode, "clients": spec.clients, "processes": spec.processes,
        "batch_size": spec.request_records, "window": spec.requests_in_flight,
        "skew": spec.skew, "prepared_transfers": spec.count if not spec.live else None,
        "duration_s": spec.duration_s or None, "live": spec.live,
        "elapsed_s": round(elapsed_s, 3),
        "requests_sent": len(sent), "requests_answered": int(done.sum()),
        "records_sent": int(counts.sum()), "records_answered": int(counts[done].sum()),
        "records_ok": records_ok,
        "records_per_s": round(records_ok / elapsed_s, 1) if elapsed_s else 0.0,
        "latency_ms": _percentiles(latency_ms),
        "codes": {Result(int(c)).name: int(code_counts[c]) for c in np.flatnonzero(code_counts)},
        "errors": errors, "overloaded": sum(r.overloaded for r in runs),
        "lost": sorted({r.lost for r in runs if r.lost}),
        "series": _series(answered[done] - start_s, ok[done], elapsed_s),
        "ended_early": _ended_early(spec, int(counts.sum()), records_ok, elapsed_s),
        "latency_histogram": _latency_histogram(latency_ms),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
