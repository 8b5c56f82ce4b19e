/*
 * kmeans: Phoenix-style k-means clustering (benchmark workload).
 *   kmeans THREADS POINTS K DIMS ITERATIONS SEED
 * Generates POINTS integer points of DIMS coordinates around K hidden centres
 * (fixed-seed splitmix64), then runs ITERATIONS rounds of Lloyd's algorithm:
 * assign every point to its nearest centroid (THREADS threads over the
 * points), recompute the centroids from integer sums added in a fixed order.
 * Integer arithmetic throughout, so the output depends only on the arguments.
 * Prints the points moved in the last round and a hash of the centroids.
 */
#include <inttypes.h>
#include <string.h>

#include "par.h"

static size_t npoints;
static int k, dims;
static int32_t *points;    /* npoints x dims */
static int32_t *centroids; /* k x dims */
static uint32_t *assign;   /* npoints */
static int64_t *sums;      /* threads x k x dims */
static uint64_t *sizes;    /* threads x k */
static uint64_t moved[256];

static void step(struct part *p)
{
    int64_t *s = sums + (size_t)p->id * k * dims;
    uint64_t *n = sizes + (size_t)p->id * k;
    memset(s, 0, sizeof *s * k * dims);
    memset(n, 0, sizeof *n * k);
    moved[p->id] = 0;
    for (size_t i = p->begin; i < p->end; i++) {
        const int32_t *x = points + i * dims;
        uint32_t best = 0;
        int64_t bestd = INT64_MAX;
        for (int c = 0; c < k; c++) {
            int64_t d = 0;
            for (int j = 0; j < dims; j++) {
                int64_t e = (int64_t)x[j] - centroids[c * dims + j];
                d += e * e;
            }
            if (d < bestd) {
                bestd = d;
                best = (uint32_t)c;
            }
        }
        if (assign[i] != best) {
            assign[i] = best;
            moved[p->id]++;
        }
        n[best]++;
        for (int j = 0; j < dims; j++)
            s[best * dims + j] += x[j];
    }
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: kmeans THREADS POINTS K DIMS ITERATIONS SEED\n");
        return 2;
    }
    int nthreads = parse_threads(argv[1]);
    npoints = strtoull(argv[2], NULL, 0);
    k = atoi(argv[3]);
    dims = atoi(argv[4]);
    int iterations = atoi(argv[5]);
    uint64_t seed = strtoull(argv[6], NULL, 0), state = seed;
    if (k < 1 || dims < 1 || npoints < (size_t)k || iterations < 1) {
        fprintf(stderr, "kmeans: need POINTS >= K >= 1, DIMS >= 1, ITERATIONS >= 1\n");
        return 2;
    }
    points = malloc(npoints * dims * sizeof *points);
    assign = malloc(npoints * sizeof *assign);
    centroids = malloc((size_t)k * dims * sizeof *centroids);
    sums = malloc((size_t)nthreads * k * dims * sizeof *sums);
    sizes = malloc((size_t)nthreads * k * sizeof *sizes);
    if (!points || !assign || !centroids || !sums || !sizes) {
        fprintf(stderr, "kmeans: out of memory\n");
        return 1;
    }
    /* Hidden centres in [0, 100000), points within +-5000 of one of them. */
    int32_t *centres = malloc((size_t)k * dims * sizeof *centres);
    for (int i = 0; i < k * dims; i++)
        centres[i] = (int32_t)(splitmix64(&state) % 100000);
    for (size_t i = 0; i < npoints; i++) {
        int c = (int)(splitmix64(&state) % (uint64_t)k);
        for (int j = 0; j < dims; j++)
            points[i * dims + j] = centres[c * dims + j] + (int32_t)(splitmix64(&state) % 10001) - 5000;
        assign[i] = UINT32_MAX;
    }
    free(centres);
    memcpy(centroids, points, (size_t)k * dims * sizeof *centroids);

    struct part parts[256];
    uint64_t last_moved = 0;
    for (int it = 0; it < iterations; it++) {
        par_run(nthreads, npoints, step, parts);
        last_moved = 0;
        for (int t = 0; t < nthreads; t++)
            last_moved += moved[t];
        for (int c = 0; c < k; c++) {
            uint64_t n = 0;
            for (int t = 0; t < nthreads; t++)
                n += sizes[(size_t)t * k + c];
            for (int j = 0; j < dims; j++) {
                int64_t s = 0;
                for (int t = 0; t < nthreads; t++)
                    s += sums[((size_t)t * k + c) * dims + j];
                if (n)
                    centroids[c * dims + j] = (int32_t)(s / (int64_t)n);
            }
        }
    }
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (int i = 0; i < k * dims; i++)
        hash = (hash ^ (uint32_t)centroids[i]) * 0x100000001B3ULL;
    printf("kmeans %zu points k %d dims %d iterations %d seed %" PRIu64 ": moved %" PRIu64 ", centroids %016" PRIx64 "\n",
           npoints, k, dims, iterations, seed, last_moved, hash);
    return 0;
}
