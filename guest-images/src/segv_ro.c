/*
 * segv_ro: page faults on memory the program mapped itself.
 *   segv_ro ro        mmap a page RW, write it, mprotect it PROT_READ, read
 *                     it (must work), then write it -> SIGSEGV
 *   segv_ro unmapped  mmap a page, write it, munmap it, then read it
 *                     -> SIGSEGV
 * Default mode is "ro". Tests that mprotect/munmap really change the guest
 * page tables (shell status 139). Unknown mode: exit 2.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "ro";
    long pagesz = sysconf(_SC_PAGESIZE);
    volatile char *p;

    if (strcmp(mode, "ro") != 0 && strcmp(mode, "unmapped") != 0) {
        fprintf(stderr, "usage: segv_ro [ro|unmapped]\n");
        return 2;
    }

    p = mmap(NULL, (size_t)pagesz, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    p[0] = 'x';
    p[pagesz - 1] = 'y';
    printf("mode: %s\n", mode);

    if (strcmp(mode, "ro") == 0) {
        if (mprotect((void *)p, (size_t)pagesz, PROT_READ) != 0) {
            perror("mprotect");
            return 1;
        }
        printf("read after mprotect: %c%c\n", p[0], p[pagesz - 1]);
        fputs("about to write to read-only page\n", stdout);
        fflush(stdout);
        p[0] = 'z';
        fputs("unreachable: write succeeded\n", stdout);
    } else {
        if (munmap((void *)p, (size_t)pagesz) != 0) {
            perror("munmap");
            return 1;
        }
        fputs("about to read unmapped page\n", stdout);
        fflush(stdout);
        printf("unreachable: read %c\n", p[0]);
    }
    return 0;
}
