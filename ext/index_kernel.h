/* Kernels of the index's sorted runs (tsunagi.ledger.index): a linear k-way merge of runs
 * already sorted by (key, second), the gather of any column in that order, and the Bloom
 * filter's bits. Plain C over caller-owned buffers: no allocation but the merge's small heap,
 * no Python, so the wrapper runs them without the GIL. */
#ifndef TS_INDEX_KERNEL_H
#define TS_INDEX_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Inputs a merge takes at once: sources are u16. */
#define TS_MERGE_RUNS_MAX 65535

/* Merges `runs` inputs, input r holding counts[r] rows sorted by (keys[r][i], seconds[r][i]):
 * writes, for each row of the merged order, the number of the input it comes from (rows of
 * equal (key, second) come in input order, oldest input first; each input's rows keep their
 * order). seconds NULL merges by key alone, equal keys in input order: the same order when
 * equal keys have seconds that grow from input to input (block runs: places grow with height),
 * and a faster merge. Returns 0, or -1 when the heap could not be allocated. */
int ts_merge_sources(size_t runs, const uint64_t *const *keys, const uint64_t *const *seconds,
                     const size_t *counts, uint16_t *sources);

/* Writes count rows of itemsize bytes to out: row i is the next unread row of input
 * sources[i] (columns[r] holds that input's rows in order). The caller has checked that input r
 * is named by sources no more often than it has rows. */
void ts_gather_rows(size_t runs, const uint8_t *const *columns, size_t itemsize,
                    const uint16_t *sources, size_t count, uint8_t *out);

/* How often each input is named in sources (counts has `runs` zeroed entries); returns 0, or -1
 * when a source is `runs` or more. */
int ts_count_sources(const uint16_t *sources, size_t count, size_t runs, size_t *counts);

/* Sets the three bits of each key (from its low 18 bits) in word key >> shift of the filter:
 * the index's Bloom filter, docs/FORMAT.md. */
void ts_bloom_add(uint64_t *words, unsigned shift, const uint64_t *keys, size_t count);

#endif
