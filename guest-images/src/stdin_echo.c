/*
 * stdin_echo: reads stdin to EOF with read(2) and writes it to stdout with
 * ASCII letters uppercased (no locale involved), then prints
 * "read N bytes\n" to stderr. Tests stdin/stdout/stderr plumbing, short
 * reads and writes, and EOF. Exit 0, or 1 on an I/O error.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(void)
{
    static char buf[65536];
    unsigned long long total = 0;

    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("read");
            return 1;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 'a' + 'A');
        if (write_all(1, buf, (size_t)n) != 0) {
            perror("write");
            return 1;
        }
        total += (unsigned long long)n;
    }
    fprintf(stderr, "read %llu bytes\n", total);
    return 0;
}
