"""Limits of the node's wire protocol, server and client: why each is what it is, what it costs.

Every queue and buffer of the node is bounded by one of these. The server takes its tunable
ones from :class:`tsunagi.node.server.NodeSettings`, whose defaults come from here.
"""

from __future__ import annotations

from tsunagi.ledger.limits import log_block_bytes_max

# The wire protocol versions this code speaks, oldest first. A hello names the versions the
# client speaks; the server picks the highest one both know.
protocol_versions = (1,)

# A frame is a u32 length, then version u8, type u8, flags u16, request id u64.
frame_prefix_bytes = 16

# Largest frame either side accepts (length prefix included). It bounds the memory one
# connection can make the node hold for a frame it has not finished reading; it costs that a
# submit batch carries at most about 87,000 signed records, so larger batches are split.
frame_bytes_max = 16 * 1024 * 1024

# Records in one submit batch request. 65,536 signed records are 12 MiB, inside the frame
# limit; the cost is that a client with more sends several requests (the auto-batcher does).
request_records_max = 65_536

# Batch-authorization entries in one request: each covers a range of the request's records,
# so more than a few per request only adds checking work.
request_batches_max = 4096

# Requests one connection may have unanswered. At the limit the server stops reading from that
# connection, so TCP pushes back on the sender; it costs a pipelining client nothing until it
# has this many requests on the wire.
inflight_per_connection_max = 1024

# Open connections. Each costs a socket and about 100 KiB of buffers; the default file
# descriptor limit of 1024 must also leave room for the ledger's files.
connections_max = 512

# Records waiting for the group-commit writer, over all connections. Past half of it the node
# stops reading frames until the writer drains the queue (TCP pushes back on clients, which
# then need no retries); past all of it a submission is answered `overloaded` instead of queued,
# so memory stays below about 48 MiB of waiting records (192 bytes each with the signature)
# whatever the clients do.
queue_records_max = 262_144

# Records in one commit group (one ledger.submit_batch, one block, one fsync). Larger groups
# amortise the fsync further but make every waiting client wait for a larger block.
group_records_max = 8192

# Groups begun and not yet durable. With 2, one group's block is built (checks, apply, hashing:
# CPU) while the one before it waits for its fsync (the disk); each is answered after its own
# fsync. 1 commits strictly one group at a time.
groups_in_flight = 2

# How long the writer waits after the first submission of a group for more to arrive. It
# bounds the latency group commit adds to a lone request; under load the group fills sooner.
group_wait_ms = 2.0

# A frame whose first byte has arrived must be complete within this time, or the connection is
# closed: a sender dribbling bytes cannot hold a buffer and a connection slot forever.
frame_timeout_s = 10.0

# The hello must arrive within this time after the connection is accepted.
handshake_timeout_s = 10.0

# A connection that sends nothing for this long and waits for nothing (no request in flight,
# no subscription) is closed, so abandoned sockets do not use up `connections_max`.
idle_timeout_s = 300.0

# Answers and block notices a client has not read yet. The server never waits on a client's
# socket; past this much unsent data it drops the connection (a vanished or stuck reader).
write_buffer_bytes_max = 64 * 1024 * 1024

# Block subscriptions on one connection; each costs a task and a read of every new block.
subscriptions_per_connection_max = 16

# Entries in one history answer: 1000 entries are 176 KB, small next to the frame limit.
history_limit_max = 1000

# Accounts in one accounts answer (8 KB) and holds in one holds answer (88 KB): a key owning
# more accounts is asked again from the last one; past this many open holds an answer lists
# the oldest and counts the rest.
accounts_per_answer_max = 1000
holds_per_answer_max = 1000

# Hashes in a Merkle proof: a block of 2**64 records needs 64, so more is never valid.
proof_hashes_max = 64

# Versions one hello or peer_hello may name.
hello_versions_max = 16

# Bytes of UTF-8 text in an error answer; longer messages are cut.
error_message_bytes_max = 1024

# Client side: how often a request is retried after a lost connection or an `overloaded`
# answer, and the first pause (doubled each time). Submissions are idempotent, so a retry is
# safe: a record committed by the lost attempt answers `already_committed` with its code.
client_retries_max = 5
client_retry_pause_s = 0.05

# Client side: how long a request waits for its answer before it fails with NodeError.
client_request_timeout_s = 60.0

# Client side: past this much unsent data a sender waits for the socket to drain, so a client
# that submits faster than the node reads holds at most this much in its write buffer.
client_write_buffer_bytes_max = 1 << 20

# Client side: block notices a subscription holds unread; past this it drops them and
# subscribes again later from the height it reached, so a slow reader costs bounded memory.
client_stream_notices_max = 4096

# Auto-batcher: a pending batch is sent when it holds this many records or this long after
# its first record arrived, whichever comes first.
batcher_records_max = 4096
batcher_wait_ms = 1.0

# --- peer connections (docs/PROTOCOL.md, "Peers") ---------------------------------------------

# Largest frame on a peer connection, which carries whole blocks (block_data): the largest block
# the block log stores (tsunagi.ledger.limits.log_block_bytes_max, 256 MiB) and the frame's
# prefix, since a node could not keep a larger block anyway. Client frames stay at
# frame_bytes_max: a connection gets this limit only once its first frame, a peer_hello read
# under frame_bytes_max, made it a peer's. It costs that one peer can make the node hold up to
# 256 MiB for a frame it is sending (reserved with numpy.empty: only the bytes that arrive
# touch memory), so the peer manager bounds peers and blocks in flight.
peer_frame_bytes_max = frame_prefix_bytes + log_block_bytes_max

# Headers in one headers message: 16,384 are 1.3 MB, one frame per round trip of headers-first
# sync. Encoding, decoding and validating them (hashing.validate_headers) took 1.7 ms on one
# core here, so a loopback sync makes well over a million headers a second; more per message
# would only delay the first header checked.
headers_per_message_max = 16_384

# Hashes in a block locator: the newest ten one by one, then doubling steps back, reach the
# genesis of a chain of 2**50 blocks in about 60 hashes, so more is never needed.
locator_hashes_max = 64

# Block hashes in one get_blocks (and not_found): the blocks one request asks of one peer. The
# peer manager's download window decides how many requests are in flight; this bounds what one
# request costs to check and to answer.
blocks_per_request_max = 64

# Addresses in one peers answer (Bitcoin's addr holds as many), and bytes of one host: a DNS
# name is at most 253, and the length is a u8.
peers_per_answer_max = 1000
peer_host_bytes_max = 255

# --- the peer manager (tsunagi.node.peers) ------------------------------------------------------

# Peers one node keeps, both directions: Bitcoin Core keeps 8 outbound and up to 125 in all; a
# consortium or test network has a handful. Each costs a connection and its frames in flight.
peers_max = 32
# Blocks asked for and not yet received, over all peers and per peer, and per get_blocks: a
# 10,000-block sync keeps every peer busy (a round trip on loopback is ~0.1 ms, a block of a
# few records ~1 ms to check) while a slow peer holds at most its share.
blocks_in_flight_max = 1024
blocks_in_flight_per_peer_max = 256
blocks_per_request = 16
# A block asked for and not received within this goes to another peer (the first is marked as
# lacking it), so a silent peer stalls a sync by at most this long.
block_request_timeout_s = 10.0
# A peer refused with an error is read from (and its frames dropped) for at most this long
# after the error, so that it gets the error instead of a reset (node/peers.py _refuse).
refuse_linger_s = 2.0
# How long a peer that misbehaved is refused (Bitcoin Core: 24 hours), and how long a node
# waits before dialing a configured peer again (with jitter of +-50%).
peer_ban_s = 3600.0
peer_redial_s = 1.0
# Blocks this node connected most recently, kept in memory by the peer manager to answer
# get_blocks without the chain's lock: a miner holds that lock while it builds and checks its
# next block (a block of 8,192 signed transfers takes ~0.1-0.3 s), and every peer asks for the
# new block right after its announce. 16 blocks of at most 8,192 signed records are ~25 MiB.
recent_blocks_max = 16
# A record a node that does not mine relays to its peers is answered once a connected block
# holds it; if none does within this, the client is told to look for it by txid later.
relay_confirm_timeout_s = 60.0
# Records a reorg took off and that did not go into a block again, remembered (txid and
# why) so that a client asking for one learns why; ~50 bytes each.
reorg_dropped_max = 100_000
# A node that does not mine relays what still waits for a block again every this many seconds
# (and whenever a peer connects): a miner may have dropped it (a full queue) or been away.
relay_again_ticks = 5
# How often Client.wait_confirmed asks a node again: a block takes ~1 ms at the development
# difficulty and minutes on a real one; three small queries a poll cost the node microseconds.
confirm_poll_s = 0.05
# Relays a node remembers having passed on (16 bytes each), so that records do not go round a
# mesh of nodes that do not mine; a relay older than this many others may pass once more.
relays_remembered_max = 65_536

# --- a consortium validator (node/validator.py) ---------------------------------------------------

# Proposals and votes of later heights a validator keeps until it gets there (a peer ahead of it
# sends them): each ~200 bytes, a proposal up to a block; past this the oldest go.
future_messages_max = 4096
# Proposed blocks kept a height: a Byzantine proposer may send many; the honest one sends one a
# round, and a height rarely needs more than a few rounds.
blocks_per_height_max = 16
# While a height lasts, its messages go out again this often (gossip: the paper assumes what one
# correct validator receives, all receive; a peer that lost them, or restarted, needs them).
resend_s = 1.0
# How long a block waits for the mempool's signature checks under way before the engine checks
# what is left itself (nothing is checked twice when they finish in time).
precheck_wait_s = 2.0

# --- web pages (node/http/) -------------------------------------------------------------------

# Events waiting for one browser on the pages' event stream. A browser that falls this far
# behind is dropped instead of growing its queue or slowing the feed; its EventSource reconnects
# by itself and catches up from its Last-Event-ID. About 200 bytes an event.
page_event_queue_max = 64
# Blocks the overview lists, newest first, and the most a reconnecting page is sent at once to
# catch up (it shows no more). Each is one block read and decode when the page is rendered.
page_blocks_shown = 20
# Records a block page lists at a time (a block may hold tens of thousands); the page links to
# the next ones. Each row is a few hundred bytes of HTML.
page_records_shown = 500
# History entries an account page lists at a time, newest first, linking to older ones; each
# is one block read on a reader thread.
page_history_shown = 50
# A development certificate is valid this long from when it is made (a user trusts it once).
dev_certificate_valid_days = 365
# A development certificate this close to expiry is made again when the node starts.
dev_certificate_renew_days = 30

# --- the vault's pages (node/http/vault_*) ----------------------------------------------------

# Call records prepared for a holder's browser to sign and not submitted yet: a few a holder
# at a time, about 600 bytes each; past this the oldest is forgotten (its page prepares the
# step again).
vault_prepared_calls_max = 1024
# A vault step's JSON body: a channel frame (a release is about 700 bytes in hex) or a call's
# arguments (a reason of 500 characters) fit in 8 KiB, read whole before it is parsed.
vault_body_bytes_max = 8 * 1024
# A vault step waits this long for its record to be committed: a group commit takes
# milliseconds, a mined block on a busy machine seconds; past this the node is stuck.
vault_submit_wait_s = 120.0
# The vault looks at the tip this often without a block notification, so that expiries are
# noticed on a quiet chain (an expiry is whole seconds of block time).
vault_follow_poll_s = 1.0
