/* faultlat: the latency of single memory accesses, timed with rdtsc, for `lego bench fault`.
 *
 *   faultlat MODE PAGES THREADS LINES SEED
 *
 * THREADS threads (1 or more) each own PAGES/THREADS pages of one anonymous mapping and time
 * one access per page; the threads start each phase together (a barrier), so with 2 threads
 * two faults are in flight at once. For each timed phase one line is printed:
 *
 *   faultlat PHASE n N p50 T p99 T mean T        (T in TSC ticks, all threads together)
 *
 * MODE local: first read of every page in random order (a p-local zero fill with room in the
 *   cache: the do-nothing miss), then the first write to every page (resident, clean), then a
 *   second write (resident, dirty).
 * MODE remote: every page is written (so, with PAGES well above the cache, most go back to the
 *   memory server), read once in random order (the cache fills with clean lines), then timed:
 *   a random read of every page (misses with clean victims); then every page is written in
 *   random order (the cache fills with dirty lines) and the first LINES/THREADS reads of a new
 *   random order are timed per thread (misses whose victims are dirty).
 * MODE seq: every page is written, then read front to back, timed (sequential misses: what
 *   prefetch is for).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096UL

static inline uint64_t ticks(void) {
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc; lfence" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static char *mem;
static unsigned long pages, nthreads, lines, seed;
static const char *mode;
static pthread_barrier_t barrier;

/* Per phase, every thread's samples. */
enum { LOCAL, FIRSTWRITE, DIRTYHIT, MISS_CLEAN, MISS_DIRTY, SEQ, PHASES };
static const char *names[PHASES] = {"local", "first_write", "dirty_hit", "miss_clean", "miss_dirty", "seq"};
static uint64_t *samples[PHASES];
static unsigned long counts[PHASES];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
    unsigned long first, n;
    uint64_t *order;
    uint64_t x;
};

static uint64_t next(struct worker *w) {
    w->x ^= w->x << 13;
    w->x ^= w->x >> 7;
    w->x ^= w->x << 17;
    return w->x;
}

static void shuffle(struct worker *w) {
    for (unsigned long i = 0; i < w->n; i++) w->order[i] = w->first + i;
    for (unsigned long i = w->n - 1; i > 0; i--) {
        unsigned long j = next(w) % (i + 1);
        uint64_t t = w->order[i];
        w->order[i] = w->order[j];
        w->order[j] = t;
    }
}

static void record(int phase, const uint64_t *t, unsigned long n) {
    pthread_mutex_lock(&lock);
    memcpy(samples[phase] + counts[phase], t, n * sizeof *t);
    counts[phase] += n;
    pthread_mutex_unlock(&lock);
}

/* Times one access to each page of `order[0..n)`; `write` stores, else loads. */
static void timed(int phase, const uint64_t *order, unsigned long n, int write, uint64_t *t) {
    pthread_barrier_wait(&barrier);
    for (unsigned long i = 0; i < n; i++) {
        volatile uint64_t *p = (volatile uint64_t *)(mem + order[i] * PAGE);
        uint64_t t0 = ticks();
        if (write)
            *p = order[i];
        else
            (void)*p;
        t[i] = ticks() - t0;
    }
    record(phase, t, n);
}

static void untimed(const uint64_t *order, unsigned long n, int write) {
    pthread_barrier_wait(&barrier);
    for (unsigned long i = 0; i < n; i++) {
        volatile uint64_t *p = (volatile uint64_t *)(mem + order[i] * PAGE);
        if (write)
            *p = order[i] + 1;
        else
            (void)*p;
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    uint64_t *seq = malloc(w->n * sizeof *seq), *t = malloc(w->n * sizeof *t);
    if (!seq || !t) abort();
    for (unsigned long i = 0; i < w->n; i++) seq[i] = w->first + i;
    if (!strcmp(mode, "local")) {
        /* In random order, as the misses it is the limit of: KVM's shadow tables cost more
         * when consecutive faults fall in different 2 MiB regions. */
        shuffle(w);
        timed(LOCAL, w->order, w->n, 0, t);
        timed(FIRSTWRITE, w->order, w->n, 1, t);
        timed(DIRTYHIT, w->order, w->n, 1, t);
    } else if (!strcmp(mode, "remote")) {
        untimed(seq, w->n, 1);
        shuffle(w);
        untimed(w->order, w->n, 0);
        shuffle(w);
        timed(MISS_CLEAN, w->order, w->n, 0, t);
        shuffle(w);
        untimed(w->order, w->n, 1);
        shuffle(w);
        unsigned long k = lines / nthreads;
        timed(MISS_DIRTY, w->order, k < w->n ? k : w->n, 0, t);
    } else {
        untimed(seq, w->n, 1);
        timed(SEQ, seq, w->n, 0, t);
    }
    free(seq);
    free(t);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s local|remote|seq PAGES THREADS LINES SEED\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    pages = strtoul(argv[2], 0, 0);
    nthreads = strtoul(argv[3], 0, 0);
    lines = strtoul(argv[4], 0, 0);
    seed = strtoul(argv[5], 0, 0);
    if (!pages || !nthreads || nthreads > 64 || pages < nthreads) return 2;
    mem = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 1;
    for (int i = 0; i < PHASES; i++)
        if (!(samples[i] = malloc(pages * sizeof(uint64_t)))) return 1;
    pthread_barrier_init(&barrier, 0, nthreads);
    pthread_t tid[64];
    struct worker w[64];
    for (unsigned long i = 0; i < nthreads; i++) {
        w[i].first = pages * i / nthreads;
        w[i].n = pages * (i + 1) / nthreads - w[i].first;
        w[i].order = malloc(w[i].n * sizeof(uint64_t));
        w[i].x = (seed + 1) * 0x9e3779b97f4a7c15ULL + i;
        if (!w[i].order || pthread_create(&tid[i], 0, run, &w[i])) return 1;
    }
    for (unsigned long i = 0; i < nthreads; i++) pthread_join(tid[i], 0);
    for (int i = 0; i < PHASES; i++) {
        unsigned long n = counts[i];
        if (!n) continue;
        qsort(samples[i], n, sizeof(uint64_t), cmp);
        uint64_t sum = 0;
        for (unsigned long j = 0; j < n; j++) sum += samples[i][j];
        printf("faultlat %s n %lu p50 %lu p99 %lu mean %lu\n", names[i], n, (unsigned long)samples[i][n / 2],
               (unsigned long)samples[i][(n - 1) * 99 / 100], (unsigned long)(sum / n));
    }
    return 0;
}
