/* Kernels of the index's sorted runs: see index_kernel.h. */
#include "index_kernel.h"

#include <stdlib.h>
#include <string.h>

/* A heap entry: the head row of one input. */
typedef struct {
    uint64_t key;
    uint64_t second;
    uint32_t run;
} ts_head;

/* Orders heads by (key, second, input): ties come out oldest input first. */
static inline int ts_before(const ts_head *a, const ts_head *b) {
    if (a->key != b->key) return a->key < b->key;
    if (a->second != b->second) return a->second < b->second;
    return a->run < b->run;
}

static void ts_sift_down(ts_head *heap, size_t size, size_t at) {
    ts_head moving = heap[at];
    for (;;) {
        size_t child = 2 * at + 1;
        if (child >= size) break;
        if (child + 1 < size && ts_before(&heap[child + 1], &heap[child])) child++;
        if (!ts_before(&heap[child], &moving)) break;
        heap[at] = heap[child];
        at = child;
    }
    heap[at] = moving;
}

/* The second of row `row` of input `run`: 0 when merging by key alone. */
static inline uint64_t ts_second(const uint64_t *const *seconds, size_t run, size_t row) {
    return seconds ? seconds[run][row] : 0;
}

/* Two inputs: no heap, and no branch on the data but the tie test. */
static void ts_merge_two(const uint64_t *const *keys, const uint64_t *const *seconds,
                         const size_t *counts, uint16_t *sources) {
    size_t i = 0, j = 0, out = 0;
    while (i < counts[0] && j < counts[1]) {
        uint64_t ka = keys[0][i], kb = keys[1][j];
        int first = ka < kb || (ka == kb && ts_second(seconds, 0, i) <= ts_second(seconds, 1, j));
        sources[out++] = (uint16_t)!first;
        i += first;
        j += !first;
    }
    while (i < counts[0]) { sources[out++] = 0; i++; }
    while (j < counts[1]) { sources[out++] = 1; j++; }
}

/* Up to TS_SCAN_RUNS inputs merged by key alone: each row takes the least of the inputs' head
 * keys by a scan without branches on the data (a heap's sift-down mispredicts about one
 * branch in two: 7.5 against 13.6 ns a row at four inputs, 14 against 17 at eight). An input
 * that ran out holds the head 2**64-1, which loses every tie to an older input, and to a
 * younger one too since the caller checks that no input ends with that key itself. */
#define TS_SCAN_RUNS 8

static void ts_merge_scan(size_t runs, const uint64_t *const *keys, const size_t *counts,
                          uint16_t *sources, size_t total) {
    uint64_t heads[TS_SCAN_RUNS];
    size_t next[TS_SCAN_RUNS] = {0};
    for (size_t run = 0; run < runs; run++) {
        heads[run] = counts[run] ? keys[run][0] : UINT64_MAX;
    }
    for (size_t out = 0; out < total; out++) {
        size_t best = 0;
        uint64_t least = heads[0];
        for (size_t run = 1; run < runs; run++) {  /* strict: ties keep the older input */
            int less = heads[run] < least;
            best = less ? run : best;
            least = less ? heads[run] : least;
        }
        sources[out] = (uint16_t)best;
        size_t row = ++next[best];
        heads[best] = row < counts[best] ? keys[best][row] : UINT64_MAX;
    }
}

/* Whether the scan may merge these inputs (see ts_merge_scan). */
static int ts_scan_fits(size_t runs, const uint64_t *const *keys, const size_t *counts) {
    if (runs > TS_SCAN_RUNS) return 0;
    for (size_t run = 0; run < runs; run++) {
        if (counts[run] && keys[run][counts[run] - 1] == UINT64_MAX) return 0;
    }
    return 1;
}

int ts_merge_sources(size_t runs, const uint64_t *const *keys, const uint64_t *const *seconds,
                     const size_t *counts, uint16_t *sources) {
    if (runs == 2) {
        ts_merge_two(keys, seconds, counts, sources);
        return 0;
    }
    if (seconds == NULL && ts_scan_fits(runs, keys, counts)) {
        size_t total = 0;
        for (size_t run = 0; run < runs; run++) total += counts[run];
        ts_merge_scan(runs, keys, counts, sources, total);
        return 0;
    }
    ts_head *heap = malloc((runs ? runs : 1) * sizeof(ts_head));
    size_t *next = calloc(runs ? runs : 1, sizeof(size_t));
    if (heap == NULL || next == NULL) {
        free(heap);
        free(next);
        return -1;
    }
    size_t size = 0, out = 0;
    for (size_t run = 0; run < runs; run++) {
        if (counts[run]) {
            heap[size++] = (ts_head){keys[run][0], ts_second(seconds, run, 0), (uint32_t)run};
        }
    }
    for (size_t at = size / 2; at-- > 0;) ts_sift_down(heap, size, at);
    while (size) {
        uint32_t run = heap[0].run;
        sources[out++] = (uint16_t)run;
        size_t row = ++next[run];
        if (row < counts[run]) {
            heap[0].key = keys[run][row];
            heap[0].second = ts_second(seconds, run, row);
        } else {
            heap[0] = heap[--size];
        }
        if (size) ts_sift_down(heap, size, 0);
    }
    free(heap);
    free(next);
    return 0;
}

/* One gather loop per row size the index has, so each copy is a fixed-size move. */
#define TS_GATHER(size)                                                          \
    for (size_t i = 0; i < count; i++) {                                         \
        uint16_t run = sources[i];                                               \
        memcpy(out + i * (size), columns[run] + next[run] * (size), (size));     \
        next[run]++;                                                             \
    }

void ts_gather_rows(size_t runs, const uint8_t *const *columns, size_t itemsize,
                    const uint16_t *sources, size_t count, uint8_t *out) {
    size_t stack[16];
    size_t *next = runs <= 16 ? stack : calloc(runs, sizeof(size_t));
    if (next == NULL) abort();  /* a few bytes an input: only a broken heap fails here */
    memset(next, 0, (runs <= 16 ? 16 : runs) * sizeof(size_t));
    switch (itemsize) {
    case 1: TS_GATHER(1); break;
    case 8: TS_GATHER(8); break;
    case 16: TS_GATHER(16); break;
    case 24: TS_GATHER(24); break;
    case 32: TS_GATHER(32); break;
    default: TS_GATHER(itemsize); break;
    }
    if (next != stack) free(next);
}

int ts_count_sources(const uint16_t *sources, size_t count, size_t runs, size_t *counts) {
    uint16_t largest = 0;
    for (size_t i = 0; i < count; i++) {
        counts[sources[i] < runs ? sources[i] : 0]++;
        largest = sources[i] > largest ? sources[i] : largest;
    }
    return count && largest >= runs ? -1 : 0;
}

void ts_bloom_add(uint64_t *words, unsigned shift, const uint64_t *keys, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint64_t key = keys[i];
        uint64_t word = shift >= 64 ? 0 : key >> shift;
        words[word] |= (1ULL << (key & 63)) | (1ULL << (key >> 6 & 63))
                       | (1ULL << (key >> 12 & 63));
    }
}
