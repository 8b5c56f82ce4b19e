/* Who owns what a program creates: files, directories, FIFOs and symlinks get the creating
 * process's file-system user and group ids (which follow the effective ids, and setfsuid /
 * setfsgid set alone), and under a set-group-ID directory its group (a new subdirectory the
 * set-group-ID bit too). A file that exists keeps its owner when opened with O_CREAT, and a
 * hard link is the same inode. Runs as root; prints each object's owner, group, mode and kind.
 *   owners [DIR]    work in DIR/t (DIR defaults to the working directory) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

static void must(int ok, const char *what)
{
    if (!ok) {
        perror(what);
        exit(1);
    }
}

static void make_file(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags, mode);
    must(fd >= 0, path);
    close(fd);
}

/* A file, a directory, a FIFO and a symlink named PREFIX.file, ... */
static void make_all(const char *prefix)
{
    char p[64];
    snprintf(p, sizeof p, "%s.file", prefix);
    make_file(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
    snprintf(p, sizeof p, "%s.dir", prefix);
    must(mkdir(p, 0750) == 0, p);
    snprintf(p, sizeof p, "%s.fifo", prefix);
    must(mkfifo(p, 0604) == 0, p);
    snprintf(p, sizeof p, "%s.link", prefix);
    must(symlink("nowhere", p) == 0, p);
}

static void show(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        printf("%-16s %s\n", path, strerror(errno));
        return;
    }
    const char *kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "dir" : S_ISFIFO(st.st_mode) ? "fifo" : S_ISLNK(st.st_mode) ? "link" : "other";
    printf("%-16s %5u %5u %04o %s\n", path, (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777), kind);
}

static void show_all(const char *prefix)
{
    static const char *kinds[] = {"file", "dir", "fifo", "link"};
    char p[64];
    for (unsigned i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(p, sizeof p, "%s.%s", prefix, kinds[i]);
        show(p);
    }
}

/* The Uid: and Gid: lines of /proc/self/status (real, effective, saved, file-system). */
static void show_ids(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    must(f != NULL, "/proc/self/status");
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Uid:", 4) == 0 || strncmp(line, "Gid:", 4) == 0)
            fputs(line, stdout);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (geteuid() != 0) {
        fprintf(stderr, "owners: run me as root\n");
        return 2;
    }
    must(chdir(argc > 1 ? argv[1] : ".") == 0, "chdir");
    umask(022);
    /* World-writable, so that uid 1000 may create in it natively too. */
    must(mkdir("t", 0777) == 0 && chmod("t", 0777) == 0 && chdir("t") == 0, "t");
    must(mkdir("sg", 0755) == 0 && chown("sg", 0, 50) == 0 && chmod("sg", 02777) == 0, "sg");

    printf("as root\n");
    make_all("root");
    make_all("sg/root");

    int was_uid = setfsuid(1000), was_gid = setfsgid(1000);
    printf("setfsuid(1000) was %d, setfsgid(1000) was %d\n", was_uid, was_gid);
    printf("setfsuid(-1) is %d, setfsgid(-1) is %d\n", setfsuid(-1), setfsgid(-1));
    show_ids();
    make_all("fs");
    make_all("sg/fs");
    must(mkdir("sg/fs.dir/deep", 0700) == 0, "sg/fs.dir/deep");
    was_uid = setfsuid(0);
    was_gid = setfsgid(0);
    printf("setfsuid(0) was %d, setfsgid(0) was %d\n", was_uid, was_gid);

    must(setgroups(0, NULL) == 0, "setgroups");
    must(setresgid(1000, 1000, 1000) == 0, "setresgid");
    must(setresuid(1000, 1000, 1000) == 0, "setresuid");
    printf("as 1000:1000\n");
    show_ids();
    was_uid = setfsuid(0);
    printf("setfsuid(0) was %d, then setfsuid(-1) is %d\n", was_uid, setfsuid(-1));
    make_all("user");
    make_all("sg/user");
    must(mkdir("sg/user.dir/deep", 0750) == 0, "sg/user.dir/deep");
    make_file("sg/user.node", O_CREAT | O_EXCL | O_WRONLY, 0600);
    /* Through a dangling symlink: its target is created, the link unchanged. */
    must(symlink("user.made", "user.dangling") == 0, "user.dangling");
    make_file("user.dangling", O_CREAT | O_WRONLY, 0600);
    /* Existing files keep their owner; a hard link is the same inode. */
    make_file("root.file", O_CREAT | O_RDONLY, 0666);
    make_file("sg/fs.file", O_CREAT | O_RDONLY, 0666);
    must(link("user.file", "sg/user.hard") == 0, "sg/user.hard");

    printf("owners\n");
    show("sg");
    show_all("root");
    show_all("sg/root");
    show_all("fs");
    show_all("sg/fs");
    show("sg/fs.dir/deep");
    show_all("user");
    show_all("sg/user");
    show("sg/user.dir/deep");
    show("sg/user.node");
    show("user.dangling");
    show("user.made");
    show("sg/user.hard");
    printf("end\n");
    return 0;
}
