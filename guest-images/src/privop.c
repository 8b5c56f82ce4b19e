/* Privileged and unusual instructions, each in a forked child: the signal Linux sends for each
 * (SIGSEGV for a #GP, SIGILL for #UD, SIGTRAP, SIGFPE...), also for calls into the addresses
 * where a vNode keeps its CPL0 stubs (unmapped on Linux).
 *   privop          every case, one line each
 *   privop N        case N alone, in this process
 *   privop int80    `int 0x80` (SIGSEGV on a 64-bit-only Linux; a host with the 32-bit
 *                   emulation runs it as a 32-bit system call instead)
 *   privop handled  a #GP caught by a SIGSEGV handler, which jumps back
 *   privop stubs    calls to the start of each stub (and 1 and 2 bytes in) */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define STUB_PAGE ((1ULL << 40) + 0x3000)

static void call(uint64_t addr) { ((void (*)(void))addr)(); }

static void run(int c) {
    switch (c) {
    case 0: __asm__ volatile("out %%al, $0x80" ::"a"(0)); break;
    case 1: __asm__ volatile("out %%al, $0x10" ::"a"(0)); break;  /* the syscall stub's port */
    case 2: __asm__ volatile("out %%al, $0x2e" ::"a"(0)); break;  /* the page-fault stub's port */
    case 3: __asm__ volatile("out %%al, $0x11" ::"a"(0)); break;  /* the benchmark port */
    case 4: { uint8_t v; __asm__ volatile("in $0x10, %%al" : "=a"(v)); break; }
    case 5: __asm__ volatile("out %%al, %%dx" ::"a"(0), "d"(0x20)); break;
    case 6: __asm__ volatile("hlt"); break;
    case 7: __asm__ volatile("cli"); break;
    case 8: __asm__ volatile("int3"); break;
    case 9: __asm__ volatile("int $0x03"); break;
    case 10: __asm__ volatile("int $0x04"); break;
    case 11: __asm__ volatile("int $0x0e"); break;
    case 12: __asm__ volatile("int $0x0d"); break;
    case 13: __asm__ volatile("int $0x20"); break;
    case 14: __asm__ volatile("int $0xff"); break;
    case 15: __asm__ volatile(".byte 0xf1"); break;        /* int1 */
    case 16: __asm__ volatile(".byte 0xce"); break;        /* into: #UD in 64-bit mode */
    case 17: __asm__ volatile(".byte 0x66, 0xcd, 0x0d"); break;
    case 18: __asm__ volatile(".byte 0xf0, 0xcd, 0x0d"); break; /* lock int: #UD */
    case 19: __asm__ volatile("mov %%cr3, %%rax" ::: "rax"); break;
    case 20: __asm__ volatile("wrmsr" ::"c"(0xc0000100), "a"(0), "d"(0)); break;
    case 21: __asm__ volatile("rdmsr" ::"c"(0xc0000082) : "rax", "rdx"); break;
    case 22: __asm__ volatile("invlpg (%0)" ::"r"(0x400000)); break;
    case 23: __asm__ volatile("ud2"); break;
    case 24: __asm__ volatile("iretq"); break;
    case 25: __asm__ volatile("sysretq"); break;
    case 26: __asm__ volatile("swapgs"); break;
    case 27: __asm__ volatile("mov %0, %%ds" ::"r"(0x28)); break;
    case 28: __asm__ volatile("pushq $0x08; pushq $0; lretq" ::: "memory"); break;
    case 29: __asm__ volatile("xor %%edx,%%edx; mov $1,%%eax; xor %%ecx,%%ecx; div %%ecx" ::: "rax", "rdx", "rcx"); break;
    case 30: __asm__ volatile("mov $0xffff800000000000, %%rsp; int3" ::: "memory"); break;
    case 31: call(STUB_PAGE); break;          /* the syscall stub */
    case 32: call(STUB_PAGE + 0x100); break;  /* the divide-error stub */
    case 33: call(STUB_PAGE + 0x1e0); break;  /* the page-fault stub */
    case 34: call(STUB_PAGE + 0x102); break;  /* its hlt */
    case 35: { volatile uint64_t *p = (uint64_t *)(1ULL << 40); (void)*p; break; } /* the GDT */
    case 36: __asm__ volatile("sysenter"); break;
    }
}
#define CASES 37

static sigjmp_buf back;
static void caught(int sig) { siglongjmp(back, sig); }

static const char *fate(int st) {
    static char s[32];
    if (WIFSIGNALED(st)) snprintf(s, sizeof s, "signal %d", WTERMSIG(st));
    else snprintf(s, sizeof s, "exit %d", WEXITSTATUS(st));
    return s;
}

static int in_child(void (*f)(int), int arg) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) { f(arg); _exit(0); }
    int st;
    waitpid(p, &st, 0);
    return st;
}

static void jump(int off) { call(STUB_PAGE + off); }

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "int80")) {
        __asm__ volatile("int $0x80" ::"a"(20));
        printf("int 0x80 returned\n");
    } else if (argc > 1 && !strcmp(argv[1], "handled")) {
        signal(SIGSEGV, caught);
        int sig = sigsetjmp(back, 1);
        if (sig == 0) run(3);
        printf("caught signal %d\n", sig);
        sig = sigsetjmp(back, 1);
        if (sig == 0) run(32);
        printf("caught signal %d\n", sig);
    } else if (argc > 1 && !strcmp(argv[1], "stubs")) {
        int seen[65] = {0}, exits = 0, n = 0;
        for (int v = -1; v < 32; v++)
            for (int d = 0; d < 3; d++) {
                int st = in_child(jump, (v < 0 ? 0 : 0x100 + 16 * v) + d);
                n++;
                if (WIFSIGNALED(st)) seen[WTERMSIG(st)]++; else exits++;
            }
        printf("%d calls into the stub page: exits %d;", n, exits);
        for (int i = 0; i < 65; i++) if (seen[i]) printf(" signal %d: %d", i, seen[i]);
        printf("\n");
    } else if (argc > 1) {
        run(atoi(argv[1]));
        printf("case %s survived\n", argv[1]);
    } else {
        for (int c = 0; c < CASES; c++) printf("case %2d: %s\n", c, fate(in_child(run, c)));
    }
    return 0;
}
