/* portread: `in` from user mode is a #GP (SIGSEGV) at the instruction, on any port, including
 * the ports lego's stubs keep open for their `out`; a handler catches it and goes on.
 *
 *   portread PORT...     prints, per port, what a handled `in ax, dx` came to
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

static sigjmp_buf back;
static volatile unsigned long fault_rip;

static void caught(int sig, siginfo_t *si, void *uc) {
    (void)si;
    fault_rip = (unsigned long)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
    siglongjmp(back, sig);
}

int main(int argc, char **argv) {
    struct sigaction sa = { .sa_sigaction = caught, .sa_flags = SA_SIGINFO };
    sigaction(SIGSEGV, &sa, 0);
    for (int i = 1; i < argc; i++) {
        int port = (int)strtol(argv[i], 0, 0);
        extern char in_insn[];
        int sig = sigsetjmp(back, 1);
        if (sig) {
            printf("port %#x: signal %d at the in instruction: %s\n", port, sig,
                   fault_rip == (unsigned long)in_insn ? "yes" : "no");
            continue;
        }
        __asm__ volatile("in_insn: in %%dx, %%ax" ::"d"(port) : "rax");
        printf("port %#x: no fault\n", port);
    }
    return 0;
}
