/* A guest fuzzer: what a hostile or broken program may do must end it (or one of its calls)
 * as Linux would, never the VMM. Fixed seeds, so a failure can be replayed.
 *
 *   fuzz sys  BATCHES CALLS SEED   system calls with wild arguments: random numbers, small
 *                                  ones, pointers into the program, the stub page, the
 *                                  kernel half, non-canonical addresses, huge lengths
 *   fuzz insn BATCHES CASES SEED   privileged and unusual instructions with random operands
 *                                  and registers (RSP and RFLAGS too), and jumps to every
 *                                  offset of the stub page; each fault is caught by a handler
 *
 * Each batch runs in a forked child, watched by the parent with a deadline; a fault goes to a
 * handler, and the batch goes on with the next case. The parent prints
 * one summary line, and exits 1 if a child hung past the deadline or was killed by SIGKILL
 * (which only the system sends here: a VMM that failed a process ends it so). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STUB_PAGE ((1ULL << 40) + 0x3000)
#define RECORD_FD 100
#define DEADLINE_MS 20000

static uint64_t s;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static char buf[65536];
int main(int, char **);

/* Calls that wait for good (or long) on Linux too, end or signal the fuzzer itself, make
 * files that later calls would wait on (FIFOs, pipes, sockets, event and timer fds), or lower
 * the fuzzer's priority for good (setpriority, sched_setscheduler, sched_setattr: a
 * `setpriority(PRIO_USER, 0, 19)` renices the parent and every later batch, and the run then
 * crawls behind any other work on the host). */
static int skip(long n) {
    switch (n) {
    case 141: case 144: case 314:
    case 7: case 22: case 23: case 34: case 35: case 37: case 38: case 41: case 43: case 45:
    case 47: case 53: case 56: case 57: case 58: case 59: case 60: case 61: case 62: case 65: case 69:
    case 70: case 101: case 128: case 129: case 130: case 133: case 169: case 200: case 202:
    case 208: case 220: case 230: case 231: case 232: case 234: case 242: case 243: case 247: case 253:
    case 259: case 270: case 271: case 281: case 282: case 283: case 284: case 288: case 289:
    case 290: case 293: case 294: case 297: case 299: case 300: case 322: case 323:
        return 1;
    }
    return 0;
}

static uint64_t arg(void) {
    uint64_t k[] = { 0, 1, 2, 3, (uint64_t)-1, (uint64_t)-100, 4096, 0x1000, 0x8000, 0x10000,
        0x7fffffff, 0xffffffff, 0x8000000000000000ULL, 0xffff800000000000ULL, 0xffffffffff600000ULL,
        1ULL << 40, STUB_PAGE, STUB_PAGE + 0x100, (1ULL << 40) + 0x10000, (1ULL << 40) - 8,
        (uint64_t)buf, (uint64_t)buf + 65530, (uint64_t)&main, (uint64_t)-4096, 1ULL << 46,
        1ULL << 47, 0x400000, 1ULL << 62 };
    switch (rnd() % 4) {
    case 0: return rnd();
    case 1: return rnd() % 64;
    default: return k[rnd() % (sizeof k / sizeof k[0])];
    }
}

/* Tells the parent every 64th case (a write per case would double the exits); the batch tells
 * the total when it ends. */
static void progress(int i, int n) {
    int rec[2] = { i, n };
    if (i % 64 == 0 && write(RECORD_FD, rec, sizeof rec) < 0) {}
}

static sigjmp_buf back;
static void caught(int sig) { siglongjmp(back, sig); }

/* Faults (of the program's own making, such as unmapping its stack) go to a handler on a
 * stack of its own, which goes on with the next case. */
static void catch_faults(void) {
    static uint8_t altstack[65536];
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
    sigaltstack(&ss, 0);
    struct sigaction sa = { .sa_handler = caught, .sa_flags = SA_ONSTACK | SA_NODEFER };
    int sigs[] = { SIGSEGV, SIGILL, SIGTRAP, SIGFPE, SIGBUS, SIGSYS };
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, 0);
    signal(SIGPIPE, SIG_IGN);
}

static int made; /* system calls made so far (not the skipped ones) */
static int sys_made(void) { return made; }

static void sys_batch(int calls) {
    catch_faults();
    for (volatile int i = 0; i < calls; i++) {
        if (sigsetjmp(back, 1)) continue;
        long n = rnd() % 335;
        uint64_t a[6] = { arg(), arg(), arg(), arg(), arg(), arg() };
        if (skip(n) || (n == 13 && (int)a[0] == SIGALRM) || (n == 14 && a[0] != SIG_UNBLOCK)) continue;
        progress(made++, (int)n);
        memset(buf, (int)(rnd() & 0xff), 256);
        syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
}

/* The instruction fuzzer: registers loaded from `fz_regs`, then a jump to `fz_target`. */
uint64_t fz_regs[17]; /* rax rbx rcx rdx rsi rdi rbp rsp r8..r15, rflags */
uint64_t fz_target;
static uint8_t *code;
static uint64_t *scratch;

static const uint8_t templates[][4] = {
    {1, 0xf4}, {1, 0xfa}, {1, 0xfb}, {2, 0xe4}, {2, 0xe5}, {2, 0xe6}, {2, 0xe7}, {1, 0xec},
    {1, 0xed}, {1, 0xee}, {1, 0xef}, {1, 0x6c}, {1, 0x6f}, {2, 0xcd}, {1, 0xcc}, {1, 0xf1},
    {1, 0xce}, {2, 0x48, 0xcf}, {1, 0xcf}, {2, 0x0f, 0x07}, {2, 0x0f, 0x34}, {2, 0x0f, 0x35},
    {3, 0x0f, 0x01, 0xf8}, {2, 0x0f, 0x32}, {2, 0x0f, 0x30}, {2, 0x0f, 0x33}, {2, 0x0f, 0x31},
    {3, 0x0f, 0x01, 0xf9}, {2, 0x0f, 0x20}, {2, 0x0f, 0x22}, {2, 0x0f, 0x21}, {2, 0x0f, 0x23},
    {2, 0x0f, 0x01}, {2, 0x0f, 0x00}, {2, 0x0f, 0x09}, {2, 0x0f, 0x08}, {2, 0x0f, 0x06},
    {3, 0x0f, 0x01, 0xd1}, {3, 0x0f, 0x01, 0xd0}, {3, 0x0f, 0x01, 0xc8}, {3, 0x0f, 0x01, 0xc9},
    {3, 0x0f, 0x01, 0xc1}, {3, 0x0f, 0x01, 0xd9}, {2, 0x0f, 0x0b}, {2, 0x0f, 0xff}, {1, 0x8e},
    {1, 0xcb}, {1, 0xca}, {1, 0xff}, {1, 0xf7}, {2, 0x0f, 0xae}, {1, 0x9d}, {1, 0x17},
    {2, 0x0f, 0xa1}, {2, 0x0f, 0xa9}, {1, 0xc8}, {2, 0x0f, 0x02}, {2, 0x0f, 0x03}, {1, 0xd9},
};
static const uint8_t prefixes[] = { 0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x64, 0x65, 0x48, 0x41 };

static uint64_t reg(void) {
    uint64_t k[] = { (uint64_t)scratch, (uint64_t)scratch + 4096, STUB_PAGE, (1ULL << 40) + 0x10000,
        0xffff800000000000ULL, 0x8000000000000000ULL, 0x20, 0x28, 0x08, 0x10, 0x1b, 0x23, 0x2b };
    switch (rnd() % 3) {
    case 0: return rnd();
    case 1: return rnd() % 4096;
    default: return k[rnd() % (sizeof k / sizeof k[0])];
    }
}

static void insn_batch(int cases) {
    catch_faults();
    for (volatile int i = 0; i < cases; i++) {
        progress(i, 0);
        for (int r = 0; r < 16; r++) fz_regs[r] = reg();
        /* A usable stack half of the time, and plain flags mostly (TF or AC sometimes). */
        if (rnd() % 2) fz_regs[7] = (uint64_t)scratch + 2048;
        uint64_t f[] = { 0x202, 0x202, 0x202, 0x302, 0x40202, 0x246 };
        fz_regs[16] = f[rnd() % 6];
        if (rnd() % 4 == 0) {
            fz_target = STUB_PAGE + rnd() % 4096;
        } else {
            memset(code, 0xcc, 64);
            int at = 0, np = rnd() % 3;
            for (int p = 0; p < np; p++) code[at++] = prefixes[rnd() % sizeof prefixes];
            const uint8_t *t = templates[rnd() % (sizeof templates / sizeof templates[0])];
            memcpy(code + at, t + 1, t[0]);
            at += t[0];
            for (int b = 0; b < 8; b++) code[at + b] = rnd();
            fz_target = (uint64_t)code;
        }
        if (sigsetjmp(back, 1) == 0) {
            __asm__ volatile(
                "lea fz_regs(%%rip), %%r15\n"
                "pushq 128(%%r15)\n popfq\n"
                "mov 0(%%r15), %%rax\n mov 8(%%r15), %%rbx\n mov 16(%%r15), %%rcx\n"
                "mov 24(%%r15), %%rdx\n mov 32(%%r15), %%rsi\n mov 40(%%r15), %%rdi\n"
                "mov 48(%%r15), %%rbp\n mov 56(%%r15), %%rsp\n mov 64(%%r15), %%r8\n"
                "mov 72(%%r15), %%r9\n mov 80(%%r15), %%r10\n mov 88(%%r15), %%r11\n"
                "mov 96(%%r15), %%r12\n mov 104(%%r15), %%r13\n mov 112(%%r15), %%r14\n"
                "mov 120(%%r15), %%r15\n jmp *fz_target(%%rip)\n" ::: "memory");
        }
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "sys") && strcmp(argv[1], "insn"))) {
        fprintf(stderr, "usage: fuzz sys|insn [BATCHES [PER-BATCH [SEED]]]\n");
        return 2;
    }
    int insn = !strcmp(argv[1], "insn");
    int batches = argc > 2 ? atoi(argv[2]) : 40, per = argc > 3 ? atoi(argv[3]) : 1000;
    uint64_t seed = argc > 4 ? strtoull(argv[4], 0, 0) : 1;
    if (insn) {
        code = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        scratch = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    int sig[65] = {0}, exits = 0, hung = 0, killed = 0;
    long tried = 0; /* cases tried, counted to the last report of each batch */
    double start = now();
    for (int b = 0; b < batches; b++) {
        int p[2];
        if (pipe(p)) { perror("pipe"); return 1; }
        fflush(stdout);
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c == 0) {
            s = seed * 0x9e3779b97f4a7c15ULL + b + 1;
            dup2(p[1], RECORD_FD);
            for (int fd = 0; fd < 3; fd++) close(fd); /* nothing wild reaches the output */
            close(p[0]); close(p[1]);
            if (insn) insn_batch(per); else sys_batch(per);
            int rec[2] = { insn ? per : sys_made(), -1 };
            if (write(RECORD_FD, rec, sizeof rec) < 0) {}
            _exit(0);
        }
        close(p[1]);
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        int st = 0, done = 0, last[2] = { -1, -1 }, rec[2];
        for (int t = 0; t < DEADLINE_MS / 10 && !done; t++) {
            done = waitpid(c, &st, WNOHANG) == c;
            while (read(p[0], rec, sizeof rec) == sizeof rec) { last[0] = rec[0]; last[1] = rec[1]; }
            if (!done) { struct timespec ts = { 0, 10000000 }; nanosleep(&ts, 0); }
        }
        while (read(p[0], rec, sizeof rec) == sizeof rec) { last[0] = rec[0]; last[1] = rec[1]; }
        close(p[0]);
        tried += last[0] < 0 ? 0 : last[0];
        if (!done) {
            kill(c, SIGKILL);
            waitpid(c, &st, 0);
            hung++;
            fprintf(stderr, "fuzz %s seed %#llx batch %d: hung after case %d (syscall %d), killed\n", argv[1],
                    (unsigned long long)seed, b, last[0], last[1]);
        } else if (WIFSIGNALED(st)) {
            sig[WTERMSIG(st)]++;
            if (WTERMSIG(st) == SIGKILL) {
                killed++;
                fprintf(stderr, "fuzz %s seed %#llx batch %d: SIGKILL after case %d (syscall %d)\n", argv[1],
                        (unsigned long long)seed, b, last[0], last[1]);
            }
        } else {
            exits++;
        }
    }
    printf("fuzz %s: seed %#llx, %ld %s in %d batches, %.1f s; batches: %d exited, %d hung, signals:",
           argv[1], (unsigned long long)seed, tried, insn ? "instructions" : "calls", batches, now() - start,
           exits, hung);
    for (int i = 1; i < 65; i++) if (sig[i]) printf(" %d:%d", i, sig[i]);
    printf("\n");
    return hung || killed ? 1 : 0;
}
