/*
 * fileio: file-system syscalls against a host directory.
 *   fileio [DIR]        (default ".")
 * Works inside DIR/lego_fileio.d (created, and removed at the end) and
 * checks: write/pwrite of a ~200 KB pattern, lseek SEEK_SET/CUR/END,
 * read/pread back and verify, read at EOF, fstat/stat sizes, ftruncate
 * shrink and sparse extend, fsync, syncfs, rename, O_EXCL, O_APPEND, dup/dup2
 * sharing the file offset, mkdir/rmdir, a sorted readdir (getdents64)
 * listing, unlink and ENOENT afterwards. Each check prints one line; output
 * does not depend on DIR, so a vNode run can be compared with a native one.
 * Exit 0 if every check passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define FILE_SIZE (200 * 1024)
#define NFILES 24

static unsigned long failures;
static char workdir[4096];

static void check(int ok, const char *what)
{
    printf("%-44s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static const char *errname(int e)
{
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOSPC: return "ENOSPC";
    default: return "other";
    }
}

/* Check that a call failed with the expected errno. */
static void check_errno(long ret, int expected, const char *what)
{
    int e = ret < 0 ? errno : 0;
    char line[128];
    snprintf(line, sizeof line, "%s -> %s", what, errname(e));
    check(ret < 0 && e == expected, line);
}

/* Path of NAME inside the work directory. Returns one of a few static
 * buffers used in rotation: copy the result if it must outlive 7 more calls. */
static char *path(const char *name)
{
    static char buf[8][8192];
    static unsigned which;
    char *p = buf[which++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", workdir, name);
    return p;
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ 0x5Au);
}

static int is_pattern(const unsigned char *buf, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern(off + i))
            return 0;
    return 1;
}

static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[8192];

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0)
            remove_tree(p); /* a directory: unlink gave EISDIR */
    }
    closedir(d);
    rmdir(dir);
}

static void test_data(void)
{
    static unsigned char buf[FILE_SIZE];
    const char *a = path("data.bin");
    int fd;

    for (size_t i = 0; i < FILE_SIZE; i++)
        buf[i] = pattern(i);

    fd = open(a, O_RDWR | O_CREAT | O_TRUNC, 0644);
    check(fd >= 0, "open data.bin O_CREAT");
    if (fd < 0)
        return;

    /* First half with write() in odd-sized chunks, second half with pwrite(). */
    size_t half = FILE_SIZE / 2, off = 0;
    int ok = 1;
    while (off < half) {
        size_t n = half - off < 3001 ? half - off : 3001;
        if (write(fd, buf + off, n) != (ssize_t)n)
            ok = 0;
        off += n;
    }
    check(ok, "write first half in 3001-byte chunks");
    check(lseek(fd, 0, SEEK_CUR) == (off_t)half, "offset after write == half");
    ok = 1;
    for (off = FILE_SIZE; off > half;) {
        size_t n = off - half < 8192 ? off - half : 8192;
        off -= n;
        if (pwrite(fd, buf + off, n, (off_t)off) != (ssize_t)n)
            ok = 0;
    }
    check(ok, "pwrite second half backwards");
    check(lseek(fd, 0, SEEK_CUR) == (off_t)half, "pwrite leaves offset alone");
    check(fsync(fd) == 0, "fsync");
    check(syncfs(fd) == 0, "syncfs");
    sync();

    struct stat st;
    check(fstat(fd, &st) == 0 && st.st_size == FILE_SIZE, "fstat size == 204800");
    check(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0644, "fstat regular file, mode 0644");
    check(file_size(a) == FILE_SIZE, "stat size == 204800");

    /* Seeks. */
    unsigned char small[256];
    check(lseek(fd, 0, SEEK_END) == FILE_SIZE, "lseek SEEK_END 0 == size");
    check(lseek(fd, 1000, SEEK_SET) == 1000, "lseek SEEK_SET 1000");
    check(lseek(fd, 500, SEEK_CUR) == 1500, "lseek SEEK_CUR +500 == 1500");
    check(read(fd, small, 100) == 100 && is_pattern(small, 1500, 100), "read 100 at 1500 matches");
    check(lseek(fd, -100, SEEK_CUR) == 1500, "lseek SEEK_CUR -100 == 1500");
    check(lseek(fd, -200, SEEK_END) == FILE_SIZE - 200, "lseek SEEK_END -200");
    check(read(fd, small, 256) == 200 && is_pattern(small, FILE_SIZE - 200, 200), "short read of last 200 bytes");
    check(read(fd, small, 256) == 0, "read at EOF returns 0");
    errno = 0;
    check_errno(lseek(fd, -1, SEEK_SET), EINVAL, "lseek to -1");

    /* Whole file back with read() and with pread(). */
    static unsigned char back[FILE_SIZE];
    memset(back, 0, sizeof back);
    check(lseek(fd, 0, SEEK_SET) == 0 && read_full(fd, back, FILE_SIZE) == FILE_SIZE &&
              is_pattern(back, 0, FILE_SIZE), "read whole file matches");
    memset(back, 0, sizeof back);
    check(pread(fd, back, 4096, 65536) == 4096 && is_pattern(back, 65536, 4096), "pread 4096 at 65536 matches");

    /* ftruncate shrink, then extend (the gap reads as zeros). */
    check(ftruncate(fd, 100000) == 0, "ftruncate to 100000");
    check(fstat(fd, &st) == 0 && st.st_size == 100000, "fstat size == 100000");
    check(ftruncate(fd, 150000) == 0, "ftruncate to 150000");
    memset(back, 0xff, 50000);
    ok = pread(fd, back, 50000, 100000) == 50000;
    for (size_t i = 0; ok && i < 50000; i++)
        ok = back[i] == 0;
    check(ok, "extended region reads as zeros");
    check(pread(fd, back, 1000, 99000) == 1000 && is_pattern(back, 99000, 1000), "data before truncation point kept");
    check(close(fd) == 0, "close");
    check_errno(close(fd), EBADF, "close again");

    /* rename */
    const char *b = path("renamed.bin");
    check(rename(a, b) == 0, "rename data.bin -> renamed.bin");
    errno = 0;
    check_errno(file_size(a), ENOENT, "stat old name");
    check(file_size(b) == 150000, "stat new name size == 150000");

    /* O_EXCL */
    check_errno(open(b, O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST, "open existing O_CREAT|O_EXCL");
    fd = open(path("excl.txt"), O_RDWR | O_CREAT | O_EXCL, 0600);
    check(fd >= 0, "open new O_CREAT|O_EXCL");
    if (fd >= 0)
        close(fd);
}

static void test_append_dup(void)
{
    const char *p = path("append.txt");
    char buf[64];
    int fd;

    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    check(fd >= 0, "open append.txt O_APPEND");
    if (fd < 0)
        return;
    check(write(fd, "abc", 3) == 3, "write abc");
    check(lseek(fd, 0, SEEK_SET) == 0, "lseek to 0");
    check(write(fd, "def", 3) == 3, "write def");
    check(lseek(fd, 0, SEEK_CUR) == 6, "O_APPEND write went to end (offset 6)");
    close(fd);
    fd = open(p, O_RDONLY);
    memset(buf, 0, sizeof buf);
    check(fd >= 0 && read(fd, buf, sizeof buf) == 6 && memcmp(buf, "abcdef", 6) == 0, "contents == abcdef");

    /* dup and dup2 share the file offset. */
    int fd2 = dup(fd);
    check(fd2 >= 0 && fd2 != fd, "dup");
    check(lseek(fd, 2, SEEK_SET) == 2 && lseek(fd2, 0, SEEK_CUR) == 2, "dup shares offset");
    check(read(fd2, buf, 2) == 2 && memcmp(buf, "cd", 2) == 0, "read via dup gives cd");
    check(lseek(fd, 0, SEEK_CUR) == 4, "original offset advanced to 4");
    check(dup2(fd, 50) == 50, "dup2 to fd 50");
    check(read(50, buf, 2) == 2 && memcmp(buf, "ef", 2) == 0, "read via fd 50 gives ef");
    check(lseek(fd2, 0, SEEK_CUR) == 6, "all three share offset 6");
    check(dup2(fd, fd) == fd, "dup2 to itself");
    close(50);
    check_errno(lseek(50, 0, SEEK_CUR), EBADF, "lseek on closed fd 50");
    close(fd2);
    close(fd);
}

static void test_dirs(void)
{
    char sub[8192];
    struct stat st;
    char name[64];
    int ok = 1;

    snprintf(sub, sizeof sub, "%s", path("subdir"));
    check(mkdir(sub, 0755) == 0, "mkdir subdir");
    check(stat(sub, &st) == 0 && S_ISDIR(st.st_mode), "stat subdir is a directory");
    check_errno(mkdir(sub, 0755), EEXIST, "mkdir subdir again");

    for (int i = 0; i < NFILES; i++) {
        snprintf(name, sizeof name, "f%02d", (i * 7) % NFILES);
        int fd = open(path(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, name, strlen(name)) != (ssize_t)strlen(name))
            ok = 0;
        if (fd >= 0)
            close(fd);
    }
    check(ok, "create 24 small files");

    DIR *d = opendir(workdir);
    check(d != NULL, "opendir");
    if (d) {
        char *names[64];
        int n = 0, dots = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
                dots++;
                continue;
            }
            if (n < 64)
                names[n++] = strdup(de->d_name);
        }
        closedir(d);
        qsort(names, (size_t)n, sizeof names[0], cmp_str);
        printf("listing (%d entries, sorted):", n);
        for (int i = 0; i < n; i++) {
            printf(" %s", names[i]);
            free(names[i]);
        }
        printf("\n");
        check(dots == 2, "readdir returns . and ..");
    }

    check_errno(rmdir(path("f00")), ENOTDIR, "rmdir on a file");
    check(rmdir(sub) == 0, "rmdir subdir");
    check_errno(stat(sub, &st), ENOENT, "stat removed subdir");
}

static void test_unlink(void)
{
    static const char *names[] = {"renamed.bin", "excl.txt", "append.txt"};
    char name[64];
    int ok = 1;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (unlink(path(names[i])) != 0)
            ok = 0;
    for (int i = 0; i < NFILES; i++) {
        snprintf(name, sizeof name, "f%02d", i);
        if (unlink(path(name)) != 0)
            ok = 0;
    }
    check(ok, "unlink all files");
    check_errno(open(path("renamed.bin"), O_RDONLY), ENOENT, "open unlinked file");
    check_errno(unlink(path("renamed.bin")), ENOENT, "unlink again");

    DIR *d = opendir(workdir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    check(d != NULL && n == 0, "work directory is empty");
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";

    umask(022); /* so created modes are exactly what open/mkdir asked for */
    snprintf(workdir, sizeof workdir, "%s/lego_fileio.d", dir);
    remove_tree(workdir); /* leftovers from an interrupted run */
    check(mkdir(workdir, 0755) == 0, "mkdir work directory");

    test_data();
    test_append_dup();
    test_dirs();
    test_unlink();

    check(rmdir(workdir) == 0, "rmdir work directory");
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
