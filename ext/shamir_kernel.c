/* Shamir secret sharing over GF(256) in constant time: see shamir_kernel.h. */
#include "shamir_kernel.h"

/* A byte of all ones when bit 0 of `bit` is set, else zero: the mask that replaces a branch. */
static inline uint8_t mask_of(unsigned bit) {
    return (uint8_t)(0u - (bit & 1u));
}

static inline uint8_t gf_multiply(uint8_t a, uint8_t b) {
    uint8_t product = 0;
    for (int round = 0; round < 8; round++) {
        product ^= mask_of(b) & a;
        /* Doubling a: shift, and reduce by 0x11B when the top bit falls out. */
        a = (uint8_t)((a << 1) ^ (mask_of(a >> 7) & 0x1Bu));
        b >>= 1;
    }
    return product;
}

static inline uint8_t gf_square(uint8_t a) {
    return gf_multiply(a, a);
}

static inline uint8_t gf_inverse(uint8_t a) {
    /* a^254 = a^-1 for a != 0, since a^255 = 1: 254 is 0b11111110, one fixed chain. */
    uint8_t power = gf_square(a);                  /* a^2 */
    uint8_t result = power;                        /* a^2 */
    for (int bit = 2; bit < 8; bit++) {
        power = gf_square(power);                  /* a^(2^bit) */
        result = gf_multiply(result, power);       /* a^(2 + 4 + ... + 2^bit) */
    }
    return result;
}

uint8_t ts_gf_multiply(uint8_t a, uint8_t b) {
    return gf_multiply(a, b);
}

uint8_t ts_gf_inverse(uint8_t a) {
    return gf_inverse(a);
}

void ts_shamir_evaluate(const uint8_t *secret, const uint8_t *digest, size_t length,
                        const uint8_t *coefficients, size_t degree_count, const uint8_t *xs,
                        size_t count, uint8_t *out) {
    for (size_t share = 0; share < count; share++) {
        /* The share's x is public (its index), so its factors are computed once a share. */
        uint8_t x = xs[share];
        uint8_t to_secret = x ^ 254u, to_digest = x ^ 255u;
        uint8_t both = gf_multiply(to_secret, to_digest);
        uint8_t *value = out + share * length;
        for (size_t i = 0; i < length; i++)
            value[i] = 0;
        /* Horner's rule over h, highest power first: the inner loops run over whole rows of
         * bytes with the same x, so the compiler may do them many bytes at a time. */
        for (size_t power = degree_count; power-- > 0;) {
            const uint8_t *row = coefficients + power * length;
            for (size_t i = 0; i < length; i++)
                value[i] = gf_multiply(value[i], x) ^ row[i];
        }
        for (size_t i = 0; i < length; i++)
            value[i] = gf_multiply(value[i], both) ^ gf_multiply(secret[i], to_secret)
                       ^ gf_multiply(digest[i], to_digest);
    }
}

/* Lagrange's weight of point `which` at `target`: the product over the other points j of
 * (target - x_j) / (x_which - x_j), with one inverse at the end. */
static uint8_t lagrange_weight(const uint8_t *xs, size_t count, size_t which, uint8_t target) {
    uint8_t numerator = 1, denominator = 1;
    for (size_t j = 0; j < count; j++) {
        if (j == which)
            continue;  /* which point is skipped is public: the loop's shape, not a secret */
        numerator = gf_multiply(numerator, target ^ xs[j]);
        denominator = gf_multiply(denominator, xs[which] ^ xs[j]);
    }
    return gf_multiply(numerator, gf_inverse(denominator));
}

void ts_shamir_interpolate(const uint8_t *xs, const uint8_t *values, size_t count,
                           size_t length, const uint8_t *targets, size_t target_count,
                           uint8_t *out) {
    for (size_t t = 0; t < target_count; t++) {
        uint8_t *result = out + t * length;
        for (size_t i = 0; i < length; i++)
            result[i] = 0;
        for (size_t point = 0; point < count; point++) {
            uint8_t weight = lagrange_weight(xs, count, point, targets[t]);
            const uint8_t *row = values + point * length;
            for (size_t i = 0; i < length; i++)
                result[i] ^= gf_multiply(row[i], weight);
        }
    }
}
