/*
 * vdsotime: the calls a vDSO serves (clock_gettime, gettimeofday, time,
 * sched_getcpu), checked for what must hold wherever the program runs:
 *   vdso: yes                 AT_SYSINFO_EHDR is set
 *   monotonic: ok             MONOTONIC and BOOTTIME never go back, over
 *                             READS interleaved readings of every clock
 *   realtime steps: ok        REALTIME never goes back (nobody sets the
 *                             clock during the run)
 *   agree: ok                 gettimeofday and time() fall between the
 *                             REALTIME readings around them, BOOTTIME
 *                             between the MONOTONIC ones
 *   getcpu: ok                sched_getcpu() is a CPU of the affinity set
 * then, not comparable between runs:
 *   realtime: SEC.NSEC        for the caller to compare with its own clock
 *   ns per clock_gettime: N   the cost of one call
 * Exit status 0 when every check passed.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

#define READS 200000

static long long ns(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

int main(void)
{
    int failed = 0;
    printf("vdso: %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");

    struct timespec m0, b0, r0, m, b, r, m2, r2;
    /* BOOTTIME - MONOTONIC (the time suspended): the smallest of a few readings, so that a
     * preemption between the two reads does not count. */
    long long boot_gap = -1;
    for (int i = 0; i < 100; i++) {
        clock_gettime(CLOCK_MONOTONIC, &m0);
        clock_gettime(CLOCK_BOOTTIME, &b0);
        if (boot_gap < 0 || ns(&b0) - ns(&m0) < boot_gap)
            boot_gap = ns(&b0) - ns(&m0);
    }
    clock_gettime(CLOCK_REALTIME, &r0);
    int mono_ok = 1, real_ok = 1, agree_ok = 1;
    for (int i = 0; i < READS; i++) {
        clock_gettime(CLOCK_MONOTONIC, &m);
        clock_gettime(CLOCK_BOOTTIME, &b);
        clock_gettime(CLOCK_REALTIME, &r);
        clock_gettime(CLOCK_MONOTONIC, &m2);
        if (ns(&m) < ns(&m0) || ns(&m2) < ns(&m) || ns(&b) < ns(&b0))
            mono_ok = 0;
        if (ns(&r) < ns(&r0))
            real_ok = 0;
        /* BOOTTIME was read between the two MONOTONIC readings (0.1 ms of slack). */
        if (ns(&b) - boot_gap < ns(&m) - 100000 || ns(&b) - boot_gap > ns(&m2) + 100000)
            agree_ok = 0;
        if (i % 1000 == 0) {
            struct timeval tv;
            gettimeofday(&tv, NULL);
            time_t t = time(NULL);
            clock_gettime(CLOCK_REALTIME, &r2);
            /* Each read between the REALTIME readings around it (gettimeofday in whole us). */
            long long tv_ns = (long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
            if (tv_ns < ns(&r) - 1000 || tv_ns > ns(&r2))
                agree_ok = 0;
            /* time() reads the coarse clock, updated once a tick: just after a second begins
             * it may still say the one before (Linux does this too). */
            if (t < r.tv_sec - 1 || t > r2.tv_sec)
                agree_ok = 0;
        }
        m0 = m2;
        b0 = b;
        r0 = r;
    }
    printf("monotonic: %s\n", mono_ok ? "ok" : "WENT BACK");
    printf("realtime steps: %s\n", real_ok ? "ok" : "WENT BACK");
    printf("agree: %s\n", agree_ok ? "ok" : "DISAGREE");
    failed |= !mono_ok || !real_ok || !agree_ok;

    cpu_set_t set;
    int cpu = sched_getcpu();
    int cpu_ok = sched_getaffinity(0, sizeof set, &set) == 0 && cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &set);
    printf("getcpu: %s\n", cpu_ok ? "ok" : "NOT IN THE AFFINITY SET");
    failed |= !cpu_ok;

    clock_gettime(CLOCK_REALTIME, &r);
    printf("realtime: %lld.%09ld\n", (long long)r.tv_sec, r.tv_nsec);
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (int i = 0; i < READS; i++)
        clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_MONOTONIC, &e);
    printf("ns per clock_gettime: %.1f\n", (double)(ns(&e) - ns(&s)) / READS);
    return failed;
}
