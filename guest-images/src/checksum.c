/*
 * checksum: memory-bandwidth and page-fault workload.
 *   checksum [MiB [seed]]      (defaults: 64 MiB, seed 1)
 * Allocates MiB mebibytes, fills them with an xorshift64 pattern, makes two
 * passes of random-access read-modify-write over as many words as the
 * buffer holds, and prints a 64-bit checksum in hex. Output depends only on
 * the arguments. Exit 0, or 1 if the allocation fails.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int main(int argc, char **argv)
{
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    size_t nwords = (size_t)mib * (1024 * 1024 / sizeof(uint64_t));
    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    uint64_t sum = 0;

    if (state == 0)
        state = 1; /* xorshift must not start at 0 */
    if (nwords == 0) {
        fprintf(stderr, "checksum: size must be at least 1 MiB\n");
        return 1;
    }

    uint64_t *buf = malloc(nwords * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "checksum: cannot allocate %lu MiB\n", mib);
        return 1;
    }

    for (size_t i = 0; i < nwords; i++)
        buf[i] = xorshift64(&state);

    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < nwords; k++) {
            size_t idx = (size_t)(xorshift64(&state) % nwords);
            buf[idx] = (buf[idx] ^ (uint64_t)k) * 0x100000001B3ULL + (uint64_t)pass;
        }
    }

    for (size_t i = 0; i < nwords; i++) {
        sum ^= buf[i] + (uint64_t)i;
        sum = (sum << 7) | (sum >> 57);
    }

    printf("checksum %lu MiB seed %" PRIu64 ": %016" PRIx64 "\n", mib, seed, sum);
    free(buf);
    return 0;
}
