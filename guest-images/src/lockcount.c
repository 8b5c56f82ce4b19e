/*
 * lockcount: 4 processes share one file through record locks.
 *
 *   lockcount FILE ROUNDS
 *
 * FILE holds a 64-bit counter at offset 0 and, after it, one 8-byte slot per
 * increment. Each of 4 children does ROUNDS times: take a write lock on the
 * whole file (F_SETLKW), read the counter, write its own id and round into the
 * counter's slot, write the counter plus one, unlock. The parent waits for
 * them, then checks that the counter is 4 * ROUNDS and that every slot holds a
 * distinct (child, round) pair with each child's rounds in order; it prints
 * "lockcount: N increments, all slots distinct" and exits 0, or says what is
 * wrong and exits 1. Without the locks, increments are lost.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 4

static int lock_all(int fd, short type)
{
	struct flock l;
	memset(&l, 0, sizeof l);
	l.l_type = type;
	l.l_whence = SEEK_SET;
	return fcntl(fd, F_SETLKW, &l);
}

static int child(const char *path, int id, long rounds)
{
	int fd = open(path, O_RDWR);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	for (long r = 0; r < rounds; r++) {
		uint64_t n = 0, slot = ((uint64_t)id << 32) | (uint64_t)r;
		if (lock_all(fd, F_WRLCK) != 0) {
			perror("F_SETLKW");
			return 1;
		}
		if (pread(fd, &n, sizeof n, 0) < 0 ||
		    pwrite(fd, &slot, sizeof slot, 8 + 8 * (off_t)n) != sizeof slot) {
			perror("slot");
			return 1;
		}
		n++;
		if (pwrite(fd, &n, sizeof n, 0) != sizeof n) {
			perror("counter");
			return 1;
		}
		if (lock_all(fd, F_UNLCK) != 0) {
			perror("F_UNLCK");
			return 1;
		}
	}
	return close(fd) != 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: lockcount FILE ROUNDS\n");
		return 2;
	}
	const char *path = argv[1];
	long rounds = atol(argv[2]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint64_t zero = 0;
	if (fd < 0 || pwrite(fd, &zero, sizeof zero, 0) != sizeof zero || close(fd) != 0) {
		perror(path);
		return 1;
	}
	for (int id = 0; id < CHILDREN; id++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			_exit(child(path, id, rounds));
	}
	int failed = 0;
	for (int i = 0; i < CHILDREN; i++) {
		int status;
		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	if (failed) {
		fprintf(stderr, "lockcount: a child failed\n");
		return 1;
	}
	fd = open(path, O_RDONLY);
	uint64_t n = 0;
	if (fd < 0 || pread(fd, &n, sizeof n, 0) != sizeof n) {
		perror(path);
		return 1;
	}
	if (n != (uint64_t)(CHILDREN * rounds)) {
		printf("lockcount: counter %llu, want %ld\n", (unsigned long long)n, CHILDREN * rounds);
		return 1;
	}
	long next[CHILDREN] = {0};
	for (uint64_t i = 0; i < n; i++) {
		uint64_t slot;
		if (pread(fd, &slot, sizeof slot, 8 + 8 * (off_t)i) != sizeof slot) {
			perror("reading a slot");
			return 1;
		}
		uint32_t id = slot >> 32, r = (uint32_t)slot;
		if (id >= CHILDREN || r != next[id]) {
			printf("lockcount: slot %llu holds child %u round %u\n", (unsigned long long)i, id, r);
			return 1;
		}
		next[id]++;
	}
	printf("lockcount: %llu increments, all slots distinct\n", (unsigned long long)n);
	return 0;
}
