"""Limits and defaults of the load generator: why each is what it is, what it costs.

Plain numbers only, so the command's flags (``tsunagi loadgen --help``) can show them without
loading numpy or the node.
"""

from __future__ import annotations

MODES = ("baseline", "batched", "batch-authorized")
CHAIN_ID_DEFAULT = 7  # the chain id of a chain made by --prepare
SEED_DEFAULT = 1  # of the keys, and of the random draws

# Transfers prepared when --count is not given: a few seconds of load on a small machine.
COUNT_DEFAULTS = {"baseline": 5_000, "batched": 400_000, "batch-authorized": 4_000_000}

# Each load account starts with this much, far more than any run moves out of it (1 unit a
# transfer), so no transfer fails for funds. 10**12 units times ACCOUNTS_MAX stays below 2**64.
FUNDING_UNITS = 10**12
ACCOUNTS_MAX = 10_000_000
KEYS_MAX = 4096  # owner keys; a batch-authorized request needs one entry per key it touches
# Account queries in flight while a target's load accounts are checked (two a key, at most
# 8,192): a few round trips, far below the node's limit of requests in flight a connection.
TARGET_CHECKS_AT_ONCE = 256

# Below this many signatures a pool of signing processes costs more to start than it saves.
SIGN_POOL_MIN = 20_000
SIGN_CHUNK = 8192  # signatures per task of the signing pool
# Signed traffic is built this many records at a time: the records, txids and signatures of
# one chunk are dropped once encoded into frames (keeping ~1/3 of the memory of doing it whole).
BUILD_CHUNK_RECORDS = 1 << 18
# Prepared traffic is held in memory (192 bytes a signed transfer); past this share of the
# memory available when the run starts (6 GiB where /proc/meminfo is missing) the run is
# refused instead of swapping: lower --count, or use --live for batch-authorized runs.
PREBUILD_MEMORY_SHARE = 0.7
PREBUILD_BYTES_DEFAULT = 6 << 30

PROGRESS_TICK_S = 0.1  # how often the live display (and a tick callback) sees the counters
# Where stderr is not a terminal (a log, CI), progress is a plain line each time another tenth
# of a step is done, and at most one a second, so a log of a long step stays a dozen lines.
PROGRESS_LINE_SHARE = 0.1
PROGRESS_LINE_S = 1.0

# Width of one bar of the throughput-over-time chart: about the first of these that leaves at
# most SERIES_BARS_MAX bars, so a long run is not drawn as a comb of single blocks. The bars
# are then widened a little so that a whole number of them spans the run exactly.
SERIES_BIN_CHOICES_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
SERIES_BARS_MAX = 150

# The chart's time axes count seconds for a run shorter than this, then minutes, then hours
# from RUN_HOURS_FROM_S: a unit in which the run is a number a reader takes in at a glance.
RUN_MINUTES_FROM_S = 120.0
RUN_HOURS_FROM_S = 7200.0

DRAIN_S = 60.0  # after the deadline, how long answers still in flight are waited for
OVERLOADED_PAUSE_S = 0.005  # an `overloaded` request is sent again after this pause
CONNECT_TIMEOUT_S = 10.0
NODE_START_TIMEOUT_S = 60.0
# A node stopped with SIGTERM first finishes indexing what it committed: after a burst of
# batch-authorized transfers that takes minutes here (the index takes ~90,000 records a second).
# Killing it sooner leaves the index behind, and the next start makes its writer wait for the
# catch-up, which stalls the next run.
NODE_STOP_TIMEOUT_S = 900.0
LIVE_AHEAD = 4  # requests a live-built client keeps ready beyond its window
