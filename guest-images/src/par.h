/*
 * par.h: what the benchmark workloads share: a fixed-seed generator and a
 * fork-join helper that runs work on N threads, or on the calling thread
 * alone when N is 1 (so a single-threaded run never calls pthread_create).
 */
#ifndef LEGO_PAR_H
#define LEGO_PAR_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* One thread's share: [begin, end) of n items, for thread `id` of `nthreads`. */
struct part {
    int id, nthreads;
    size_t begin, end;
    void *arg;
};

typedef void (*part_fn)(struct part *);

static void *par_trampoline(void *p)
{
    struct part *pt = p;
    ((part_fn)pt->arg)(pt);
    return NULL;
}

/*
 * Calls fn once per thread with that thread's share of n items (the workload's
 * data is in its own globals). Threads 1..N-1 are pthreads; thread 0 runs on
 * the caller. parts must hold nthreads entries; fn may leave per-thread
 * results in its own arrays indexed by part->id.
 */
static void par_run(int nthreads, size_t n, part_fn fn, struct part *parts)
{
    pthread_t tids[256];
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "threads must be 1..256\n");
        exit(2);
    }
    for (int i = 0; i < nthreads; i++) {
        parts[i].id = i;
        parts[i].nthreads = nthreads;
        parts[i].begin = n * (size_t)i / (size_t)nthreads;
        parts[i].end = n * (size_t)(i + 1) / (size_t)nthreads;
        parts[i].arg = (void *)fn;
    }
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&tids[i], NULL, par_trampoline, &parts[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(3);
        }
    }
    fn(&parts[0]);
    for (int i = 1; i < nthreads; i++)
        pthread_join(tids[i], NULL);
}

static int parse_threads(const char *s)
{
    int t = atoi(s);
    if (t < 1 || t > 256) {
        fprintf(stderr, "threads must be 1..256, not %s\n", s);
        exit(2);
    }
    return t;
}

#endif
