/* munmap of ranges that reach below the lowest address a program may map (0x10000, Linux's
 * mmap_min_addr): only what is mapped goes, and unmapping one's own code is the program's
 * problem (SIGSEGV on return), never the system's.
 *   munmap_low 0   a mapping at 0x10000, munmap(0x8000, 0x10000): 0, the rest stays
 *   munmap_low 1   munmap from 0x1000 over the program's own code: SIGSEGV on return
 *   munmap_low 2   mode 1 in a forked child; the parent reports how it ended */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv);

static void over_own_code(void) {
    printf("munmap(0x1000, up to main)\n");
    fflush(stdout);
    long r = munmap((void *)0x1000, ((uintptr_t)&main + 4096) - 0x1000);
    printf("returned %ld\n", r);
}

int main(int argc, char **argv) {
    int mode = argc > 1 ? atoi(argv[1]) : 0;
    if (mode == 0) {
        char *p = mmap((void *)0x10000, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        printf("mmap %p\n", (void *)p);
        p[0x8000] = 42;
        long r = munmap((void *)0x8000, 0x10000);
        printf("munmap(0x8000, 0x10000) = %ld (%s)\n", r, r ? strerror(errno) : "ok");
        printf("0x18000 still holds %d\n", p[0x8000]);
        r = munmap((void *)0x1000, 0x1000);
        printf("munmap(0x1000, 0x1000) = %ld\n", r);
    } else if (mode == 1) {
        over_own_code();
    } else {
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            over_own_code();
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        if (WIFSIGNALED(st))
            printf("child killed by signal %d\n", WTERMSIG(st));
        else
            printf("child exited %d\n", WEXITSTATUS(st));
    }
    return 0;
}
