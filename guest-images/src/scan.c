/*
 * scan: sequential-scan workload (the case ExCache prefetch is for).
 *   scan [MiB [passes [seed]]]      (defaults: 8 MiB, 4 passes, seed 1)
 * Allocates MiB mebibytes, fills them front to back with an xorshift64
 * pattern, then makes `passes` front-to-back passes that read every word
 * and fold it into a 64-bit hash; every other pass also adds the pass
 * number to each word (a read-modify-write stream). Prints the hash in hex.
 * Output depends only on the arguments. Exit 0, or 1 if the allocation fails.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 8;
    unsigned long passes = argc > 2 ? strtoul(argv[2], NULL, 0) : 4;
    uint64_t x = (argc > 3 ? strtoull(argv[3], NULL, 0) : 1) * 0x9E3779B97F4A7C15ULL + 1;
    size_t nwords = (size_t)mib * (1024 * 1024 / sizeof(uint64_t));
    uint64_t *buf = malloc(nwords * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "scan: cannot allocate %lu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < nwords; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = x;
    }
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (unsigned long p = 0; p < passes; p++) {
        for (size_t i = 0; i < nwords; i++) {
            hash = (hash ^ buf[i]) * 0x100000001b3ULL;
            if (p % 2 == 1)
                buf[i] += p;
        }
    }
    printf("scan %lu MiB %lu passes: %016" PRIx64 "\n", mib, passes, hash);
    free(buf);
    return 0;
}
