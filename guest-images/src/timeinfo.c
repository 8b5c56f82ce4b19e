/*
 * timeinfo: time, identity and system-information syscalls: clock_gettime
 * (REALTIME, MONOTONIC), gettimeofday, time, nanosleep, uname, sysinfo,
 * getrandom, getpid/getppid/gettid, get[e]uid/get[e]gid, getcwd,
 * sched_getaffinity, getrlimit. Values that vary between runs or hosts are
 * reduced to facts ("monotonic advanced: yes"), so a vNode run prints
 * exactly what a native run prints. Exit 0 if every fact holds, 1 otherwise.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static unsigned long failures;

static void fact(const char *what, int ok)
{
    printf("%s: %s\n", what, ok ? "yes" : "no");
    if (!ok)
        failures++;
}

static double ts_sec(const struct timespec *t)
{
    return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

int main(void)
{
    struct timespec rt, mono0, mono1, req = {0, 10 * 1000 * 1000};
    struct timeval tv;

    fact("clock_gettime REALTIME ok", clock_gettime(CLOCK_REALTIME, &rt) == 0);
    fact("realtime after 2020", rt.tv_sec > 1577836800);
    fact("realtime tv_nsec in range", rt.tv_nsec >= 0 && rt.tv_nsec < 1000000000);
    fact("clock_gettime MONOTONIC ok", clock_gettime(CLOCK_MONOTONIC, &mono0) == 0);
    fact("gettimeofday ok", gettimeofday(&tv, NULL) == 0);
    fact("gettimeofday within 5s of realtime",
         tv.tv_sec >= rt.tv_sec && tv.tv_sec - rt.tv_sec <= 5 && tv.tv_usec < 1000000);
    time_t t = time(NULL);
    fact("time within 5s of realtime", t >= rt.tv_sec && t - rt.tv_sec <= 5);

    fact("nanosleep 10ms ok", nanosleep(&req, NULL) == 0);
    clock_gettime(CLOCK_MONOTONIC, &mono1);
    double slept = ts_sec(&mono1) - ts_sec(&mono0);
    fact("monotonic advanced", slept > 0);
    fact("nanosleep >= 10ms", slept >= 0.010);
    fact("nanosleep < 5s", slept < 5.0);

    struct utsname u;
    if (uname(&u) == 0) {
        printf("uname sysname: %s\n", u.sysname);
        printf("uname machine: %s\n", u.machine);
        fact("uname nodename nonempty", u.nodename[0] != '\0');
        fact("uname release nonempty", u.release[0] != '\0');
    } else {
        fact("uname ok", 0);
    }

    struct sysinfo si;
    fact("sysinfo ok", sysinfo(&si) == 0);
    fact("sysinfo totalram > 0", si.totalram > 0 && si.mem_unit >= 1);
    fact("sysinfo freeram <= totalram", si.freeram <= si.totalram);
    fact("sysinfo procs >= 1", si.procs >= 1);

    unsigned char rnd[16];
    memset(rnd, 0, sizeof rnd);
    ssize_t got = getrandom(rnd, sizeof rnd, 0);
    printf("getrandom: %zd bytes\n", got);
    int nonzero = 0;
    for (size_t i = 0; i < sizeof rnd; i++)
        nonzero |= rnd[i];
    fact("getrandom not all zero", nonzero != 0);

    pid_t pid = getpid();
    fact("getpid > 0", pid > 0);
    fact("getppid >= 0", getppid() >= 0);
    fact("gettid == getpid (single thread)", gettid() == pid);
    fact("getuid == geteuid", getuid() == geteuid());
    fact("getgid == getegid", getgid() == getegid());

    char cwd[4096];
    fact("getcwd absolute", getcwd(cwd, sizeof cwd) != NULL && cwd[0] == '/');

    cpu_set_t set;
    CPU_ZERO(&set);
    fact("sched_getaffinity ok", sched_getaffinity(0, sizeof set, &set) == 0);
    fact("affinity has >= 1 cpu", CPU_COUNT(&set) >= 1);

    struct rlimit rl;
    fact("getrlimit STACK ok", getrlimit(RLIMIT_STACK, &rl) == 0);
    fact("RLIMIT_STACK cur > 0 and <= max", rl.rlim_cur > 0 && rl.rlim_cur <= rl.rlim_max);
    fact("getrlimit NOFILE ok", getrlimit(RLIMIT_NOFILE, &rl) == 0);
    fact("RLIMIT_NOFILE cur >= 3 and <= max", rl.rlim_cur >= 3 && rl.rlim_cur <= rl.rlim_max);

    printf("%s\n", failures ? "FAILED" : "all facts hold");
    return failures ? 1 : 0;
}
