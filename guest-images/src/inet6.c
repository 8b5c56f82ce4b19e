/* IPv6 sockets over loopback, as a dual-stack program uses them: a TCP server on `::` that
 * an IPv6 client (to `::1`) and an IPv4 client (to 127.0.0.1) both reach, the addresses it is
 * shown, IPV6_V6ONLY and SO_DOMAIN, a UDP datagram to itself on `::1`, and a malformed
 * address. Prints the same natively (with IPv6 loopback) and in a vNode. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The address of a sockaddr_in6, or what else it is. */
static const char *shown(const struct sockaddr_in6 *a, socklen_t len) {
    static char buf[INET6_ADDRSTRLEN + 32];
    if (len != sizeof *a || a->sin6_family != AF_INET6) {
        snprintf(buf, sizeof buf, "family %d length %u", a->sin6_family, (unsigned)len);
        return buf;
    }
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return buf;
}

static const char *errname(int e) {
    return e == EINVAL ? "EINVAL" : e == EAFNOSUPPORT ? "EAFNOSUPPORT" : e == ENETUNREACH ? "ENETUNREACH" : strerror(e);
}

static struct sockaddr_in6 six(const char *ip, in_port_t port) {
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = port};
    if (inet_pton(AF_INET6, ip, &a.sin6_addr) != 1)
        die("inet_pton");
    return a;
}

static int opt(int s, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(s, level, name, &v, &l) < 0)
        die("getsockopt");
    return v;
}

static void tcp(void) {
    int srv = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv < 0)
        die("socket");
    printf("SO_DOMAIN %s, IPV6_V6ONLY %d\n", opt(srv, SOL_SOCKET, SO_DOMAIN) == AF_INET6 ? "AF_INET6" : "other",
           opt(srv, IPPROTO_IPV6, IPV6_V6ONLY));
    struct sockaddr_in6 any = six("::", 0), me;
    socklen_t len = sizeof me;
    if (bind(srv, (struct sockaddr *)&any, sizeof any) < 0 || listen(srv, 4) < 0)
        die("bind");
    if (getsockname(srv, (struct sockaddr *)&me, &len) < 0)
        die("getsockname");
    printf("server on %s, port chosen: %s\n", shown(&me, len), me.sin6_port ? "yes" : "no");

    int c6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo = six("::1", me.sin6_port), peer;
    if (connect(c6, (struct sockaddr *)&lo, sizeof lo) < 0)
        die("connect ::1");
    len = sizeof peer;
    int a6 = accept(srv, (struct sockaddr *)&peer, &len);
    if (a6 < 0)
        die("accept");
    printf("IPv6 client accepted from %s\n", shown(&peer, len));
    len = sizeof peer;
    getpeername(c6, (struct sockaddr *)&peer, &len);
    printf("IPv6 client's peer %s, same port: %s\n", shown(&peer, len), peer.sin6_port == me.sin6_port ? "yes" : "no");
    char buf[16] = {0};
    if (write(c6, "over six", 8) != 8 || read(a6, buf, sizeof buf - 1) != 8)
        die("six data");
    printf("server read \"%s\"\n", buf);

    int c4 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo4 = {.sin_family = AF_INET, .sin_port = me.sin6_port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c4, (struct sockaddr *)&lo4, sizeof lo4) < 0)
        die("connect 127.0.0.1");
    len = sizeof peer;
    int a4 = accept(srv, (struct sockaddr *)&peer, &len);
    if (a4 < 0)
        die("accept v4");
    memset(buf, 0, sizeof buf);
    if (write(c4, "over four", 9) != 9 || read(a4, buf, sizeof buf - 1) != 9)
        die("four data");
    printf("IPv4 client reached the IPv6 server: \"%s\", shown as family %s\n", buf,
           peer.sin6_family == AF_INET6 ? "AF_INET6" : "other");

    int on = 1;
    printf("IPV6_V6ONLY on a connected socket: %s\n", setsockopt(c6, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0 ? errname(errno) : "OK");
    struct sockaddr_in6 shortaddr = six("::1", me.sin6_port);
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    if (setsockopt(c, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0)
        die("setsockopt");
    printf("IPV6_V6ONLY after setting it: %d\n", opt(c, IPPROTO_IPV6, IPV6_V6ONLY));
    on = 0;
    setsockopt(c, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    errno = 0;
    printf("connect with a 20-byte address: %s\n", connect(c, (struct sockaddr *)&shortaddr, 20) < 0 ? errname(errno) : "OK");
    struct sockaddr_in6 four = {.sin6_family = AF_INET};
    printf("bind an AF_INET6 socket to an AF_INET address: %s, with the room of an IPv6 one: %s\n",
           bind(c, (struct sockaddr *)&four, sizeof(struct sockaddr_in)) < 0 ? errname(errno) : "OK",
           bind(c, (struct sockaddr *)&four, sizeof four) < 0 ? errname(errno) : "OK");
    close(c);
    close(c4);
    close(a4);
    close(c6);
    close(a6);
    close(srv);
}

static void udp(void) {
    int u = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 lo = six("::1", 0), me, from;
    socklen_t len = sizeof me;
    if (u < 0 || bind(u, (struct sockaddr *)&lo, sizeof lo) < 0 || getsockname(u, (struct sockaddr *)&me, &len) < 0)
        die("udp bind");
    printf("UDP socket on %s\n", shown(&me, len));
    if (sendto(u, "dgram", 5, 0, (struct sockaddr *)&me, sizeof me) != 5)
        die("sendto");
    char buf[8] = {0};
    len = sizeof from;
    if (recvfrom(u, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &len) != 5)
        die("recvfrom");
    printf("UDP \"%s\" from %s, its own port: %s\n", buf, shown(&from, len), from.sin6_port == me.sin6_port ? "yes" : "no");
    close(u);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    tcp();
    udp();
    return 0;
}
