"""Limits of the consensus layer, each with the reason for its value."""

from __future__ import annotations

# Bodies of the best header chain's blocks ahead of the ledger's tip, held in memory until the
# blocks before them arrive: the peer manager asks for at most node.limits.blocks_in_flight_max
# at once, so this holds a full window several times over (blocks of a few records are a few
# KB; a window of large blocks is bounded by the peers' frame limit times the window).
pending_blocks_max = 4096
# Blocks whose parent is unknown, kept until it arrives (Bitcoin Core keeps 100 orphans).
orphans_max = 256
# The deepest reorg a node follows, and the depth below the best header below which side
# branches are forgotten: a branch forking deeper than this needs a resync from peers.
reorg_depth_max = 10_000
# Blocks connected in a row (a sync) are made durable together, one fsync for this many: each
# block waiting for its fsync holds a buffer of the log's pool, which a block's write searches.
connect_sync_blocks = 64
# Messages of heights after a validator's own, held until it gets there (a BFT driver's buffer,
# and the simulator's): a validator one height behind gets at most a few votes a validator a
# round; beyond this the newest are dropped, and the catch-up of decided heights brings it on.
future_messages_max = 4096
# Events one simulated run may take before it stops (a bound on a run that goes astray, far
# above the ~10,000 of a run of 7 validators that decides its heights; what is not decided by
# then is reported as a liveness violation).
sim_events_max = 2_000_000
