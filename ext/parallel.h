/* A bounded parallel-for over pthreads: the calling thread works too, so threads == 1 spawns
 * nothing. Used by the batch hashers and validators, which never touch Python objects. */
#ifndef TSUNAGI_PARALLEL_H
#define TSUNAGI_PARALLEL_H

#include <stddef.h>

#define TS_THREADS_MAX 256

typedef void (*ts_range_fn)(void *context, size_t first, size_t end, int worker);

/* Splits [0, count) into `threads` contiguous ranges and runs fn on each. Returns 0, or -1 when
 * a thread could not be started (the missing ranges then run on the calling thread). */
int ts_parallel_for(size_t count, int threads, ts_range_fn fn, void *context);

/* Like ts_parallel_for, but each thread claims ranges of `chunk` items in turn until none are
 * left, so a thread that shares its core with another process does less of the work instead
 * of holding everyone up. fn may run several times per worker. */
int ts_parallel_claim(size_t count, size_t chunk, int threads, ts_range_fn fn, void *context);

/* Runs fn(context, worker) on `threads` threads at once and waits for all. */
typedef void (*ts_worker_fn)(void *context, int worker);
int ts_parallel_run(int threads, ts_worker_fn fn, void *context);

#endif
