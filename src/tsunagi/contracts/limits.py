"""Limits of the contracts layer (world state, canonical encoding, calls), each with the reason
for its value and what it costs."""

from __future__ import annotations

from tsunagi.limits import u32_max

# --- world state (tsunagi.contracts.state) --------------------------------------------------------

# A state key: a contract's prefix (its name and a zero byte, at most 33 bytes) and the key the
# contract chose. 256 bytes hold a prefix with a 32-byte hash and a long name beside it; every
# key is kept in memory twice (the map and the slot table), so long keys cost memory per entry.
state_key_bytes_max = 256
# A stored value: 64 KiB holds a light client's header window or a transfer's whole trail; a
# block's undo data keeps each value it replaces, so this bounds undo memory per write too.
state_value_bytes_max = 64 * 1024
# Blocks whose undo data a state keeps: consensus follows reorgs at most
# tsunagi.consensus.limits.reorg_depth_max deep, so the same depth can be taken back here.
state_undo_blocks_max = 10_000
# A snapshot file: one million entries of about 100 bytes are 100 MB; a file beyond this was
# not written by this code for any state it can hold in memory, so it is refused unread.
snapshot_bytes_max = 1 << 34

# --- canonical encoding (tsunagi.contracts.encoding) ----------------------------------------------

# Magnitude of an encoded integer: 32 bytes is the 256-bit word of Ethereum, so any token
# amount of an Ethereum leg and any u64 amount times a u64 rate fit; bigger numbers only cost
# time in every node's arithmetic.
int_bytes_max = 32
# Nesting of lists and dicts: decoding recurses once a level, and contract arguments are flat
# records, so 32 levels are far beyond any need and far inside Python's recursion limit.
encoding_depth_max = 32
# An encoded value (arguments, a return value, a stored value, an event): the size of a stored
# value, so whatever a contract may store it may also take and return.
encoded_bytes_max = state_value_bytes_max

# --- calls (tsunagi.contracts.runtime) ------------------------------------------------------------

# Steps one call may take. A step is one loop iteration or function entry in contract code, and
# state access is charged in steps too (the costs below); 100,000 steps are about 5-10 ms of
# Python, so one call cannot stall a block, and a registry call takes under a hundred.
call_steps_max = 100_000
# Steps a state read costs (a dict lookup and a decode), and a write or delete (the same, plus
# a leaf to re-hash at the end of the block).
state_read_steps = 10
state_write_steps = 50
# Bytes written per step charged on top of a write: a write of the largest value costs
# 4,096 steps, so one call can write at most ~1.5 MB whatever it does.
state_write_bytes_per_step = 16
# Steps one BIP340 signature check costs (Contract.verify_signatures): the native batch verifier
# takes 24-60 us a signature here (200 a batch, or 3), and 100,000 steps are 5-10 ms, so a
# signature is a few hundred steps; 250 let one call check up to ~300 (a certificate of a
# linked chain of ~450 validators) beside the rest of its work.
signature_steps = 250
# Events one call may emit, and what each costs in steps; events go into the block's receipts.
call_events_max = 256
event_steps = 20
# A contract's name (its key prefix in the state and its name in the chain config).
contract_name_chars_max = 32
# A contract module's source: a contract is a small reviewed file; this bounds what an install
# parses and hashes.
contract_source_bytes_max = 1 << 20
# A contract's own refusal code (Refuse): u32, so the ledger can store it in a fixed field.
refuse_code_max = u32_max
# Full results (return values, events, refusals) of the newest calls a node keeps to answer
# their callers; blocks keep only each call's code. ~65k small results are a few MB.
call_results_kept = 65_536
