/* evictrace: writes racing with evictions must never be lost.
 *
 *   evictrace PAGES ROUNDS WRITERS
 *
 * WRITERS threads (1-7) sweep PAGES pages ROUNDS times, each incrementing its own word of every
 * page, while one more thread has the kernel write into the same pages: it pushes a pattern
 * through a pipe and read(2)s it back into a slot of each page, next to the words being
 * incremented. Through a small ExCache every page is evicted again and again while being
 * written, by the guest and by the VMM. At the end every word is checked: each writer's word
 * must equal ROUNDS, each slot the last pattern. Prints the counts checked and "no write lost",
 * or the first wrong word (and exits 1).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define SLOT 256 /* word index of the kernel-written slot */
#define SLOT_WORDS 8

static uint64_t *mem;
static unsigned long pages, rounds;
static int fds[2];

static void *writer(void *arg) {
    unsigned long t = (unsigned long)arg;
    for (unsigned long r = 0; r < rounds; r++)
        for (unsigned long i = 0; i < pages; i++) {
            volatile uint64_t *w = &mem[i * WORDS + t];
            *w = *w + 1;
        }
    return NULL;
}

static void *kernel_writer(void *arg) {
    (void)arg;
    uint64_t pat[SLOT_WORDS];
    for (unsigned long r = 0; r < rounds; r++)
        for (unsigned long i = 0; i < pages; i++) {
            for (int k = 0; k < SLOT_WORDS; k++) pat[k] = (r << 32) ^ (i << 8) ^ (uint64_t)k;
            if (write(fds[1], pat, sizeof pat) != sizeof pat) abort();
            if (read(fds[0], &mem[i * WORDS + SLOT], sizeof pat) != sizeof pat) abort();
        }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PAGES ROUNDS WRITERS\n", argv[0]);
        return 2;
    }
    pages = strtoul(argv[1], 0, 0);
    rounds = strtoul(argv[2], 0, 0);
    unsigned long writers = strtoul(argv[3], 0, 0);
    if (!pages || !rounds || !writers || writers > 7) return 2;
    mem = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || pipe(fds)) return 1;
    pthread_t tid[8];
    for (unsigned long t = 0; t < writers; t++)
        if (pthread_create(&tid[t], 0, writer, (void *)t)) return 1;
    if (pthread_create(&tid[writers], 0, kernel_writer, 0)) return 1;
    for (unsigned long t = 0; t <= writers; t++) pthread_join(tid[t], 0);
    unsigned long checked = 0;
    for (unsigned long i = 0; i < pages; i++) {
        for (unsigned long t = 0; t < writers; t++, checked++)
            if (mem[i * WORDS + t] != rounds) {
                printf("page %lu writer %lu: %lu increments of %lu\n", i, t, (unsigned long)mem[i * WORDS + t], rounds);
                return 1;
            }
        for (int k = 0; k < SLOT_WORDS; k++, checked++) {
            uint64_t want = ((rounds - 1) << 32) ^ (i << 8) ^ (uint64_t)k;
            if (mem[i * WORDS + SLOT + k] != want) {
                printf("page %lu slot word %d: %#lx, want %#lx\n", i, k, (unsigned long)mem[i * WORDS + SLOT + k], (unsigned long)want);
                return 1;
            }
        }
    }
    printf("%lu pages x %lu rounds, %lu writers and read(2): %lu words checked, no write lost\n", pages, rounds, writers,
           checked);
    return 0;
}
