"""The simulated network of Tendermint validators keeps safety, validity and liveness over
hundreds of seeds with f Byzantine validators at n = 4 and n = 7, replays a seed exactly, and
its checker catches the planted bug (honest validators that ignore their lock).

Method: run the seeds the issue names (a few hundred; about a second each hundred at n = 4 and
two at n = 7 on this machine), compare two runs of one seed, and run the command as a user
would, in a subprocess. Nothing depends on wall-clock time: the runs are in virtual time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tsunagi.consensus.sim import BEHAVIOURS, run

SEEDS = {4: range(400), 7: range(300)}


@pytest.fixture(scope="module", params=sorted(SEEDS))
def results(request):
    n = request.param
    return n, [run(seed, n) for seed in SEEDS[n]]


def test_no_violations_with_f_byzantine(results):
    n, runs = results
    failed = [(r.seed, r.violations[0]) for r in runs if r.violations]
    assert failed == [], f"n={n}: replay with python -m tsunagi.consensus.sim --seed N --n {n}"
    # The seeds exercise what they should: every behaviour, crashes, rounds past 0, and
    # Byzantine double votes that honest validators saw and reported.
    scenarios = " ".join(r.stats["scenario"] for r in runs)
    assert all(behaviour in scenarios for behaviour in BEHAVIOURS)
    assert sum(r.stats["crashes"] for r in runs) > len(runs) // 10
    assert max(r.stats["max_round"] for r in runs) >= 3
    assert sum(r.stats["conflicts_seen"] for r in runs) > 0
    assert all(r.stats["evidence_found"] == r.stats["conflicts_seen"] for r in runs)
    for r in runs:  # what a user sees: every honest validator has the same chain, long enough
        chains = list(r.decided.values())
        common = min(map(len, chains))
        assert common >= r.stats["target"] and len({chain[:common] for chain in chains}) == 1


def test_a_seed_replays_to_the_same_result():
    for n, seed in ((4, 6), (7, 35), (4, 123)):
        first, second = run(seed, n), run(seed, n)
        assert first.trace_digest == second.trace_digest
        assert (first.decided, first.stats, first.violations) == \
            (second.decided, second.stats, second.violations)
    assert run(1, 4).trace_digest != run(2, 4).trace_digest


@pytest.mark.parametrize("n", sorted(SEEDS))
def test_the_planted_bug_is_caught_within_the_suite_seeds(n):
    caught = []
    for seed in SEEDS[n]:
        result = run(seed, n, planted_bug=True)
        if any(v.startswith("safety:") for v in result.violations):
            caught.append(seed)
            if len(caught) == 3:
                break
    assert len(caught) == 3, f"n={n}: the checker missed the lock-ignoring bug"
    # The same seeds are clean without the bug: the violation is the bug's.
    assert all(run(seed, n).violations == [] for seed in caught)


def test_the_command_replays_a_seed():
    command = [sys.executable, "-m", "tsunagi.consensus.sim", "--seed", "6"]
    bug = subprocess.run(command + ["--planted-bug"], capture_output=True, text=True)
    assert bug.returncode == 1 and "VIOLATION safety: at height 0" in bug.stdout
    clean = subprocess.run(command, capture_output=True, text=True)
    again = subprocess.run(command, capture_output=True, text=True)
    assert clean.returncode == 0 and "VIOLATION" not in clean.stdout
    assert clean.stdout == again.stdout and run(6).trace_digest in clean.stdout
    many = subprocess.run(command + ["--count", "20", "--n", "7"], capture_output=True,
                          text=True)
    assert many.returncode == 0 and "20 seeds from 6 at n=7: 0 with violations" in many.stdout


def test_a_wal_of_own_messages_only_can_stall_after_a_restart():
    """Seed 41 at n=4 (an equivocating validator, three crashes of honest ones) stalls when a
    restart forgets every message received; with them in the WAL (the default) it decides."""
    stalled = run(41, 4, log_received=False)
    assert stalled.violations and all(v.startswith("liveness:") for v in stalled.violations)
    assert "own-messages-only-WAL" in stalled.stats["scenario"]
    assert run(41, 4).violations == []
