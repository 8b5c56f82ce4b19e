/*
 * mmapfile: private file-backed mappings.
 *   mmapfile DIR
 * Writes DIR/mapped (3 pages and a bit, a pattern), maps it MAP_PRIVATE
 * read-only and read-write, checks the mapping shows the file (and zeroes past
 * its end within the last page), writes to the private copy and checks the file
 * itself is unchanged, maps it at an offset, then removes it. Prints one line
 * per check; exit 0 if all passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what)
{
    printf("%-44s %s\n", what, ok ? "ok" : "FAILED");
    if (!ok)
        failures++;
}

int main(int argc, char **argv)
{
    char path[4096];
    size_t pg = 4096, len = 3 * 4096 + 100;
    static unsigned char data[3 * 4096 + 100], back[3 * 4096 + 100];

    if (argc != 2) {
        fprintf(stderr, "usage: mmapfile DIR\n");
        return 2;
    }
    snprintf(path, sizeof path, "%s/mapped", argv[1]);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 7 + i / 4096);
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
    check(fd >= 0, "create file");
    check(write(fd, data, len) == (ssize_t)len, "write pattern");

    unsigned char *ro = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    check(ro != MAP_FAILED, "mmap private read-only");
    check(ro != MAP_FAILED && memcmp(ro, data, len) == 0, "mapping shows the file");
    int zero_tail = 1;
    for (size_t i = len; ro != MAP_FAILED && i < 4 * pg; i++)
        zero_tail &= ro[i] == 0;
    check(zero_tail, "zeroes past the end in the last page");

    unsigned char *rw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    check(rw != MAP_FAILED, "mmap private read-write");
    if (rw != MAP_FAILED) {
        memset(rw + pg, 0xab, pg);
        check(rw[pg] == 0xab && rw[0] == data[0], "private copy is writable");
    }
    check(pread(fd, back, len, 0) == (ssize_t)len && memcmp(back, data, len) == 0,
          "file unchanged by private writes");

    unsigned char *off = mmap(NULL, pg, PROT_READ, MAP_PRIVATE, fd, 2 * pg);
    check(off != MAP_FAILED && memcmp(off, data + 2 * pg, pg) == 0, "mapping at an offset");

    check(munmap(ro, len) == 0 && munmap(rw, len) == 0 && munmap(off, pg) == 0, "munmap");
    close(fd);
    check(unlink(path) == 0, "unlink");
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
