/* lego's vDSO: clock_gettime, gettimeofday, time and getcpu without leaving the guest.
 *
 * Time comes from the TSC (readable at CPL3 in a vNode) turned into nanoseconds with the
 * parameters the VMM keeps current in the data page mapped one page below this image (see
 * vdso.h); clocks it does not cover, and any call before the VMM has calibrated the TSC, are
 * made as system calls. getcpu reads TSC_AUX with rdtscp, which holds (node << 12 | cpu) of
 * the host CPU the vCPU runs on. Built by lego-vmm/build.rs; linked by vdso.lds. */
#include "vdso.h"

typedef long time_t;
struct timespec { time_t tv_sec; long tv_nsec; };
struct timeval { time_t tv_sec; long tv_usec; };
struct timezone { int tz_minuteswest; int tz_dsttime; };

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7

#define NR_gettimeofday 96
#define NR_time 201
#define NR_clock_gettime 228
#define NR_clock_getres 229
#define NR_getcpu 309

#define NSEC_PER_SEC 1000000000UL

/* The data page, placed by the linker script one page below the image. */
extern const volatile struct vdso_data vvar __attribute__((visibility("hidden")));

static inline long sys2(long nr, long a, long b)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return ret;
}

static inline long sys3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static inline unsigned long rdtsc_ordered(void)
{
	unsigned int lo, hi;
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return ((unsigned long)hi << 32) | lo;
}

/* Nanoseconds of `clock` now; 0 if the page says to make a system call. */
static unsigned long clock_ns(int clock)
{
	unsigned long seq, ns, delta, base;
	do {
		seq = vvar.seq;
		__asm__ volatile("" ::: "memory");
		if (seq & 1) {
			__asm__ volatile("pause");
			continue;
		}
		if (vvar.mode != VDSO_MODE_TSC)
			return 0;
		switch (clock) {
		case CLOCK_REALTIME:
		case CLOCK_REALTIME_COARSE:
			base = vvar.real_ns;
			break;
		case CLOCK_BOOTTIME:
			base = vvar.boot_ns;
			break;
		default:
			base = vvar.mono_ns;
			break;
		}
		unsigned long now = rdtsc_ordered();
		/* A TSC read just before the VMM's own (on another CPU) counts as no time. */
		delta = now > vvar.tsc_base ? now - vvar.tsc_base : 0;
		ns = base + (unsigned long)(((unsigned __int128)delta * vvar.mult) >> 32);
		__asm__ volatile("" ::: "memory");
	} while ((seq & 1) || vvar.seq != seq);
	return ns;
}

static int covered(int clock)
{
	switch (clock) {
	case CLOCK_REALTIME:
	case CLOCK_MONOTONIC:
	case CLOCK_REALTIME_COARSE:
	case CLOCK_MONOTONIC_COARSE:
	case CLOCK_BOOTTIME:
		return 1;
	default:
		return 0;
	}
}

int __vdso_clock_gettime(int clock, struct timespec *ts)
{
	unsigned long ns = covered(clock) ? clock_ns(clock) : 0;
	if (!ns)
		return (int)sys2(NR_clock_gettime, clock, (long)ts);
	ts->tv_sec = (time_t)(ns / NSEC_PER_SEC);
	ts->tv_nsec = (long)(ns % NSEC_PER_SEC);
	return 0;
}

int __vdso_gettimeofday(struct timeval *tv, struct timezone *tz)
{
	unsigned long ns = clock_ns(CLOCK_REALTIME);
	if (!ns)
		return (int)sys2(NR_gettimeofday, (long)tv, (long)tz);
	if (tv) {
		tv->tv_sec = (time_t)(ns / NSEC_PER_SEC);
		tv->tv_usec = (long)(ns % NSEC_PER_SEC / 1000);
	}
	if (tz) {
		tz->tz_minuteswest = 0;
		tz->tz_dsttime = 0;
	}
	return 0;
}

time_t __vdso_time(time_t *t)
{
	unsigned long ns = clock_ns(CLOCK_REALTIME);
	if (!ns)
		return sys2(NR_time, (long)t, 0);
	time_t secs = (time_t)(ns / NSEC_PER_SEC);
	if (t)
		*t = secs;
	return secs;
}

int __vdso_clock_getres(int clock, struct timespec *res)
{
	if (!covered(clock) || vvar.mode != VDSO_MODE_TSC)
		return (int)sys2(NR_clock_getres, clock, (long)res);
	if (res) {
		res->tv_sec = 0;
		res->tv_nsec = 1;
	}
	return 0;
}

long __vdso_getcpu(unsigned *cpu, unsigned *node, void *cache)
{
	unsigned int lo, hi, aux;
	(void)cache;
	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	(void)lo;
	(void)hi;
	if (cpu)
		*cpu = aux & 0xfff;
	if (node)
		*node = aux >> 12;
	return 0;
}

int clock_gettime(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval *, struct timezone *) __attribute__((weak, alias("__vdso_gettimeofday")));
time_t time(time_t *) __attribute__((weak, alias("__vdso_time")));
int clock_getres(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_getres")));
long getcpu(unsigned *, unsigned *, void *) __attribute__((weak, alias("__vdso_getcpu")));
