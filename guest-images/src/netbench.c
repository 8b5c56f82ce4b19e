/* TCP round-trip latency and streaming throughput, for `lego bench net`.
 *
 *   netbench server PORT           serve connections one after the other, forever
 *   netbench rtt IP PORT N         N round trips of 16 bytes; prints "rtt_us MEAN"
 *   netbench stream IP PORT BYTES  BYTES in 64 KiB writes, then the server's count back;
 *                                  prints "stream_mib_s RATE"
 *
 * A connection's first byte says what it is: 'p' ping-pong, 's' stream. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_WRITE 65536

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int full(int fd, char *buf, size_t len, int writing) {
    while (len > 0) {
        ssize_t n = writing ? write(fd, buf, len) : read(fd, buf, len);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static _Noreturn void server(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 16) < 0) die("bind/listen");
    printf("listening\n");
    fflush(stdout);
    static char buf[STREAM_WRITE];
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) die("accept");
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char kind;
        if (read(c, &kind, 1) != 1) {
            close(c);
            continue;
        }
        if (kind == 'p') {
            while (full(c, buf, 16, 0) == 0 && full(c, buf, 16, 1) == 0) {
            }
        } else {
            uint64_t total = 0;
            ssize_t n;
            while ((n = read(c, buf, sizeof buf)) > 0) total += (uint64_t)n;
            full(c, (char *)&total, 8, 1);
        }
        close(c);
    }
}

static int dial(const char *ip, int port, char kind) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) die("address");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (write(s, &kind, 1) != 1) die("write");
    return s;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "server")) server(atoi(argv[2]));
    if (argc != 5) {
        fprintf(stderr, "usage: netbench server PORT | rtt IP PORT N | stream IP PORT BYTES\n");
        return 2;
    }
    long n = atol(argv[4]);
    if (!strcmp(argv[1], "rtt")) {
        int s = dial(argv[2], atoi(argv[3]), 'p');
        char buf[16] = "0123456789abcdef";
        for (int i = 0; i < 10; i++) full(s, buf, 16, 1), full(s, buf, 16, 0);
        double t = now();
        for (long i = 0; i < n; i++)
            if (full(s, buf, 16, 1) || full(s, buf, 16, 0)) die("round trip");
        printf("rtt_us %.2f\n", (now() - t) / (double)n * 1e6);
        return 0;
    }
    int s = dial(argv[2], atoi(argv[3]), 's');
    static char buf[STREAM_WRITE];
    memset(buf, 'x', sizeof buf);
    double t = now();
    for (long done = 0; done < n; done += STREAM_WRITE)
        if (full(s, buf, STREAM_WRITE, 1)) die("stream write");
    shutdown(s, SHUT_WR);
    uint64_t total = 0;
    if (full(s, (char *)&total, 8, 0) || total < (uint64_t)n) die("stream count");
    printf("stream_mib_s %.1f\n", (double)total / (now() - t) / (1 << 20));
    return 0;
}
