/* An epoll echo server and a client with many concurrent connections, every byte checked.
 *
 *   epoll_echo server PORT NCONN          serve NCONN connections on 0.0.0.0:PORT, then exit
 *   epoll_echo client IP PORT NCONN BYTES open NCONN connections at once, send BYTES on each
 *                                         and check the echo
 *
 * The server is edge triggered with non-blocking accept4; the client is level triggered with
 * EPOLLONESHOT re-arming. Both print only what is the same natively and in a vNode. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static unsigned char pattern(int conn, long i) { return (unsigned char)(conn * 31 + i * 7 + (i >> 8)); }

/* Writes all of buf to a non-blocking socket, waiting with poll when it is full. */
static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {fd, POLLOUT, 0};
            poll(&p, 1, -1);
            continue;
        }
        if (n < 0) die("write");
        buf += n;
        len -= (size_t)n;
    }
}

static int server(int port, int nconn) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l < 0) die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(l, 512) < 0) die("listen");
    struct sockaddr_in me;
    socklen_t melen = sizeof me;
    if (getsockname(l, (struct sockaddr *)&me, &melen) < 0 || ntohs(me.sin_port) != port) die("getsockname");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0) die("epoll_ctl listener");
    printf("listening\n");
    fflush(stdout);
    int accepted = 0, closed = 0, bad_peers = 0;
    long long bytes = 0;
    char buf[16384];
    struct epoll_event evs[64];
    while (closed < nconn) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                for (;;) {
                    struct sockaddr_in peer;
                    socklen_t plen = sizeof peer;
                    int c = accept4(l, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0 && errno == EAGAIN) break;
                    if (c < 0) die("accept4");
                    struct sockaddr_in gp;
                    socklen_t gplen = sizeof gp;
                    if (plen != sizeof peer || peer.sin_family != AF_INET || peer.sin_port == 0 ||
                        getpeername(c, (struct sockaddr *)&gp, &gplen) < 0 || gp.sin_addr.s_addr != peer.sin_addr.s_addr ||
                        gp.sin_port != peer.sin_port)
                        bad_peers++;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) die("epoll_ctl conn");
                    accepted++;
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) {
                    if (r < 0) die("read");
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    closed++;
                    break;
                }
                bytes += r;
                write_all(fd, buf, (size_t)r);
            }
        }
    }
    printf("served %d connections, %lld bytes, %d bad peer addresses\n", accepted, bytes, bad_peers);
    return bad_peers != 0;
}

struct conn {
    int fd;
    long sent, got;
};

static int client(const char *ip, int port, int nconn, long bytes) {
    struct conn *cs = calloc((size_t)nconn, sizeof *cs);
    int ep = epoll_create1(0);
    if (!cs || ep < 0) die("setup");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) die("address");
    for (int c = 0; c < nconn; c++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0 || peer.sin_addr.s_addr != a.sin_addr.s_addr || peer.sin_port != a.sin_port)
            die("getpeername");
        int fl = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &fl, sizeof fl) < 0) die("TCP_NODELAY");
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
        cs[c].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLONESHOT, .data.u32 = (unsigned)c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
    int done = 0;
    long long echoed = 0;
    char buf[8192];
    struct epoll_event evs[64];
    while (done < nconn) {
        int n = epoll_wait(ep, evs, 64, 30000);
        if (n == 0) {
            fprintf(stderr, "stalled with %d of %d connections done\n", done, nconn);
            return 1;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int c = (int)evs[i].data.u32;
            struct conn *k = &cs[c];
            if ((evs[i].events & EPOLLOUT) && k->sent < bytes) {
                long chunk = bytes - k->sent < (long)sizeof buf ? bytes - k->sent : (long)sizeof buf;
                for (long j = 0; j < chunk; j++) buf[j] = (char)pattern(c, k->sent + j);
                ssize_t w = write(k->fd, buf, (size_t)chunk);
                if (w < 0 && errno != EAGAIN) die("write");
                if (w > 0) k->sent += w;
            }
            if (evs[i].events & EPOLLIN) {
                ssize_t r = read(k->fd, buf, sizeof buf);
                if (r < 0 && errno != EAGAIN) die("read");
                if (r == 0) {
                    fprintf(stderr, "connection %d closed early\n", c);
                    return 1;
                }
                for (ssize_t j = 0; j < r; j++)
                    if ((unsigned char)buf[j] != pattern(c, k->got + j)) {
                        fprintf(stderr, "connection %d: byte %ld differs\n", c, k->got + j);
                        return 1;
                    }
                if (r > 0) {
                    k->got += r;
                    echoed += r;
                }
            }
            if (k->got == bytes) {
                close(k->fd);
                done++;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT | (k->sent < bytes ? EPOLLOUT : 0), .data.u32 = (unsigned)c};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ev) < 0) die("epoll_ctl mod");
        }
    }
    printf("ok %d connections, %lld bytes echoed\n", nconn, echoed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atoi(argv[3]));
    if (argc == 6 && !strcmp(argv[1], "client")) return client(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
    fprintf(stderr, "usage: epoll_echo server PORT NCONN | client IP PORT NCONN BYTES\n");
    return 2;
}
