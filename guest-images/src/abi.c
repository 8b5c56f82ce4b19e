/* Linux ABI breadth, one case per argument; every case prints the same lines on Linux and in a
 * vNode (no addresses, no timings, no host CPU numbers):
 *   sched     pthreads workers that each pin themselves with sched_setaffinity and assert it
 *             (what a well-known map-reduce suite does), read it back, run there (getcpu);
 *             policies, priorities, nice values (per thread, inherited, clamped), I/O
 *             priorities, personality
 *   timers    setitimer/getitimer/alarm (ITIMER_VIRTUAL and ITIMER_PROF on CPU time), POSIX timers (on the
 *             process and thread CPU-time clocks too; SIGEV_SIGNAL with a value,
 *             SIGEV_THREAD_ID, SIGEV_NONE, overruns), timerfd reads and settings
 *   rtsig     queued real-time signals arrive in order with their values; standard ones
 *             coalesce; rt_tgsigqueueinfo; signalfd reads, polls, epoll waits and non-blocking reads
 *   usage     getrusage (self, thread, children) and times() show CPU time that was spent
 *   locks     record locks across 4 processes (a shared counter), F_GETLK names the holder,
 *             EDEADLK, OFD locks, flock, and F_SETLKW interrupted by a signal
 *   mapshared MAP_SHARED write-back seen by read() after munmap, msync, a forked child's
 *             changes, no growth past the end of the file; mincore, mlock and friends
 *   files     memfd_create, sendfile, copy_file_range, fallocate, close_range, preadv2/
 *             pwritev2, pidfd_open, execveat, mknod of a regular file
 *   fifo      mkfifo, the open rules of a FIFO (ENXIO, waiting for the other side), and
 *             bytes from a child through it
 *   links     symlink/symlinkat, link/linkat, readlink, chmod/fchmod/fchmodat, the chown
 *             family, utimensat/futimens/futimesat/utimes/utime (UTIME_NOW, UTIME_OMIT),
 *             truncate and creat, with Linux's errors
 *   attrs     what both file systems keep: creat, truncate, chmod/fchmod/fchmodat, and the
 *             modification time through utimensat/futimens/utimes/futimesat/utime
 *   jobs      SIGSTOP/SIGTSTP stop a process of two threads, SIGCONT continues it: wait4
 *             WUNTRACED/WCONTINUED, waitid WSTOPPED with WNOWAIT, SIGCHLD's codes and
 *             SA_NOCLDSTOP, signals held while stopped, SIGKILL of a stopped process
 *   caps      capget/capset and their rules, the ambient and bounding sets, keep-caps,
 *             securebits and no-new-privs; what setresuid, setfsuid, seteuid and execve do to
 *             the sets (run as root)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/shm.h>
#include <sys/sem.h>
#include <sys/msg.h>
#include <mqueue.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <utime.h>
#include <sys/timerfd.h>
#include <sys/times.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC 4
#endif
#ifndef RWF_APPEND
#define RWF_APPEND 0x10
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 1
#define FALLOC_FL_PUNCH_HOLE 2
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1
#endif
/* Through syscall(): not every C library wraps them. */
#define close_range_(a, b, f) syscall(SYS_close_range, a, b, f)
#define preadv2_(fd, iov, n, off, f) syscall(SYS_preadv2, fd, iov, n, (long)(off), 0L, f)
#define pwritev2_(fd, iov, n, off, f) syscall(SYS_pwritev2, fd, iov, n, (long)(off), 0L, f)

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            printf("FAILED line %d: %s (errno %s)\n", __LINE__, #cond, strerror(errno)); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static void on(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(sig, &sa, NULL) == 0);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* Spends `ms` of the calling thread's CPU time. */
static void burn_ms(long ms) {
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    volatile unsigned long x = 0;
    do {
        for (int i = 0; i < 100000; i++) x += i;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

/* ------------------------------------------------------------------------------------------ */

#define WORKERS 4
static cpu_set_t allowed;
static int cpus[64], ncpus;

static void *worker(void *arg) {
    int i = (int)(intptr_t)arg;
    int cpu = cpus[i % ncpus];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    /* The assertion the map-reduce suite makes. */
    CHECK(sched_setaffinity(0, sizeof set, &set) == 0);
    cpu_set_t got;
    CPU_ZERO(&got);
    CHECK(sched_getaffinity(0, sizeof got, &got) == 0);
    CHECK(CPU_EQUAL(&got, &set));
    burn_ms(5);
    unsigned c = 99, node = 99;
    CHECK(syscall(SYS_getcpu, &c, &node, NULL) == 0);
    CHECK((int)c == cpu && node == 0);
    CHECK(sched_getcpu() == cpu);
    /* Moving on to another core (or back to all of them) works from a pinned thread too. */
    int next = cpus[(i + 1) % ncpus];
    CPU_ZERO(&set);
    CPU_SET(next, &set);
    CHECK(sched_setaffinity(0, sizeof set, &set) == 0);
    CHECK(sched_getaffinity(0, sizeof got, &got) == 0 && CPU_EQUAL(&got, &set));
    CHECK(sched_setaffinity(0, sizeof allowed, &allowed) == 0);
    return NULL;
}

static int thread_nice;

static void *nice_of_thread(void *arg) {
    (void)arg;
    thread_nice = getpriority(PRIO_PROCESS, 0);
    return NULL;
}

static void case_sched(void) {
    CPU_ZERO(&allowed);
    CHECK(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    for (int c = 0; c < 64; c++)
        if (CPU_ISSET(c, &allowed)) cpus[ncpus++] = c;
    CHECK(ncpus > 0);
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < WORKERS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    printf("%d workers pinned themselves and ran where they were pinned\n", WORKERS);

    cpu_set_t none;
    CPU_ZERO(&none);
    CHECK(sched_setaffinity(0, sizeof none, &none) == -1 && errno == EINVAL);
    CHECK(sched_setaffinity(0, sizeof allowed, &allowed) == 0);
    CHECK(sched_getaffinity(999999, sizeof allowed, &allowed) == -1 && errno == ESRCH);
    printf("empty mask: EINVAL; unknown pid: ESRCH\n");

    printf("priority FIFO %d..%d, OTHER %d..%d, bad policy %d\n", sched_get_priority_min(SCHED_FIFO),
           sched_get_priority_max(SCHED_FIFO), sched_get_priority_min(SCHED_OTHER), sched_get_priority_max(SCHED_OTHER),
           sched_get_priority_max(77));
    /* Through syscall(): musl's wrappers of these answer ENOSYS themselves. */
    struct sched_param sp = {0};
    printf("policy %ld\n", syscall(SYS_sched_getscheduler, 0));
    CHECK(syscall(SYS_sched_setscheduler, 0, SCHED_BATCH, &sp) == 0);
    printf("policy after SCHED_BATCH %ld\n", syscall(SYS_sched_getscheduler, 0));
    sp.sched_priority = 5;
    CHECK(syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &sp) == -1 && errno == EINVAL);
    sp.sched_priority = 0;
    CHECK(syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &sp) == 0);
    CHECK(syscall(SYS_sched_getparam, 0, &sp) == 0);
    long policy = syscall(SYS_sched_getscheduler, 0);
    printf("policy %ld priority %d\n", policy, sp.sched_priority);
    CHECK(syscall(SYS_sched_setparam, 0, &sp) == 0);
    struct timespec rr;
    CHECK(syscall(SYS_sched_rr_get_interval, 0, &rr) == 0);
    printf("sched_rr_get_interval: ok\n");

    /* Nice values (per thread, inherited by a new thread, clamped) and I/O priorities. Only
     * differences from the starting nice value are printed: the test may run niced. */
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    CHECK(errno == 0);
    CHECK(setpriority(PRIO_PROCESS, 0, base + 3) == 0);
    printf("nice +%d\n", getpriority(PRIO_PROCESS, 0) - base);
    pthread_t niced;
    CHECK(pthread_create(&niced, NULL, nice_of_thread, NULL) == 0);
    CHECK(pthread_join(niced, NULL) == 0);
    printf("a new thread: nice +%d\n", thread_nice - base);
    CHECK(setpriority(PRIO_PROCESS, 0, 100) == 0);
    printf("nice 100 is %d\n", getpriority(PRIO_PROCESS, 0));
    CHECK(setpriority(PRIO_PROCESS, 999999, 0) == -1 && errno == ESRCH);
    CHECK(setpriority(7, 0, 0) == -1 && errno == EINVAL);
    if (geteuid() == 0) CHECK(setpriority(PRIO_PROCESS, 0, base) == 0);
    printf("nice: unknown thread ESRCH, bad which EINVAL\n");
    CHECK(syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 5) == 0);
    printf("ioprio %ld\n", syscall(SYS_ioprio_get, 1, 0));
    CHECK(syscall(SYS_ioprio_set, 1, 0, (4 << 13)) == -1 && errno == EINVAL);
    CHECK(syscall(SYS_ioprio_set, 1, 0, 3) == -1 && errno == EINVAL);
    CHECK(syscall(SYS_ioprio_get, 9, 0) == -1 && errno == EINVAL);
    printf("ioprio: bad class or level EINVAL\n");

    /* Another process of the vNode is reachable by its pid, as on Linux. */
    int gate[2];
    CHECK(pipe(gate) == 0);
    pid_t other = fork();
    CHECK(other >= 0);
    if (other == 0) {
        char c;
        close(gate[1]);
        _exit(read(gate[0], &c, 1) == 0 ? 0 : 1);
    }
    close(gate[0]);
    cpu_set_t mine, theirs;
    CHECK(sched_getaffinity(0, sizeof mine, &mine) == 0 && sched_getaffinity(other, sizeof theirs, &theirs) == 0);
    printf("another process: same cores %d\n", CPU_EQUAL(&mine, &theirs));
    CHECK(setpriority(PRIO_PROCESS, other, base + 2) == 0);
    printf("another process: nice +%d\n", getpriority(PRIO_PROCESS, other) - base);
    struct sched_param zero = {0};
    CHECK(syscall(SYS_sched_setscheduler, other, SCHED_BATCH, &zero) == 0);
    printf("another process: policy %ld\n", syscall(SYS_sched_getscheduler, other));
    CHECK(syscall(SYS_ioprio_set, 1, other, (3 << 13)) == 0);
    printf("another process: ioprio %ld\n", syscall(SYS_ioprio_get, 1, other));
    close(gate[1]);
    int st;
    CHECK(waitpid(other, &st, 0) == other && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    int old = personality(0xffffffff);
    printf("personality %#x\n", old);
    CHECK(personality(ADDR_NO_RANDOMIZE) == old);
    printf("personality now %#x\n", personality(0xffffffff));
    personality(old);
}

/* ------------------------------------------------------------------------------------------ */

static volatile sig_atomic_t alarms, timer_hits, thread_hits;
static volatile int last_code, last_value, last_timer_tid;

static void on_alarm(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    alarms++;
}

static void on_timer(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    /* What the hit says is stored before it is counted: another thread waits for the count
     * and then reads it (gettid is a forwarded call in a vNode, so the window is wide). */
    last_code = si->si_code;
    last_value = si->si_value.sival_int;
    last_timer_tid = gettid_();
    __atomic_fetch_add(&timer_hits, 1, __ATOMIC_RELEASE);
}

static volatile sig_atomic_t cpu_hits, last_cpu_sig;

static void on_cpu_timer(int sig, siginfo_t *si, void *uc) {
    (void)si, (void)uc;
    cpu_hits++;
    last_cpu_sig = sig;
}

static pid_t target_tid;
static volatile int stop_target;

static void *target_thread(void *arg) {
    (void)arg;
    target_tid = gettid_();
    while (!stop_target) sleep_ms(1);
    return NULL;
}

static void case_timers(void) {
    on(SIGALRM, on_alarm, 0);
    struct itimerval it = {{0, 20000}, {0, 20000}}, cur;
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    CHECK(getitimer(ITIMER_REAL, &cur) == 0);
    printf("itimer armed: interval %ld us, value set %d\n", (long)cur.it_interval.tv_usec, cur.it_value.tv_usec > 0 || cur.it_value.tv_sec > 0);
    sigset_t none;
    sigemptyset(&none);
    while (alarms < 3) sigsuspend(&none);
    struct itimerval off = {{0, 0}, {0, 0}};
    CHECK(setitimer(ITIMER_REAL, &off, &cur) == 0);
    printf("3 SIGALRMs; old interval %ld us\n", (long)cur.it_interval.tv_usec);
    CHECK(getitimer(ITIMER_REAL, &cur) == 0);
    printf("disarmed: %ld %ld\n", (long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec);
    CHECK(setitimer(ITIMER_VIRTUAL + 7, &off, NULL) == -1 && errno == EINVAL);
    unsigned first = alarm(5);
    unsigned left = alarm(0);
    printf("alarm(5) = %u, alarm(0) = %u\n", first, left);

    /* ITIMER_VIRTUAL and ITIMER_PROF count CPU time: a sleep does not bring them closer. */
    on(SIGVTALRM, on_cpu_timer, 0);
    on(SIGPROF, on_cpu_timer, 0);
    struct itimerval cpu50 = {{0, 0}, {0, 50000}};
    CHECK(setitimer(ITIMER_VIRTUAL, &cpu50, NULL) == 0);
    sleep_ms(150);
    CHECK(getitimer(ITIMER_VIRTUAL, &cur) == 0);
    printf("virtual timer after a 150 ms sleep: fired %d, left > 20 ms %d\n", (int)cpu_hits,
           cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 20000);
    while (!cpu_hits) burn_ms(1);
    CHECK(getitimer(ITIMER_VIRTUAL, &cur) == 0);
    printf("virtual timer fired while computing: SIGVTALRM %d, disarmed %d\n", last_cpu_sig == SIGVTALRM,
           cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0);
    struct itimerval prof = {{0, 10000}, {0, 10000}};
    cpu_hits = 0;
    CHECK(setitimer(ITIMER_PROF, &prof, NULL) == 0);
    while (cpu_hits < 3) burn_ms(1);
    CHECK(setitimer(ITIMER_PROF, &off, &cur) == 0);
    printf("profiling timer: 3 SIGPROFs %d, old interval %ld us\n", last_cpu_sig == SIGPROF, (long)cur.it_interval.tv_usec);

    /* POSIX timers on the CPU-time clocks: a sleep does not bring them closer, computing does. */
    for (int k = 0; k < 2; k++) {
        clockid_t clk = k ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID;
        struct sigevent cev;
        memset(&cev, 0, sizeof cev);
        cev.sigev_notify = SIGEV_SIGNAL;
        cev.sigev_signo = SIGPROF;
        timer_t ct;
        CHECK(timer_create(clk, &cev, &ct) == 0);
        struct itimerspec c40 = {{0, 0}, {0, 40000000}}, cgot;
        cpu_hits = 0;
        CHECK(timer_settime(ct, 0, &c40, NULL) == 0);
        sleep_ms(120);
        CHECK(timer_gettime(ct, &cgot) == 0);
        printf("%s timer after a 120 ms sleep: fired %d, left > 20 ms %d\n", k ? "thread CPU" : "process CPU", (int)cpu_hits,
               cgot.it_value.tv_sec == 0 && cgot.it_value.tv_nsec > 20000000);
        while (!cpu_hits) burn_ms(1);
        CHECK(timer_gettime(ct, &cgot) == 0);
        printf("%s timer fired while computing: disarmed %d\n", k ? "thread CPU" : "process CPU",
               cgot.it_value.tv_sec == 0 && cgot.it_value.tv_nsec == 0);
        /* An absolute CPU time already reached fires at once. */
        struct timespec used;
        clock_gettime(clk, &used);
        c40.it_value = used;
        cpu_hits = 0;
        CHECK(timer_settime(ct, TIMER_ABSTIME, &c40, NULL) == 0);
        while (!cpu_hits) burn_ms(1);
        printf("%s timer: absolute time already reached fired\n", k ? "thread CPU" : "process CPU");
        CHECK(timer_delete(ct) == 0);
    }
    /* A thread's CPU clock as pthread_getcpuclockid names it (a dynamic clock id). */
    clockid_t tclk;
    struct timespec t0, t1;
    CHECK(pthread_getcpuclockid(pthread_self(), &tclk) == 0);
    CHECK(clock_gettime(tclk, &t0) == 0);
    burn_ms(20);
    CHECK(clock_gettime(tclk, &t1) == 0);
    printf("pthread_getcpuclockid clock advances while computing: %d\n",
           (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) >= 10000000L);
    /* The CPU clock of a process that does not exist. */
    CHECK(timer_create((clockid_t)((~999999u << 3) | 2), NULL, &(timer_t){0}) == -1 && errno == EINVAL);

    /* SIGEV_SIGNAL with a value. */
    on(SIGRTMIN, on_timer, 0);
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN;
    ev.sigev_value.sival_int = 42;
    timer_t t;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0);
    struct itimerspec its = {{0, 0}, {0, 10000000}}, got;
    CHECK(timer_settime(t, 0, &its, NULL) == 0);
    CHECK(timer_gettime(t, &got) == 0);
    printf("one-shot armed: %d\n", got.it_value.tv_nsec > 0);
    while (timer_hits < 1) sigsuspend(&none);
    printf("timer signal: code SI_TIMER %d, value %d\n", last_code == SI_TIMER, last_value);
    CHECK(timer_gettime(t, &got) == 0);
    printf("after firing: %ld %ld\n", (long)got.it_value.tv_sec, got.it_value.tv_nsec);

    /* An absolute time already past fires at once. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    its.it_value = now;
    CHECK(timer_settime(t, TIMER_ABSTIME, &its, NULL) == 0);
    while (timer_hits < 2) sigsuspend(&none);
    printf("absolute time in the past fired\n");

    /* Overruns: the signal stays blocked while a 1 ms timer fires many times. */
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    struct itimerspec fast = {{0, 1000000}, {0, 1000000}};
    CHECK(timer_settime(t, 0, &fast, NULL) == 0);
    sleep_ms(60);
    siginfo_t si;
    CHECK(sigwaitinfo(&rt, &si) == SIGRTMIN);
    int overrun = timer_getoverrun(t);
    CHECK(timer_settime(t, 0, &(struct itimerspec){{0, 0}, {0, 0}}, NULL) == 0);
    printf("overrun counted: siginfo %d, timer_getoverrun %d\n", si.si_overrun > 5, overrun > 5);
    sigprocmask(SIG_UNBLOCK, &rt, NULL);
    CHECK(timer_delete(t) == 0);
    printf("deleted\n");

    /* SIGEV_THREAD_ID: the signal goes to that thread. */
    pthread_t th;
    CHECK(pthread_create(&th, NULL, target_thread, NULL) == 0);
    while (!target_tid) sleep_ms(1);
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN;
    ev.sigev_value.sival_int = 7;
#ifdef sigev_notify_thread_id
    ev.sigev_notify_thread_id = target_tid;
#else
    ev._sigev_un._tid = target_tid;
#endif
    CHECK(timer_create(CLOCK_REALTIME, &ev, &t) == 0);
    its = (struct itimerspec){{0, 0}, {0, 5000000}};
    CHECK(timer_settime(t, 0, &its, NULL) == 0);
    while (timer_hits < 3) sleep_ms(1);
    printf("SIGEV_THREAD_ID: in the target thread %d, value %d\n", last_timer_tid == target_tid, last_value);
    stop_target = 1;
    pthread_join(th, NULL);
    timer_delete(t);

    /* SIGEV_NONE: nothing is sent; the time can be read. */
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_NONE;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0);
    its = (struct itimerspec){{0, 0}, {5, 0}};
    CHECK(timer_settime(t, 0, &its, NULL) == 0);
    CHECK(timer_gettime(t, &got) == 0);
    printf("SIGEV_NONE: %d s left at most\n", (int)got.it_value.tv_sec + 1);
    timer_delete(t);
    ev.sigev_notify = 99;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &t) == -1 && errno == EINVAL);

    /* timerfd. */
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    CHECK(fd >= 0);
    its = (struct itimerspec){{0, 10000000}, {0, 10000000}};
    CHECK(timerfd_settime(fd, 0, &its, NULL) == 0);
    uint64_t n = 0;
    CHECK(read(fd, &n, 8) == 8);
    printf("timerfd: %d expirations read\n", n >= 1);
    CHECK(timerfd_gettime(fd, &got) == 0);
    printf("timerfd interval %ld ns\n", got.it_interval.tv_nsec);
    its = (struct itimerspec){{0, 0}, {0, 0}};
    CHECK(timerfd_settime(fd, 0, &its, &got) == 0);
    CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    CHECK(read(fd, &n, 8) == -1 && errno == EAGAIN);
    struct pollfd pfd = {fd, POLLIN, 0};
    printf("disarmed timerfd: poll %d, read EAGAIN\n", poll(&pfd, 1, 20));
    close(fd);
    CHECK(timerfd_settime(0, 0, &its, NULL) == -1 && errno == EINVAL);
}

/* ------------------------------------------------------------------------------------------ */

static volatile int order[16], norder;
static volatile int usr1;

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (norder < 16) order[norder++] = si->si_value.sival_int * (si->si_code == SI_QUEUE ? 1 : -1);
}

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    usr1++;
}

static void case_rtsig(void) {
    int sig = SIGRTMIN + 1;
    on(sig, on_rt, 0);
    on(SIGUSR1, on_usr1, 0);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, &old);
    for (int i = 0; i < 5; i++) CHECK(sigqueue(getpid(), sig, (union sigval){.sival_int = i + 10}) == 0);
    raise(SIGUSR1);
    raise(SIGUSR1);
    sigset_t pend;
    sigpending(&pend);
    printf("pending: rt %d usr1 %d\n", sigismember(&pend, sig), sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("queued instances in order:");
    for (int i = 0; i < norder; i++) printf(" %d", order[i]);
    printf("; SIGUSR1 ran %d time(s)\n", usr1);

    /* rt_tgsigqueueinfo to the calling thread. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = SI_QUEUE;
    si.si_value.sival_int = 99;
    norder = 0;
    CHECK(syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid_(), sig, &si) == 0);
    printf("rt_tgsigqueueinfo delivered %d (%d)\n", norder == 1 ? order[0] : -1, norder);
    CHECK(syscall(SYS_rt_sigqueueinfo, getpid(), 65, &si) == -1 && errno == EINVAL);

    /* signalfd. */
    sigset_t sfd_set;
    sigemptyset(&sfd_set);
    sigaddset(&sfd_set, SIGUSR2);
    sigaddset(&sfd_set, sig);
    sigprocmask(SIG_BLOCK, &sfd_set, NULL);
    int fd = signalfd(-1, &sfd_set, SFD_CLOEXEC);
    CHECK(fd >= 0);
    struct pollfd pfd = {fd, POLLIN, 0};
    printf("signalfd poll before: %d\n", poll(&pfd, 1, 0));
    CHECK(sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 7}) == 0);
    CHECK(sigqueue(getpid(), sig, (union sigval){.sival_int = 1}) == 0);
    CHECK(sigqueue(getpid(), sig, (union sigval){.sival_int = 2}) == 0);
    int ready = poll(&pfd, 1, 0);
    printf("signalfd poll after: %d revents %#x\n", ready, pfd.revents);
    struct signalfd_siginfo ssi[4];
    ssize_t n = read(fd, ssi, sizeof ssi);
    printf("signalfd read %zd records:", n / (ssize_t)sizeof ssi[0]);
    for (int i = 0; i < n / (ssize_t)sizeof ssi[0]; i++)
        printf(" [%s code %d int %d pid-ok %d]", ssi[i].ssi_signo == SIGUSR2 ? "USR2" : "RT", ssi[i].ssi_code, ssi[i].ssi_int,
               ssi[i].ssi_pid == (uint32_t)getpid());
    printf("\n");
    CHECK(read(fd, ssi, 8) == -1 && errno == EINVAL);
    CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    CHECK(read(fd, ssi, sizeof ssi) == -1 && errno == EAGAIN);
    /* A blocking read waits for a signal another thread sends. */
    CHECK(fcntl(fd, F_SETFL, 0) == 0);
    if (fork() == 0) {
        sleep_ms(20);
        kill(getppid(), SIGUSR2);
        _exit(0);
    }
    n = read(fd, ssi, sizeof ssi);
    printf("blocking signalfd read got %s\n", n == sizeof ssi[0] && ssi[0].ssi_signo == SIGUSR2 ? "SIGUSR2" : "?");
    wait(NULL);
    /* In epoll, as PostgreSQL's latches use it: a wait that a signal from another process ends. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 5}, got[2];
    CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
    printf("signalfd epoll before: %d\n", epoll_wait(ep, got, 2, 0));
    if (fork() == 0) {
        sleep_ms(20);
        kill(getppid(), SIGUSR2);
        _exit(0);
    }
    int k = epoll_wait(ep, got, 2, 5000);
    printf("signalfd epoll wait: %d events %#x data %u\n", k, k > 0 ? got[0].events : 0, k > 0 ? got[0].data.u32 : 0);
    CHECK(read(fd, ssi, sizeof ssi) == sizeof ssi[0]);
    printf("signalfd epoll after its read: %d\n", epoll_wait(ep, got, 2, 0));
    wait(NULL);
    close(ep);
    sigaddset(&sfd_set, SIGUSR1);
    CHECK(signalfd(fd, &sfd_set, 0) == fd);
    CHECK(signalfd(1, &sfd_set, 0) == -1 && errno == EINVAL);
    close(fd);
}

/* ------------------------------------------------------------------------------------------ */

static double secs(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static void *burner(void *arg) {
    (void)arg;
    burn_ms(100);
    return NULL;
}

static double ts_secs(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

static void case_usage(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, burner, NULL) == 0);
    burn_ms(100);
    struct rusage me;
    CHECK(getrusage(RUSAGE_THREAD, &me) == 0);
    printf("thread cpu >= 50ms: %d\n", secs(me.ru_utime) + secs(me.ru_stime) >= 0.05);
    pthread_join(t, NULL);
    CHECK(getrusage(RUSAGE_SELF, &me) == 0);
    double self = secs(me.ru_utime) + secs(me.ru_stime);
    printf("process cpu >= 150ms: %d\n", self >= 0.15);
    /* The CPU-time clocks (clock() reads the process's): the program's own time, which does
     * not grow while it sleeps. */
    struct timespec pc, tc, slept;
    CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &pc) == 0);
    CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &tc) == 0);
    printf("clocks: process >= 150ms %d, thread >= 50ms %d, process >= thread %d\n", ts_secs(pc) >= 0.15,
           ts_secs(tc) >= 0.05, ts_secs(pc) >= ts_secs(tc));
    sleep_ms(200);
    CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &slept) == 0);
    printf("process clock over a 200 ms sleep grew < 50 ms: %d\n", ts_secs(slept) - ts_secs(pc) < 0.05);
    struct rusage ch;
    CHECK(getrusage(RUSAGE_CHILDREN, &ch) == 0);
    printf("children before: %d\n", secs(ch.ru_utime) + secs(ch.ru_stime) < 0.01);
    pid_t pid = fork();
    if (pid == 0) {
        burn_ms(100);
        _exit(0);
    }
    struct rusage wru;
    int status;
    CHECK(wait4(pid, &status, 0, &wru) == pid);
    CHECK(getrusage(RUSAGE_CHILDREN, &ch) == 0);
    printf("children after >= 50ms: %d, in wait4's rusage %d\n", secs(ch.ru_utime) + secs(ch.ru_stime) >= 0.05,
           secs(wru.ru_utime) + secs(wru.ru_stime) >= 0.05);
    struct tms tms;
    clock_t up = times(&tms);
    CHECK(up != (clock_t)-1);
    printf("times: self %d children %d\n", tms.tms_utime + tms.tms_stime >= 5, tms.tms_cutime + tms.tms_cstime >= 5);
    CHECK(getrusage(7, &me) == -1 && errno == EINVAL);
}

/* ------------------------------------------------------------------------------------------ */

#define LOCKFILE "abi-locks.tmp"
#define PROCS 4
#define ROUNDS 50

static int lock_range(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}

static void on_plain(int sig) { (void)sig; }

static void case_locks(void) {
    int fd = open(LOCKFILE, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "0000000000", 10) == 10);
    /* 4 processes add to a counter in the file under a write lock. */
    pid_t kids[PROCS];
    for (int k = 0; k < PROCS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            int f = open(LOCKFILE, O_RDWR);
            for (int r = 0; r < ROUNDS; r++) {
                CHECK(lock_range(f, F_SETLKW, F_WRLCK, 0, 10) == 0);
                char buf[24] = {0};
                CHECK(pread(f, buf, 10, 0) == 10);
                long v = strtol(buf, NULL, 10) % 1000000;
                sched_yield();
                snprintf(buf, sizeof buf, "%010ld", v + 1);
                CHECK(pwrite(f, buf, 10, 0) == 10);
                CHECK(lock_range(f, F_SETLK, F_UNLCK, 0, 10) == 0);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < PROCS; k++) waitpid(kids[k], NULL, 0);
    char buf[11] = {0};
    CHECK(pread(fd, buf, 10, 0) == 10);
    printf("counter after %d processes x %d locked increments: %ld\n", PROCS, ROUNDS, strtol(buf, NULL, 10));

    /* The holder is named by F_GETLK; F_SETLK fails with EAGAIN; the lock goes when the holder
     * closes any descriptor of the file. */
    int p2c[2], c2p[2];
    CHECK(pipe(p2c) == 0 && pipe(c2p) == 0);
    CHECK(lock_range(fd, F_SETLK, F_WRLCK, 0, 5) == 0);
    pid_t child = fork();
    if (child == 0) {
        int f = open(LOCKFILE, O_RDWR);
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 1};
        CHECK(fcntl(f, F_GETLK, &q) == 0);
        printf("child: F_GETLK sees %s held by the parent %d, bytes %ld+%ld\n", q.l_type == F_WRLCK ? "a write lock" : "?",
               q.l_pid == getppid(), (long)q.l_start, (long)q.l_len);
        CHECK(lock_range(f, F_SETLK, F_RDLCK, 4, 2) == -1 && (errno == EAGAIN || errno == EACCES));
        CHECK(lock_range(f, F_SETLK, F_RDLCK, 5, 2) == 0);
        printf("child: overlapping F_SETLK refused, the next bytes granted\n");
        fflush(stdout);
        /* Deadlock: the child holds byte 5 and waits for byte 0, which the parent holds; the
         * parent then asks for byte 5. */
        CHECK(write(c2p[1], "r", 1) == 1);
        int r = lock_range(f, F_SETLKW, F_WRLCK, 0, 1);
        printf("child: got byte 0 after the parent gave up: %d\n", r == 0);
        fflush(stdout);
        _exit(0);
    }
    char c;
    CHECK(read(c2p[0], &c, 1) == 1);
    sleep_ms(50);
    int r = lock_range(fd, F_SETLKW, F_WRLCK, 5, 1);
    printf("parent: waiting on the waiting child: %s\n", r == -1 && errno == EDEADLK ? "EDEADLK" : "no deadlock seen");
    /* Closing another descriptor of the file drops the parent's POSIX locks. */
    int dup_fd = open(LOCKFILE, O_RDONLY);
    close(dup_fd);
    waitpid(child, NULL, 0);
    fflush(stdout);

    /* OFD locks belong to the open file description: two opens in one process conflict. */
    int a = open(LOCKFILE, O_RDWR), b = open(LOCKFILE, O_RDWR);
    struct flock ofd = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    CHECK(fcntl(a, F_OFD_SETLK, &ofd) == 0);
    CHECK(fcntl(b, F_OFD_SETLK, &ofd) == -1 && errno == EAGAIN);
    struct flock q = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    CHECK(fcntl(b, F_OFD_GETLK, &q) == 0);
    printf("OFD: second open refused; F_OFD_GETLK sees pid %d\n", q.l_pid);
    close(a);
    CHECK(fcntl(b, F_OFD_SETLK, &ofd) == 0);
    printf("OFD: closing the holder frees it\n");
    close(b);

    /* flock: per description, shared with a fork's child through the inherited descriptor. */
    a = open(LOCKFILE, O_RDONLY);
    b = open(LOCKFILE, O_RDONLY);
    CHECK(flock(a, LOCK_EX) == 0);
    CHECK(flock(b, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK);
    CHECK(flock(b, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK);
    child = fork();
    if (child == 0) {
        printf("flock: child converts the inherited lock: %d\n", flock(a, LOCK_SH) == 0);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    CHECK(flock(b, LOCK_SH | LOCK_NB) == 0);
    printf("flock: shared now\n");
    CHECK(flock(a, LOCK_UN) == 0 && flock(b, LOCK_UN) == 0);
    CHECK(flock(a, 0) == -1 && errno == EINVAL);
    fflush(stdout);

    /* F_SETLKW is interrupted by a signal without SA_RESTART. */
    CHECK(lock_range(fd, F_SETLK, F_WRLCK, 0, 1) == 0);
    child = fork();
    if (child == 0) {
        int f = open(LOCKFILE, O_RDWR);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_plain;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 0}, {0, 50000}};
        setitimer(ITIMER_REAL, &it, NULL);
        int r = lock_range(f, F_SETLKW, F_WRLCK, 0, 1);
        printf("F_SETLKW interrupted: %s\n", r == -1 && errno == EINTR ? "EINTR" : "?");
        _exit(0);
    }
    waitpid(child, NULL, 0);
    close(fd);
    unlink(LOCKFILE);
}

/* ------------------------------------------------------------------------------------------ */

#define MAPFILE "abi-map.tmp"

static void show_file(const char *what, int fd, off_t at, size_t len) {
    char buf[64] = {0};
    CHECK(pread(fd, buf, len, at) == (ssize_t)len);
    printf("%s: %.*s\n", what, (int)len, buf);
}

static void case_mapshared(void) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = open(MAPFILE, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    char *fill = malloc(3 * page);
    memset(fill, 'a', 3 * page);
    CHECK(write(fd, fill, 3 * page) == 3 * page);
    char *m = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    memcpy(m + 10, "written", 7);
    memcpy(m + 2 * page, "third", 5);
    CHECK(munmap(m, 3 * page) == 0);
    show_file("after munmap, page 0", fd, 10, 7);
    show_file("after munmap, page 2", fd, 2 * page, 5);

    m = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    memcpy(m + page, "synced", 6);
    CHECK(msync(m, 3 * page, MS_SYNC) == 0);
    show_file("after msync", fd, page, 6);
    CHECK(msync(m + 1, page, MS_SYNC) == -1 && errno == EINVAL);
    CHECK(msync(m, page, MS_SYNC | MS_ASYNC) == -1 && errno == EINVAL);

    /* A child changes one page and exits; the parent's other pages do not overwrite it. */
    pid_t pid = fork();
    if (pid == 0) {
        memcpy(m + page + 100, "child", 5);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    show_file("after the child exited", fd, page + 100, 5);
    memcpy(m + 20, "parent", 6);
    CHECK(munmap(m, 3 * page) == 0);
    show_file("parent's change", fd, 20, 6);
    show_file("child's change kept", fd, page + 100, 5);

    /* Past the end of the file nothing is written, and the file does not grow. */
    CHECK(ftruncate(fd, page + page / 2) == 0);
    m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    memcpy(m + page + page / 2 - 4, "tailTAIL", 8);
    CHECK(munmap(m, 2 * page) == 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    printf("size stays %ld\n", (long)st.st_size - page);
    show_file("tail", fd, page + page / 2 - 4, 4);

    /* A read-only descriptor cannot have a writable shared mapping. */
    int ro = open(MAPFILE, O_RDONLY);
    CHECK(mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED && errno == EACCES);
    close(ro);

    /* mincore and the mlock family. */
    char *anon = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(anon != MAP_FAILED);
    anon[0] = 1;
    unsigned char vec[4];
    CHECK(mincore(anon, 4 * page, vec) == 0);
    printf("mincore: touched page resident %d\n", vec[0] & 1);
    CHECK(mincore(anon + 1, page, vec) == -1 && errno == EINVAL);
    CHECK(mlock(anon, 2 * page) == 0);
    CHECK(munlock(anon, 2 * page) == 0);
    CHECK(syscall(SYS_mlock2, anon, page, 1) == 0);
    CHECK(syscall(SYS_mlock2, anon, page, 8) == -1 && errno == EINVAL);
    CHECK(mlockall(MCL_CURRENT) == 0);
    CHECK(munlockall() == 0);
    CHECK(mlockall(0) == -1 && errno == EINVAL);
    CHECK(munmap(anon, 4 * page) == 0);
    CHECK(mlock(anon, page) == -1 && errno == ENOMEM);
    printf("mlock, munlock, mlock2, mlockall, munlockall: ok\n");
    close(fd);
    unlink(MAPFILE);
}

/* ------------------------------------------------------------------------------------------ */

static sigjmp_buf fault_jump;
static volatile int fault_code;
static void *volatile fault_addr;

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    fault_code = si->si_code;
    fault_addr = si->si_addr;
    siglongjmp(fault_jump, 1);
}

/* Reads (or writes) *p; says whether it faulted, and how. */
static void touch(const char *what, volatile char *p, int write) {
    fault_code = 0;
    fault_addr = NULL;
    if (!sigsetjmp(fault_jump, 1)) {
        if (write) *p = 7;
        printf("%s: %d\n", what, *p);
    } else {
        printf("%s: SIGSEGV %s at the page %s\n", what,
               fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : "?",
               fault_addr == (void *)p ? "itself" : "elsewhere");
    }
}

/* PROT_NONE pages (guard pages) fault on every access, resident or not, and keep their
   contents for when access comes back. */
static void case_protnone(void) {
    long page = sysconf(_SC_PAGESIZE);
    on(SIGSEGV, on_fault, SA_NODEFER);
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    p[0] = 5;
    CHECK(mprotect(p, page, PROT_NONE) == 0);
    touch("resident page after mprotect(PROT_NONE), read", p, 0);
    touch("and written", p, 1);
    touch("its neighbour", p + page, 0);
    CHECK(mprotect(p, page, PROT_READ) == 0);
    touch("after mprotect(PROT_READ)", p, 0);
    touch("written", p, 1);
    char *none = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    touch("fresh PROT_NONE mapping, read", none, 0);
    touch("and written", none, 1);
    CHECK(mprotect(none, page, PROT_READ | PROT_WRITE) == 0);
    touch("made writable", none, 1);
    /* The guard page below a thread's stack. */
    pthread_attr_t attr;
    CHECK(pthread_attr_init(&attr) == 0);
    size_t guard = 0;
    CHECK(pthread_attr_getguardsize(&attr, &guard) == 0);
    printf("default guard size %s\n", guard >= (size_t)page ? "at least a page" : "none");
    CHECK(munmap(p, 2 * page) == 0 && munmap(none, page) == 0);
    touch("unmapped", p, 0);
    signal(SIGSEGV, SIG_DFL);
}

/* ------------------------------------------------------------------------------------------ */

struct shared_area {
    sem_t ready, done;
    pthread_mutex_t lock;
    long counter;
    char text[64];
};

static void *count_up(void *arg) {
    struct shared_area *a = arg;
    for (int i = 0; i < 20000; i++) {
        CHECK(pthread_mutex_lock(&a->lock) == 0);
        a->counter++;
        CHECK(pthread_mutex_unlock(&a->lock) == 0);
    }
    return NULL;
}

/* Two processes with two threads each add under one process-shared mutex. */
static void count_in(struct shared_area *a) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, count_up, a) == 0);
    count_up(a);
    CHECK(pthread_join(t, NULL) == 0);
}

/* MAP_SHARED | MAP_ANONYMOUS memory is shared with children: writes both ways, process-shared
   semaphores and mutexes (futexes across processes), mprotect, munmap, MADV_DONTNEED and
   mremap of it in one process. */
static void case_shared(void) {
    long page = sysconf(_SC_PAGESIZE);
    struct shared_area *a = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(a != MAP_FAILED);
    char *more = (char *)a + page;
    CHECK(sem_init(&a->ready, 1, 0) == 0 && sem_init(&a->done, 1, 0) == 0);
    pthread_mutexattr_t ma;
    CHECK(pthread_mutexattr_init(&ma) == 0 && pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) == 0);
    CHECK(pthread_mutex_init(&a->lock, &ma) == 0);
    strcpy(a->text, "from the parent");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        printf("child sees: %s\n", a->text);
        strcpy(a->text, "from the child");
        more[0] = 'c';
        CHECK(sem_post(&a->ready) == 0);
        /* Waits (a futex wait in this process) until the parent posts. */
        CHECK(sem_wait(&a->done) == 0);
        printf("child sees after the parent's post: %c\n", more[1]);
        count_in(a);
        /* Read-only here; the parent still writes. */
        CHECK(mprotect(more, page, PROT_READ) == 0);
        on(SIGSEGV, on_fault, SA_NODEFER);
        touch("child writes its read-only view", more + 2, 1);
        signal(SIGSEGV, SIG_DFL);
        /* Gone here, not in the parent. */
        CHECK(munmap((char *)a + 2 * page, page) == 0);
        CHECK(sem_post(&a->ready) == 0);
        _exit(0);
    }
    CHECK(sem_wait(&a->ready) == 0);
    printf("parent sees: %s, %c\n", a->text, more[0]);
    /* The child waits on `done` for a while before this post wakes it. */
    sleep_ms(50);
    more[1] = 'p';
    CHECK(sem_post(&a->done) == 0);
    count_in(a);
    CHECK(sem_wait(&a->ready) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    printf("child ended with %d, counter %ld\n", WEXITSTATUS(status), a->counter);
    more[2] = 'w';
    char *third = (char *)a + 2 * page;
    third[0] = 't';
    printf("parent writes after the child's mprotect and munmap: %c %c\n", more[2], third[0]);
    CHECK(madvise(more, page, MADV_DONTNEED) == 0);
    printf("after MADV_DONTNEED the shared page keeps %c%c\n", more[0], more[1]);
    /* Moved elsewhere, still shared with a new child. */
    char *moved = mremap(a, 4 * page, 4 * page, MREMAP_MAYMOVE | MREMAP_FIXED, (char *)a + 64 * page);
    CHECK(moved != MAP_FAILED);
    a = (struct shared_area *)moved;
    pid = fork();
    if (pid == 0) {
        strcpy(a->text, "moved and shared");
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    printf("after mremap: %s, %c\n", a->text, moved[page]);
    CHECK(munmap(moved, 4 * page) == 0);
    /* A private mapping stays private. */
    char *priv = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(priv != MAP_FAILED);
    priv[0] = 'a';
    pid = fork();
    if (pid == 0) {
        priv[0] = 'b';
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    printf("private page after the child wrote: %c\n", priv[0]);
}

/* ------------------------------------------------------------------------------------------ */

/* POSIX shared memory and named semaphores (files of /dev/shm), and memfds: each process
   maps the object itself, and every mapping of it shares its pages. */
static void case_posixshm(void) {
    long page = sysconf(_SC_PAGESIZE);
    char shm_name[64], sem_name[64];
    snprintf(shm_name, sizeof shm_name, "/abi-shm-%d", (int)getpid());
    snprintf(sem_name, sizeof sem_name, "/abi-sem-%d", (int)getpid());
    int fd = shm_open(shm_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 2 * page) == 0);
    sem_t *sem = sem_open(sem_name, O_CREAT | O_EXCL, 0600, 0);
    CHECK(sem != SEM_FAILED);
    struct stat st;
    CHECK(stat("/dev/shm", &st) == 0);
    printf("/dev/shm is a directory: %d, sticky and world-writable: %d\n", S_ISDIR(st.st_mode) != 0,
           (st.st_mode & 01777) == 01777);
    int memfd = (int)syscall(SYS_memfd_create, "abi", 0);
    CHECK(memfd >= 0 && ftruncate(memfd, page) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* A mapping of its own, by name. */
        int cfd = shm_open(shm_name, O_RDWR, 0);
        CHECK(cfd >= 0);
        char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
        CHECK(m != MAP_FAILED);
        sem_t *csem = sem_open(sem_name, 0);
        CHECK(csem != SEM_FAILED);
        CHECK(sem_wait(csem) == 0);
        printf("child reads the parent's write: %s\n", m + page);
        strcpy(m, "child was here");
        char *mm = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
        CHECK(mm != MAP_FAILED);
        strcpy(mm, "memfd by the child");
        CHECK(sem_post(csem) == 0);
        _exit(0);
    }
    char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED);
    sleep_ms(30);
    strcpy(m + page, "parent wrote this");
    CHECK(sem_post(sem) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(sem_wait(sem) == 0);
    printf("parent reads the child's write: %s\n", m);
    char *mm = mmap(NULL, page, PROT_READ, MAP_SHARED, memfd, 0);
    CHECK(mm != MAP_FAILED);
    printf("parent maps the memfd after the child: %s\n", mm);
    char back[32] = {0};
    CHECK(munmap(m, 2 * page) == 0);
    CHECK(pread(fd, back, 14, 0) == 14);
    printf("the file has it after munmap: %s\n", back);
    CHECK(sem_close(sem) == 0 && sem_unlink(sem_name) == 0);
    CHECK(shm_unlink(shm_name) == 0);
    CHECK(shm_open(shm_name, O_RDWR, 0) == -1 && errno == ENOENT);
    close(fd);
    close(memfd);
    munmap(mm, page);
}

/* ------------------------------------------------------------------------------------------ */

/* System V shared memory: a keyed segment attached by a parent and its child (nattch follows
   attaches, a fork and the child's exit), SHM_RND, IPC_SET, and IPC_RMID while attached. */
static void case_sysvshm(void) {
    long page = sysconf(_SC_PAGESIZE);
    key_t key = 0x4c000000 | (getpid() & 0x7fffff);
    int id = shmget(key, 3 * page + 100, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(id >= 0);
    CHECK(shmget(key, 10, IPC_CREAT | IPC_EXCL | 0600) == -1 && errno == EEXIST);
    CHECK(shmget(key, 10, 0600) == id);
    CHECK(shmget(key, 4 * page, 0600) == -1 && errno == EINVAL);
    CHECK(shmget(key | 0x00800000, 10, 0600) == -1 && errno == ENOENT);
    char *a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    struct shmid_ds ds;
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    printf("size %ld, nattch %lu, mode %o, made by me %d\n", (long)ds.shm_segsz - 3 * page,
           (unsigned long)ds.shm_nattch, ds.shm_perm.mode & 0777, ds.shm_cpid == getpid());
    strcpy(a, "parent");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        CHECK(shmctl(id, IPC_STAT, &ds) == 0);
        printf("in the child: nattch %lu\n", (unsigned long)ds.shm_nattch);
        char *b = shmat(id, NULL, SHM_RDONLY);
        CHECK(b != (void *)-1 && b != a);
        printf("the child reads %s through a second attachment\n", b);
        strcpy(a + page, "child");
        CHECK(shmdt(b) == 0);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("the parent reads %s\n", a + page);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    printf("after the child: nattch %lu, last by the child %d\n", (unsigned long)ds.shm_nattch, ds.shm_lpid == pid);
    char *spot = mmap(NULL, 8 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(spot != MAP_FAILED && munmap(spot, 8 * page) == 0);
    CHECK(shmat(id, spot + 5, 0) == (void *)-1 && errno == EINVAL);
    char *c = shmat(id, spot + 5, SHM_RND);
    printf("SHM_RND attaches at the page below: %d, and sees %s\n", c == spot, c);
    CHECK(shmdt(c) == 0);
    CHECK(shmdt(c) == -1 && errno == EINVAL);
    ds.shm_perm.mode = 0640;
    CHECK(shmctl(id, IPC_SET, &ds) == 0 && shmctl(id, IPC_STAT, &ds) == 0);
    printf("mode now %o\n", ds.shm_perm.mode & 0777);
    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    CHECK(shmget(key, 10, 0600) == -1 && errno == ENOENT);
    strcpy(a + 2 * page, "still there after IPC_RMID");
    printf("%s\n", a + 2 * page);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    printf("marked for removal: %d, nattch %lu\n", (ds.shm_perm.mode & 01000) != 0, (unsigned long)ds.shm_nattch);
    CHECK(shmdt(a) == 0);
    CHECK(shmctl(id, IPC_STAT, &ds) == -1 && errno == EINVAL);
    printf("gone with its last attachment\n");
    int other = shmget(IPC_PRIVATE, page, 0600);
    CHECK(other >= 0 && shmctl(other, IPC_RMID, NULL) == 0);
}

/* System V semaphores: errors, values, a wait across fork, counts, SEM_UNDO at exit, timeouts,
 * signals and removal while waiting. */
#ifndef SEM_STAT_ANY
#define SEM_STAT_ANY 20
#endif
union semun_ { int val; struct semid_ds *buf; unsigned short *array; };
static void on_nothing(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; }

static int sem_do(int id, unsigned short num, short op, short flags) {
    struct sembuf b = { num, op, flags };
    return semop(id, &b, 1);
}

/* Waits (up to 2 s) until `cmd` (GETNCNT or GETZCNT) of semaphore `num` is `want`. */
static int sem_count_reaches(int id, int num, int cmd, int want) {
    for (int i = 0; i < 200; i++) {
        if (semctl(id, num, cmd) == want) return 1;
        sleep_ms(10);
    }
    return 0;
}

static void case_sysvsem(void) {
    key_t key = 0x4d000000 | (getpid() & 0x7fffff);
    int id = semget(key, 3, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(id >= 0);
    CHECK(semget(key, 3, IPC_CREAT | IPC_EXCL | 0600) == -1 && errno == EEXIST);
    CHECK(semget(key, 2, 0600) == id);
    CHECK(semget(key, 4, 0600) == -1 && errno == EINVAL);
    CHECK(semget(key | 0x00800000, 1, 0600) == -1 && errno == ENOENT);
    CHECK(semget(IPC_PRIVATE, 0, 0600) == -1 && errno == EINVAL);
    struct semid_ds ds;
    union semun_ arg = { .buf = &ds };
    CHECK(semctl(id, 0, IPC_STAT, arg) == 0);
    printf("nsems %lu, mode %o, never operated on: %d\n", (unsigned long)ds.sem_nsems, ds.sem_perm.mode & 0777, ds.sem_otime == 0);
    unsigned short vals[3] = { 1, 0, 5 };
    arg.array = vals;
    CHECK(semctl(id, 0, SETALL, arg) == 0);
    CHECK(semctl(id, 1, SETVAL, (union semun_){ .val = 32768 }) == -1 && errno == ERANGE);
    CHECK(semctl(id, 3, GETVAL) == -1 && errno == EINVAL);
    struct sembuf many[2] = { { 0, -1, 0 }, { 1, -1, IPC_NOWAIT } };
    CHECK(semop(id, many, 2) == -1 && errno == EAGAIN);
    printf("all or nothing: sem 0 still %d\n", semctl(id, 0, GETVAL));
    CHECK(sem_do(id, 3, 1, 0) == -1 && errno == EFBIG);
    CHECK(sem_do(id, 2, 32767, 0) == -1 && errno == ERANGE);
    CHECK(semop(id, many, 0) == -1 && errno == EINVAL);
    struct timespec short_wait = { 0, 50000000 };
    struct sembuf down1 = { 1, -1, 0 };
    CHECK(semtimedop(id, &down1, 1, &short_wait) == -1 && errno == EAGAIN);
    printf("semtimedop times out with EAGAIN\n");

    /* A child waits for semaphore 1, counted in GETNCNT, until the parent raises it. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        CHECK(sem_do(id, 1, -1, 0) == 0);
        CHECK(sem_do(id, 2, -2, SEM_UNDO) == 0);
        _exit(0);
    }
    CHECK(sem_count_reaches(id, 1, GETNCNT, 1));
    printf("a waiting child counts in GETNCNT: %d\n", semctl(id, 1, GETNCNT));
    CHECK(sem_do(id, 1, 1, 0) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("after the child: sem 1 = %d, sem 2 = %d (its SEM_UNDO undone), last by the child %d\n",
           semctl(id, 1, GETVAL), semctl(id, 2, GETVAL), semctl(id, 2, GETPID) == pid);
    CHECK(semctl(id, 1, GETNCNT) == 0);

    /* Waiting for zero, then a signal with a handler: EINTR, not restarted. */
    on(SIGUSR1, on_nothing, SA_RESTART);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int r = sem_do(id, 0, 0, 0);
        printf("a wait for zero interrupted by a handler: %d %s\n", r, r ? strerror(errno) : "");
        _exit(0);
    }
    CHECK(sem_count_reaches(id, 0, GETZCNT, 1));
    printf("GETZCNT %d\n", semctl(id, 0, GETZCNT));
    CHECK(kill(pid, SIGUSR1) == 0);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));

    /* Removal wakes a waiter with EIDRM. */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int r = sem_do(id, 1, -5, 0);
        printf("a waiter when the set goes: %d %s\n", r, strerror(errno));
        _exit(0);
    }
    CHECK(sem_count_reaches(id, 1, GETNCNT, 1));
    ds.sem_perm.mode = 0640;
    arg.buf = &ds;
    CHECK(semctl(id, 0, IPC_SET, arg) == 0 && semctl(id, 0, IPC_STAT, arg) == 0);
    printf("mode now %o, operated on: %d\n", ds.sem_perm.mode & 0777, ds.sem_otime != 0);
    CHECK(semctl(id, 0, IPC_RMID) == 0);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    CHECK(semctl(id, 0, GETVAL) == -1 && errno == EINVAL);
    CHECK(semget(key, 1, 0600) == -1 && errno == ENOENT);
    printf("gone\n");
}

/* System V message queues: types, sizes, copies, a blocked receiver and sender across fork,
 * the queue's figures, removal while waiting. */
#ifndef MSG_COPY
#define MSG_COPY 040000
#endif
#ifndef MSG_EXCEPT
#define MSG_EXCEPT 020000
#endif
struct msg_ { long type; char text[64]; };

static void msg_put(int id, long type, const char *text) {
    struct msg_ m = { .type = type };
    strcpy(m.text, text);
    CHECK(msgsnd(id, &m, strlen(text) + 1, 0) == 0);
}

static void msg_take(const char *what, int id, size_t size, long type, int flags) {
    struct msg_ m;
    memset(&m, 0, sizeof m);
    ssize_t n = msgrcv(id, &m, size, type, flags);
    if (n < 0) printf("%s: %s\n", what, strerror(errno));
    else printf("%s: type %ld, %zd bytes, '%.*s'\n", what, m.type, n, (int)n, m.text);
}

static void show_queue(const char *what, int id) {
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
#ifdef __GLIBC__
    unsigned long bytes = ds.__msg_cbytes;
#else
    unsigned long bytes = ds.msg_cbytes;
#endif
    printf("%s: %lu messages, %lu bytes, at most %lu\n", what, (unsigned long)ds.msg_qnum, bytes,
           (unsigned long)ds.msg_qbytes);
}

static void case_sysvmsg(void) {
    key_t key = 0x4e000000 | (getpid() & 0x7fffff);
    int id = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(id >= 0);
    CHECK(msgget(key, IPC_CREAT | IPC_EXCL | 0600) == -1 && errno == EEXIST);
    CHECK(msgget(key, 0) == id);
    struct msg_ m = { .type = 0 };
    CHECK(msgsnd(id, &m, 1, 0) == -1 && errno == EINVAL);
    m.type = 1;
    CHECK(msgsnd(id, &m, 8193, 0) == -1 && errno == EINVAL);
    msg_put(id, 3, "c1");
    msg_put(id, 1, "a");
    msg_put(id, 2, "b");
    msg_put(id, 1, "a2");
    msg_put(id, 3, "c2 longer");
    show_queue("five sent", id);
    msg_take("MSG_COPY of the second", id, 64, 1, MSG_COPY | IPC_NOWAIT);
    msg_take("MSG_COPY without IPC_NOWAIT", id, 64, 1, MSG_COPY);
    msg_take("lowest type up to 2", id, 64, -2, 0);
    msg_take("type 3", id, 64, 3, 0);
    msg_take("not type 2", id, 64, 2, MSG_EXCEPT);
    msg_take("type 9, no wait", id, 64, 9, IPC_NOWAIT);
    msg_take("too long", id, 2, 3, IPC_NOWAIT);
    msg_take("truncated", id, 2, 3, MSG_NOERROR | IPC_NOWAIT);
    msg_take("first", id, 64, 0, 0);
    show_queue("all taken", id);

    /* A receiver waits for type 7; a sender waits for room. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        msg_take("the child's wait for type 7", id, 64, 7, 0);
        _exit(0);
    }
    sleep_ms(100);
    msg_put(id, 6, "not for the child");
    msg_put(id, 7, "for the child");
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    printf("last receiver the child: %d, last sender me: %d\n", ds.msg_lrpid == pid, ds.msg_lspid == getpid());
    ds.msg_qbytes = 40;
    CHECK(msgctl(id, IPC_SET, &ds) == 0);
    show_queue("smaller", id);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        msg_put(id, 8, "a long message of thirty bytes");
        _exit(0);
    }
    sleep_ms(100);
    show_queue("while the child waits for room", id);
    msg_take("making room", id, 64, 6, 0);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    printf("the child's send went through: %d\n", WEXITSTATUS(status) == 0);
    show_queue("after the child", id);

    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        msg_take("a waiter when the queue goes", id, 64, 99, 0);
        _exit(0);
    }
    sleep_ms(100);
    CHECK(msgctl(id, IPC_RMID, NULL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    CHECK(msgget(key, 0) == -1 && errno == ENOENT);
    printf("gone\n");
}

/* POSIX message queues: sizes and errors, priority order, timeouts, O_NONBLOCK, poll, a
 * receiver blocked across fork, a notification by signal, unlink while open. */
static void mq_show(const char *what, mqd_t q) {
    struct mq_attr at;
    CHECK(mq_getattr(q, &at) == 0);
    printf("%s: maxmsg %ld, msgsize %ld, curmsgs %ld, nonblocking %d\n", what, at.mq_maxmsg, at.mq_msgsize,
           at.mq_curmsgs, (at.mq_flags & O_NONBLOCK) != 0);
}

static void mq_take(const char *what, mqd_t q, size_t len) {
    char buf[128];
    unsigned prio = 99;
    ssize_t n = mq_receive(q, buf, len, &prio);
    if (n < 0) printf("%s: %s\n", what, strerror(errno));
    else printf("%s: '%.*s' at %u\n", what, (int)n, buf, prio);
}

static void case_mqueue(void) {
    char name[64];
    snprintf(name, sizeof name, "/lego-abi-%d", getpid());
    struct mq_attr at = { .mq_maxmsg = 4, .mq_msgsize = 64 };
    mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &at);
    CHECK(q != (mqd_t)-1);
    CHECK(mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &at) == (mqd_t)-1 && errno == EEXIST);
    CHECK(mq_open("/lego-abi/x", O_RDWR | O_CREAT, 0600, &at) == (mqd_t)-1 && errno == EACCES);
    printf("close-on-exec: %d\n", (fcntl(q, F_GETFD) & FD_CLOEXEC) != 0);
    mq_show("new", q);
    struct pollfd pf = { .fd = q, .events = POLLIN | POLLOUT };
    CHECK(poll(&pf, 1, 0) == 1);
    printf("empty: readable %d, writable %d\n", (pf.revents & POLLIN) != 0, (pf.revents & POLLOUT) != 0);
    CHECK(mq_send(q, "low", 3, 1) == 0 && mq_send(q, "high", 4, 5) == 0);
    CHECK(mq_send(q, "high2", 5, 5) == 0 && mq_send(q, "zero", 4, 0) == 0);
    CHECK(mq_send(q, "x", 1, 32768) == -1 && errno == EINVAL);
    char big[65] = { 0 };
    CHECK(mq_send(q, big, 65, 0) == -1 && errno == EMSGSIZE);
    CHECK(poll(&pf, 1, 0) == 1);
    printf("full: readable %d, writable %d\n", (pf.revents & POLLIN) != 0, (pf.revents & POLLOUT) != 0);
    struct timespec past = { 1, 0 };
    CHECK(mq_timedsend(q, "late", 4, 0, &past) == -1 && errno == ETIMEDOUT);
    struct mq_attr nb = { .mq_flags = O_NONBLOCK };
    CHECK(mq_setattr(q, &nb, NULL) == 0);
    CHECK(mq_send(q, "more", 4, 0) == -1 && errno == EAGAIN);
    mq_show("full, nonblocking", q);
    char text[32] = { 0 };
    CHECK(read(q, text, 16) == 16);
    printf("its file: %.16s\n", text);
    mq_take("too small a buffer", q, 63);
    for (int i = 0; i < 4; i++) mq_take("in order", q, 64);
    mq_take("empty, nonblocking", q, 64);
    nb.mq_flags = 0;
    CHECK(mq_setattr(q, &nb, NULL) == 0);
    struct timespec soon;
    clock_gettime(CLOCK_REALTIME, &soon);
    soon.tv_nsec += 50000000;
    if (soon.tv_nsec >= 1000000000) { soon.tv_sec++; soon.tv_nsec -= 1000000000; }
    char buf[64];
    CHECK(mq_timedreceive(q, buf, 64, NULL, &soon) == -1 && errno == ETIMEDOUT);
    printf("an empty queue's timed receive times out\n");

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        mq_take("the child's wait", q, 64);
        _exit(0);
    }
    sleep_ms(100);
    CHECK(mq_send(q, "for the child", 13, 3) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));

    /* A notification: once, by signal, with its value. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    CHECK(sigprocmask(SIG_BLOCK, &usr2, NULL) == 0);
    struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
    ev.sigev_value.sival_int = 42;
    CHECK(mq_notify(q, &ev) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int r = mq_notify(q, &ev);
        printf("another process registering: %d %s\n", r, r ? strerror(errno) : "");
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(mq_send(q, "ping", 4, 0) == 0);
    siginfo_t si;
    struct timespec wait_for = { 1, 0 };
    CHECK(sigtimedwait(&usr2, &si, &wait_for) == SIGUSR2);
    printf("notified: SI_MESGQ %d, value %d, by me %d\n", si.si_code == SI_MESGQ, si.si_value.sival_int, si.si_pid == getpid());
    mq_take("the message", q, 64);
    CHECK(mq_send(q, "again", 5, 0) == 0);
    wait_for.tv_sec = 0;
    wait_for.tv_nsec = 50000000;
    CHECK(sigtimedwait(&usr2, &si, &wait_for) == -1 && errno == EAGAIN);
    printf("only once\n");
    CHECK(mq_unlink(name) == 0);
    CHECK(mq_unlink(name) == -1 && errno == ENOENT);
    CHECK(mq_open(name, O_RDWR) == (mqd_t)-1 && errno == ENOENT);
    mq_take("after unlink, through the descriptor", q, 64);
    CHECK(mq_close(q) == 0);
}

/* ------------------------------------------------------------------------------------------ */

#define SRCFILE "abi-src.tmp"
#define DSTFILE "abi-dst.tmp"

static void show_fd(const char *what, int fd, off_t at, size_t len) {
    char buf[128] = {0};
    ssize_t n = pread(fd, buf, len, at);
    printf("%s: %zd [%.*s]\n", what, n, (int)(n > 0 ? n : 0), buf);
}

static void case_files(const char *self) {
    /* memfd_create. */
    int m = memfd_create("abi", MFD_CLOEXEC);
    CHECK(m >= 0);
    CHECK(write(m, "memory file", 11) == 11);
    struct stat st;
    CHECK(fstat(m, &st) == 0);
    printf("memfd: size %ld regular %d cloexec %d\n", (long)st.st_size, S_ISREG(st.st_mode), fcntl(m, F_GETFD) & FD_CLOEXEC);
    CHECK(ftruncate(m, 6) == 0);
    show_fd("memfd after ftruncate", m, 0, 32);
    char *mm = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, m, 0);
    CHECK(mm != MAP_FAILED);
    printf("memfd mapped: %.6s\n", mm);
    munmap(mm, 4096);
    CHECK(memfd_create("x", 0x100) == -1 && errno == EINVAL);

    /* sendfile from a file to a file and to a pipe, with and without an offset. */
    int src = open(SRCFILE, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(src >= 0);
    CHECK(write(src, "0123456789abcdefghij", 20) == 20);
    int dst = open(DSTFILE, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(dst >= 0);
    /* Advice and write-out hints on a file, a pipe and a closed descriptor. */
    int ap[2];
    CHECK(pipe(ap) == 0);
    printf("posix_fadvise: file %d, pipe %s, bad advice %s, closed %s\n", posix_fadvise(src, 0, 0, POSIX_FADV_SEQUENTIAL),
           posix_fadvise(ap[0], 0, 0, POSIX_FADV_WILLNEED) == ESPIPE ? "ESPIPE" : "?",
           posix_fadvise(src, 0, 0, 99) == EINVAL ? "EINVAL" : "?", posix_fadvise(ap[1] + 100, 0, 0, 0) == EBADF ? "EBADF" : "?");
    printf("readahead: file %zd, pipe %s\n", readahead(src, 0, 4096), readahead(ap[0], 0, 10) == -1 && errno == EINVAL ? "EINVAL" : "?");
    printf("sync_file_range: file %d, pipe %s, bad flags %s\n",
           sync_file_range(src, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER),
           sync_file_range(ap[0], 0, 0, SYNC_FILE_RANGE_WRITE) == -1 && errno == ESPIPE ? "ESPIPE" : "?",
           sync_file_range(src, 0, 0, 8) == -1 && errno == EINVAL ? "EINVAL" : "?");
    close(ap[0]);
    close(ap[1]);
    off_t off = 5;
    ssize_t n;
    n = sendfile(dst, src, &off, 8);
    printf("sendfile with offset: %zd, offset now %ld, src offset %ld\n", n, (long)off, (long)lseek(src, 0, SEEK_CUR));
    lseek(src, 2, SEEK_SET);
    n = sendfile(dst, src, NULL, 4);
    printf("sendfile from the offset: %zd, src offset now %ld\n", n, (long)lseek(src, 0, SEEK_CUR));
    show_fd("dst", dst, 0, 32);
    int pp[2];
    CHECK(pipe(pp) == 0);
    off = 10;
    printf("sendfile to a pipe: %zd\n", sendfile(pp[1], src, &off, 100));
    char buf[64] = {0};
    n = read(pp[0], buf, sizeof buf);
    printf("pipe got %zd [%.*s]\n", n, (int)n, buf);
    CHECK(sendfile(dst, pp[0], NULL, 4) == -1 && errno == EINVAL);

    /* copy_file_range. */
    off_t in = 0, out = 20;
    n = copy_file_range(src, &in, dst, &out, 10, 0);
    printf("copy_file_range: %zd, in %ld out %ld\n", n, (long)in, (long)out);
    show_fd("dst after copy_file_range", dst, 0, 64);
    in = 0, out = 5;
    CHECK(copy_file_range(src, &in, src, &out, 10, 0) == -1 && errno == EINVAL);
    CHECK(copy_file_range(src, &in, dst, &out, 10, 1) == -1 && errno == EINVAL);

    /* fallocate. */
    CHECK(fallocate(dst, 0, 0, 100) == 0);
    CHECK(fstat(dst, &st) == 0);
    printf("fallocate grows to %ld\n", (long)st.st_size);
    CHECK(fallocate(dst, FALLOC_FL_KEEP_SIZE, 0, 200) == 0);
    CHECK(fstat(dst, &st) == 0);
    printf("KEEP_SIZE keeps %ld\n", (long)st.st_size);
    CHECK(fallocate(dst, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2, 3) == 0);
    n = pread(dst, buf, 8, 0);
    printf("punched:");
    for (int i = 0; i < n; i++) printf(" %02x", (unsigned char)buf[i]);
    printf("\n");
    CHECK(fallocate(dst, 0, -1, 10) == -1 && errno == EINVAL);
    CHECK(fallocate(pp[1], 0, 0, 10) == -1 && errno == ESPIPE);

    /* preadv2/pwritev2, preadv/pwritev. */
    char a1[4], a2[6];
    struct iovec iov[2] = {{a1, 4}, {a2, 6}};
    lseek(src, 3, SEEK_SET);
    long r2 = preadv2_(src, iov, 2, -1, 0);
    printf("preadv2 at -1: %ld [%.4s|%.6s] offset now %ld\n", r2, a1, a2, (long)lseek(src, 0, SEEK_CUR));
    n = preadv(src, iov, 2, 10);
    printf("preadv at 10: %zd [%.4s|%.6s] offset stays %ld\n", n, a1, a2, (long)lseek(src, 0, SEEK_CUR));
    struct iovec w[2] = {{"AB", 2}, {"CD", 2}};
    printf("pwritev2 RWF_APPEND: %ld\n", pwritev2_(src, w, 2, 0, RWF_APPEND));
    printf("pwritev at 0: %zd\n", pwritev(src, w, 1, 0));
    show_fd("src", src, 0, 64);
    CHECK(preadv2_(src, iov, 2, 0, 0x1000) == -1 && errno == EOPNOTSUPP);

    /* close_range. */
    int fds[4];
    for (int i = 0; i < 4; i++) fds[i] = dup(src);
    CHECK(close_range_(fds[2], fds[3], CLOSE_RANGE_CLOEXEC) == 0);
    printf("close_range CLOEXEC: %d %d\n", fcntl(fds[2], F_GETFD), fcntl(fds[3], F_GETFD));
    CHECK(close_range_(fds[0], ~0U, 0) == 0);
    printf("closed: %d %d\n", fcntl(fds[0], F_GETFD) == -1 && errno == EBADF, fcntl(fds[3], F_GETFD) == -1);
    CHECK(close_range_(5, 4, 0) == -1 && errno == EINVAL);
    CHECK(fcntl(src, F_GETFD) >= 0);

    /* mknod: a regular file; a device is refused. */
    unlink("abi-node.tmp");
    CHECK(mknod("abi-node.tmp", S_IFREG | 0600, 0) == 0);
    CHECK(stat("abi-node.tmp", &st) == 0);
    printf("mknod S_IFREG: regular %d mode %o\n", S_ISREG(st.st_mode), st.st_mode & 0777);
    CHECK(mknod("abi-node.tmp", S_IFREG | 0600, 0) == -1 && errno == EEXIST);
    unlink("abi-node.tmp");

    /* pidfd_open: readable once the child ended. */
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(30);
        _exit(3);
    }
    int pfd = syscall(SYS_pidfd_open, pid, 0);
    CHECK(pfd >= 0);
    struct pollfd pl = {pfd, POLLIN, 0};
    int before = poll(&pl, 1, 0);
    int after = poll(&pl, 1, 5000);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    printf("pidfd: ready before %d, after %d, exit %d\n", before, after, WEXITSTATUS(status));
    CHECK(read(pfd, buf, 8) == -1 && errno == EINVAL);
    close(pfd);
    CHECK(syscall(SYS_pidfd_open, -1, 0) == -1 && errno == EINVAL);

    close(src);
    close(dst);
    unlink(SRCFILE);
    unlink(DSTFILE);

    /* execveat of this program through a descriptor (AT_EMPTY_PATH). */
    const char *base = strrchr(self, '/') ? strrchr(self, '/') + 1 : self;
    /* The program as it was started, or (a host path a vNode does not have) by its name. */
    int exe = open(self, O_RDONLY | O_CLOEXEC);
    if (exe < 0) exe = open(base, O_RDONLY | O_CLOEXEC);
    CHECK(exe >= 0);
    char *args[] = {(char *)base, "execed", NULL};
    char *env[] = {NULL};
    fflush(stdout);
    syscall(SYS_execveat, exe, "", args, env, AT_EMPTY_PATH);
    printf("FAILED: execveat returned (errno %s)\n", strerror(errno));
    exit(1);
}

/* A FIFO: its type, Linux's open rules, and bytes from a child that opens it later. */
static void case_fifo(void) {
    unlink("abi-fifo.tmp");
    CHECK(mkfifo("abi-fifo.tmp", 0640) == 0);
    struct stat st;
    CHECK(stat("abi-fifo.tmp", &st) == 0);
    printf("mkfifo: fifo %d mode %o, again: %s\n", S_ISFIFO(st.st_mode), st.st_mode & 0777,
           mkfifo("abi-fifo.tmp", 0640) == -1 && errno == EEXIST ? "EEXIST" : "?");
    printf("fifo write-only, non-blocking, no reader: %s\n",
           open("abi-fifo.tmp", O_WRONLY | O_NONBLOCK) == -1 && errno == ENXIO ? "ENXIO" : "?");
    int fr = open("abi-fifo.tmp", O_RDONLY | O_NONBLOCK);
    CHECK(fr >= 0);
    char fb[64];
    printf("fifo non-blocking read, no writer: %zd\n", read(fr, fb, sizeof fb));
    close(fr);
    pid_t writer = fork();
    if (writer == 0) {
        sleep_ms(50); /* the parent's open waits for this writer */
        int w = open("abi-fifo.tmp", O_WRONLY);
        if (w < 0 || write(w, "through the fifo", 16) != 16) _exit(1);
        sleep_ms(20);
        if (write(w, ", twice", 7) != 7) _exit(1);
        _exit(0);
    }
    fr = open("abi-fifo.tmp", O_RDONLY);
    CHECK(fr >= 0);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fr, fb + got, sizeof fb - 1 - got)) > 0) got += r;
    fb[got] = 0;
    int wst;
    CHECK(waitpid(writer, &wst, 0) == writer);
    printf("fifo read: '%s', then EOF %zd, child %d\n", fb, r, WEXITSTATUS(wst));
    close(fr);
    CHECK(unlink("abi-fifo.tmp") == 0);
}

/* The errno name of the last failure, or "ok". */
static const char *res(int r) {
    if (r == 0) return "ok";
    switch (errno) {
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case EBADF: return "EBADF";
    case ELOOP: return "ELOOP";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EXDEV: return "EXDEV";
    default: return strerror(errno);
    }
}

/* Mode, owner, link count, size, type and whole-second times of `path`. */
static void show_stat(const char *what, const char *path, int follow) {
    struct stat st;
    int r = follow ? stat(path, &st) : lstat(path, &st);
    if (r != 0) {
        printf("%s: %s\n", what, res(r));
        return;
    }
    const char *kind = S_ISLNK(st.st_mode) ? "symlink" : S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other";
    printf("%s: %s", what, kind);
    if (!S_ISLNK(st.st_mode)) printf(" mode %o", st.st_mode & 07777);
    printf(" nlink %ld size %ld uid %d gid %d\n", (long)st.st_nlink, (long)st.st_size, (int)st.st_uid, (int)st.st_gid);
}

static void show_times(const char *what, const char *path) {
    struct stat st;
    CHECK(lstat(path, &st) == 0);
    printf("%s: atime %ld.%09ld mtime %ld.%09ld\n", what, (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* Whether both times of `path` are within a minute of now (UTIME_NOW and NULL times). */
static void show_recent(const char *what, const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    time_t now = time(NULL);
    printf("%s: atime recent %d mtime recent %d\n", what, labs(now - st.st_atim.tv_sec) < 60, labs(now - st.st_mtim.tv_sec) < 60);
}

static void case_links(void) {
    const char *f = "abi-ln-file.tmp", *s = "abi-ln-sym.tmp", *h = "abi-ln-hard.tmp", *d = "abi-ln-dir.tmp";
    unlink(f), unlink(s), unlink(h), unlink("abi-ln-sym2.tmp"), unlink("abi-ln-hard2.tmp"), unlink("abi-ln-dangling.tmp");
    unlink("abi-ln-dir.tmp/inner"), rmdir(d);
    umask(022);

    /* creat and truncate. */
    int fd = creat(f, 0640);
    CHECK(fd >= 0);
    CHECK(write(fd, "0123456789", 10) == 10);
    show_stat("creat", f, 1);
    printf("creat is write-only: read %s\n", read(fd, (char[4]){0}, 4) == -1 && errno == EBADF ? "EBADF" : "?");
    close(fd);
    printf("truncate to 4: %s\n", res(truncate(f, 4)));
    show_stat("truncated", f, 1);
    printf("truncate to 4096: %s\n", res(truncate(f, 4096)));
    show_stat("grown", f, 1);
    CHECK(truncate(f, 10) == 0);
    printf("truncate -1: %s\n", res(truncate(f, -1)));
    printf("truncate missing: %s\n", res(truncate("abi-ln-missing.tmp", 0)));
    CHECK(mkdir(d, 0755) == 0);
    printf("truncate a directory: %s\n", res(truncate(d, 0)));

    /* Symbolic links. */
    printf("symlink: %s\n", res(symlink(f, s)));
    printf("symlink again: %s\n", res(symlink(f, s)));
    printf("symlink empty target: %s\n", res(symlink("", "abi-ln-empty.tmp")));
    printf("symlink over a directory: %s\n", res(symlink(f, d)));
    printf("symlink in a missing directory: %s\n", res(symlink(f, "abi-ln-missing.tmp/x")));
    printf("symlink named ..: %s\n", res(symlink(f, "..")));
    int dfd = open(d, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    printf("symlinkat into a directory fd: %s\n", res(symlinkat("../abi-ln-file.tmp", dfd, "inner")));
    char buf[256];
    ssize_t n = readlink(s, buf, sizeof buf);
    printf("readlink: %zd [%.*s]\n", n, (int)(n > 0 ? n : 0), buf);
    n = readlinkat(dfd, "inner", buf, 5);
    printf("readlinkat truncated: %zd [%.*s]\n", n, (int)(n > 0 ? n : 0), buf);
    printf("readlink of a file: %s\n", res(readlink(f, buf, sizeof buf) < 0 ? -1 : 0));
    show_stat("lstat symlink", s, 0);
    show_stat("stat through symlink", s, 1);
    show_stat("stat through relative symlink in a directory", "abi-ln-dir.tmp/inner", 1);
    CHECK(symlink("abi-ln-nowhere.tmp", "abi-ln-dangling.tmp") == 0);
    printf("stat dangling: %s\n", res(stat("abi-ln-dangling.tmp", &(struct stat){0})));
    printf("open dangling O_CREAT|O_EXCL: %s\n", res(open("abi-ln-dangling.tmp", O_CREAT | O_EXCL | O_WRONLY, 0600) < 0 ? -1 : 0));
    printf("open symlink O_NOFOLLOW: %s\n", res(open(s, O_RDONLY | O_NOFOLLOW) < 0 ? -1 : 0));
    fd = open(s, O_RDONLY);
    CHECK(fd >= 0);
    n = read(fd, buf, sizeof buf);
    printf("read through symlink: %zd [%.*s]\n", n, (int)n, buf);
    close(fd);

    /* Hard links. */
    printf("link: %s\n", res(link(f, h)));
    show_stat("after link", f, 1);
    printf("link again: %s\n", res(link(f, h)));
    printf("link a directory: %s\n", res(link(d, "abi-ln-hard2.tmp")));
    printf("link a missing file: %s\n", res(link("abi-ln-missing.tmp", "abi-ln-hard2.tmp")));
    printf("link to ..: %s\n", res(link(f, "..")));
    printf("linkat of a symlink itself: %s\n", res(linkat(AT_FDCWD, s, AT_FDCWD, "abi-ln-sym2.tmp", 0)));
    show_stat("the symlink's link", "abi-ln-sym2.tmp", 0);
    CHECK(unlink("abi-ln-sym2.tmp") == 0);
    printf("linkat AT_SYMLINK_FOLLOW: %s\n", res(linkat(AT_FDCWD, s, dfd, "../abi-ln-hard2.tmp", AT_SYMLINK_FOLLOW)));
    show_stat("followed link", "abi-ln-hard2.tmp", 0);
    printf("linkat bad flags: %s\n", res(linkat(AT_FDCWD, f, AT_FDCWD, "abi-ln-x.tmp", 0x1)));
    fd = open(h, O_WRONLY);
    CHECK(fd >= 0 && write(fd, "HARD", 4) == 4);
    close(fd);
    fd = open(f, O_RDONLY);
    n = read(fd, buf, sizeof buf);
    printf("written through the other name: [%.*s]\n", (int)n, buf);
    close(fd);
    CHECK(unlink("abi-ln-hard2.tmp") == 0);
    CHECK(unlink(h) == 0);
    show_stat("after unlink of a link", f, 1);

    /* Modes. */
    printf("chmod 0604: %s\n", res(chmod(f, 0604)));
    show_stat("chmod", f, 1);
    printf("chmod through symlink 04711: %s\n", res(chmod(s, 014711)));
    show_stat("chmod through symlink", f, 1);
    show_stat("the symlink itself", s, 0);
    fd = open(f, O_RDONLY);
    printf("fchmod 0600: %s\n", res(fchmod(fd, 0600)));
    show_stat("fchmod", f, 1);
    printf("fchmodat 0644: %s\n", res(fchmodat(dfd, "../abi-ln-file.tmp", 0644, 0)));
    show_stat("fchmodat", f, 1);
    printf("chmod missing: %s\n", res(chmod("abi-ln-missing.tmp", 0644)));
    int pfd = open(f, O_PATH);
    printf("fchmod of an O_PATH fd: %s\n", res(fchmod(pfd, 0644)));
    printf("chmod a directory 0700: %s\n", res(chmod(d, 0700)));
    show_stat("directory", d, 1);
    printf("fchmodat2 AT_SYMLINK_NOFOLLOW of a symlink: %s\n", res(syscall(452, AT_FDCWD, s, 0600, AT_SYMLINK_NOFOLLOW)));
    printf("fchmodat2 AT_SYMLINK_NOFOLLOW of a file: %s\n", res(syscall(452, AT_FDCWD, f, 0640, AT_SYMLINK_NOFOLLOW)));
    printf("fchmodat2 AT_EMPTY_PATH of an O_PATH fd: %s\n", res(syscall(452, pfd, "", 0644, AT_EMPTY_PATH)));
    show_stat("fchmodat2", f, 1);
    printf("fchmodat2 bad flags: %s\n", res(syscall(452, AT_FDCWD, f, 0644, 0x2)));

    /* Owners. */
    printf("chown 1234:5678: %s\n", res(chown(f, 1234, 5678)));
    show_stat("chown", f, 1);
    printf("chown -1:42: %s\n", res(chown(f, -1, 42)));
    show_stat("chown group only", f, 1);
    printf("lchown 77:88: %s\n", res(lchown(s, 77, 88)));
    show_stat("lchown: the symlink", s, 0);
    show_stat("lchown: the file", f, 1);
    printf("fchown 0:0: %s\n", res(fchown(fd, 0, 0)));
    show_stat("fchown", f, 1);
    printf("fchownat AT_EMPTY_PATH of an O_PATH fd: %s\n", res(fchownat(pfd, "", 5, 6, AT_EMPTY_PATH)));
    show_stat("fchownat", f, 1);
    printf("fchownat AT_SYMLINK_NOFOLLOW: %s\n", res(fchownat(AT_FDCWD, s, 9, 9, AT_SYMLINK_NOFOLLOW)));
    show_stat("fchownat: the symlink", s, 0);
    printf("fchownat bad flags: %s\n", res(fchownat(AT_FDCWD, f, 0, 0, 0x2)));
    printf("fchown of an O_PATH fd: %s\n", res(fchown(pfd, 0, 0)));
    CHECK(chown(f, 0, 0) == 0 || errno == EPERM);

    /* Times. */
    struct timespec ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    printf("utimensat: %s\n", res(utimensat(AT_FDCWD, f, ts, 0)));
    show_times("utimensat", f);
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1] = (struct timespec){1200000000, 5};
    printf("utimensat UTIME_OMIT atime: %s\n", res(utimensat(dfd, "../abi-ln-file.tmp", ts, 0)));
    show_times("UTIME_OMIT", f);
    ts[0] = (struct timespec){1300000000, 0};
    ts[1].tv_nsec = UTIME_OMIT;
    printf("futimens UTIME_OMIT mtime: %s\n", res(futimens(fd, ts)));
    show_times("futimens", f);
    ts[0].tv_nsec = UTIME_OMIT;
    printf("both UTIME_OMIT on a missing file: %s\n", res(utimensat(AT_FDCWD, "abi-ln-missing.tmp", ts, 0)));
    ts[0] = (struct timespec){1, 1000000000};
    ts[1].tv_nsec = 0;
    printf("utimensat nsec too large: %s\n", res(utimensat(AT_FDCWD, f, ts, 0)));
    printf("utimensat bad flags: %s\n", res(utimensat(AT_FDCWD, f, NULL, 0x2)));
    ts[0] = (struct timespec){1400000000, 0};
    ts[1] = (struct timespec){1400000001, 0};
    printf("utimensat AT_SYMLINK_NOFOLLOW: %s\n", res(utimensat(AT_FDCWD, s, ts, AT_SYMLINK_NOFOLLOW)));
    show_times("the symlink", s);
    show_times("its file", f);
    struct timeval tv[2] = {{1500000000, 250000}, {1500000001, 500000}};
    printf("utimes: %s\n", res(utimes(f, tv)));
    show_times("utimes", f);
    tv[0].tv_usec = 1000000;
    printf("utimes usec too large: %s\n", res(utimes(f, tv)));
    tv[0] = (struct timeval){1600000000, 1};
    printf("futimesat: %s\n", res(syscall(SYS_futimesat, dfd, "../abi-ln-file.tmp", tv)));
    show_times("futimesat", f);
    struct utimbuf ub = {1700000000, 1700000002};
    printf("utime: %s\n", res(utime(f, &ub)));
    show_times("utime", f);
    printf("utime missing: %s\n", res(utime("abi-ln-missing.tmp", &ub)));
    printf("utime NULL: %s\n", res(utime(f, NULL)));
    show_recent("utime NULL", f);
    CHECK(utime(f, &ub) == 0);
    ts[0].tv_nsec = UTIME_NOW;
    ts[1].tv_nsec = UTIME_NOW;
    printf("utimensat UTIME_NOW: %s\n", res(utimensat(AT_FDCWD, f, ts, 0)));
    show_recent("UTIME_NOW", f);
    printf("touch a directory: %s\n", res(utimensat(AT_FDCWD, d, NULL, 0)));
    show_recent("directory", d);

    close(fd);
    close(pfd);
    close(dfd);
    CHECK(unlink("abi-ln-dir.tmp/inner") == 0);
    CHECK(rmdir(d) == 0);
    CHECK(unlink("abi-ln-dangling.tmp") == 0);
    CHECK(unlink(s) == 0);
    CHECK(unlink(f) == 0);
}

static void show_mtime(const char *what, const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    printf("%s: mode %o size %ld mtime %ld.%09ld\n", what, st.st_mode & 07777, (long)st.st_size, (long)st.st_mtim.tv_sec,
           st.st_mtim.tv_nsec);
}

static void show_mode(const char *what, const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    printf("%s: mode %o size %ld\n", what, st.st_mode & 07777, (long)st.st_size);
}

static void case_attrs(void) {
    const char *f = "abi-at-file.tmp", *d = "abi-at-dir.tmp";
    unlink(f), rmdir(d);
    umask(022);
    int fd = creat(f, 0640);
    CHECK(fd >= 0);
    CHECK(write(fd, "0123456789", 10) == 10);
    printf("creat is write-only: read %s\n", read(fd, (char[4]){0}, 4) == -1 && errno == EBADF ? "EBADF" : "?");
    close(fd);
    show_mode("creat", f);
    printf("creat of an existing file truncates: %s\n", res((fd = creat(f, 0600)) < 0 ? -1 : 0));
    CHECK(write(fd, "abcdef", 6) == 6);
    close(fd);
    show_mode("creat again", f);
    printf("truncate to 4: %s\n", res(truncate(f, 4)));
    show_mode("truncated", f);
    printf("truncate to 8192: %s\n", res(truncate(f, 8192)));
    printf("truncate -1: %s\n", res(truncate(f, -1)));
    printf("truncate missing: %s\n", res(truncate("abi-at-missing.tmp", 0)));
    CHECK(mkdir(d, 0755) == 0);
    printf("truncate a directory: %s\n", res(truncate(d, 0)));
    printf("creat a directory: %s\n", res(creat(d, 0644) < 0 ? -1 : 0));
    CHECK(truncate(f, 3) == 0);

    printf("chmod 0604: %s\n", res(chmod(f, 0604)));
    show_mode("chmod", f);
    printf("chmod 014711: %s\n", res(chmod(f, 014711)));
    show_mode("chmod with high bits", f);
    fd = open(f, O_RDWR);
    CHECK(fd >= 0);
    printf("fchmod 0600: %s\n", res(fchmod(fd, 0600)));
    show_mode("fchmod", f);
    int dfd = open(d, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    printf("fchmodat 0644: %s\n", res(fchmodat(dfd, "../abi-at-file.tmp", 0644, 0)));
    show_mode("fchmodat", f);
    printf("chmod missing: %s\n", res(chmod("abi-at-missing.tmp", 0644)));
    printf("chmod a directory 0700: %s\n", res(chmod(d, 0700)));
    struct stat st;
    CHECK(stat(d, &st) == 0);
    printf("directory mode %o\n", st.st_mode & 07777);

    struct timespec ts[2] = {{1000000000, 0}, {1100000000, 987654321}};
    printf("utimensat: %s\n", res(utimensat(AT_FDCWD, f, ts, 0)));
    show_mtime("utimensat", f);
    ts[1].tv_nsec = UTIME_OMIT;
    printf("utimensat UTIME_OMIT mtime: %s\n", res(utimensat(dfd, "../abi-at-file.tmp", ts, 0)));
    show_mtime("UTIME_OMIT", f);
    ts[1] = (struct timespec){1200000000, 5};
    printf("futimens: %s\n", res(futimens(fd, ts)));
    show_mtime("futimens", f);
    CHECK(write(fd, "x", 1) == 1);
    struct timeval tv[2] = {{1500000000, 250000}, {1500000001, 500000}};
    printf("utimes after a write: %s\n", res(utimes(f, tv)));
    close(fd); /* the write-back at close must not move the time */
    show_mtime("utimes, then close", f);
    tv[1] = (struct timeval){1600000000, 1};
    printf("futimesat: %s\n", res(syscall(SYS_futimesat, dfd, "../abi-at-file.tmp", tv)));
    show_mtime("futimesat", f);
    struct utimbuf ub = {1700000000, 1700000002};
    printf("utime: %s\n", res(utime(f, &ub)));
    show_mtime("utime", f);
    printf("utime missing: %s\n", res(utime("abi-at-missing.tmp", &ub)));
    ts[0].tv_nsec = UTIME_NOW;
    ts[1].tv_nsec = UTIME_NOW;
    printf("utimensat UTIME_NOW: %s\n", res(utimensat(AT_FDCWD, f, ts, 0)));
    show_recent("UTIME_NOW", f);
    printf("utimes NULL on a directory: %s\n", res(utimes(d, NULL)));
    show_recent("directory", d);
    close(dfd);
    CHECK(rmdir(d) == 0);
    CHECK(unlink(f) == 0);
}

/* ---- caps: capability sets, their rules, and what uid changes and execve do to them ---- */

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_LOWER 3
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define CAP_V3 0x20080522u
#define CAP_NET_BIND 10
#define CAP_NET_RAW_ 13

struct cap_header { uint32_t version; int pid; };
struct cap_data { uint32_t effective, permitted, inheritable; };

static int cap_get(uint64_t *eff, uint64_t *prm, uint64_t *inh) {
    struct cap_header h = {CAP_V3, 0};
    struct cap_data d[2];
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    *eff = d[0].effective | (uint64_t)d[1].effective << 32;
    *prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
    *inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
    return 0;
}

static int cap_set(uint64_t eff, uint64_t prm, uint64_t inh) {
    struct cap_header h = {CAP_V3, 0};
    struct cap_data d[2] = {{(uint32_t)eff, (uint32_t)prm, (uint32_t)inh}, {(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)}};
    return (int)syscall(SYS_capset, &h, d);
}

static const char *rc(long r) {
    static char buf[32];
    if (r >= 0) {
        snprintf(buf, sizeof buf, "%ld", r);
        return buf;
    }
    return errno == EPERM ? "EPERM" : errno == EINVAL ? "EINVAL" : errno == ESRCH ? "ESRCH" : "other error";
}

static void show_caps(const char *what) {
    uint64_t e, p, i;
    if (cap_get(&e, &p, &i) != 0) {
        printf("%s: capget %s\n", what, rc(-1));
        return;
    }
    uid_t r, ef, sv;
    getresuid(&r, &ef, &sv);
    printf("%s: uids %u/%u/%u eff %llx prm %llx inh %llx ambient(net_bind) %ld keepcaps %ld\n", what, r, ef, sv,
           (unsigned long long)e, (unsigned long long)p, (unsigned long long)i,
           (long)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND, 0, 0), (long)prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0));
}

static void show_status_caps(void) {
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10)) printf("status %s", line);
    fclose(f);
}

static void case_caps(const char *started) {
    /* The program as it was started, or (a host path a vNode does not have) by its name. */
    const char *base = strrchr(started, '/') ? strrchr(started, '/') + 1 : started;
    const char *self = access(started, F_OK) == 0 ? started : base;
    show_caps("start");
    struct cap_header h = {0, 0};
    const char *r = rc(syscall(SYS_capget, &h, NULL));
    printf("capget version 0, no data: %s, version %x\n", r, h.version);
    struct cap_data d[2];
    h.version = 0x12345678;
    r = rc(syscall(SYS_capget, &h, d));
    printf("capget bad version: %s, version %x\n", r, h.version);
    h = (struct cap_header){CAP_V3, 999999};
    printf("capget of no such pid: %s\n", rc(syscall(SYS_capget, &h, d)));
    h = (struct cap_header){0x19980330, 0};
    printf("capget version 1: %s\n", rc(syscall(SYS_capget, &h, d)));

    uint64_t e, p, i;
    CHECK(cap_get(&e, &p, &i) == 0);
    uint64_t raw = 1ull << CAP_NET_RAW_, bind = 1ull << CAP_NET_BIND;
    printf("drop net_raw: %s\n", rc(cap_set(e & ~raw, p & ~raw, i)));
    printf("take net_raw back: %s\n", rc(cap_set(e & ~raw, p, i)));
    printf("effective beyond permitted: %s\n", rc(cap_set(e, p & ~raw, i)));
    printf("inheritable net_bind: %s\n", rc(cap_set(e & ~raw, p & ~raw, i | bind)));
    printf("ambient raise net_bind: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND, 0, 0)));
    printf("ambient raise net_raw: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW_, 0, 0)));
    printf("ambient with a stray argument: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND, 1, 0)));
    printf("ambient of cap 99: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, 99, 0, 0)));
    show_caps("after capset");
    printf("bounding net_raw: %s\n", rc(prctl(PR_CAPBSET_READ, CAP_NET_RAW_, 0, 0, 0)));
    printf("bounding cap 99: %s\n", rc(prctl(PR_CAPBSET_READ, 99, 0, 0, 0)));
    printf("bounding drop net_raw: %s\n", rc(prctl(PR_CAPBSET_DROP, CAP_NET_RAW_, 0, 0, 0)));
    printf("bounding net_raw now: %s\n", rc(prctl(PR_CAPBSET_READ, CAP_NET_RAW_, 0, 0, 0)));
    printf("no_new_privs: %s", rc(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)));
    printf(", set 2: %s", rc(prctl(PR_SET_NO_NEW_PRIVS, 2, 0, 0, 0)));
    printf(", set 1: %s", rc(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)));
    printf(", now %s\n", rc(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)));

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Keep-caps: every uid leaves 0, the permitted set stays, effective and ambient go. */
        printf("keepcaps 2: %s, 1: %s\n", rc(prctl(PR_SET_KEEPCAPS, 2, 0, 0, 0)), rc(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)));
        printf("setresuid 1000: %s\n", rc(setresuid(1000, 1000, 1000)));
        show_caps("keepcaps, uid 1000");
        printf("setresuid back to 0 without CAP_SETUID: %s\n", rc(setresuid(0, 0, 0)));
        CHECK(cap_get(&e, &p, &i) == 0);
        printf("effective from permitted: %s\n", rc(cap_set(p, p, i)));
        printf("ambient raise net_bind as uid 1000: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND, 0, 0)));
        printf("setresuid 0 with CAP_SETUID: %s\n", rc(setresuid(0, 0, 0)));
        show_caps("root again");
        printf("setfsuid 1000: %d\n", setfsuid(1000));
        show_caps("fsuid 1000");
        printf("setfsuid 0: %d\n", setfsuid(0));
        show_caps("fsuid 0");
        printf("seteuid 1000: %s\n", rc(seteuid(1000)));
        show_caps("euid 1000");
        printf("seteuid 0: %s\n", rc(seteuid(0)));
        show_caps("euid 0");
        printf("securebits: %s", rc(prctl(PR_GET_SECUREBITS, 0, 0, 0, 0)));
        printf(", unknown bit: %s", rc(prctl(PR_SET_SECUREBITS, 1 << 20, 0, 0, 0)));
        printf(", keep-caps locked: %s", rc(prctl(PR_SET_SECUREBITS, 0x30, 0, 0, 0)));
        printf(", now %s", rc(prctl(PR_GET_SECUREBITS, 0, 0, 0, 0)));
        printf(", unlock: %s", rc(prctl(PR_SET_SECUREBITS, 0x10, 0, 0, 0)));
        printf(", keepcaps 0: %s\n", rc(prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)));
        /* A non-root program keeps its ambient set through execve, and only that. */
        printf("setresuid 1000 again: %s\n", rc(setresuid(1000, 1000, 1000)));
        CHECK(cap_get(&e, &p, &i) == 0);
        printf("ambient raise net_bind: %s\n", rc(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND, 0, 0)));
        show_caps("before execve");
        /* Search and read permission on the program's path, whoever owns its directories. */
        CHECK(cap_get(&e, &p, &i) == 0);
        printf("effective dac_override, dac_read_search: %s\n", rc(cap_set(6, p, i)));
        fflush(stdout);
        execl(self, self, "capsexec", (char *)NULL);
        printf("execve: %s\n", rc(-1));
        _exit(1);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Real uid 0, effective 1000: root's permitted set at execve, an empty effective one. */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        printf("setresuid 0/1000/1000: %s\n", rc(setresuid(0, 1000, 1000)));
        show_caps("real root");
        CHECK(cap_get(&e, &p, &i) == 0);
        printf("effective dac_override, dac_read_search: %s\n", rc(cap_set(6, p, i)));
        fflush(stdout);
        execl(self, self, "capsexec", (char *)NULL);
        _exit(1);
    }
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    show_status_caps();
}

static int jobs_pipe = -1;

static void *count_forever(void *arg) {
    volatile long *counter = arg;
    for (;;) __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* ---- jobs: stop and continue (job control) ---- */

static volatile sig_atomic_t chld_code, chld_status, chld_count;

static void on_chld(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_count++;
}

static const char *cld(int code) {
    switch (code) {
    case CLD_STOPPED: return "CLD_STOPPED";
    case CLD_CONTINUED: return "CLD_CONTINUED";
    case CLD_EXITED: return "CLD_EXITED";
    case CLD_KILLED: return "CLD_KILLED";
    default: return "other";
    }
}

static void show_wait(const char *what, pid_t child, int options) {
    int st = 0;
    pid_t r = waitpid(child, &st, options);
    if (r == 0) printf("%s: nothing to report\n", what);
    else if (r != child) printf("%s: waitpid %s\n", what, strerror(errno));
    else if (WIFSTOPPED(st)) printf("%s: stopped by %d\n", what, WSTOPSIG(st));
    else if (WIFCONTINUED(st)) printf("%s: continued\n", what);
    else if (WIFSIGNALED(st)) printf("%s: killed by %d\n", what, WTERMSIG(st));
    else printf("%s: exited %d\n", what, WEXITSTATUS(st));
}

static char proc_state(pid_t pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *paren = strrchr(buf, ')');
    return paren && paren[1] ? paren[2] : '?';
}

static void settle(void) {
    struct timespec ts = {0, 150 * 1000000L};
    nanosleep(&ts, NULL);
}

static void usr1_writes(int sig) {
    (void)sig;
    static const char c = 'u';
    if (write(jobs_pipe, &c, 1) != 1) _exit(3);
}

static void case_jobs(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    CHECK(sigaction(SIGCHLD, &sa, NULL) == 0);
    volatile long *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(counter != MAP_FAILED);
    int fds[2];
    CHECK(pipe(fds) == 0);

    /* A child of two threads counting, with a SIGUSR1 handler that writes to a pipe. It gets
     * a process group of its own, as a shell gives a job: with its parent in another group of
     * the session, the group is not orphaned, wherever this program runs (SIGTSTP stops it). */
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        CHECK(setpgid(0, 0) == 0);
        close(fds[0]);
        jobs_pipe = fds[1];
        signal(SIGUSR1, usr1_writes);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, count_forever, (void *)counter) == 0);
        count_forever((void *)counter);
    }
    close(fds[1]);
    setpgid(child, child); /* as a shell does, so that it is so before the first signal */
    while (*counter < 1000) sched_yield();
    CHECK(kill(child, SIGSTOP) == 0);
    show_wait("after SIGSTOP, WUNTRACED", child, WUNTRACED);
    printf("SIGCHLD: %s, status %d, count %d\n", cld(chld_code), chld_status, chld_count);
    long a = *counter;
    settle();
    printf("counting while stopped: %s; state %c\n", *counter == a ? "no" : "yes", proc_state(child));
    CHECK(kill(child, SIGUSR1) == 0);
    struct pollfd pfd = {fds[0], POLLIN, 0};
    printf("handler ran while stopped: %s\n", poll(&pfd, 1, 150) == 1 ? "yes" : "no");
    show_wait("a stop reported once", child, WUNTRACED | WNOHANG);
    CHECK(kill(child, SIGCONT) == 0);
    char c = 0;
    printf("after SIGCONT, the handler wrote: %c\n", read(fds[0], &c, 1) == 1 ? c : '-');
    show_wait("WCONTINUED", child, WCONTINUED);
    while (chld_count < 2) sched_yield();
    printf("SIGCHLD: %s, status %d, count %d\n", cld(chld_code), chld_status, chld_count);
    a = *counter;
    settle();
    printf("counting again: %s; %s\n", *counter != a ? "yes" : "no", proc_state(child) == 'T' ? "stopped" : "not stopped");

    /* waitid: WNOWAIT leaves the report, a second wait takes it. */
    CHECK(kill(child, SIGTSTP) == 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, child, &si, WSTOPPED | WNOWAIT) == 0);
    printf("waitid WNOWAIT: %s, status %d\n", cld(si.si_code), si.si_status);
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, child, &si, WSTOPPED) == 0);
    printf("waitid: %s, status %d\n", cld(si.si_code), si.si_status);
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, child, &si, WSTOPPED | WNOHANG) == 0);
    printf("waitid again: pid %s\n", si.si_pid == 0 ? "0 (nothing)" : "set");

    /* A SIGTERM sent while stopped waits for SIGCONT. */
    CHECK(kill(child, SIGTERM) == 0);
    show_wait("SIGTERM while stopped", child, WNOHANG);
    CHECK(kill(child, SIGCONT) == 0);
    show_wait("after SIGCONT", child, 0);

    /* A child in a session of its own leads an orphaned group: SIGTSTP does not stop it,
     * SIGSTOP does. */
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        setsid();
        for (;;) pause();
    }
    settle();
    CHECK(kill(child, SIGTSTP) == 0);
    settle();
    show_wait("SIGTSTP to an orphaned group", child, WUNTRACED | WNOHANG);
    CHECK(kill(child, SIGSTOP) == 0);
    show_wait("SIGSTOP to it", child, WUNTRACED);
    CHECK(kill(child, SIGKILL) == 0);
    show_wait("then SIGKILL", child, 0);

    /* SA_NOCLDSTOP: no SIGCHLD for a stop, which wait4 still reports; SIGKILL ends a stopped child. */
    sa.sa_flags |= SA_NOCLDSTOP;
    CHECK(sigaction(SIGCHLD, &sa, NULL) == 0);
    chld_count = 0;
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        for (;;) pause();
    }
    CHECK(kill(child, SIGSTOP) == 0);
    show_wait("SA_NOCLDSTOP", child, WUNTRACED);
    settle();
    printf("SIGCHLD count with SA_NOCLDSTOP: %d\n", chld_count);
    CHECK(kill(child, SIGKILL) == 0);
    show_wait("SIGKILL while stopped", child, 0);
    printf("SIGCHLD: %s, status %d\n", cld(chld_code), chld_status);

    /* A sleep stopped and continued sleeps what is left of it (the stop counts as slept), and
     * one a handler interrupts tells what is left in its second argument. */
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        struct timespec t0, t1, req = { 0, 900000000 };
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = nanosleep(&req, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double slept = ts_secs(t1) - ts_secs(t0);
        printf("a sleep of 0.9 s, stopped for 0.5 s: returns %d, within 1.3 s: %d\n", r, slept < 1.3);
        on(SIGUSR1, on_nothing, 0);
        struct timespec rem = { -1, -1 };
        req.tv_sec = 2;
        req.tv_nsec = 0;
        pid_t me = getpid();
        if (fork() == 0) {
            sleep_ms(200);
            kill(me, SIGUSR1);
            _exit(0);
        }
        r = nanosleep(&req, &rem);
        printf("interrupted by a handler: %d %s, left between 1 s and 2 s: %d\n", r, strerror(errno), rem.tv_sec == 1);
        _exit(0);
    }
    sleep_ms(100);
    CHECK(kill(child, SIGSTOP) == 0);
    sleep_ms(500);
    CHECK(kill(child, SIGCONT) == 0);
    int st;
    CHECK(waitpid(child, &st, 0) == child);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: abi CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "sched")) case_sched();
    else if (!strcmp(c, "timers")) case_timers();
    else if (!strcmp(c, "rtsig")) case_rtsig();
    else if (!strcmp(c, "usage")) case_usage();
    else if (!strcmp(c, "locks")) case_locks();
    else if (!strcmp(c, "mapshared")) case_mapshared();
    else if (!strcmp(c, "protnone")) case_protnone();
    else if (!strcmp(c, "shared")) case_shared();
    else if (!strcmp(c, "posixshm")) case_posixshm();
    else if (!strcmp(c, "sysvshm")) case_sysvshm();
    else if (!strcmp(c, "sysvsem")) case_sysvsem();
    else if (!strcmp(c, "sysvmsg")) case_sysvmsg();
    else if (!strcmp(c, "mqueue")) case_mqueue();
    else if (!strcmp(c, "files")) case_files(argv[0]);
    else if (!strcmp(c, "fifo")) case_fifo();
    else if (!strcmp(c, "links")) case_links();
    else if (!strcmp(c, "attrs")) case_attrs();
    else if (!strcmp(c, "execed")) printf("running again through execveat\n");
    else if (!strcmp(c, "caps")) case_caps(argv[0]);
    else if (!strcmp(c, "jobs")) case_jobs();
    else if (!strcmp(c, "capsexec")) {
        show_caps("after execve");
        show_status_caps();
        return 0;
    }
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    printf("done\n");
    return 0;
}
