/* Writes a deterministic English-like text to stdout: gentext WORDS SEED
 *
 * Words come from a vocabulary of made-up words, skewed toward the first ones (a few are very
 * common, most are rare), ten to a line, so that a word count has a long tail to merge.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define VOCAB 20000

static uint64_t state;

static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: gentext WORDS SEED\n");
        return 2;
    }
    long words = atol(argv[1]);
    state = strtoull(argv[2], NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
    static char vocab[VOCAB][12];
    static const char *syll[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "xe", "zu", "be", "da", "fi", "go", "hu", "je"};
    for (int k = 0; k < VOCAB; k++) {
        int len = 1 + (int)(next() % 4), at = 0;
        for (int s = 0; s < len; s++) at += sprintf(vocab[k] + at, "%s", syll[next() % 16]);
    }
    for (long i = 0; i < words; i++) {
        /* Skewed toward small k: a uniform pick below a uniform bound. */
        uint64_t bound = 1 + next() % VOCAB;
        fputs(vocab[next() % bound], stdout);
        fputc(i % 10 == 9 ? '\n' : ' ', stdout);
    }
    return 0;
}
