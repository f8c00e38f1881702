#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct {
    ts_worker_fn fn;
    void *context;
    int worker;
} worker_start;

static void *worker_main(void *arg) {
    worker_start *start = arg;
    start->fn(start->context, start->worker);
    return NULL;
}

int ts_parallel_run(int threads, ts_worker_fn fn, void *context) {
    if (threads < 1) threads = 1;
    if (threads > TS_THREADS_MAX) threads = TS_THREADS_MAX;
    pthread_t handles[TS_THREADS_MAX];
    worker_start starts[TS_THREADS_MAX];
    int started[TS_THREADS_MAX] = {0};
    int status = 0;
    for (int i = 1; i < threads; i++) {
        starts[i] = (worker_start){fn, context, i};
        if (pthread_create(&handles[i], NULL, worker_main, &starts[i]) == 0) {
            started[i] = 1;
        } else {
            status = -1;
        }
    }
    fn(context, 0);
    for (int i = 1; i < threads; i++) {
        if (started[i]) {
            pthread_join(handles[i], NULL);
        } else {
            fn(context, i); /* the range nobody took runs here */
        }
    }
    return status;
}

typedef struct {
    size_t count;
    int threads;
    ts_range_fn fn;
    void *context;
} range_split;

static void run_range(void *arg, int worker) {
    range_split *split = arg;
    size_t first = split->count * (size_t)worker / (size_t)split->threads;
    size_t end = split->count * (size_t)(worker + 1) / (size_t)split->threads;
    if (first < end) split->fn(split->context, first, end, worker);
}

int ts_parallel_for(size_t count, int threads, ts_range_fn fn, void *context) {
    if (threads < 1) threads = 1;
    if (threads > TS_THREADS_MAX) threads = TS_THREADS_MAX;
    if ((size_t)threads > count) threads = count ? (int)count : 1;
    range_split split = {count, threads, fn, context};
    return ts_parallel_run(threads, run_range, &split);
}

typedef struct {
    size_t count;
    size_t chunk;
    ts_range_fn fn;
    void *context;
    atomic_size_t next;
} claim_split;

static void run_claims(void *arg, int worker) {
    claim_split *split = arg;
    for (;;) {
        size_t first = atomic_fetch_add(&split->next, split->chunk);
        if (first >= split->count) return;
        size_t end = split->count - first < split->chunk ? split->count : first + split->chunk;
        split->fn(split->context, first, end, worker);
    }
}

int ts_parallel_claim(size_t count, size_t chunk, int threads, ts_range_fn fn, void *context) {
    if (chunk < 1) chunk = 1;
    size_t chunks = (count + chunk - 1) / chunk;
    if (threads < 1) threads = 1;
    if (threads > TS_THREADS_MAX) threads = TS_THREADS_MAX;
    if ((size_t)threads > chunks) threads = chunks ? (int)chunks : 1;
    claim_split split = {count, chunk, fn, context, 0};
    atomic_init(&split.next, 0);
    return ts_parallel_run(threads, run_claims, &split);
}
