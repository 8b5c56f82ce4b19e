/*
 * psort: parallel sort of 64-bit integers (benchmark workload).
 *   psort THREADS N SEED
 * Generates N values with a fixed-seed splitmix64, sorts THREADS chunks with
 * qsort (one per thread), then merges the sorted chunks into a second array.
 * Checks the order and prints a checksum; the output depends only on N and
 * SEED. Exit 0 if sorted, 1 otherwise.
 */
#include <inttypes.h>
#include <string.h>

#include "par.h"

static uint64_t *a;

static int cmp_u64(const void *x, const void *y)
{
    uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;
    return (p > q) - (p < q);
}

static void sort_chunk(struct part *p)
{
    qsort(a + p->begin, p->end - p->begin, sizeof *a, cmp_u64);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: psort THREADS N SEED\n");
        return 2;
    }
    int nthreads = parse_threads(argv[1]);
    size_t n = strtoull(argv[2], NULL, 0);
    uint64_t seed = strtoull(argv[3], NULL, 0), state = seed, sum = 0;
    size_t bad = 0;
    a = malloc((n ? n : 1) * sizeof *a);
    uint64_t *out = malloc((n ? n : 1) * sizeof *out);
    if (!a || !out) {
        fprintf(stderr, "psort: cannot allocate %zu values\n", n);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = splitmix64(&state);
    struct part parts[256];
    par_run(nthreads, n, sort_chunk, parts);
    /* k-way merge of the sorted chunks: pick the smallest head each time. */
    size_t head[256];
    for (int t = 0; t < nthreads; t++)
        head[t] = parts[t].begin;
    for (size_t i = 0; i < n; i++) {
        int best = -1;
        for (int t = 0; t < nthreads; t++)
            if (head[t] < parts[t].end && (best < 0 || a[head[t]] < a[head[best]]))
                best = t;
        out[i] = a[head[best]++];
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && out[i - 1] > out[i])
            bad++;
        sum = (sum ^ out[i]) * 0x100000001B3ULL + (uint64_t)i;
    }
    printf("psort %zu seed %" PRIu64 ": %s, checksum %016" PRIx64 "\n", n, seed, bad ? "NOT SORTED" : "sorted", sum);
    free(out);
    free(a);
    return bad ? 1 : 0;
}
