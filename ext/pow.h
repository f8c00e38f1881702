/* Proof of work over Bitcoin's 80-byte header: nonce search and header-chain validation. */
#ifndef TSUNAGI_POW_H
#define TSUNAGI_POW_H

#include <stddef.h>
#include <stdint.h>

#define TS_HEADER_BYTES 80
#define TS_NONCE_NONE UINT64_MAX

/* Reasons a header fails validation; 0 means valid. Mirrored by tsunagi.core.codes. */
#define TS_HEADER_OK 0
#define TS_HEADER_BAD_LINK 1     /* previous-hash field is not the hash of the header before */
#define TS_HEADER_BAD_BITS 2     /* compact bits are negative, zero or overflow */
#define TS_HEADER_BAD_POW 3      /* hash is above the header's own target */

typedef struct ts_search ts_search;

/* A nonce search over [first, first + count) for one header; count <= 2^32 - first. */
ts_search *ts_search_new(const uint8_t header[80], uint64_t first, uint64_t count,
                         uint64_t chunk);
void ts_search_free(ts_search *search);
/* Runs on `threads` threads; returns the lowest qualifying nonce, or TS_NONCE_NONE. */
uint64_t ts_search_run(ts_search *search, int threads);
void ts_search_cancel(ts_search *search);
int ts_search_cancelled(ts_search *search);
uint64_t ts_search_hashes(ts_search *search);

/* Validates count contiguous headers. prev_hash may be NULL (the first header's link is then
 * not checked). Returns the index of the first bad header and sets *reason, or returns count
 * with *reason = TS_HEADER_OK. */
size_t ts_validate_headers(const uint8_t *headers, size_t count, const uint8_t *prev_hash,
                           int threads, int *reason);

/* SHA-256d of records, split over threads. */
void ts_sha256d_records_parallel(const uint8_t *buffer, size_t record_count,
                                 size_t record_size, uint8_t *out, int threads);

/* One Merkle level up (odd levels pair the last hash with itself), hashed on `threads`
 * threads when the level is large. `out` (count/2 rounded up hashes) must not overlap `in`. */
void ts_merkle_parents_parallel(const uint8_t *in, size_t count, uint8_t *out, int threads);

#endif
