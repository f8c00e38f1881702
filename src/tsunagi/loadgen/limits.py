"""Limits and defaults of the load generator: why each is what it is, what it costs.

Plain numbers only, so the command's flags (``tsunagi loadgen --help``) can show them without
loading numpy or the node.
"""

from __future__ import annotations

# The modes a run can take (--mode), the chain id of a chain made by --prepare, and the seed
# of its keys and of the random draws (--seed).
modes = ("baseline", "batched", "batch-authorized")
chain_id_default = 7
seed_default = 1

# Transfers prepared when --count is not given: a few seconds of load on a small machine.
count_defaults = {"baseline": 5_000, "batched": 400_000, "batch-authorized": 4_000_000}

# Each load account starts with this much, far more than any run moves out of it (1 unit a
# transfer), so no transfer fails for funds. 10**12 units times accounts_max stays below 2**64.
funding_units = 10**12
accounts_max = 10_000_000
keys_max = 4096  # owner keys; a batch-authorized request needs one entry per key it touches
# Account queries in flight while a target's load accounts are checked (two a key, at most
# 8,192): a few round trips, far below the node's limit of requests in flight a connection.
target_checks_at_once = 256

# Below this many signatures a pool of signing processes costs more to start than it saves.
sign_pool_min = 20_000
sign_chunk = 8192  # signatures per task of the signing pool
# Signed traffic is built this many records at a time: the records, txids and signatures of
# one chunk are dropped once encoded into frames (keeping ~1/3 of the memory of doing it whole).
build_chunk_records = 1 << 18
# Prepared traffic is held in memory (192 bytes a signed transfer); past this share of the
# memory available when the run starts (6 GiB where /proc/meminfo is missing) the run is
# refused instead of swapping: lower --count, or use --live for batch-authorized runs.
prebuild_memory_share = 0.7
prebuild_bytes_default = 6 << 30

# How often the live display (and a tick callback) sees the counters.
progress_tick_s = 0.1
# Where stderr is not a terminal (a log, CI), progress is a plain line each time another tenth
# of a step is done, and at most one a second, so a log of a long step stays a dozen lines.
progress_line_share = 0.1
progress_line_s = 1.0

# Width of one bar of the throughput-over-time chart: about the first of these that leaves at
# most series_bars_max bars, so a long run is not drawn as a comb of single blocks. The bars
# are then widened a little so that a whole number of them spans the run exactly.
series_bin_choices_s = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
series_bars_max = 150

# The chart's time axes count seconds for a run shorter than this, then minutes, then hours
# from run_hours_from_s: a unit in which the run is a number a reader takes in at a glance.
run_minutes_from_s = 120.0
run_hours_from_s = 7200.0

# After the deadline, how long answers still in flight are waited for.
drain_s = 60.0
overloaded_pause_s = 0.005  # an `overloaded` request is sent again after this pause
connect_timeout_s = 10.0
node_start_timeout_s = 60.0
# A node stopped with SIGTERM first finishes indexing what it committed: after a burst of
# batch-authorized transfers that takes minutes here (the index takes ~90,000 records a second).
# Killing it sooner leaves the index behind, and the next start makes its writer wait for the
# catch-up, which stalls the next run.
node_stop_timeout_s = 900.0
live_ahead = 4  # requests a live-built client keeps ready beyond its window
