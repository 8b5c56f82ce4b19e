/* Shared-memory stress for the ExCache: stress THREADS MIB ROUNDS
 *
 * THREADS threads share MIB MiB of pages. Word 0 of each page is a counter every thread
 * increments atomically once per round; word w > 0 belongs to thread (w - 1) % THREADS. In each round
 * every thread writes its words of every page (starting at a different page from the others,
 * so they meet on the same pages from different directions), reading each back at once, and
 * adds to every page's counter. After a barrier, every thread reads every word of every page:
 * the other threads' words and the counters must hold exactly what this round put there.
 *
 * With a small ExCache, lines are evicted under the threads' feet all the time: a write lost
 * in an eviction, or a stale line seen by one thread after another wrote it, is a wrong word.
 * Every word read is checked; the first wrong one is reported and the exit status is 1.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define WORDS 512 /* per 4 KiB page */

static uint64_t *mem;
static long pages;
static int nthreads, rounds;
static pthread_barrier_t barrier;

static uint64_t value(long page, long word, int round) {
    uint64_t x = ((uint64_t)page * WORDS + (uint64_t)word + 1) * 0x9e3779b97f4a7c15ull;
    return x ^ ((uint64_t)round << 56) ^ ((uint64_t)round * 0x2545f4914f6cdd1dull);
}

static void wrong(int t, int round, long page, long word, uint64_t want, uint64_t got) {
    printf("thread %d, round %d: page %ld word %ld holds %#llx, expected %#llx\n", t, round, page, word,
           (unsigned long long)got, (unsigned long long)want);
    fflush(stdout);
    exit(1);
}

static void *worker(void *arg) {
    int t = (int)(long)arg;
    for (int r = 0; r < rounds; r++) {
        long start = pages * t / nthreads;
        for (long i = 0; i < pages; i++) {
            long pg = (start + i) % pages;
            volatile uint64_t *p = mem + pg * WORDS;
            for (long w = 1 + t; w < WORDS; w += nthreads) {
                p[w] = value(pg, w, r);
                if (p[w] != value(pg, w, r)) wrong(t, r, pg, w, value(pg, w, r), p[w]);
            }
            __atomic_fetch_add((uint64_t *)&p[0], 1, __ATOMIC_SEQ_CST);
        }
        pthread_barrier_wait(&barrier);
        for (long i = 0; i < pages; i++) {
            long pg = (start + pages - i) % pages;
            volatile uint64_t *p = mem + pg * WORDS;
            uint64_t count = __atomic_load_n((uint64_t *)&p[0], __ATOMIC_SEQ_CST);
            if (count != (uint64_t)(r + 1) * nthreads) wrong(t, r, pg, 0, (uint64_t)(r + 1) * nthreads, count);
            for (long w = 1; w < WORDS; w++)
                if (p[w] != value(pg, w, r)) wrong(t, r, pg, w, value(pg, w, r), p[w]);
        }
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: stress THREADS MIB ROUNDS\n");
        return 2;
    }
    nthreads = atoi(argv[1]);
    long mib = atol(argv[2]);
    rounds = atoi(argv[3]);
    if (nthreads < 1 || nthreads > 64 || mib < 1 || rounds < 1) return 2;
    pages = mib * 256;
    mem = calloc((size_t)pages * WORDS, sizeof *mem);
    if (!mem) return 3;
    pthread_barrier_init(&barrier, NULL, nthreads);
    pthread_t th[64];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)t)) return 3;
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    printf("stress: %d threads, %ld pages, %d rounds: every word checked, all correct\n", nthreads, pages, rounds);
    return 0;
}
