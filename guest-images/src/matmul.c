/*
 * matmul: blocked dense matrix multiply C = A x B (benchmark workload).
 *   matmul THREADS N BLOCK SEED
 * A and B are N x N doubles holding small integers from a fixed-seed
 * splitmix64, so every product and sum is exact and the result does not
 * depend on the order of the additions. THREADS threads take row blocks of C.
 * Prints a checksum of C.
 */
#include <inttypes.h>
#include <string.h>

#include "par.h"

static size_t n, bs;
static double *a, *b, *c;

static void multiply(struct part *p)
{
    /* p->begin..p->end are row blocks. */
    for (size_t ib = p->begin * bs; ib < p->end * bs && ib < n; ib += bs)
        for (size_t kb = 0; kb < n; kb += bs)
            for (size_t jb = 0; jb < n; jb += bs)
                for (size_t i = ib; i < ib + bs && i < n; i++)
                    for (size_t kk = kb; kk < kb + bs && kk < n; kk++) {
                        double aik = a[i * n + kk];
                        for (size_t j = jb; j < jb + bs && j < n; j++)
                            c[i * n + j] += aik * b[kk * n + j];
                    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: matmul THREADS N BLOCK SEED\n");
        return 2;
    }
    int nthreads = parse_threads(argv[1]);
    n = strtoull(argv[2], NULL, 0);
    bs = strtoull(argv[3], NULL, 0);
    uint64_t seed = strtoull(argv[4], NULL, 0), state = seed;
    if (n < 1 || bs < 1) {
        fprintf(stderr, "matmul: N and BLOCK must be at least 1\n");
        return 2;
    }
    a = malloc(n * n * sizeof *a);
    b = malloc(n * n * sizeof *b);
    c = calloc(n * n, sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "matmul: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n * n; i++)
        a[i] = (double)(splitmix64(&state) % 16);
    for (size_t i = 0; i < n * n; i++)
        b[i] = (double)(splitmix64(&state) % 16);
    struct part parts[256];
    par_run(nthreads, (n + bs - 1) / bs, multiply, parts);
    uint64_t sum = 0;
    for (size_t i = 0; i < n * n; i++)
        sum = (sum ^ (uint64_t)c[i]) * 0x100000001B3ULL + i;
    printf("matmul %zu block %zu seed %" PRIu64 ": checksum %016" PRIx64 "\n", n, bs, seed, sum);
    return 0;
}
