/* Phoenix-style map-reduce word count: wordcount FILE THREADS [TOP]
 *
 * Map: the file is read into memory and split into THREADS chunks at word boundaries; each
 * worker counts the words of its chunk into a hash table of its own. Reduce: the words are
 * partitioned by hash among the workers; worker t merges partition t of every map table into
 * one table. The main thread then sorts the merged entries (count descending, then word) and
 * prints the totals and the TOP (default 20) most frequent words. The output does not depend
 * on the thread count.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    const char *word; /* into the text; not NUL-terminated */
    uint32_t len;
    uint64_t count;
};

struct table {
    struct entry *slots;
    size_t cap, used;
};

static char *text;
static size_t text_len;
static int nthreads;
static struct table *maps, *reduced;

static uint64_t hash(const char *w, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)w[i]) * 1099511628211ull;
    return h;
}

static void table_init(struct table *t, size_t cap) {
    t->cap = cap;
    t->used = 0;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots) exit(3);
}

static void table_add(struct table *t, const char *w, uint32_t len, uint64_t count);

static void table_grow(struct table *t) {
    struct table bigger;
    table_init(&bigger, t->cap * 2);
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].word) table_add(&bigger, t->slots[i].word, t->slots[i].len, t->slots[i].count);
    free(t->slots);
    *t = bigger;
}

static void table_add(struct table *t, const char *w, uint32_t len, uint64_t count) {
    if (2 * (t->used + 1) > t->cap) table_grow(t);
    size_t i = hash(w, len) & (t->cap - 1);
    for (;; i = (i + 1) & (t->cap - 1)) {
        struct entry *e = &t->slots[i];
        if (!e->word) {
            *e = (struct entry){w, len, count};
            t->used++;
            return;
        }
        if (e->len == len && !memcmp(e->word, w, len)) {
            e->count += count;
            return;
        }
    }
}

static int is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

static void *map(void *arg) {
    long t = (long)arg;
    size_t lo = text_len * t / nthreads, hi = text_len * (t + 1) / nthreads;
    /* A chunk counts the words that start in it, also the last one, which may end past it. */
    table_init(&maps[t], 1024);
    size_t i = lo;
    while (i < hi) {
        if (is_space(text[i]) || (i > 0 && !is_space(text[i - 1]))) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < text_len && !is_space(text[i])) i++;
        table_add(&maps[t], text + start, (uint32_t)(i - start), 1);
    }
    return NULL;
}

static void *reduce(void *arg) {
    long t = (long)arg;
    table_init(&reduced[t], 1024);
    for (int m = 0; m < nthreads; m++)
        for (size_t i = 0; i < maps[m].cap; i++) {
            struct entry *e = &maps[m].slots[i];
            if (e->word && (long)(hash(e->word, e->len) >> 48) % nthreads == t)
                table_add(&reduced[t], e->word, e->len, e->count);
        }
    return NULL;
}

static int by_count(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->word, y->word, n);
    return c ? c : (int)x->len - (int)y->len;
}

static void run(void *(*phase)(void *)) {
    pthread_t th[64];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, phase, (void *)t)) exit(3);
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: wordcount FILE THREADS [TOP]\n");
        return 2;
    }
    nthreads = atoi(argv[2]);
    int top = argc > 3 ? atoi(argv[3]) : 20;
    if (nthreads < 1 || nthreads > 64) return 2;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    text_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc(text_len + 1);
    if (!text || fread(text, 1, text_len, f) != text_len) return 3;
    fclose(f);
    maps = calloc(nthreads, sizeof *maps);
    reduced = calloc(nthreads, sizeof *reduced);
    run(map);
    run(reduce);
    size_t distinct = 0;
    for (int t = 0; t < nthreads; t++) distinct += reduced[t].used;
    struct entry *all = malloc((distinct + 1) * sizeof *all);
    size_t k = 0;
    uint64_t words = 0;
    for (int t = 0; t < nthreads; t++)
        for (size_t i = 0; i < reduced[t].cap; i++)
            if (reduced[t].slots[i].word) {
                all[k++] = reduced[t].slots[i];
                words += reduced[t].slots[i].count;
            }
    qsort(all, distinct, sizeof *all, by_count);
    printf("%llu words, %zu distinct, %zu bytes\n", (unsigned long long)words, distinct, text_len);
    for (int i = 0; i < top && (size_t)i < distinct; i++)
        printf("%8llu %.*s\n", (unsigned long long)all[i].count, (int)all[i].len, all[i].word);
    uint64_t check = 0;
    for (size_t i = 0; i < distinct; i++) check = check * 31 + all[i].count + hash(all[i].word, all[i].len);
    printf("checksum of the whole sorted table: %#llx\n", (unsigned long long)check);
    return 0;
}
