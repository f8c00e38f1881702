/* SHA-256 core of tsunagi: two backends (Intel SHA extensions and portable C), chosen once at
 * run time, and the fixed-shape hashes built on them. */
#ifndef TSUNAGI_SHA256_H
#define TSUNAGI_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define TS_BACKEND_PORTABLE 0
#define TS_BACKEND_SHANI 1

/* Picks the backend: SHA-NI when the CPU has it, unless TSUNAGI_SHA256_PORTABLE=1 is set in
 * the environment. Safe to call more than once (not while hashing); returns the chosen backend.
 *
 * Each backend also has batch kernels (records, Merkle levels, headers, nonce scan) that hash
 * many messages side by side: the portable backend on vector lanes (16 with AVX-512, 8 with
 * AVX2, else 4 in plain vector C), the SHA-NI backend on four SHA-NI lanes or on the vector
 * lanes, whichever a short measurement finds faster on this CPU. TSUNAGI_SHA256_LANES=4, 8 or
 * 16 caps the vector width and skips the measurement; 0 pins the SHA-NI lanes. */
int ts_sha256_select_backend(void);
int ts_sha256_backend(void);
/* Name of the batch kernels in use: "shani-4", "lanes-16", "lanes-8" or "lanes-4". */
const char *ts_sha256_batch_kernels(void);

void ts_sha256_compress(uint32_t state[8], const uint8_t *blocks, size_t block_count);
void ts_sha256(const uint8_t *data, size_t length, uint8_t out[32]);
void ts_sha256d(const uint8_t *data, size_t length, uint8_t out[32]);

/* SHA-256d of each record_size-byte record of buffer, written as record_count x 32 bytes. */
void ts_sha256d_records(const uint8_t *buffer, size_t record_count, size_t record_size,
                        uint8_t *out);

/* One Merkle level up: parent i = SHA-256d(child 2i || child 2i+1); an odd level pairs its
 * last hash with itself. Writes (count + 1) / 2 hashes to out (out may equal in). */
void ts_merkle_parents(const uint8_t *in, size_t count, uint8_t *out);

/* SHA-256d of an 80-byte header. */
void ts_header_hash(const uint8_t header[80], uint8_t out[32]);

/* Scans the nonces [first, end) (end <= 2^32) of a header whose first 64 bytes left
 * `midstate` and whose bytes 64..75 are `tail`. Returns the first nonce whose hash's most
 * significant little-endian 32-bit word is at most target_top, or end when none is: a
 * candidate that the caller checks against the whole target. */
uint64_t ts_nonce_scan(const uint32_t midstate[8], const uint8_t tail[12], uint64_t first,
                       uint64_t end, uint32_t target_top);

/* Compact bits -> 32-byte little-endian target. Returns 0 when bits are valid for proof of
 * work, or a nonzero reason: 1 negative, 2 zero, 3 overflows 256 bits. */
int ts_bits_to_target(uint32_t bits, uint8_t target[32]);

/* 1 when the little-endian 256-bit hash is at most the target. */
int ts_hash_meets_target(const uint8_t hash[32], const uint8_t target[32]);

#endif
