/*
 * auxv: prints the process's initial stack contents as the loader set them
 * up: argc, every argv[i], every envp entry, and selected auxiliary vector
 * entries read with getauxval(). Values that differ from run to run
 * (AT_RANDOM, AT_PHDR, AT_ENTRY, AT_HWCAP) are printed only as
 * "nonzero: yes/no". Tests the VMM's initial stack layout.
 * Exit status = argc.
 */
#include <stdio.h>
#include <sys/auxv.h>

static void print_num(const char *name, unsigned long type)
{
    printf("%s: %lu\n", name, getauxval(type));
}

static void print_nonzero(const char *name, unsigned long type)
{
    printf("%s nonzero: %s\n", name, getauxval(type) != 0 ? "yes" : "no");
}

static void print_str(const char *name, unsigned long type)
{
    const char *s = (const char *)getauxval(type);
    printf("%s: %s\n", name, s ? s : "(none)");
}

int main(int argc, char **argv, char **envp)
{
    printf("argc: %d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]: %s\n", i, argv[i]);
    if (argv[argc] != NULL)
        printf("argv[argc] is not NULL\n");

    int n = 0;
    for (char **e = envp; *e; e++, n++)
        printf("envp[%d]: %s\n", n, *e);
    printf("envc: %d\n", n);

    print_num("AT_PAGESZ", AT_PAGESZ);
    print_num("AT_PHENT", AT_PHENT);
    print_num("AT_PHNUM", AT_PHNUM);
    print_num("AT_CLKTCK", AT_CLKTCK);
    print_num("AT_SECURE", AT_SECURE);
    print_num("AT_UID", AT_UID);
    print_num("AT_EUID", AT_EUID);
    print_num("AT_GID", AT_GID);
    print_num("AT_EGID", AT_EGID);
    print_nonzero("AT_RANDOM", AT_RANDOM);
    print_str("AT_PLATFORM", AT_PLATFORM);
    print_str("AT_EXECFN", AT_EXECFN);
    print_nonzero("AT_PHDR", AT_PHDR);
    print_nonzero("AT_ENTRY", AT_ENTRY);
    print_nonzero("AT_HWCAP", AT_HWCAP);

    fflush(stdout);
    return argc;
}
