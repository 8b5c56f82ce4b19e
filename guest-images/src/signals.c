/* Signal handlers, one case per argument; every case prints the same lines on Linux and in a
 * vNode (no addresses, no timings):
 *   info      SA_SIGINFO fields of raise, kill and tgkill (si_signo, si_code, si_pid, si_uid)
 *   thread    pthread_kill to a thread spinning in user code runs the handler in that thread;
 *             kill() of the process goes to the one thread that does not block the signal
 *   segv      SIGSEGV handlers read si_addr and si_code (MAPERR, ACCERR), siglongjmp out
 *   fpe       SIGFPE (integer divide by zero) and SIGILL (ud2) handlers, siglongjmp out
 *   restart   a read of an empty pipe interrupted by a signal: restarted with SA_RESTART,
 *             EINTR without; nanosleep and pause give EINTR even with SA_RESTART
 *   suspend   sigsuspend, sigpending, ppoll with a mask, and the mask given back after the
 *             handler
 *   wait      sigwaitinfo takes a pending signal, sigtimedwait times out, sigwait gets one
 *             another thread sends, and no handler runs
 *   altstack  SA_ONSTACK runs the handler on the sigaltstack; EPERM changing it from there
 *   masks     sa_mask defers a signal raised in the handler; SA_NODEFER nests; SA_RESETHAND
 *   sse       a handler doing double arithmetic and printf does not disturb the doubles of the
 *             loop it interrupts; a handler starts with a clean MXCSR, and the interrupted
 *             code's comes back
 *   context   a handler that changes uc_mcontext (RIP, RAX) changes the interrupted code; the
 *             other registers come back exactly
 *   badframe  rt_sigreturn on a garbage frame: the program dies of SIGSEGV
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static void on(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) {
        perror("sigaction");
        exit(2);
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static pid_t tid(void) { return (pid_t)syscall(SYS_gettid); }

static const char *code_name(int code) {
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_TKILL: return "SI_TKILL";
    case SI_KERNEL: return "SI_KERNEL";
    default: return "other";
    }
}

/* ---- info ---- */

static volatile sig_atomic_t got_signo, got_code, got_pid_ok, got_uid_ok;

static void info_handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_signo = sig == si->si_signo ? sig : -1;
    got_code = si->si_code;
    got_pid_ok = si->si_pid == getpid();
    got_uid_ok = si->si_uid == getuid();
}

static void report(const char *how) {
    printf("%s: signo %d, code %s, pid %s, uid %s\n", how, (int)got_signo, code_name(got_code),
           got_pid_ok ? "ours" : "wrong", got_uid_ok ? "ours" : "wrong");
}

static int case_info(void) {
    on(SIGUSR1, info_handler, 0);
    raise(SIGUSR1);
    report("raise");
    kill(getpid(), SIGUSR1);
    report("kill");
    syscall(SYS_tgkill, getpid(), tid(), SIGUSR1);
    report("tgkill");
    return 0;
}

/* ---- thread ---- */

static volatile int stop_spin;
static volatile pid_t handled_in;
static volatile pid_t worker_tid;

static void record_tid(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    handled_in = tid();
}

static void *spinner(void *arg) {
    (void)arg;
    worker_tid = tid();
    volatile unsigned long n = 0;
    while (!stop_spin)
        n++;
    return NULL;
}

static int case_thread(void) {
    on(SIGUSR1, record_tid, 0);
    on(SIGUSR2, record_tid, 0);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    while (!worker_tid)
        sleep_ms(1);
    pthread_kill(t, SIGUSR1);
    while (!handled_in)
        sleep_ms(1);
    printf("pthread_kill: handler ran in the %s thread\n", handled_in == worker_tid ? "target" : "wrong");
    handled_in = 0;
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);
    kill(getpid(), SIGUSR2);
    while (!handled_in)
        sleep_ms(1);
    printf("kill: handler ran in the %s thread\n", handled_in == worker_tid ? "unblocking" : "blocking");
    stop_spin = 1;
    pthread_join(t, NULL);
    return 0;
}

/* ---- segv, fpe ---- */

static sigjmp_buf jump;
static volatile void *fault_addr;
static volatile int fault_code, fault_sig;

static void fault_handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    fault_sig = sig;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    siglongjmp(jump, 1);
}

static const char *segv_code(int c) {
    return c == SEGV_MAPERR ? "SEGV_MAPERR" : c == SEGV_ACCERR ? "SEGV_ACCERR" : "other";
}

static int case_segv(void) {
    on(SIGSEGV, fault_handler, 0);
    volatile char *unmapped = (volatile char *)0x1000;
    if (sigsetjmp(jump, 1) == 0) {
        (void)*unmapped;
        puts("no fault?");
    } else {
        printf("read of unmapped memory: %s, si_addr %s\n", segv_code(fault_code),
               fault_addr == unmapped ? "right" : "wrong");
    }
    char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sigsetjmp(jump, 1) == 0) {
        ((volatile char *)ro)[100] = 1;
        puts("no fault?");
    } else {
        printf("write to read-only memory: %s, si_addr %s\n", segv_code(fault_code),
               fault_addr == ro + 100 ? "right" : "wrong");
    }
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("after siglongjmp SIGSEGV is %s\n", sigismember(&now, SIGSEGV) ? "blocked" : "unblocked");
    puts("the program goes on");
    return 0;
}

static int case_fpe(void) {
    on(SIGFPE, fault_handler, 0);
    on(SIGILL, fault_handler, 0);
    volatile int zero = 0, x = 7;
    if (sigsetjmp(jump, 1) == 0) {
        x = x / zero;
        puts("no fault?");
    } else {
        printf("divide by zero: signal %s, code %s, si_addr %s\n", fault_sig == SIGFPE ? "SIGFPE" : "other",
               fault_code == FPE_INTDIV ? "FPE_INTDIV" : "other", fault_addr ? "set" : "null");
    }
    if (sigsetjmp(jump, 1) == 0) {
        __asm__ volatile("ud2");
        puts("no fault?");
    } else {
        printf("ud2: signal %s, code %s\n", fault_sig == SIGILL ? "SIGILL" : "other",
               fault_code == ILL_ILLOPN ? "ILL_ILLOPN" : "other");
    }
    return 0;
}

/* ---- restart ---- */

static volatile int handler_calls;
static volatile int main_done;
static pthread_t main_thread;

static void count_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    handler_calls++;
}

/* Signals the main thread every 20 ms until it is done, then (if asked) writes a byte. */
struct nagger {
    int fd;
    int signals_before_write;
};

static void *nag(void *arg) {
    struct nagger *n = arg;
    int sent = 0;
    while (!main_done) {
        sleep_ms(20);
        if (main_done)
            break;
        pthread_kill(main_thread, SIGUSR1);
        if (++sent == n->signals_before_write && n->fd >= 0) {
            sleep_ms(20);
            if (write(n->fd, "x", 1) != 1)
                perror("write");
        }
    }
    return NULL;
}

static void nagged(struct nagger *n, void (*body)(void)) {
    main_done = 0;
    handler_calls = 0;
    pthread_t t;
    pthread_create(&t, NULL, nag, n);
    body();
    main_done = 1;
    pthread_join(t, NULL);
}

static int pipe_fds[2];

static void read_pipe(void) {
    char c;
    ssize_t r = read(pipe_fds[0], &c, 1);
    if (r < 0)
        printf("  read: -1 %s, handler ran: %s\n", errno == EINTR ? "EINTR" : strerror(errno), handler_calls ? "yes" : "no");
    else
        printf("  read: %zd, handler ran: %s\n", r, handler_calls ? "yes" : "no");
}

static void long_nanosleep(void) {
    struct timespec ts = {10, 0};
    int r = nanosleep(&ts, &ts);
    printf("  nanosleep: %d %s\n", r, r ? (errno == EINTR ? "EINTR" : strerror(errno)) : "");
}

static void do_pause(void) {
    int r = pause();
    printf("  pause: %d %s\n", r, errno == EINTR ? "EINTR" : strerror(errno));
}

static int case_restart(void) {
    main_thread = pthread_self();
    if (pipe(pipe_fds) != 0)
        return 2;
    struct nagger writes = {pipe_fds[1], 3}, no_writes = {-1, 0};
    puts("SA_RESTART:");
    on(SIGUSR1, count_handler, SA_RESTART);
    nagged(&writes, read_pipe);
    nagged(&no_writes, long_nanosleep);
    nagged(&no_writes, do_pause);
    puts("no SA_RESTART:");
    on(SIGUSR1, count_handler, 0);
    nagged(&no_writes, read_pipe);
    return 0;
}

/* ---- suspend ---- */

static int case_suspend(void) {
    on(SIGUSR1, count_handler, 0);
    sigset_t usr1, old, pending, now;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    raise(SIGUSR1);
    sigpending(&pending);
    printf("pending while blocked: %s, handler ran: %d\n", sigismember(&pending, SIGUSR1) ? "SIGUSR1" : "nothing",
           handler_calls);
    int r = sigsuspend(&old);
    printf("sigsuspend: %d %s, handler ran: %d\n", r, errno == EINTR ? "EINTR" : strerror(errno), handler_calls);
    sigprocmask(SIG_BLOCK, NULL, &now);
    sigpending(&pending);
    printf("after: SIGUSR1 %s, pending %s\n", sigismember(&now, SIGUSR1) ? "blocked again" : "unblocked",
           sigismember(&pending, SIGUSR1) ? "SIGUSR1" : "nothing");

    int never[2];
    if (pipe(never) != 0)
        return 2;
    struct pollfd pfd = {.fd = never[0], .events = POLLIN};
    struct timespec brief = {0, 10 * 1000000L}, five = {5, 0};
    r = ppoll(&pfd, 1, &brief, &old);
    printf("ppoll with nothing pending: %d, handler ran: %d\n", r, handler_calls);
    raise(SIGUSR1);
    r = ppoll(&pfd, 1, &five, &old);
    printf("ppoll letting SIGUSR1 through: %d %s, handler ran: %d\n", r, errno == EINTR ? "EINTR" : strerror(errno),
           handler_calls);
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("after: SIGUSR1 %s\n", sigismember(&now, SIGUSR1) ? "blocked again" : "unblocked");
    return 0;
}

/* ---- wait ---- */

static void *send_usr2_later(void *arg) {
    (void)arg;
    sleep_ms(30);
    pthread_kill(main_thread, SIGUSR2);
    return NULL;
}

static int case_wait(void) {
    main_thread = pthread_self();
    on(SIGUSR1, count_handler, 0);
    on(SIGUSR2, count_handler, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    printf("sigwaitinfo: %s, code %s\n", sig == SIGUSR1 ? "SIGUSR1" : "other", code_name(si.si_code));
    struct timespec ts = {0, 20 * 1000000L};
    sig = sigtimedwait(&set, &si, &ts);
    printf("sigtimedwait with nothing pending: %d %s\n", sig, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    pthread_t t;
    pthread_create(&t, NULL, send_usr2_later, NULL);
    int got = 0;
    int r = sigwait(&set, &got);
    pthread_join(t, NULL);
    printf("sigwait: %d, %s from the other thread\n", r, got == SIGUSR2 ? "SIGUSR2" : "other");
    printf("handlers ran: %d\n", handler_calls);
    return 0;
}

/* ---- altstack ---- */

static char *alt;
static const size_t alt_size = 1 << 16;
static volatile int on_alt, alt_flags_onstack, change_errno;

static void alt_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si;
    char local;
    on_alt = &local >= alt && &local < alt + alt_size;
    stack_t cur, other = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    sigaltstack(NULL, &cur);
    alt_flags_onstack = (cur.ss_flags & SS_ONSTACK) != 0;
    change_errno = sigaltstack(&other, NULL) == 0 ? 0 : errno;
    alt_flags_onstack &= (((ucontext_t *)uc)->uc_stack.ss_flags & SS_ONSTACK) == 0;
}

static int case_altstack(void) {
    alt = malloc(alt_size);
    stack_t ss = {.ss_sp = alt, .ss_size = alt_size, .ss_flags = 0}, cur;
    if (sigaltstack(&ss, NULL) != 0)
        perror("sigaltstack");
    on(SIGUSR1, alt_handler, SA_ONSTACK);
    raise(SIGUSR1);
    printf("SA_ONSTACK handler on the alternate stack: %s\n", on_alt ? "yes" : "no");
    printf("sigaltstack in the handler: %s\n", alt_flags_onstack ? "SS_ONSTACK" : "not on it");
    printf("changing it there: %s\n", change_errno == EPERM ? "EPERM" : "allowed");
    sigaltstack(NULL, &cur);
    printf("after the handler: flags %d, same stack %s\n", cur.ss_flags, cur.ss_sp == alt ? "yes" : "no");
    on(SIGUSR1, alt_handler, 0);
    raise(SIGUSR1);
    printf("without SA_ONSTACK: %s\n", on_alt ? "on it" : "on the thread's stack");
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    sigaltstack(NULL, &cur);
    printf("disabled: %s\n", cur.ss_flags == SS_DISABLE ? "SS_DISABLE" : "still on");
    return 0;
}

/* ---- masks ---- */

static char order[64];
static volatile int depth, max_depth, calls;

static void add(const char *s) { strncat(order, s, sizeof order - strlen(order) - 1); }

static void usr2_handler(int sig) {
    (void)sig;
    add(" h2");
}

static void usr1_with_mask(int sig) {
    (void)sig;
    add(" h1(");
    raise(SIGUSR2);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    add(sigismember(&now, SIGUSR1) ? "self-blocked" : "self-open");
    add(")");
}

/* Raises its own signal until it has run three times. */
static void nodefer(int sig) {
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    if (++calls < 3)
        raise(sig);
    depth--;
}

static int case_masks(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr2_handler;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = usr1_with_mask;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("sa_mask defers SIGUSR2:%s\n", order);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nodefer;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("SA_NODEFER: %d calls nest to depth %d\n", calls, max_depth);
    sa.sa_flags = 0;
    depth = max_depth = calls = 0;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("without it: %d calls, depth %d\n", calls, max_depth);

    sa.sa_handler = usr2_handler;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGUSR2, &sa, NULL);
    order[0] = 0;
    raise(SIGUSR2);
    struct sigaction now;
    sigaction(SIGUSR2, NULL, &now);
    printf("SA_RESETHAND: ran%s, then %s\n", order, now.sa_handler == SIG_DFL ? "SIG_DFL" : "still the handler");
    return 0;
}

/* ---- sse ---- */

static volatile int sse_stop;
static volatile double handler_sink;

static void sse_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    double acc[8] = {1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5};
    for (int i = 0; i < 200; i++)
        for (int j = 0; j < 8; j++)
            acc[j] = acc[j] * 1.0001 + (double)i / (j + 1);
    char buf[128];
    snprintf(buf, sizeof buf, "%f %f %g", acc[0], acc[7], acc[3] / 3.0);
    handler_sink = acc[1] + (double)strlen(buf);
    handler_calls++;
}

static void *sse_nag(void *arg) {
    (void)arg;
    for (int i = 0; i < 20; i++) {
        sleep_ms(5);
        pthread_kill(main_thread, SIGUSR1);
    }
    sleep_ms(5);
    sse_stop = 1;
    return NULL;
}

/* The loop keeps its four accumulators in XMM registers; signals land in the middle of it. */
__attribute__((noinline)) static long spin_doubles(double out[4]) {
    double a = 0, b = 1, c = 2, d = 3;
    long n = 0;
    while (!sse_stop) {
        a += 0.5;
        b = b * 1.0000001 + 0.25;
        c -= 0.125;
        d = d * 0.9999999 + 1.0;
        n++;
    }
    out[0] = a, out[1] = b, out[2] = c, out[3] = d;
    return n;
}

__attribute__((noinline)) static void again(long n, double out[4]) {
    double a = 0, b = 1, c = 2, d = 3;
    for (long i = 0; i < n; i++) {
        a += 0.5;
        b = b * 1.0000001 + 0.25;
        c -= 0.125;
        d = d * 0.9999999 + 1.0;
    }
    out[0] = a, out[1] = b, out[2] = c, out[3] = d;
}

static unsigned mxcsr(void) {
    unsigned v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}

static volatile unsigned handler_mxcsr;

static void mxcsr_handler(int sig) {
    (void)sig;
    handler_mxcsr = mxcsr();
}

static int case_sse(void) {
    main_thread = pthread_self();
    on(SIGUSR1, sse_handler, SA_RESTART);
    pthread_t t;
    pthread_create(&t, NULL, sse_nag, NULL);
    double got[4], want[4];
    long n = spin_doubles(got);
    pthread_join(t, NULL);
    again(n, want);
    printf("handler ran: %s\n", handler_calls >= 10 ? "yes" : "too few times");
    printf("interrupted doubles: %s\n", memcmp(got, want, sizeof got) == 0 ? "intact" : "CORRUPTED");

    signal(SIGUSR2, mxcsr_handler);
    unsigned round_to_zero = (mxcsr() & ~0x6000u) | 0x6000u;
    __asm__ volatile("ldmxcsr %0" : : "m"(round_to_zero));
    raise(SIGUSR2);
    unsigned after = mxcsr();
    unsigned dflt = 0x1f80;
    __asm__ volatile("ldmxcsr %0" : : "m"(dflt));
    printf("MXCSR in the handler: %#x; after it: %#x\n", handler_mxcsr, after);
    return 0;
}

/* ---- context ---- */

static void skip_ud2(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si;
    mcontext_t *mc = &((ucontext_t *)uc)->uc_mcontext;
    mc->gregs[REG_RIP] += 2;
    mc->gregs[REG_RAX] = 42;
}

static int case_context(void) {
    on(SIGILL, skip_ud2, 0);
    uint64_t rax, r12, r13, r14, r15, rbx;
    __asm__ volatile("mov $1, %%rax\n"
                     "mov $0x1212, %%r12\n"
                     "mov $0x1313, %%r13\n"
                     "mov $0x1414, %%r14\n"
                     "mov $0x1515, %%r15\n"
                     "mov $0xb0b0, %%rbx\n"
                     "ud2\n"
                     "mov %%rax, %0\n"
                     "mov %%r12, %1\n"
                     "mov %%r13, %2\n"
                     "mov %%r14, %3\n"
                     "mov %%r15, %4\n"
                     "mov %%rbx, %5\n"
                     : "=m"(rax), "=m"(r12), "=m"(r13), "=m"(r14), "=m"(r15), "=m"(rbx)
                     :
                     : "rax", "rbx", "r12", "r13", "r14", "r15", "memory");
    printf("rax set by the handler: %lu\n", (unsigned long)rax);
    printf("other registers: %s\n",
           r12 == 0x1212 && r13 == 0x1313 && r14 == 0x1414 && r15 == 0x1515 && rbx == 0xb0b0 ? "as they were" : "CHANGED");
    return 0;
}

/* ---- badframe ---- */

static int case_badframe(void) {
    static unsigned char garbage[4096] __attribute__((aligned(64)));
    memset(garbage, 0xff, sizeof garbage);
    puts("calling rt_sigreturn on garbage");
    fflush(stdout);
    __asm__ volatile("mov %0, %%rsp\n"
                     "mov $15, %%eax\n"
                     "syscall\n"
                     :
                     : "r"(garbage + 1024)
                     : "memory");
    puts("still alive?");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const struct {
        const char *name;
        int (*fn)(void);
    } cases[] = {
        {"info", case_info},         {"thread", case_thread}, {"segv", case_segv},   {"fpe", case_fpe},
        {"restart", case_restart},   {"suspend", case_suspend}, {"wait", case_wait},
        {"altstack", case_altstack},
        {"masks", case_masks},       {"sse", case_sse},       {"context", case_context},
        {"badframe", case_badframe},
    };
    if (argc != 2) {
        fprintf(stderr, "usage: signals CASE\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(argv[1], cases[i].name) == 0)
            return cases[i].fn();
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
