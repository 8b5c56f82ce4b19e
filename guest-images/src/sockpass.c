/* AF_UNIX sockets: a socketpair across a fork with SCM_RIGHTS passing a pipe's write end and
 * a socket, a named stream socket and a named datagram socket in the file name space (their
 * socket nodes: stat, open, unlink and bind anew, a regular file in their place), and the
 * source address of a datagram. Prints the same natively and in a vNode. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void send_fds(int sock, int *fds, int n) {
    char data = 'F';
    struct iovec iov = {&data, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = CMSG_SPACE(n * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    if (sendmsg(sock, &m, 0) != 1) die("sendmsg");
}

static int recv_fds(int sock, int *fds, int max) {
    char data;
    struct iovec iov = {&data, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1 || data != 'F') die("recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS) die("no SCM_RIGHTS");
    int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (n > max) die("too many fds");
    memcpy(fds, CMSG_DATA(c), n * sizeof(int));
    return n;
}

static void rights_across_fork(void) {
    int sv[2], p[2], inner[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe(p) < 0) die("socketpair/pipe");
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, inner) < 0) die("inner socketpair");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(sv[0]);
        close(p[0]);
        close(p[1]);
        close(inner[0]);
        close(inner[1]);
        int fds[4];
        int n = recv_fds(sv[1], fds, 4);
        const char *msg = "written by the child through a passed pipe\n";
        if (n != 2 || write(fds[0], msg, strlen(msg)) != (ssize_t)strlen(msg)) die("child write");
        if (send(fds[1], "datagram through a passed socket", 32, 0) != 32) die("child send");
        _exit(0);
    }
    close(sv[1]);
    int fds[2] = {p[1], inner[1]};
    send_fds(sv[0], fds, 2);
    close(p[1]);
    close(inner[1]);
    char buf[128];
    ssize_t n, total = 0;
    while ((n = read(p[0], buf + total, sizeof buf - 1 - total)) > 0) total += n;
    buf[total] = 0;
    printf("parent read: %s", buf);
    n = recv(inner[0], buf, sizeof buf - 1, 0);
    if (n < 0) die("recv");
    buf[n] = 0;
    printf("parent received: %s\n", buf);
    int status;
    waitpid(child, &status, 0);
    printf("child exited %d\n", WEXITSTATUS(status));
}

static void named_sockets(void) {
    const char *path = "lego-sockpass.sock";
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, path);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0) die("bind/listen unix");
    int again = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("second bind: %s\n", bind(again, (struct sockaddr *)&a, sizeof a) < 0 && errno == EADDRINUSE ? "EADDRINUSE" : "?");
    struct sockaddr_un none = {.sun_family = AF_UNIX};
    strcpy(none.sun_path, "no-such.sock");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect to a missing name: %s\n", connect(c, (struct sockaddr *)&none, sizeof none) < 0 && errno == ENOENT ? "ENOENT" : "?");
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) die("connect unix");
    int s = accept(l, NULL, NULL);
    if (s < 0) die("accept unix");
    struct sockaddr_un got;
    socklen_t len = sizeof got;
    if (getsockname(l, (struct sockaddr *)&got, &len) < 0) die("getsockname");
    printf("listener name: %s\n", got.sun_path);
    if (write(c, "ping", 4) != 4) die("write");
    char buf[8] = {0};
    if (read(s, buf, sizeof buf) != 4) die("read");
    printf("stream: %s\n", buf);
    struct stat st;
    int got_stat = stat(path, &st);
    printf("its name: %s, mode %o\n", got_stat == 0 && S_ISSOCK(st.st_mode) ? "a socket" : "?", st.st_mode & 07777);
    printf("open of it: %s\n", open(path, O_RDWR) < 0 && errno == ENXIO ? "ENXIO" : "?");
    /* Unlinked, the name leads nowhere; bound again, it is a new socket beside the old one. */
    unlink(path);
    int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect after unlink: %s\n", connect(c2, (struct sockaddr *)&a, sizeof a) < 0 && errno == ENOENT ? "ENOENT" : "?");
    int l2 = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(l2, (struct sockaddr *)&a, sizeof a) < 0 || listen(l2, 4) < 0) die("bind anew");
    if (connect(c2, (struct sockaddr *)&a, sizeof a) < 0) die("connect anew");
    int s2 = accept(l2, NULL, NULL);
    printf("the new listener takes it: %s\n", s2 >= 0 ? "yes" : "no");
    close(s2);
    close(c2);
    close(l2);
    unlink(path);
    int f = open(path, O_CREAT | O_WRONLY, 0600);
    close(f);
    int c3 = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect to a file: %s\n", connect(c3, (struct sockaddr *)&a, sizeof a) < 0 && errno == ECONNREFUSED ? "ECONNREFUSED" : "?");
    printf("bind over a file: %s\n", bind(c3, (struct sockaddr *)&a, sizeof a) < 0 && errno == EADDRINUSE ? "EADDRINUSE" : "?");
    close(c3);
    close(c);
    close(s);
    close(l);
    close(again);
    unlink(path);

    const char *dpath = "lego-sockpass.dgram";
    unlink(dpath);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un da = {.sun_family = AF_UNIX};
    strcpy(da.sun_path, dpath);
    if (bind(d, (struct sockaddr *)&da, sizeof da) < 0) die("bind dgram");
    const char *spath = "lego-sockpass.src";
    unlink(spath);
    int sender = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, spath);
    if (bind(sender, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind sender");
    if (sendto(sender, "hello datagram", 14, 0, (struct sockaddr *)&da, sizeof da) != 14) die("sendto");
    memset(buf, 0, sizeof buf);
    char big[32] = {0};
    struct sockaddr_un from = {0};
    socklen_t flen = sizeof from;
    if (recvfrom(d, big, sizeof big, 0, (struct sockaddr *)&from, &flen) != 14) die("recvfrom");
    printf("datagram: %s, from %s\n", big, from.sun_path);
    unlink(dpath);
    unlink(spath);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    rights_across_fork();
    named_sockets();
    return 0;
}
