/* BIP340 batch verification (the batch equation of BIP340's "Batch Verification" section) on
 * libsecp256k1's own field, group and multi-scalar multiplication code, which the library keeps
 * internal: ext/vendor/secp256k1 is its 0.2.0 release, compiled into this one file's unit. */
#ifndef TSUNAGI_BIP340_BATCH_H
#define TSUNAGI_BIP340_BATCH_H

#include <stddef.h>
#include <stdint.h>

/* out[i] = 1 when signatures[i] (64 bytes) is a valid BIP340 signature of messages[i] (32
 * bytes) under the x-only key keys[i] (32 bytes), else 0: the same answers as verifying each
 * alone. Signatures are checked in groups of up to a few thousand by one multi-scalar
 * multiplication with random weights; a group that fails is halved until the bad signatures
 * are found (one bad signature costs about twice its group's time), and a group with many bad
 * ones is checked one by one after a few halvings (at most ~1.8 times verifying each alone).
 * Runs on `threads` threads (the caller's among them); never touches Python. A group that
 * finds no memory for its batch verifies each signature alone. */
void ts_bip340_verify_batched(const uint8_t *messages, const uint8_t *keys,
                             const uint8_t *signatures, size_t count, int threads, uint8_t *out);

#endif
