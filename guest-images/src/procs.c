/* Processes, one case per argument; output and exit status must match a native run.
 *
 *   procs status          fork + waitpid: exit(n), and deaths by SIGTERM, SIGKILL and SIGINT
 *   procs memory MIB      after a fork, parent and child each write MIB MiB; neither sees the
 *                         other's writes, and the child sees what the parent wrote before
 *   procs exec PATH TEXT  execve of PATH (this program) with argv and envp; ENOENT, EACCES,
 *                         and ENOEXEC for TEXT, an executable file that is not a program
 *   procs exec-threads PATH  execve of PATH from a thread, while other threads wait on a
 *                         condition variable, sleep, and spin
 *   procs echo ARGS...    prints its arguments and $PROCS_GREETING (what `exec` runs), and
 *                         what four threads it starts compute (after `exec-threads`, their
 *                         vCPUs may be ones the threads of the old image ran on)
 *   procs ppid            getppid in a child, process groups
 *   procs kill            kill of a child blocked in read and of one in nanosleep; WNOHANG
 *   procs pipe            a pipe across fork, EOF when the writer exits; dup2 onto stdout
 *   procs sigpipe         a child writing to a pipe without readers dies of SIGPIPE
 *   procs echild          waitpid without children: ECHILD; waitid; vfork
 *   procs sigchld         a SA_SIGINFO | SA_RESTART handler of SIGCHLD records si_code, si_pid
 *                         and si_status of a child that exits with 7 and of one killed by
 *                         SIGKILL; waitpid then reports the same child and status. A child
 *                         that exits while the parent waits for another: the handler runs
 *                         and the waitpid is restarted
 *
 * Only the parent prints (the children report through their exit status), except in `pipe`
 * and `exec`, so the output does not depend on scheduling.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Unbuffered output: a fork must not duplicate buffered text. */
static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (write(1, buf, (size_t)n) != n)
        _exit(2);
}

static void die(const char *what) {
    say("%s: %s\n", what, strerror(errno));
    exit(1);
}

/* The name of the errnos the cases expect (musl has no strerrorname_np). */
static const char *errname(int e) {
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOEXEC: return "ENOEXEC";
    case ECHILD: return "ECHILD";
    case EPIPE: return "EPIPE";
    default: return "another errno";
    }
}

static pid_t fork_or_die(void) {
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    return pid;
}

/* Waits for `pid` and describes how it ended. */
static void report(const char *what, pid_t pid) {
    int status;
    pid_t got = waitpid(pid, &status, 0);
    if (got != pid)
        die("waitpid");
    if (WIFEXITED(status))
        say("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        say("%s: killed by signal %d\n", what, WTERMSIG(status));
    else
        say("%s: status %#x\n", what, status);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int status_case(void) {
    pid_t pid = fork_or_die();
    if (pid == 0)
        exit(42);
    report("exit(42)", pid);
    int sigs[] = {SIGTERM, SIGKILL, SIGINT};
    for (int i = 0; i < 3; i++) {
        pid = fork_or_die();
        if (pid == 0) {
            kill(getpid(), sigs[i]);
            sleep_ms(5000);
            exit(3);
        }
        char what[32];
        snprintf(what, sizeof what, "raise(%d)", sigs[i]);
        report(what, pid);
    }
    return 0;
}

/* Whether all of buf[0..len) is `c`. */
static int all(const unsigned char *buf, size_t len, unsigned char c) {
    for (size_t i = 0; i < len; i++)
        if (buf[i] != c)
            return 0;
    return 1;
}

/* Fills buf with `c`, page by page from the end, so that lines are written in an order unlike a
 * plain memset's. */
static void fill(unsigned char *buf, size_t len, unsigned char c) {
    for (size_t off = len; off > 0;) {
        size_t n = off >= 4096 ? 4096 : off;
        off -= n;
        memset(buf + off, c, n);
    }
}

static int memory_case(long mib) {
    size_t len = (size_t)mib << 20;
    unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *heap = malloc(len);
    if (buf == MAP_FAILED || heap == NULL)
        die("allocating");
    fill(buf, len, 'P');
    fill(heap, len, 'h');
    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0)
        die("pipe");
    pid_t pid = fork_or_die();
    char token = 0;
    if (pid == 0) {
        /* What the parent wrote before the fork is here. */
        int code = 0;
        if (!all(buf, len, 'P') || !all(heap, len, 'h'))
            code |= 1;
        fill(buf, len, 'C');
        fill(heap + len / 2, len / 2, 'c');
        /* Let the parent write now, and wait until it has. */
        if (write(to_parent[1], "w", 1) != 1 || read(to_child[0], &token, 1) != 1)
            _exit(99);
        if (!all(buf, len, 'C') || !all(heap + len / 2, len / 2, 'c') || !all(heap, len / 2, 'h'))
            code |= 2;
        _exit(code);
    }
    if (read(to_parent[0], &token, 1) != 1)
        die("read");
    fill(buf, len, 'Q');
    fill(heap, len / 2, 'q');
    if (write(to_child[1], "w", 1) != 1)
        die("write");
    int mine = all(buf, len, 'Q') && all(heap, len / 2, 'q') && all(heap + len / 2, len / 2, 'h');
    say("parent's memory after the fork: %s\n", mine ? "its own" : "CHANGED");
    report("child (0: saw the parent's memory and kept its own)", pid);
    return 0;
}

static int exec_case(const char *self, const char *text) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        char *argv[] = {(char *)self, "echo", "one", "two words", "", "three", NULL};
        char *envp[] = {"PROCS_GREETING=hello from the environment", "OTHER=x", NULL};
        execve(self, argv, envp);
        _exit(100 + errno);
    }
    report("exec", pid);
    char *argv[] = {"x", NULL};
    char *envp[] = {NULL};
    errno = 0;
    execve("/no/such/program", argv, envp);
    say("execve of a missing file: %s\n", errname(errno));
    errno = 0;
    execve("/", argv, envp);
    say("execve of a directory: %s\n", errname(errno));
    if (text != NULL) {
        errno = 0;
        execve(text, argv, envp);
        say("execve of a text file: %s\n", errname(errno));
    }
    return 0;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static volatile unsigned long spins;

static void *waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;)
        pthread_cond_wait(&never, &lock);
    return NULL;
}

static void *sleeper(void *arg) {
    (void)arg;
    sleep_ms(60000);
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    for (;;)
        spins++;
    return NULL;
}

static void *execer(void *arg) {
    sleep_ms(100);
    char *argv[] = {(char *)arg, "echo", "from a thread", NULL};
    char *envp[] = {"PROCS_GREETING=the other threads are gone", NULL};
    execve((const char *)arg, argv, envp);
    _exit(100 + errno);
}

/* A child with four threads besides the first: one execs while the others wait, sleep and spin,
 * and the first joins it. */
static int exec_threads_case(const char *self) {
    pid_t pid = fork_or_die();
    if (pid == 0) {
        void *(*fns[])(void *) = {waiter, sleeper, spinner, execer};
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            if (pthread_create(&t[i], NULL, fns[i], (void *)self) != 0)
                _exit(98);
        pthread_join(t[3], NULL);
        _exit(99);
    }
    report("exec from a thread", pid);
    return 0;
}

static void *square(void *arg) {
    long n = (long)arg;
    return (void *)(n * n);
}

static int echo_case(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        say("argv[%d] = \"%s\"\n", i - 1, argv[i]);
    const char *g = getenv("PROCS_GREETING");
    say("PROCS_GREETING = %s\n", g ? g : "(unset)");
    /* All at once, so that they take every vCPU the old image left. */
    long sum = 0;
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, square, (void *)(i + 1)) != 0)
            return 98;
    for (int i = 0; i < 4; i++) {
        void *got;
        if (pthread_join(t[i], &got) != 0)
            return 98;
        sum += (long)got;
    }
    say("threads computed %ld\n", sum);
    return 7;
}

static int ppid_case(void) {
    pid_t me = getpid();
    pid_t pid = fork_or_die();
    if (pid == 0) {
        int code = 0;
        if (getppid() != me)
            code |= 1;
        if (getpgrp() != getpgid(me))
            code |= 2;
        if (setpgid(0, 0) != 0 || getpgrp() != getpid())
            code |= 4;
        if (getsid(0) != getsid(me))
            code |= 8;
        _exit(code);
    }
    report("child (0: getppid, groups)", pid);
    return 0;
}

static int kill_case(void) {
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    pid_t reader = fork_or_die();
    if (reader == 0) {
        char c;
        close(p[1]);
        ssize_t n = read(p[0], &c, 1);
        _exit(n == 0 ? 50 : 51);
    }
    pid_t sleeper = fork_or_die();
    if (sleeper == 0) {
        sleep_ms(30000);
        _exit(52);
    }
    int status;
    sleep_ms(100);
    say("waitpid WNOHANG of a running child: %d\n", (int)waitpid(reader, &status, WNOHANG));
    kill(reader, SIGTERM);
    report("child blocked in read, SIGTERM", reader);
    kill(sleeper, SIGKILL);
    report("child in nanosleep, SIGKILL", sleeper);
    close(p[0]);
    close(p[1]);
    pid_t again = fork_or_die();
    if (again == 0) {
        sleep_ms(30000);
        _exit(53);
    }
    sleep_ms(50);
    kill(again, SIGINT);
    report("child in nanosleep, SIGINT", again);
    return 0;
}

static int pipe_case(void) {
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close(p[0]);
        if (dup2(p[1], 1) != 1)
            _exit(60);
        close(p[1]);
        for (int i = 1; i <= 3000; i++)
            say("line %d from the child\n", i);
        _exit(0);
    }
    close(p[1]);
    char buf[4096];
    size_t total = 0, lines = 0;
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0) {
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    }
    say("read %zu bytes in %zu lines, then %s\n", total, lines, n == 0 ? "EOF" : "an error");
    report("writer", pid);
    return 0;
}

static int sigpipe_case(void) {
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    close(p[0]);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        (void)!write(p[1], "x", 1);
        _exit(70);
    }
    report("writer to a pipe without readers", pid);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    ssize_t n = write(p[1], "x", 1);
    say("with SIGPIPE ignored: write %zd, %s\n", n, errname(errno));
    return 0;
}

static int echild_case(void) {
    int status;
    errno = 0;
    pid_t got = waitpid(-1, &status, 0);
    say("waitpid without children: %d %s\n", (int)got, errname(errno));
    pid_t pid = fork_or_die();
    if (pid == 0)
        _exit(9);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED) != 0)
        die("waitid");
    say("waitid: signo %d code %d status %d pid-match %d\n", info.si_signo, info.si_code, info.si_status, info.si_pid == pid);
    pid = vfork();
    if (pid == 0)
        _exit(11);
    report("vfork child", pid);
    errno = 0;
    got = waitpid(pid, &status, 0);
    say("waitpid of a reaped child: %d %s\n", (int)got, errname(errno));
    return 0;
}

static volatile sig_atomic_t chld_calls, chld_signo, chld_code, chld_pid, chld_status;

static void on_sigchld(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    chld_calls++;
    chld_signo = sig;
    chld_code = info->si_code;
    chld_pid = info->si_pid;
    chld_status = info->si_status;
}

static int sigchld_case(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigchld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) != 0)
        die("sigaction");
    for (int killed = 0; killed < 2; killed++) {
        chld_calls = 0;
        pid_t pid = fork_or_die();
        if (pid == 0) {
            if (killed)
                kill(getpid(), SIGKILL);
            sleep_ms(100);
            _exit(7);
        }
        int status;
        pid_t got = waitpid(pid, &status, 0);
        if (got != pid)
            die("waitpid");
        say("handler: calls %d signo %d code %s pid-match %d status %d\n", (int)chld_calls, (int)chld_signo,
            chld_code == CLD_EXITED ? "CLD_EXITED" : chld_code == CLD_KILLED ? "CLD_KILLED" : "another",
            chld_pid == pid, (int)chld_status);
        say("waitpid: %s %d\n", WIFEXITED(status) ? "exited" : WIFSIGNALED(status) ? "killed by" : "status",
            WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? WTERMSIG(status) : status);
    }
    chld_calls = 0;
    pid_t slow = fork_or_die();
    if (slow == 0) {
        sleep_ms(300);
        _exit(8);
    }
    pid_t fast = fork_or_die();
    if (fast == 0)
        _exit(7);
    int status;
    pid_t got = waitpid(slow, &status, 0);
    say("waitpid of the slow child while the fast one ends: pid-match %d status %d, handler calls %d\n", got == slow,
        WEXITSTATUS(status), (int)chld_calls);
    got = waitpid(fast, &status, 0);
    say("then the fast child: pid-match %d status %d\n", got == fast, WEXITSTATUS(status));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        say("usage: procs CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "status"))
        return status_case();
    if (!strcmp(c, "memory"))
        return memory_case(argc > 2 ? atol(argv[2]) : 8);
    if (!strcmp(c, "exec"))
        return exec_case(argc > 2 ? argv[2] : argv[0], argc > 3 ? argv[3] : NULL);
    if (!strcmp(c, "exec-threads"))
        return exec_threads_case(argc > 2 ? argv[2] : argv[0]);
    if (!strcmp(c, "echo"))
        return echo_case(argc, argv);
    if (!strcmp(c, "ppid"))
        return ppid_case();
    if (!strcmp(c, "kill"))
        return kill_case();
    if (!strcmp(c, "pipe"))
        return pipe_case();
    if (!strcmp(c, "sigpipe"))
        return sigpipe_case();
    if (!strcmp(c, "echild"))
        return echild_case();
    if (!strcmp(c, "sigchld"))
        return sigchld_case();
    say("unknown case %s\n", c);
    return 2;
}
