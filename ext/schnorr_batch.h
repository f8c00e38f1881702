/* Batch BIP340 verification through libsecp256k1's own functions, reached by pointer (the
 * library is the one coincurve ships), split over threads that never touch Python. */
#ifndef TSUNAGI_SCHNORR_BATCH_H
#define TSUNAGI_SCHNORR_BATCH_H

#include <stddef.h>
#include <stdint.h>

/* secp256k1_schnorrsig_verify and secp256k1_xonly_pubkey_parse; the parsed key is libsecp's
 * opaque 64-byte secp256k1_xonly_pubkey. */
typedef int (*ts_schnorr_verify_fn)(const void *context, const unsigned char *signature64,
                                    const unsigned char *message, size_t message_length,
                                    const void *public_key);
typedef int (*ts_xonly_parse_fn)(const void *context, void *public_key,
                                 const unsigned char *input32);

typedef struct {
    const void *context; /* a verification context; libsecp's verify only reads it */
    ts_schnorr_verify_fn verify;
    ts_xonly_parse_fn parse;
} ts_secp;

/* out[i] = 1 when signatures[i] (64 bytes) is a valid BIP340 signature of messages[i]
 * (32 bytes) under the x-only key keys[i] (32 bytes), else 0. */
void ts_verify_batch(const ts_secp *secp, const uint8_t *messages, const uint8_t *keys,
                     const uint8_t *signatures, size_t count, int threads, uint8_t *out);

/* out[i] = 1 when keys[i] is a valid x-only public key (an x on the curve), else 0. */
void ts_check_keys(const ts_secp *secp, const uint8_t *keys, size_t count, uint8_t *out);

#endif
