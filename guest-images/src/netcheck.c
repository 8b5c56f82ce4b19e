/* One socket operation, and what it answered (the errno's name), for the network isolation
 * and error cases:
 *
 *   netcheck connect IP PORT      TCP connect
 *   netcheck udp IP PORT          UDP connect and send
 *   netcheck bind IP PORT         TCP bind
 *   netcheck bindtwice IP PORT    two TCP binds of the same address, the second's answer */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *name(int r) {
    if (r == 0) return "OK";
    switch (errno) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EADDRINUSE: return "EADDRINUSE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    default: return strerror(errno);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: netcheck connect|udp|bind|bindtwice IP PORT\n");
        return 2;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) return 2;
    const char *op = argv[1];
    int udp = !strcmp(op, "udp");
    int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    int r;
    if (!strcmp(op, "connect") || udp) {
        r = connect(s, (struct sockaddr *)&a, sizeof a);
        if (udp && r == 0) r = send(s, "x", 1, 0) == 1 ? 0 : -1;
    } else if (!strcmp(op, "bind")) {
        r = bind(s, (struct sockaddr *)&a, sizeof a);
    } else if (!strcmp(op, "bindtwice")) {
        if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) {
            printf("first bind: %s\n", name(-1));
            return 1;
        }
        int t = socket(AF_INET, SOCK_STREAM, 0);
        r = bind(t, (struct sockaddr *)&a, sizeof a);
    } else {
        return 2;
    }
    printf("%s %s:%s: %s\n", op, argv[2], argv[3], name(r));
    return 0;
}
