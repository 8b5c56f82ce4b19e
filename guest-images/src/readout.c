/* Reads of the standard output and error, which a shell opens write-only when they are pipes
 * or files: EBADF at once, never a wait. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static void report(const char *what, long r) {
    printf("%s = %ld (%s)\n", what, r, r < 0 ? strerror(errno) : "ok");
}

int main(void) {
    char b[8];
    struct iovec v = { b, sizeof b };
    report("read(1)", read(1, b, sizeof b));
    report("read(2)", read(2, b, sizeof b));
    report("readv(1)", readv(1, &v, 1));
    report("readv(2)", readv(2, &v, 1));
    return 0;
}
