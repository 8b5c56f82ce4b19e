/*
 * histogram: Phoenix-style image histogram (benchmark workload).
 *   histogram THREADS FILE
 * FILE is an uncompressed 24-bit BMP (the benchmark harness generates one
 * from a fixed seed). Reads it whole into memory, counts each colour
 * channel's 256 values (THREADS threads over rows, counts summed in a fixed
 * order) and prints the size, the fullest bin of each channel and a hash of
 * the three histograms. Output depends only on the file.
 * Exit 0, 1 on a bad file, 2 on bad arguments.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "par.h"

static unsigned char *pixels;
static uint64_t counts[256][3][256];

static void count(struct part *p)
{
    uint64_t *h = &counts[p->id][0][0];
    for (size_t i = p->begin; i < p->end; i++) {
        const unsigned char *px = pixels + 3 * i;
        h[0 * 256 + px[2]]++; /* BMP stores B, G, R */
        h[1 * 256 + px[1]]++;
        h[2 * 256 + px[0]]++;
    }
}

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: histogram THREADS FILE\n");
        return 2;
    }
    int nthreads = parse_threads(argv[1]);
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 54 || lseek(fd, 0, SEEK_SET) != 0) {
        fprintf(stderr, "histogram: %s is not a BMP file\n", argv[2]);
        return 1;
    }
    unsigned char *data = malloc((size_t)size);
    if (!data) {
        fprintf(stderr, "histogram: cannot allocate %lld bytes\n", (long long)size);
        return 1;
    }
    for (off_t got = 0; got < size;) {
        ssize_t n = read(fd, data + got, (size_t)(size - got));
        if (n <= 0) {
            perror("read");
            return 1;
        }
        got += n;
    }
    close(fd);
    uint32_t offset = le32(data + 10), width = le32(data + 18), height = le32(data + 22);
    if (data[0] != 'B' || data[1] != 'M' || data[28] != 24 || width % 4 != 0 ||
        (uint64_t)offset + 3ULL * width * height > (uint64_t)size) {
        fprintf(stderr, "histogram: %s is not a 24-bit BMP with rows of a multiple of 4 pixels\n", argv[2]);
        return 1;
    }
    pixels = data + offset;
    struct part parts[256];
    par_run(nthreads, (size_t)width * height, count, parts);

    uint64_t hash = 0xcbf29ce484222325ULL;
    printf("histogram %" PRIu32 "x%" PRIu32 ":", width, height);
    for (int c = 0; c < 3; c++) {
        uint64_t best = 0;
        int at = 0;
        for (int v = 0; v < 256; v++) {
            uint64_t total = 0;
            for (int t = 0; t < nthreads; t++)
                total += counts[t][c][v];
            hash = (hash ^ total) * 0x100000001B3ULL;
            if (total > best) {
                best = total;
                at = v;
            }
        }
        printf(" %c[%d]=%" PRIu64, "RGB"[c], at, best);
    }
    printf(" hash %016" PRIx64 "\n", hash);
    free(data);
    return 0;
}
