/* The vDSO's data page ([vvar]), written by the VMM (lego-vmm/src/vdso.rs, which must agree
 * with this layout) and read here under a sequence lock. All fields are 64-bit words. */
#ifndef LEGO_VDSO_H
#define LEGO_VDSO_H

struct vdso_data {
	unsigned long seq;       /* odd while the VMM writes */
	unsigned long mode;      /* VDSO_MODE_*: how to read the clocks */
	unsigned long tsc_base;  /* TSC value the bases below were taken at */
	unsigned long mult;      /* nanoseconds per TSC cycle, times 2^32 */
	unsigned long mono_ns;   /* CLOCK_MONOTONIC at tsc_base, in ns */
	unsigned long real_ns;   /* CLOCK_REALTIME at tsc_base, in ns since the epoch */
	unsigned long boot_ns;   /* CLOCK_BOOTTIME at tsc_base, in ns */
};

/* Not calibrated (yet): every call is a system call. */
#define VDSO_MODE_SYSCALL 0
/* The TSC, read in user mode, with the parameters above. */
#define VDSO_MODE_TSC 1

#endif
