/* Shamir secret sharing over GF(256) (tsunagi.privacy.shamir), written for secrets: every
 * product is a shift-and-conditional-xor with masks and every inverse the power x^254, so no
 * table lookup and no branch depends on a secret byte (HashiCorp Vault's log/exp tables were a
 * timing finding, CVE-2023-25000). The field is GF(2^8) with the polynomial x^8+x^4+x^3+x+1
 * (0x11B), as in AES and SLIP-0039. Plain C over caller-owned buffers, no allocation, no
 * Python, so the wrapper runs each call without the GIL: one call per whole split or combine. */
#ifndef TS_SHAMIR_KERNEL_H
#define TS_SHAMIR_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* The product a*b in GF(256), in eight fixed rounds whatever the operands. */
uint8_t ts_gf_multiply(uint8_t a, uint8_t b);

/* The inverse of a (a^254, a fixed chain of squarings and products); 0 maps to 0. */
uint8_t ts_gf_inverse(uint8_t a);

/* Writes the values at xs[0..count) of the polynomial, byte by byte over `length` bytes,
 *     f(x) = secret*(x+254) + digest*(x+255) + (x+254)(x+255)*h(x),
 * so f(255) = secret and f(254) = digest (SLIP-0039's places), where h has `degree_count`
 * coefficients of `length` bytes each in `coefficients`, lowest power first (none when the
 * threshold is 2). out holds count*length bytes, share i at i*length. */
void ts_shamir_evaluate(const uint8_t *secret, const uint8_t *digest, size_t length,
                        const uint8_t *coefficients, size_t degree_count, const uint8_t *xs,
                        size_t count, uint8_t *out);

/* Writes to out, for each of the target_count points in targets, the value there of the
 * polynomial of least degree through the `count` points (xs[i], values[i*length..]), by
 * Lagrange's formula. The caller has checked that xs are distinct. */
void ts_shamir_interpolate(const uint8_t *xs, const uint8_t *values, size_t count,
                           size_t length, const uint8_t *targets, size_t target_count,
                           uint8_t *out);

#endif
