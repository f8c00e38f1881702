/* Internal to the SHA-256 core: the shared constants and the kernels each backend provides.
 * Only sha256.c (the dispatcher and portable backend) and sha256_shani.c include this. */
#ifndef TSUNAGI_SHA256_KERNELS_H
#define TSUNAGI_SHA256_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define TS_X86 1
#else
#define TS_X86 0
#endif

extern const uint32_t ts_sha256_k[64];
extern const uint32_t ts_sha256_iv[8];

/* The 64 schedule words of one block, each with its round constant added: a block that never
 * changes (a padding block) is scheduled once per call instead of once per message. */
void ts_sha256_block_wk(const uint8_t block[64], uint32_t wk[64]);

/* What every record of one size shares, for the batch kernels of both backends: its block
 * count and the padding of its last block. */
typedef struct {
    size_t whole_blocks;
    size_t rest;                /* bytes in the last, partial block (0: none) */
    uint8_t tail_template[64];  /* the partial block's padding, message bytes zero */
    int has_fixed_block;        /* a last block of padding only, the same for every record */
    uint32_t fixed_wk[64];      /* that block, scheduled */
} ts_record_padding;

void ts_record_padding_init(ts_record_padding *padding, size_t record_size);

#if TS_X86
/* SHA-NI kernels: callers must have checked the CPU (see sha256.c). Same contracts as the
 * public functions of the same names in sha256.h. */
void ts_shani_compress(uint32_t state[8], const uint8_t *blocks, size_t block_count);
void ts_shani_sha256d_records(const uint8_t *buffer, size_t record_count, size_t record_size,
                              uint8_t *out);
uint64_t ts_shani_nonce_scan(const uint32_t midstate[8], const uint8_t tail[12], uint64_t first,
                             uint64_t end, uint32_t target_top);
#endif

#endif
