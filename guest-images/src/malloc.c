/*
 * malloc: allocator workload.
 *   malloc [ops]      (default: 60000 heap operations)
 * Runs a fixed-seed (LCG) sequence of ops malloc,
 * realloc and free over a table of slots, with sizes from a few bytes
 * (served from brk/heap arenas) up to several hundred KiB (> 128 KiB, so
 * glibc serves them with mmap), growing blocks with realloc (mremap for big
 * glibc blocks) and freeing in random order. Every block is filled with a
 * pattern derived from its id and verified before it is grown or freed; a
 * checksum over all verified contents is printed, so output is the same for
 * any allocator. Then it calls mmap/mremap/mprotect/munmap directly:
 * grows and shrinks a mapping, checks contents survive and new pages are
 * zero, makes a page read-only and reads it.
 * Exit 0 if every check passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 2048
#define DEFAULT_OPS 60000
#define MAX_SIZE (4u << 20)

struct slot {
    unsigned char *p;
    size_t size;
    uint64_t id;
};

static struct slot slots[SLOTS];
static uint64_t lcg_state = 12345;
static uint64_t checksum;
static unsigned long failures;

static uint32_t lcg(void)
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg_state >> 33);
}

static uint64_t word_at(uint64_t id, size_t i)
{
    uint64_t x = id * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xD6E8FEB86659FD93ULL;
    return x ^ (x >> 29);
}

static unsigned char byte_at(uint64_t id, size_t i)
{
    return (unsigned char)(word_at(id, i / 8) >> (8 * (i & 7)));
}

/* Fill bytes [from, to) of a block with its pattern (little-endian words). */
static void fill(unsigned char *p, uint64_t id, size_t from, size_t to)
{
    size_t i = from;
    for (; i < to && (i & 7); i++)
        p[i] = byte_at(id, i);
    for (; i + 8 <= to; i += 8) {
        uint64_t w = word_at(id, i / 8);
        memcpy(p + i, &w, 8);
    }
    for (; i < to; i++)
        p[i] = byte_at(id, i);
}

/* Verify bytes [0, len) of a block and fold them into the checksum. */
static void verify(const unsigned char *p, uint64_t id, size_t len)
{
    size_t i = 0;
    uint64_t acc = 0;
    int bad = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != word_at(id, i / 8))
            bad = 1;
        acc += w;
    }
    for (; i < len; i++) {
        if (p[i] != byte_at(id, i))
            bad = 1;
        acc += p[i];
    }
    if (bad) {
        failures++;
        printf("FAIL: block %" PRIu64 " (%zu bytes) corrupted\n", id, len);
    }
    checksum = (checksum ^ acc ^ len) * 0x100000001B3ULL;
}

static size_t pick_size(void)
{
    uint32_t r = lcg() % 100;
    if (r < 85)
        return 1 + lcg() % 1024;                 /* small: heap */
    if (r < 97)
        return 1024 + lcg() % (64 * 1024);      /* medium: heap */
    return 128 * 1024 + 1 + lcg() % (768 * 1024); /* large: mmap */
}

static int heap_workload(unsigned long ops)
{
    uint64_t next_id = 1;
    unsigned long n_malloc = 0, n_realloc = 0, n_free = 0, n_large = 0;

    for (unsigned long op = 0; op < ops; op++) {
        struct slot *s = &slots[lcg() % SLOTS];

        if (!s->p) {
            size_t size = pick_size();
            s->p = malloc(size);
            if (!s->p) {
                printf("FAIL: malloc(%zu) returned NULL\n", size);
                return 1;
            }
            s->size = size;
            s->id = next_id++;
            fill(s->p, s->id, 0, size);
            n_malloc++;
            if (size > 128 * 1024)
                n_large++;
        } else if (lcg() % 3 == 0 && s->size < MAX_SIZE / 2) {
            size_t old = s->size;
            size_t size = old + 1 + lcg() % (old < 4096 ? 4096 : old);
            verify(s->p, s->id, old);
            unsigned char *q = realloc(s->p, size);
            if (!q) {
                printf("FAIL: realloc(%zu) returned NULL\n", size);
                return 1;
            }
            s->p = q;
            verify(s->p, s->id, old); /* contents must survive the move */
            fill(s->p, s->id, old, size);
            s->size = size;
            n_realloc++;
            if (size > 128 * 1024)
                n_large++;
        } else {
            verify(s->p, s->id, s->size);
            free(s->p);
            s->p = NULL;
            n_free++;
        }
    }

    /* Free whatever is left, in a random order. */
    for (int left = SLOTS; left > 0; left--) {
        int start = (int)(lcg() % SLOTS);
        for (int k = 0; k < SLOTS; k++) {
            struct slot *s = &slots[(start + k) % SLOTS];
            if (s->p) {
                verify(s->p, s->id, s->size);
                free(s->p);
                s->p = NULL;
                n_free++;
                break;
            }
        }
    }

    printf("heap: %lu malloc, %lu realloc, %lu free, %lu large (>128 KiB)\n",
           n_malloc, n_realloc, n_free, n_large);
    printf("heap checksum: %016" PRIx64 "\n", checksum);
    return 0;
}

static void check(int ok, const char *what)
{
    printf("%s: %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static int all_bytes(const unsigned char *p, size_t len, unsigned char v)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static void mmap_workload(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *p, *q;

    p = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(p != MAP_FAILED, "mmap 4 pages");
    if (p == MAP_FAILED)
        return;
    check(all_bytes(p, 4 * pg, 0), "fresh anonymous pages are zero");
    memset(p, 0xA5, 4 * pg);

    q = mremap(p, 4 * pg, 64 * pg, MREMAP_MAYMOVE);
    check(q != MAP_FAILED, "mremap grow to 64 pages");
    if (q == MAP_FAILED)
        return;
    p = q;
    check(all_bytes(p, 4 * pg, 0xA5), "contents survive mremap grow");
    check(all_bytes(p + 4 * pg, 60 * pg, 0), "grown pages are zero");
    memset(p + 4 * pg, 0x5A, 60 * pg);

    q = mremap(p, 64 * pg, 8 * pg, 0);
    check(q == p, "mremap shrink in place to 8 pages");
    check(all_bytes(p + 4 * pg, 4 * pg, 0x5A), "contents survive mremap shrink");

    check(mprotect(p, pg, PROT_READ) == 0, "mprotect page 0 read-only");
    check(all_bytes(p, pg, 0xA5), "read-only page readable");
    check(mprotect(p, pg, PROT_READ | PROT_WRITE) == 0, "mprotect page 0 read-write");
    p[0] = 1;
    check(p[0] == 1, "page writable again");

    check(munmap(p + 2 * pg, 2 * pg) == 0, "munmap middle 2 pages");
    check(munmap(p, 8 * pg) == 0, "munmap whole range (with hole)");

    /* A fixed mapping over a reserved range. */
    p = mmap(NULL, 16 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(p != MAP_FAILED, "mmap 16 pages PROT_NONE");
    if (p == MAP_FAILED)
        return;
    q = mmap(p + 4 * pg, 4 * pg, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    check(q == p + 4 * pg, "mmap MAP_FIXED inside reservation");
    if (q != MAP_FAILED) {
        memset(q, 7, 4 * pg);
        check(all_bytes(q, 4 * pg, 7), "MAP_FIXED pages writable");
    }
    check(munmap(p, 16 * pg) == 0, "munmap reservation");
}

int main(int argc, char **argv)
{
    unsigned long ops = argc > 1 ? strtoul(argv[1], NULL, 0) : DEFAULT_OPS;

    if (heap_workload(ops) != 0)
        return 1;
    mmap_workload();
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
