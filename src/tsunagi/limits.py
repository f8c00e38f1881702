"""Every limit of tsunagi, with why it is what it is and what it costs.

Native code that needs a limit gets it from ``ext/limits.pxd``; a test checks the two agree.
"""

from __future__ import annotations

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

# Largest values of the unsigned little-endian fields the formats use: u32 for counts, times,
# chain ids, bits and batch ranges; u64 for accounts, amounts, sequences and heights. A value
# past one does not fit its field, so encoders and validators refuse it.
u32_max = 2**32 - 1
u64_max = 2**64 - 1
