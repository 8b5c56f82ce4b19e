/*
 * sort: CPU- and memory-heavy workload.
 *   sort [N [seed]]      (defaults: N = 4194304, seed 1)
 * Generates N 64-bit integers with a fixed-seed splitmix64, sorts them with
 * qsort() (glibc's allocates a large temporary buffer, i.e. mmap), checks
 * the order and prints a checksum. Output depends only on the arguments.
 * Exit 0 if sorted, 1 otherwise.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 0) : (size_t)4 << 20;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    uint64_t state = seed, sum = 0;
    size_t bad = 0;

    uint64_t *a = malloc((n ? n : 1) * sizeof *a);
    if (!a) {
        fprintf(stderr, "sort: cannot allocate %zu values\n", n);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = splitmix64(&state);

    qsort(a, n, sizeof *a, cmp_u64);

    for (size_t i = 0; i < n; i++) {
        if (i > 0 && a[i - 1] > a[i])
            bad++;
        sum = (sum ^ a[i]) * 0x100000001B3ULL + (uint64_t)i;
    }

    printf("sort %zu seed %" PRIu64 ": %s, checksum %016" PRIx64 "\n",
           n, seed, bad ? "NOT SORTED" : "sorted", sum);
    free(a);
    return bad ? 1 : 0;
}
