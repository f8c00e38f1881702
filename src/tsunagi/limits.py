"""Limits of the native core and of core (blocks, chain configs, key files): why each is what it
is and what it costs.

Every limit is a lower-case module attribute named what it bounds, then its unit, then ``_max``
or ``_min`` (``block_records_max``, ``config_json_bytes_max``). The layers above keep theirs in
one module each: :mod:`tsunagi.ledger.limits` (the store and the ledger's queues) and
:mod:`tsunagi.node.limits` (the wire protocol, server and client). Native code that needs a
limit gets it from ``ext/limits.pxd``; a test checks the two agree.
"""

from __future__ import annotations

# --- the native core ------------------------------------------------------------------------------

# Bitcoin's header layout: version, previous hash, Merkle root, time, bits, nonce.
header_bytes = 80

# SHA-256 digest size; every hash, txid and Merkle node is this long.
hash_bytes = 32

# A nonce is a 32-bit header field, so a search range ends at 2**32.
nonce_end = 2**32

# Nonces a search thread claims at once: about 3 ms of work at 20 M/s, so cancellation and
# the first-found cut-off are seen within milliseconds, and claiming costs nothing measurable.
nonce_chunk = 1 << 16

# Threads a native call may start; more than the machine's cores only adds switching.
threads_max = 256

# Nonces each thread hashes between two looks at a sealer's stop event (mine_header): 17 ms
# at 30 M/s a core with SHA-NI (20 ms on the portable path here), so a better tip stops a
# search that soon; starting the threads again for the next stretch costs ~0.1 ms.
seal_thread_nonces = 1 << 19

# Largest values of the unsigned little-endian fields the formats use: u32 for counts, times,
# chain ids, bits and batch ranges; u64 for accounts, amounts, sequences and heights. A value
# past one does not fit its field, so encoders and validators refuse it.
u32_max = 2**32 - 1
u64_max = 2**64 - 1

# --- blocks and chain configs (tsunagi.core) ------------------------------------------------------

# A block holds at most this many records whatever the config says: 2**20 records are about
# 200 MB with their signatures, the most a node should hold in memory for one block. A chain's
# own ChainConfig.block_records_max may be set lower, never higher.
block_records_max = 2**20

# A batch waits at most a minute for more records (ChainConfig.block_wait_ms).
block_wait_ms_max = 60_000

# Proof-of-work chain configs (tsunagi.consensus.pow). A retarget window of 2**20 blocks is
# 20 years of 10-minute blocks: a longer one would never adjust within a chain's life.
retarget_blocks_max = 2**20
# A block a day is the slowest pace worth a retarget: a chain that slow has no miners racing.
block_interval_s_max = 86_400
# How far ahead of a node's clock a block may be dated. Bitcoin allows 2 hours; a day at most,
# because every second allowed is one a miner may claim ahead to ease the next retarget.
time_future_s_max = 86_400

# Consortium chains (ChainConfig.validators, tsunagi.consensus.certificate). A certificate
# names its signers by u16 index and holds a 64-byte signature for each: 1,024 validators make
# a certificate of at most ~67 KB plus a next set of ~41 KB, and every block carries one.
# Tendermint-style chains run with tens to a few hundred validators.
validators_max = 1024
# A validator's weight (voting power): u32, so the total of validators_max weights stays far
# inside u64 and 3 * weight sums are exact integers anywhere.
validator_weight_max = 2**32 - 1
# A round timeout (ChainConfig.timeout_*_ms): ten minutes; a longer one only stalls a round
# whose proposer is down.
timeout_ms_max = 600_000
# A version 2 block's seal (its commit certificate): the largest certificate of
# validators_max signers with a next set of validators_max fits with room to spare.
seal_bytes_max = 1 << 18
# Consortium entries (validator updates, evidence) in one version 2 block's extension.
consortium_entries_max = 1024
# The arguments of one call record (a block entry): a document part or a contract's
# arguments with their proofs fit; a block's whole size is bounded by the log's block limit.
payload_bytes_max = 1 << 20
# How deep JSON from outside (a chain config, a key file, a vault message) may nest: ours nest
# 3 deep; the parser recurses in C once a level, so a bound keeps any text from the stack.
json_depth_max = 64
# Contracts one chain config names (a call's contract number is a u64; the registry is small).
contracts_max = 64

# Genesis accounts (issuers and allocations): each costs about 90 bytes of config JSON and
# two genesis records; 100,000 keep the JSON under 10 MB and genesis quick to replay.
genesis_accounts_max = 100_000

# A chain config's JSON: comfortably above the largest valid config.
config_json_bytes_max = 16 << 20

# A chain's name, in characters: enough for a name, short enough to print on one line.
chain_name_chars_max = 64

# Display decimals of an asset: 10**19 units would leave fewer than two whole units below 2**64.
decimals_max = 18

# --- key files (tsunagi.core.keyfile) -------------------------------------------------------------

# A key file is under 1 KiB; a larger file is refused unread, so a wrong path costs nothing.
key_file_bytes_max = 64 * 1024

# What a key file may ask scrypt for: a file asking for more memory or time than this was not
# written by tsunagi, and obeying it would let a hostile file exhaust the machine. scrypt takes
# 128 * r * N bytes.
scrypt_n_min = 2**10
scrypt_n_max = 2**20
scrypt_r_max = 16
scrypt_p_max = 4
scrypt_memory_bytes_max = 1 << 30

# --- secret sharing (tsunagi.privacy.shamir, ext/shamir.pyx) -------------------------------------

# GF(256) has 256 points and a set's polynomial is pinned at one of them, the secret's and its
# tag's (x = 255); so a set has at most 255 shares (x = 0..254). (Format version 1 pinned a
# digest share at x = 254 as SLIP-0039 does, and stopped at 254.)
shamir_shares_max = 255
# One share alone must reveal nothing, so a secret needs two shares at least to open.
shamir_threshold_min = 2
# SLIP-0039's smallest secret, 128 bits (format version 1's digest share also needed 16 bytes:
# 4 of digest, 12 of HMAC key); a shorter key is too weak to be worth sharing.
shamir_secret_bytes_min = 16
# A split costs shares * threshold * length products: 4 KiB at 128 of 255 takes 0.18 s here
# (a 32-byte key 2 ms). The secrets shared are keys; larger data is encrypted, its key shared.
shamir_secret_bytes_max = 4096
