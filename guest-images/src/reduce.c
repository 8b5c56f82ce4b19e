/* Parallel reduction with pthreads: reduce N THREADS
 *
 * Fills an array of N 64-bit values from a fixed xorshift sequence, then THREADS threads each
 * reduce a contiguous slice (sum, xor, min, max, count of multiples of 7) and fold their partial
 * results into the global ones under a mutex. The output does not depend on the thread count.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct result {
    uint64_t sum, xor, min, max, sevens;
};

static uint64_t *data;
static long n;
static int nthreads;
static struct result total = {0, 0, UINT64_MAX, 0, 0};
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *reduce(void *arg) {
    long t = (long)arg;
    long lo = n * t / nthreads, hi = n * (t + 1) / nthreads;
    struct result r = {0, 0, UINT64_MAX, 0, 0};
    for (long i = lo; i < hi; i++) {
        uint64_t v = data[i];
        r.sum += v;
        r.xor ^= v;
        if (v < r.min) r.min = v;
        if (v > r.max) r.max = v;
        r.sevens += v % 7 == 0;
    }
    pthread_mutex_lock(&lock);
    total.sum += r.sum;
    total.xor ^= r.xor;
    if (r.min < total.min) total.min = r.min;
    if (r.max > total.max) total.max = r.max;
    total.sevens += r.sevens;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: reduce N THREADS\n");
        return 2;
    }
    n = atol(argv[1]);
    nthreads = atoi(argv[2]);
    if (n < 1 || nthreads < 1 || nthreads > 64) return 2;
    data = malloc(n * sizeof *data);
    if (!data) return 3;
    uint64_t x = 0x243f6a8885a308d3ull;
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = x >> 16;
    }
    pthread_t th[64];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, reduce, (void *)t)) return 3;
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    printf("reduce %ld values: sum %llu xor %#llx min %llu max %llu multiples of 7 %llu\n", n,
           (unsigned long long)total.sum, (unsigned long long)total.xor, (unsigned long long)total.min,
           (unsigned long long)total.max, (unsigned long long)total.sevens);
    return 0;
}
