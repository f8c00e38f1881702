"""Limits of the privacy layer (holders, PINs, the service store, the channel to the
confidentiality service): why each is what it is and what it costs.

Named as in :mod:`tsunagi.limits`: what it bounds, its unit, then ``_max`` or ``_min``. Code
reads them as ``limits.name`` when it runs, so a test may set one for a while (monkeypatch).
"""

from __future__ import annotations

# --- PINs -----------------------------------------------------------------------------------------

# Wrong PINs in a row before the service locks a holder. Five guesses at a 6-digit PIN find it
# with odds of 1 in 200,000; a holder who mistypes gets room for a few slips. Signal allows 10
# guesses for its recovery PINs; a vault holder's fragment guards a document, so fewer.
pin_attempts_max = 5

# A PIN's length in characters. Four digits is the shortest PIN people are used to; the count
# of wrong PINs is what protects it, not its length. Beyond 64 characters it is a passphrase,
# and a bound keeps the Argon2id input (and a request) small.
pin_chars_min = 4
pin_chars_max = 64

# Argon2id costs the service may be configured with. The floor keeps a misconfigured service
# from making PIN guesses cheap to whoever copies its store (each guess must cost at least
# 8 MiB and one pass); the ceiling of 1 GiB and 10 passes keeps one unlock within a few
# seconds and the memory of a small server, since each unlock runs one Argon2id.
argon2_memory_kib_min = 8
argon2_memory_kib_max = 1 << 20
argon2_iterations_max = 10
argon2_lanes_max = 8

# Holders one service enrols. Each costs a ~600-byte file and a dictionary entry; a million
# keep the store near 600 MB and its load on start within seconds.
holders_enrolled_max = 1_000_000

# Invitations to enrol that wait at once; an unused one costs 32 bytes of memory.
invitations_max = 100_000

# --- holders and fragments ------------------------------------------------------------------------

# A fragment is a Shamir share of a 16- or 32-byte part key with its index, checksum and
# digest: well under a kilobyte. 4 KiB leaves room for a longer share format and bounds what
# the service decrypts or holds for a request.
fragment_bytes_max = 4096

# A device file is a small JSON document (two wrapped 32-byte keys and public fields); one over
# 64 KiB is not one, so it is refused before it is parsed.
device_file_bytes_max = 1 << 16

# A service store's holder file is about 500 bytes of JSON; 64 KiB bounds a damaged one.
holder_record_bytes_max = 1 << 16

# --- the channel ----------------------------------------------------------------------------------

# One message on the channel: a request with a fragment, or an answer with a device key, is
# under 16 KiB; 1 MiB bounds what the service decrypts and parses for one message.
channel_message_bytes_max = 1 << 20

# Messages one way in one session. Sequence numbers are 64-bit and each makes an AES-GCM nonce,
# so they can never repeat; a session is one holder's sitting, so 2**20 messages are plenty and
# a client that sends more is made to open a new session.
channel_messages_max = 1 << 20

# Sessions the service keeps open between handshake and close; each holds two 32-byte keys and
# a transcript hash, so 10,000 cost about 2 MB; the oldest is dropped first past this.
channel_sessions_max = 10_000

# Open requests the service accepts fragments for at once; each holds at most one fragment per
# holder of its document until the vault takes them.
requests_open_max = 10_000

# Holders one document names: Shamir over GF(256) has 255 share indexes.
document_holders_max = 255

# Refusals the service keeps for the vault to record on chain (each ~300 bytes); the vault takes
# them after every step, so a backlog means a flood of bad messages, and the oldest go first.
refusals_kept_max = 10_000
