"""Limits of ConnectionChain's connectors and light clients: why each is what it is, what it
costs. A proof comes from a connector that may lie, so everything read from one is bounded here
before it is decoded.
"""

from __future__ import annotations

# --- Ethereum step proofs (tsunagi.connect.eth_proof) ---------------------------------------------

# An Ethereum block header in RLP: 612 bytes after Prague, with extraData at most 32 bytes.
# Twice that leaves room for the fields later forks append; a larger one is refused unread.
eth_header_bytes_max = 2048

# Nodes of one Merkle-Patricia proof. A transaction index is at most 9 bytes of RLP, so 18
# nibbles: a path has at most 18 branches and one leaf or extension more. 32 covers that with
# room and stops a proof made of endless nodes.
eth_proof_nodes_max = 32

# One trie node: a branch is at most 17 hashes of 33 bytes (532 with its prefix), but a leaf
# carries a whole receipt or transaction, so this is the larger of the two limits below.
eth_proof_node_bytes_max = 4 * 1024 * 1024

# A transaction's bytes: geth's pool refuses transactions above 128 KiB, so none is in a block.
eth_transaction_bytes_max = 128 * 1024

# A receipt's bytes: its logs are bounded by a block's gas (36 M gas at 8 gas a data byte is
# 4.5 MB), so 4 MiB holds any receipt a real block can have; the cost is that much memory.
eth_receipt_bytes_max = 4 * 1024 * 1024

# Logs of one receipt that the checker decodes: each costs at least 375 gas, so a 36 M gas
# block holds at most 96,000.
eth_receipt_logs_max = 100_000

# --- Ethereum connector (tsunagi.connect.ethereum) ------------------------------------------------

# Gas the connector gives each of its escrow and token calls. They use 30-90 thousand
# (a hold, with its transferFrom, about 90 thousand); a fixed limit above that means a call that
# reverts is still mined, so the connector answers it with a failed TxRef and its proof
# instead of an estimate that fails before anything is on chain.
eth_call_gas = 300_000

# Headers one follow() call returns: 1024 Prague headers are about 630 KB; a light client
# that is further behind calls again from where the last answer ended.
follow_headers_max = 1024

# Ethereum headers one call of the connection contract takes (eth_headers, or the headers
# beside a step's proof): a header is about 610 bytes, so 64 are 39 KiB of a call's 64 KiB of
# arguments, leaving room for the step's proof; a node further behind sends runs of 64 first.
eth_headers_per_call = 64

# --- the connection node's journal (tsunagi.connect.journal) --------------------------------------

# One journal entry: an intent carries one signed 128-byte record (hex, with its 64-byte
# signature) and a few ids, well under 1 KiB; 16 KiB leaves room and refuses a runaway entry.
journal_entry_bytes_max = 16 * 1024
# One line of many entries (Journal.append_many: a group's intents, or its outcomes, in one
# line under one CRC): at most this many entries, the fields they share written once. 200
# intents of batch-authorized records (a record and its txid in hex each) are about 70 KiB.
journal_line_entries_max = 200
# A line of many entries, in bytes: 200 intents with their own signatures are ~100 KiB, so
# 1 MiB leaves room and refuses a runaway line before it is written.
journal_line_bytes_max = 1 << 20
# The whole journal, read at start: about a dozen entries a transfer of a few hundred bytes
# each, so 1 GiB holds some hundred thousand transfers; a bigger file is not a journal.
journal_bytes_max = 1 << 30

# --- the connection node (tsunagi.connect.node) ---------------------------------------------------

# Rounds one drive() call runs for a transfer: a success takes six calls and three records, a
# refund fewer; a transfer still open after this many waits for blocks of a linked chain.
drive_rounds_max = 16

# --- usage billing in the connection node (tsunagi.connect.node) ----------------------------------

# Blocks of a data chain one follow_billing() call scans for each billing rule: each is read
# and decoded once (a few ms for a full block), and every access found costs two calls of the
# connection chain and a record on the token chain; a node further behind scans on in the next
# call, from where its journal says this one stopped.
billing_blocks_max = 256

# --- many transfers together in the connection node (ConnectionNode.pay_many) --------------------

# Transfers one batched proof call of the connection contract carries (escrowed_many, ...):
# its arguments are at most 64 KiB (tsunagi.contracts.limits.encoded_bytes_max), and a proof
# of a block of 100 records holds the block's body (a code and a 64-byte signature a record,
# 6.5 KB) and per transfer its record and Merkle path (about 128 + 7 * 32 bytes): 100 took
# 45,912 bytes and at most 32,484 of the 100,000 steps a call may take (bench/bench_connect.py).
# So the node also puts the records of one group in one block of the linked chain, 100 a block.
batch_transfers_per_call = 100
# Transfers one unproven batched call carries (request_many, confirm_many, complete_many):
# 200 (the contract's cap) took at most 33,213 steps and 4,221 bytes of arguments.
batch_plain_per_call = 200
# Certificate signatures the connection node puts in one call when it feeds a consortium
# chain's headers to the contract: each costs the contract tsunagi.contracts.limits'
# signature_steps (250), so 192 take ~48,000 of a call's 100,000 steps and leave the rest for
# the headers' writes and the step the last run travels with (a 4-validator chain: 64 headers).
certificate_signatures_per_call = 192
