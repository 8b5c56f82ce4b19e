/* Readiness calls on pipes, socketpairs and eventfds: select, pselect6, poll, ppoll, epoll
 * (level and edge triggered, EPOLLONESHOT, nested in poll), eventfd2, and blocking waits
 * woken by another process. Prints the same natively and in a vNode. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static const char *err(long r) { return r >= 0 ? "ok" : errno == EAGAIN ? "EAGAIN" : errno == EINTR ? "EINTR" : strerror(errno); }

static void eventfds(void) {
    int e = eventfd(3, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t v = 0;
    long r = read(e, &v, 8);
    printf("eventfd read: %s %llu\n", err(r), (unsigned long long)v);
    r = read(e, &v, 8);
    printf("eventfd empty read: %s\n", err(r));
    v = 5;
    r = write(e, &v, 8);
    r = read(e, &v, 8);
    printf("eventfd after write: %llu\n", (unsigned long long)v);
    int s = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    uint64_t a = 0, b = 0;
    read(s, &a, 8);
    read(s, &b, 8);
    r = read(s, &v, 8);
    printf("semaphore: %llu %llu then %s\n", (unsigned long long)a, (unsigned long long)b, err(r));
    printf("eventfd bad flags: %s\n", eventfd(0, 0x7) < 0 && errno == EINVAL ? "EINVAL" : "?");
    close(e);
    close(s);
}

static void selects(void) {
    int p[2], sv[2];
    if (pipe(p) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("pipe");
    fd_set r, w;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timeval tv = {0, 0};
    printf("select empty pipe: %d\n", select(p[0] + 1, &r, NULL, NULL, &tv));
    write(p[1], "x", 1);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    FD_SET(sv[0], &r);
    FD_ZERO(&w);
    FD_SET(sv[0], &w);
    tv.tv_usec = 0;
    int n = select(sv[1] + 1, &r, &w, NULL, &tv);
    printf("select: %d pipe readable %d socket readable %d socket writable %d\n", n, FD_ISSET(p[0], &r) != 0, FD_ISSET(sv[0], &r) != 0,
           FD_ISSET(sv[0], &w) != 0);
    struct timespec ts = {0, 10 * 1000 * 1000};
    FD_ZERO(&r);
    FD_SET(sv[0], &r);
    sigset_t mask;
    sigemptyset(&mask);
    printf("pselect6 timeout: %d\n", pselect(sv[0] + 1, &r, NULL, NULL, &ts, &mask));
    /* A descriptor known to be closed: whoever started us may have left fd 100 open. */
    int closed = dup(1);
    close(closed);
    FD_ZERO(&r);
    FD_SET(closed, &r);
    printf("select closed fd: %s\n", select(closed + 1, &r, NULL, NULL, &tv) < 0 && errno == EBADF ? "EBADF" : "?");
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

static void polls(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    struct pollfd f = {sv[0], POLLIN | POLLOUT | POLLRDHUP, 0};
    int n = poll(&f, 1, 0);
    printf("poll fresh socket: %d revents %#x\n", n, f.revents);
    send(sv[1], "abc", 3, 0);
    n = poll(&f, 1, 0);
    printf("poll with data: %d revents %#x\n", n, f.revents);
    close(sv[1]);
    struct timespec ts = {0, 0};
    n = ppoll(&f, 1, &ts, NULL);
    printf("ppoll peer closed: %d revents %#x\n", n, f.revents);
    close(sv[0]);
}

static int count(int ep) {
    struct epoll_event ev[8];
    return epoll_wait(ep, ev, 8, 0);
}

static void epolls(void) {
    int sv[2], p[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0 || pipe(p) < 0) die("setup");
    int lt = epoll_create1(EPOLL_CLOEXEC), et = epoll_create1(0), os = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    epoll_ctl(lt, EPOLL_CTL_ADD, sv[0], &ev);
    ev.events = EPOLLIN | EPOLLET;
    epoll_ctl(et, EPOLL_CTL_ADD, sv[0], &ev);
    ev.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(os, EPOLL_CTL_ADD, sv[0], &ev);
    printf("epoll_ctl again: %s\n", epoll_ctl(lt, EPOLL_CTL_ADD, sv[0], &ev) < 0 && errno == EEXIST ? "EEXIST" : "?");
    printf("epoll_ctl self: %s\n", epoll_ctl(lt, EPOLL_CTL_ADD, lt, &ev) < 0 && errno == EINVAL ? "EINVAL" : "?");
    int a = count(lt), b = count(et), c0 = count(os);
    printf("epoll nothing: %d %d %d\n", a, b, c0);
    send(sv[1], "x", 1, 0);
    struct epoll_event out;
    int n = epoll_wait(lt, &out, 1, 0);
    printf("level: %d events %#x data %llu\n", n, out.events, (unsigned long long)out.data.u64);
    int l2 = count(lt), e1 = count(et), e2 = count(et), o1 = count(os), o2 = count(os);
    printf("level again: %d, edge: %d then %d, oneshot: %d then %d\n", l2, e1, e2, o1, o2);
    send(sv[1], "y", 1, 0);
    e1 = count(et);
    o1 = count(os);
    printf("new data, edge: %d oneshot still disarmed: %d\n", e1, o1);
    ev.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(os, EPOLL_CTL_MOD, sv[0], &ev);
    printf("re-armed oneshot: %d\n", count(os));
    struct pollfd pf = {lt, POLLIN, 0};
    printf("poll on the epoll fd: %d\n", poll(&pf, 1, 0));
    char buf[8];
    while (read(sv[0], buf, sizeof buf) > 0) {
    }
    printf("drained, level: %d\n", count(lt));
    epoll_ctl(lt, EPOLL_CTL_DEL, sv[0], NULL);
    printf("deleted: %s\n", epoll_ctl(lt, EPOLL_CTL_DEL, sv[0], NULL) < 0 && errno == ENOENT ? "ENOENT" : "?");
    ev.events = EPOLLIN;
    ev.data.u64 = 7;
    epoll_ctl(lt, EPOLL_CTL_ADD, p[0], &ev);
    printf("empty pipe: %d\n", count(lt));
    write(p[1], "z", 1);
    n = epoll_wait(lt, &out, 1, 0);
    printf("pipe: %d events %#x data %llu\n", n, out.events, (unsigned long long)out.data.u64);
    read(p[0], buf, 1);

    /* Blocking waits woken by a child process writing after a while. */
    ev.events = EPOLLIN;
    ev.data.u64 = 9;
    epoll_ctl(lt, EPOLL_CTL_ADD, sv[0], &ev);
    pid_t c = fork();
    if (c == 0) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
        write(p[1], "w", 1);
        nanosleep(&t, NULL);
        send(sv[1], "s", 1, 0);
        _exit(0);
    }
    n = epoll_wait(lt, &out, 1, -1);
    printf("woken by the pipe: %d data %llu\n", n, (unsigned long long)out.data.u64);
    read(p[0], buf, 1);
    n = epoll_wait(lt, &out, 1, -1);
    printf("woken by the socket: %d data %llu\n", n, (unsigned long long)out.data.u64);
    waitpid(c, NULL, 0);
    printf("epoll_wait timeout: %d\n", epoll_wait(os, &out, 1, 20) == 0 ? 0 : -1);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    eventfds();
    selects();
    polls();
    epolls();
    return 0;
}
