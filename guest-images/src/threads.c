/* Thread semantics, one case per argument; output and exit status must match a native run.
 *
 *   threads basic N      N threads: mutex, condition variable, barrier, TLS, join
 *   threads exit         a thread's exit(2) ends only that thread
 *   threads leader-exit  the first thread exits; the process lives on, and ends with its status
 *   threads exit-group   exit_group in a thread ends threads blocked in join, futex and sleep
 *   threads segv         a thread's SIGSEGV ends the whole process
 *   threads futex        futex timeouts, EAGAIN, bitsets, requeue, wake-op
 *   threads robust       a robust mutex whose owner thread died: EOWNERDEAD
 *   threads idle N MS    N threads besides the first sleep MS milliseconds (for load figures)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* From linux/futex.h, which musl's headers lack. */
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129
#define FUTEX_REQUEUE_PRIVATE 131
#define FUTEX_CMP_REQUEUE_PRIVATE 132
#define FUTEX_WAKE_OP_PRIVATE 133
#define FUTEX_WAIT_BITSET_PRIVATE 137
#define FUTEX_CLOCK_REALTIME 256
#define FUTEX_BITSET_MATCH_ANY 0xffffffffu
#define FUTEX_OP_ADD 1
#define FUTEX_OP_CMP_EQ 0
#define FUTEX_OP(op, oparg, cmp, cmparg) (((op & 0xf) << 28) | ((cmp & 0xf) << 24) | ((oparg & 0xfff) << 12) | (cmparg & 0xfff))

static void die(const char *what, int err) {
    fprintf(stderr, "%s: %s\n", what, strerror(err));
    exit(1);
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int e_ = (call);                                                                           \
        if (e_ != 0) die(#call, e_);                                                               \
    } while (0)

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts, uint32_t *uaddr2, uint32_t val3) {
    return syscall(SYS_futex, uaddr, op, val, ts, uaddr2, val3);
}

static double now_s(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- basic ---- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t barrier;
static long counter;
static int turn;
static int nthreads;
static __thread long mine = -1;

static void *basic_worker(void *arg) {
    long id = (long)arg;
    mine = id * 1000;
    for (int i = 0; i < 2000; i++) {
        CHECK(pthread_mutex_lock(&lock));
        counter++;
        CHECK(pthread_mutex_unlock(&lock));
    }
    pthread_barrier_wait(&barrier);
    /* Take turns in id order through the condition variable. */
    CHECK(pthread_mutex_lock(&lock));
    while (turn != id) CHECK(pthread_cond_wait(&turn_changed, &lock));
    printf("thread %ld: counter %ld, tls %ld, tid differs from pid: %d\n", id, counter, mine,
           (pid_t)syscall(SYS_gettid) != getpid());
    fflush(stdout);
    turn++;
    CHECK(pthread_cond_broadcast(&turn_changed));
    CHECK(pthread_mutex_unlock(&lock));
    return (void *)(id * id);
}

static int basic(int n) {
    pthread_t t[64];
    if (n < 1 || n > 64) return 2;
    nthreads = n;
    CHECK(pthread_barrier_init(&barrier, NULL, n));
    for (long i = 0; i < n; i++) CHECK(pthread_create(&t[i], NULL, basic_worker, (void *)i));
    long sum = 0;
    for (int i = 0; i < n; i++) {
        void *ret;
        CHECK(pthread_join(t[i], &ret));
        sum += (long)ret;
    }
    printf("joined %d threads: counter %ld, sum of returns %ld, main tls %ld\n", n, counter, sum, mine);
    return 0;
}

static void *sleeps(void *ms) {
    struct timespec d = {(long)ms / 1000, (long)ms % 1000 * 1000000};
    nanosleep(&d, NULL);
    return NULL;
}

static int idle(int n, long ms) {
    pthread_t t[64];
    if (n < 1 || n > 64 || ms < 0) return 2;
    for (int i = 0; i < n; i++) CHECK(pthread_create(&t[i], NULL, sleeps, (void *)ms));
    for (int i = 0; i < n; i++) CHECK(pthread_join(t[i], NULL));
    printf("%d threads slept %ld ms\n", n, ms);
    return 0;
}

/* ---- exit, leader-exit, exit-group ---- */

static void *exits_alone(void *arg) {
    (void)arg;
    syscall(SYS_exit, 7);
    return NULL;
}

static int thread_exit(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, exits_alone, NULL));
    CHECK(pthread_join(t, NULL));
    printf("the main thread goes on after its thread's exit\n");
    return 0;
}

static void *outlives_leader(void *arg) {
    (void)arg;
    struct timespec d = {0, 100 * 1000 * 1000};
    nanosleep(&d, NULL);
    printf("the second thread outlived the first\n");
    fflush(stdout);
    syscall(SYS_exit, 9);
    return NULL;
}

static int leader_exit(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, outlives_leader, NULL));
    printf("the first thread exits\n");
    fflush(stdout);
    syscall(SYS_exit, 5);
    return 1;
}

static uint32_t never;

static void *sleeps_long(void *arg) {
    (void)arg;
    sleep(1000);
    return NULL;
}

static void *waits_forever(void *arg) {
    (void)arg;
    futex(&never, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

static void *ends_everything(void *arg) {
    (void)arg;
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, NULL);
    printf("exit_group from a thread\n");
    fflush(stdout);
    syscall(SYS_exit_group, 42);
    return NULL;
}

static int exit_group_case(void) {
    pthread_t a, b, c;
    CHECK(pthread_create(&a, NULL, sleeps_long, NULL));
    CHECK(pthread_create(&b, NULL, waits_forever, NULL));
    CHECK(pthread_create(&c, NULL, ends_everything, NULL));
    pthread_join(a, NULL);
    printf("not reached\n");
    return 1;
}

/* ---- segv ---- */

static void *crashes(void *arg) {
    volatile int *p = arg;
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    *p = 1;
    return NULL;
}

static int segv(void) {
    pthread_t a, b;
    printf("a thread is about to crash\n");
    fflush(stdout);
    CHECK(pthread_create(&a, NULL, sleeps_long, NULL));
    CHECK(pthread_create(&b, NULL, crashes, NULL));
    pthread_join(a, NULL);
    printf("not reached\n");
    return 1;
}

/* ---- futex ---- */

static uint32_t fa, fb;

static void *waits_on_fa(void *arg) {
    (void)arg;
    while (__atomic_load_n(&fa, __ATOMIC_SEQ_CST) == 0) futex(&fa, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

static int arrived;

static void *waits_on_fa_once(void *arg) {
    __atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
    long r = futex(&fa, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    *(long *)arg = r;
    return NULL;
}

/* Waits until `n` more waiters have arrived, then long enough for them to be queued. */
static void wait_for_waiters(int n) {
    static int seen;
    seen += n;
    while (__atomic_load_n(&arrived, __ATOMIC_SEQ_CST) < seen) sched_yield();
    struct timespec d = {0, 100 * 1000 * 1000};
    nanosleep(&d, NULL);
}

static int futex_case(void) {
    uint32_t word = 0;
    struct timespec rel = {0, 50 * 1000 * 1000};
    double t0 = now_s(CLOCK_MONOTONIC);
    long r = futex(&word, FUTEX_WAIT_PRIVATE, 0, &rel, NULL, 0);
    double waited = now_s(CLOCK_MONOTONIC) - t0;
    printf("wait with a 50 ms timeout: %ld %s, waited at least 50 ms: %d, under 2 s: %d\n", r, strerror(errno),
           waited >= 0.05, waited < 2);
    r = futex(&word, FUTEX_WAIT_PRIVATE, 1, &rel, NULL, 0);
    printf("wait on a changed word: %ld %s\n", r, strerror(errno));
    struct timespec abs;
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_nsec += 30 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) abs.tv_sec++, abs.tv_nsec -= 1000000000;
    r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &abs, NULL, FUTEX_BITSET_MATCH_ANY);
    printf("bitset wait to a realtime deadline: %ld %s\n", r, strerror(errno));
    r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 0, &rel, NULL, 0);
    printf("bitset 0: %ld %s\n", r, strerror(errno));
    r = futex(&word, FUTEX_WAKE_PRIVATE, 5, NULL, NULL, 0);
    printf("wake with nobody waiting: %ld\n", r);
    r = futex((uint32_t *)((char *)&word + 1), FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    printf("unaligned: %ld %s\n", r, strerror(errno));

    /* Three waiters on fa: wake one, move two to fb, wake those from fb. */
    pthread_t t[3];
    long ret[3] = {-9, -9, -9};
    for (int i = 0; i < 3; i++) CHECK(pthread_create(&t[i], NULL, waits_on_fa_once, &ret[i]));
    wait_for_waiters(3);
    r = futex(&fa, FUTEX_CMP_REQUEUE_PRIVATE, 1, (void *)2L, &fb, 1);
    printf("cmp_requeue with a stale value: %ld %s\n", r, strerror(errno));
    r = futex(&fa, FUTEX_CMP_REQUEUE_PRIVATE, 1, (void *)2L, &fb, 0);
    printf("cmp_requeue: woken + moved = %ld\n", r);
    r = futex(&fa, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0);
    printf("left on the first word: %ld\n", r);
    r = futex(&fb, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0);
    printf("woken from the second word: %ld\n", r);
    for (int i = 0; i < 3; i++) CHECK(pthread_join(t[i], NULL));
    printf("the waiters returned %ld %ld %ld\n", ret[0], ret[1], ret[2]);

    /* Wake-op: one waiter each on fa and fb; fb += 1 and wake fb's waiter if it was 0. */
    fa = 0;
    fb = 0;
    pthread_t w1, w2;
    CHECK(pthread_create(&w1, NULL, waits_on_fa_once, &ret[0]));
    CHECK(pthread_create(&w2, NULL, waits_on_fa_once, &ret[1]));
    wait_for_waiters(2);
    r = futex(&fa, FUTEX_REQUEUE_PRIVATE, 0, (void *)1L, &fb, 0);
    printf("requeue one to the second word: %ld\n", r);
    r = futex(&fa, FUTEX_WAKE_OP_PRIVATE, 1, (void *)1L, &fb, FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0));
    printf("wake_op: woken %ld, second word now %u\n", r, fb);
    CHECK(pthread_join(w1, NULL));
    CHECK(pthread_join(w2, NULL));

    /* A waiter that loops until the word changes. */
    fa = 0;
    pthread_t w3;
    CHECK(pthread_create(&w3, NULL, waits_on_fa, NULL));
    __atomic_store_n(&fa, 1, __ATOMIC_SEQ_CST);
    futex(&fa, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    CHECK(pthread_join(w3, NULL));
    printf("a waiter saw the word change\n");
    return 0;
}

/* ---- robust ---- */

static pthread_mutex_t robust;

static void *dies_holding(void *arg) {
    (void)arg;
    CHECK(pthread_mutex_lock(&robust));
    return NULL;
}

static int robust_case(void) {
    pthread_mutexattr_t a;
    CHECK(pthread_mutexattr_init(&a));
    CHECK(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST));
    CHECK(pthread_mutex_init(&robust, &a));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, dies_holding, NULL));
    CHECK(pthread_join(t, NULL));
    int r = pthread_mutex_lock(&robust);
    printf("locking a mutex whose owner died: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    if (r == EOWNERDEAD) CHECK(pthread_mutex_consistent(&robust));
    CHECK(pthread_mutex_unlock(&robust));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: threads basic N|exit|leader-exit|exit-group|segv|futex|robust|idle N MS\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "basic")) return basic(argc > 2 ? atoi(argv[2]) : 4);
    if (!strcmp(c, "exit")) return thread_exit();
    if (!strcmp(c, "leader-exit")) return leader_exit();
    if (!strcmp(c, "exit-group")) return exit_group_case();
    if (!strcmp(c, "segv")) return segv();
    if (!strcmp(c, "futex")) return futex_case();
    if (!strcmp(c, "robust")) return robust_case();
    if (!strcmp(c, "idle") && argc == 4) return idle(atoi(argv[2]), atol(argv[3]));
    fprintf(stderr, "unknown case %s\n", c);
    return 2;
}
