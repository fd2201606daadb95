/*
 * check_fault.c - the fault suite: allocations and I/O fail in turn, as
 * SQLite's *fault.test files do with do_faultsim_test.  For each operation
 * of the wire codec and of the store, run n = 1, 2, 3, ... makes the nth
 * counted call fail (once, or from then on), asserts that the operation
 * either succeeded or returned the error its header documents, then, with
 * nothing failing any more, that the state is consistent (earlier frames
 * still in the buffer, nothing of a failed transaction visible, committed
 * data intact), and frees everything.  The loop stops at the first run in
 * which the fault never fired; that run must succeed.
 *
 * How calls fail: the program is linked with --wrap for malloc, calloc,
 * realloc, strdup, asprintf, vasprintf, read, write, poll, getrandom,
 * mkdir and openat (tests/fault.mk), which reroutes those calls of every object linked
 * in statically (this file, the convenience libraries libpyshelfwire and
 * libpyshelfstore, check) to the __wrap_* functions below.  LMDB is a
 * shared library that --wrap cannot reach, so its disk I/O (pread, pwrite,
 * writev, fdatasync, fsync, msync) is interposed instead: this program
 * defines those functions and the dynamic linker binds liblmdb's calls to
 * them.  Nothing fails unless a test has armed a fault, and tests disarm
 * before they assert.
 *
 * Core holds one test per operation; Limits holds a really full map, short
 * I/O everywhere, a poll that never reports ready and other edges.  Run it
 * under valgrind with CK_FORK=no: every failure path must be leak-free.
 *
 * Environment: TMPDIR (where the stores go), FAULT_VERBOSE=1 (print the
 * number of fault points of every loop; 2: every run's result),
 * CK_RUN_CASE, CK_FORK as usual.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store.h"
#include "wire.h"
#include "testutil.h"

/* --- the fault switch --------------------------------------------------- */

/* Kinds of call a fault is armed on; a mask, so that several kinds can
 * share one countdown (a write's EAGAIN and the poll that follows it). */
#define FK_ALLOC  0x01u /* malloc, calloc, realloc, strdup, (v)asprintf */
#define FK_READ   0x02u /* read(2) */
#define FK_WRITE  0x04u /* write(2) */
#define FK_POLL   0x08u /* poll(2) */
#define FK_RANDOM 0x10u /* getrandom(2) */
#define FK_MKDIR  0x20u /* mkdir(2) */
#define FK_DISK   0x40u /* LMDB's pread, pwrite, writev, fdatasync, fsync,
                           msync */
#define FK_OPENAT 0x80u /* openat(2): the store's blob files */

/* Most errors one run injects before it stops (or persists). */
#define FAULT_ERRS_MAX 2
/* A loop still failing after this many runs is a bug of its own. */
#define FAULT_RUNS_MAX 5000

/* How a loop makes calls fail, like one do_faultsim_test -faults entry. */
struct fault_spec {
	const char *name;         /* "read EIO, 4 KiB reads", for messages */
	unsigned kinds;           /* FK_* calls that count and may fail */
	int errs[FAULT_ERRS_MAX]; /* errno of the nth, (n+1)th... failing call;
	                             0: the call returns 0 instead (EOF, nothing
	                             written, poll timed out) */
	int nerrs;                /* entries of errs[] used (at least 1) */
	int persist;              /* then fail every later call, last errno */
	size_t cap;               /* short I/O: most bytes a read or write
	                             moves (0: no limit) */
	int benign;               /* the operation must succeed anyway */
	unsigned capkinds;        /* FK_* calls cap applies to, counted or
	                             not (0: those of kinds) */
};

/* The armed fault; kinds 0 means disarmed. */
static struct {
	unsigned kinds;                /* FK_* counted */
	long at;                       /* the call that fails first (1-based);
	                                  0: none, only count and cap */
	const struct fault_spec *spec; /* how */
	long calls;                    /* counted calls so far */
	long hits;                     /* failures injected so far */
} F;

/* Points that failed in this process, summed over all loops. */
static long fault_points_total;
/* Print each loop's count (FAULT_VERBOSE=1), and each run (2). */
static int fault_verbose;

/* Arm fs: its nth counted call fails (n 0: none). */
static void
fault_arm(const struct fault_spec *fs, long n)
{
	F.spec = fs;
	F.at = n;
	F.calls = 0;
	F.hits = 0;
	F.kinds = fs->kinds;
}

/* Disarm; returns how many calls were made to fail. */
static long
fault_disarm(void)
{
	long hits = F.hits;

	F.kinds = 0;
	F.spec = NULL;
	F.at = 0;
	return hits;
}

/* Count a call of kind; nonzero when it must fail, with *err its errno. */
static int
fault_fire(unsigned kind, int *err)
{
	const struct fault_spec *fs = F.spec;
	long i;

	if ((F.kinds & kind) == 0)
		return 0;
	i = ++F.calls - F.at;
	if (F.at <= 0 || i < 0)
		return 0;
	if (i >= fs->nerrs && !fs->persist)
		return 0;
	*err = fs->errs[i < fs->nerrs ? i : fs->nerrs - 1];
	F.hits++;
	return 1;
}

/* The byte count a call of kind may move: n, or less for short I/O. */
static size_t
fault_cap(unsigned kind, size_t n)
{
	const struct fault_spec *fs = F.spec;
	unsigned kinds;

	if (fs == NULL || fs->cap == 0 || n <= fs->cap)
		return n;
	kinds = fs->capkinds != 0 ? fs->capkinds : fs->kinds;
	return (kinds & kind) != 0 ? fs->cap : n;
}

/* --- wrapped calls (ld --wrap) ------------------------------------------ */

void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
char *__real_strdup(const char *);
int __real_vasprintf(char **, const char *, va_list);
ssize_t __real_read(int, void *, size_t);
ssize_t __real_write(int, const void *, size_t);
int __real_poll(struct pollfd *, nfds_t, int);
ssize_t __real_getrandom(void *, size_t, unsigned);
int __real_mkdir(const char *, mode_t);
int __real_openat(int, const char *, int, ...);

void *__wrap_malloc(size_t);
void *__wrap_calloc(size_t, size_t);
void *__wrap_realloc(void *, size_t);
char *__wrap_strdup(const char *);
int __wrap_asprintf(char **, const char *, ...);
int __wrap_vasprintf(char **, const char *, va_list);
ssize_t __wrap_read(int, void *, size_t);
ssize_t __wrap_write(int, const void *, size_t);
int __wrap_poll(struct pollfd *, nfds_t, int);
ssize_t __wrap_getrandom(void *, size_t, unsigned);
int __wrap_mkdir(const char *, mode_t);
int __wrap_openat(int, const char *, int, ...);

void *
__wrap_malloc(size_t n)
{
	int err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(n);
}

void *
__wrap_calloc(size_t k, size_t n)
{
	int err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(k, n);
}

/* A failing realloc leaves the old block alone, as the real one does. */
void *
__wrap_realloc(void *p, size_t n)
{
	int err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
	int err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_strdup(s);
}

/* On failure *sp is left as it was: glibc calls it undefined. */
int
__wrap_vasprintf(char **sp, const char *fmt, va_list ap)
{
	int err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return -1;
	}
	return __real_vasprintf(sp, fmt, ap);
}

int
__wrap_asprintf(char **sp, const char *fmt, ...)
{
	va_list ap;
	int rc, err;

	if (fault_fire(FK_ALLOC, &err)) {
		errno = ENOMEM;
		return -1;
	}
	va_start(ap, fmt);
	rc = __real_vasprintf(sp, fmt, ap);
	va_end(ap);
	return rc;
}

ssize_t
__wrap_read(int fd, void *p, size_t n)
{
	int err;

	if (fault_fire(FK_READ, &err)) {
		if (err == 0)
			return 0; /* an early EOF */
		errno = err;
		return -1;
	}
	return __real_read(fd, p, fault_cap(FK_READ, n));
}

ssize_t
__wrap_write(int fd, const void *p, size_t n)
{
	int err;

	if (fault_fire(FK_WRITE, &err)) {
		if (err == 0)
			return 0; /* wrote nothing, no error */
		errno = err;
		return -1;
	}
	return __real_write(fd, p, fault_cap(FK_WRITE, n));
}

int
__wrap_poll(struct pollfd *fds, nfds_t nfds, int ms)
{
	nfds_t i;
	int err;

	if (fault_fire(FK_POLL, &err)) {
		if (err == 0) {
			/* woke with nothing ready, as after a timeout */
			for (i = 0; i < nfds; i++)
				fds[i].revents = 0;
			return 0;
		}
		errno = err;
		return -1;
	}
	return __real_poll(fds, nfds, ms);
}

ssize_t
__wrap_getrandom(void *p, size_t n, unsigned flags)
{
	int err;

	if (fault_fire(FK_RANDOM, &err)) {
		errno = err;
		return -1;
	}
	return __real_getrandom(p, fault_cap(FK_RANDOM, n), flags);
}

int
__wrap_mkdir(const char *path, mode_t mode)
{
	int err;

	if (fault_fire(FK_MKDIR, &err)) {
		errno = err;
		return -1;
	}
	return __real_mkdir(path, mode);
}

int
__wrap_openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;
	int err;

	if (flags & O_CREAT) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	if (fault_fire(FK_OPENAT, &err)) {
		errno = err;
		return -1;
	}
	return __real_openat(dirfd, path, flags, mode);
}

/* --- interposed disk calls (liblmdb binds to these) --------------------- */

/* The real calls go straight to the kernel: no lookup, no allocation. */

ssize_t
pread(int fd, void *p, size_t n, off_t off)
{
	int err;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	return syscall(SYS_pread64, fd, p, n, off);
}

ssize_t
pwrite(int fd, const void *p, size_t n, off_t off)
{
	int err;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	return syscall(SYS_pwrite64, fd, p, fault_cap(FK_DISK, n), off);
}

/* Short writes cut the vector at the cap (LMDB writes at most 64). */
ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	struct iovec cut[64];
	size_t left;
	int err, i;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	left = fault_cap(FK_DISK, SIZE_MAX);
	if (left != SIZE_MAX && cnt > 0 && cnt <= 64) {
		for (i = 0; i < cnt && left > 0; i++) {
			cut[i] = iov[i];
			if (cut[i].iov_len > left)
				cut[i].iov_len = left;
			left -= cut[i].iov_len;
		}
		return syscall(SYS_writev, fd, cut, i);
	}
	return syscall(SYS_writev, fd, iov, cnt);
}

int
fdatasync(int fd)
{
	int err;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

int
fsync(int fd)
{
	int err;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

int
msync(void *p, size_t n, int flags)
{
	int err;

	if (fault_fire(FK_DISK, &err)) {
		errno = err;
		return -1;
	}
	return (int)syscall(SYS_msync, p, n, flags);
}

/* --- the loop ----------------------------------------------------------- */

/* One operation under fault, as do_faultsim_test's -prep, -body, -test. */
struct fault_op {
	const char *what;                 /* "wire_conn_read" */
	void (*prep)(void *arg);          /* before arming (may be NULL) */
	int (*body)(void *arg);           /* the operation, armed */
	/* Disarmed: assert rc (errno err) and the state, free everything.
	 * hits: how many calls failed in this run. */
	void (*test)(void *arg, const struct fault_spec *fs, int rc, int err,
	             long hits);
};

/* The run in progress, for messages. */
static long fault_run;

/*
 * Run op with fs's nth call failing for n = 1, 2, ... until a run in which
 * nothing failed (that run must return 0).  Returns the number of fault
 * points, the runs in which something failed.
 */
static long
faultsim(const struct fault_op *op, const struct fault_spec *fs, void *arg)
{
	long n, hits;
	int rc, err;

	for (n = 1;; n++) {
		ck_assert_msg(n <= FAULT_RUNS_MAX, "%s, %s: still failing "
		    "after %d runs", op->what, fs->name, FAULT_RUNS_MAX);
		fault_run = n;
		if (op->prep != NULL)
			op->prep(arg);
		fault_arm(fs, n);
		errno = 0;
		rc = op->body(arg);
		err = errno;
		hits = fault_disarm();
		if (fault_verbose > 1)
			printf("fault: %s, %s, run %ld: %ld failed, rc %d (%s)\n",
			    op->what, fs->name, n, hits, rc, strerror(err));
		ck_assert_msg(hits > 0 || rc == 0, "%s, %s, run %ld: failed "
		    "(%d) with no fault injected", op->what, fs->name, n, rc);
		ck_assert_msg(!fs->benign || rc == 0, "%s, %s, run %ld: "
		    "failed (%d) on a fault it must ride out", op->what,
		    fs->name, n, rc);
		op->test(arg, fs, rc, err, hits);
		if (hits == 0)
			break;
	}
	fault_points_total += n - 1;
	if (fault_verbose)
		printf("fault: %-24s %-34s %4ld points\n", op->what, fs->name,
		    n - 1);
	return n - 1;
}

/* faultsim() for each of n specs; returns the points of all. */
static long
faultsim_all(const struct fault_op *op, const struct fault_spec *fs,
             size_t n, void *arg)
{
	long points = 0;
	size_t i;

	for (i = 0; i < n; i++)
		points += faultsim(op, &fs[i], arg);
	return points;
}

#define NELEM(a) (sizeof (a) / sizeof (a)[0])

/* --- payloads and frames ------------------------------------------------ */

/* Fill p[0..n) with bytes that depend on seed and position (xorshift64). */
static void
pattern_fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

/* Nonzero when p[0..n) is pattern_fill(seed); allocates nothing. */
static int
pattern_ok(const uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	size_t i;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (p[i] != (uint8_t)(x >> 24))
			return 0;
	}
	return 1;
}

/* FNV-1a of a string: the payload seed of an entry named s. */
static uint64_t
seed_of(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s != '\0')
		h = (h ^ (uint8_t)*s++) * 0x100000001b3ull;
	return h;
}

/* The frames the wire tests build, send and parse. */
#define NFRAMES 4
#define NPICKLES 8     /* ARG_PICKLE fields of frame 1 */
#define NLISTED 200    /* KEY fields of frame 3: grows a message's array */
#define PICKLE_SIZE(k) ((size_t)1500 * ((k) + 1))

/* Scratch for one pickle; filled per field. */
static uint8_t pickle_buf[PICKLE_SIZE(NPICKLES)];

/* Append the fields of frame 1 (EXEC): growing pickles, half of them
 * written in place through wire_put_reserve. */
static void
frame_put_exec(wire_buf *b)
{
	uint8_t *p;
	int k;

	wire_put_str(b, WIRE_TAG_CODE, "def f(*a):\n    return a\n");
	wire_put_str(b, WIRE_TAG_FUNC, "f");
	for (k = 0; k < NPICKLES; k++) {
		wire_put_u64(b, WIRE_TAG_ARG_HANDLE, (uint64_t)k + 1);
		if (k % 2 == 0) {
			pattern_fill(pickle_buf, PICKLE_SIZE(k), (uint64_t)k);
			wire_put_bytes(b, WIRE_TAG_ARG_PICKLE, pickle_buf,
			    PICKLE_SIZE(k));
		} else if ((p = wire_put_reserve(b, WIRE_TAG_ARG_PICKLE,
		    PICKLE_SIZE(k))) != NULL)
			pattern_fill(p, PICKLE_SIZE(k), (uint64_t)k);
	}
}

/* Build frame i (0 HELLO, 1 big EXEC, 2 ERROR, 3 LISTING of NLISTED keys)
 * at the end of b; returns wire_end()'s result. */
static int
frame_build(wire_buf *b, int i)
{
	char key[16];
	int k;

	switch (i) {
	case 0:
		wire_begin(b, WIRE_MSG_HELLO, 100);
		wire_put_u64(b, WIRE_TAG_VERSION, WIRE_PROTOCOL_VERSION);
		wire_put_str(b, WIRE_TAG_NAME, "check_fault");
		break;
	case 1:
		wire_begin(b, WIRE_MSG_EXEC, 101);
		frame_put_exec(b);
		break;
	case 2:
		wire_begin(b, WIRE_MSG_ERROR, 102);
		wire_put_u64(b, WIRE_TAG_ERRCODE, WIRE_ERR_INTERNAL);
		wire_put_str(b, WIRE_TAG_MESSAGE, "out of memory");
		break;
	default:
		wire_begin(b, WIRE_MSG_LISTING, 103);
		for (k = 0; k < NLISTED; k++) {
			snprintf(key, sizeof key, "key%03d", k);
			wire_put_str(b, WIRE_TAG_KEY, key);
		}
		break;
	}
	return wire_end(b);
}

/* Nonzero when field f holds exactly the string s. */
static int
field_is(const wire_field *f, const char *s)
{
	return f != NULL && f->len == strlen(s) && memcmp(f->data, s, f->len) == 0;
}

/* Nonzero when frame 1's fields are all there; allocates nothing. */
static int
frame_exec_ok(const wire_msg *m)
{
	const wire_field *f;
	int k;

	if (m->nfields != 2 + 2 * NPICKLES ||
	    !field_is(&m->fields[0], "def f(*a):\n    return a\n") ||
	    !field_is(&m->fields[1], "f"))
		return 0;
	for (k = 0; k < NPICKLES; k++) {
		f = &m->fields[2 + 2 * k];
		if (f->tag != WIRE_TAG_ARG_HANDLE ||
		    wire_field_u64(f) != (uint64_t)k + 1)
			return 0;
		f++;
		if (f->tag != WIRE_TAG_ARG_PICKLE || f->len != PICKLE_SIZE(k) ||
		    !pattern_ok(f->data, f->len, (uint64_t)k))
			return 0;
	}
	return 1;
}

/* Nonzero when m is frame i of frame_build(); allocates nothing, so the
 * bodies may call it while a fault is armed. */
static int
frame_ok(const wire_msg *m, int i)
{
	char key[16];
	int k;

	if (m->id != 100 + (uint64_t)i || wire_msg_check(m, NULL) != WIRE_OK)
		return 0;
	switch (i) {
	case 0:
		return m->type == WIRE_MSG_HELLO && m->nfields == 2 &&
		    wire_msg_u64(m, WIRE_TAG_VERSION, 0) == WIRE_PROTOCOL_VERSION &&
		    field_is(wire_msg_find(m, WIRE_TAG_NAME), "check_fault");
	case 1:
		return m->type == WIRE_MSG_EXEC && frame_exec_ok(m);
	case 2:
		return m->type == WIRE_MSG_ERROR && m->nfields == 2 &&
		    wire_msg_u64(m, WIRE_TAG_ERRCODE, 0) == WIRE_ERR_INTERNAL &&
		    field_is(wire_msg_find(m, WIRE_TAG_MESSAGE), "out of memory");
	default:
		if (m->type != WIRE_MSG_LISTING || m->nfields != NLISTED)
			return 0;
		for (k = 0; k < NLISTED; k++) {
			snprintf(key, sizeof key, "key%03d", k);
			if (!field_is(&m->fields[k], key))
				return 0;
		}
		return 1;
	}
}

/* All NFRAMES frames, encoded once with nothing failing. */
static wire_buf all_frames;

/* Encode all_frames (disarmed). */
static void
all_frames_build(void)
{
	int i;

	wire_buf_init(&all_frames);
	for (i = 0; i < NFRAMES; i++)
		ck_assert_int_eq(frame_build(&all_frames, i), WIRE_OK);
}

/* Whether errno err is what a failed call of fs leaves: its first error,
 * or EIO for a write that returned 0. */
static int
errno_matches(const struct fault_spec *fs, int err)
{
	int i;

	for (i = 0; i < fs->nerrs; i++) {
		if (err == (fs->errs[i] == 0 ? EIO : fs->errs[i]))
			return 1;
	}
	return 0;
}

/* --- fixture ------------------------------------------------------------ */

/* The suite's temporary tree (made by main) and this test's directory. */
static char base_dir[PATH_MAX];
static char test_dir[PATH_MAX];

/* Checked fixture: nothing armed, a fresh directory for this test. */
static void
setup(void)
{
	fault_disarm();
	if (tu_mkdtemp(test_dir, sizeof test_dir, base_dir, "t") != 0)
		ck_abort_msg("mkdtemp under %s: %s", base_dir, strerror(errno));
}

/* Checked teardown (skipped after a failure; main cleans up then). */
static void
teardown(void)
{
	fault_disarm();
	tu_rmtree(test_dir);
}

/* --- wire_buf building and wire_end ------------------------------------- */

/* A buffer built under fault. */
struct build_ctx {
	wire_buf b;
	int rc[3];  /* wire_end() of frames 0..2 */
};

static void
build_prep(void *arg)
{
	struct build_ctx *bc = arg;

	wire_buf_init(&bc->b);
}

/* Build frames 0, 1 and 2 into one buffer, going on after a failure as a
 * server does when it sends an ERROR instead of a reply. */
static int
build_body(void *arg)
{
	struct build_ctx *bc = arg;
	int i, first = 0;

	for (i = 0; i < 3; i++) {
		bc->rc[i] = frame_build(&bc->b, i);
		if (bc->rc[i] != WIRE_OK && first == 0)
			first = bc->rc[i];
	}
	return first;
}

/* Every failure is NOMEM and removed only its own frame: the buffer holds
 * exactly the frames whose wire_end() succeeded, in order, intact. */
static void
build_test(void *arg, const struct fault_spec *fs, int rc, int err,
           long hits)
{
	struct build_ctx *bc = arg;
	size_t pos = 0, used;
	wire_msg m;
	int i;

	ck_assert_msg((hits > 0) == (rc != 0), "run %ld: %ld faults, "
	    "wire_end %d", fault_run, hits, rc);
	ck_assert_int_eq(bc->b.err, 0);
	ck_assert_uint_eq(bc->b.start, SIZE_MAX);
	wire_msg_init(&m);
	for (i = 0; i < 3; i++) {
		if (bc->rc[i] != WIRE_OK) {
			ck_assert_msg(bc->rc[i] == WIRE_E_NOMEM, "run %ld: "
			    "frame %d: %s", fault_run, i,
			    wire_strerror(bc->rc[i]));
			continue;
		}
		ck_assert_int_eq(wire_parse(bc->b.data + pos, bc->b.len - pos,
		    WIRE_DEFAULT_MAX_FRAME, &m, &used), WIRE_OK);
		ck_assert_msg(frame_ok(&m, i), "run %ld: frame %d damaged",
		    fault_run, i);
		pos += used;
	}
	ck_assert_uint_eq(pos, bc->b.len);
	/* The buffer goes on working. */
	ck_assert_int_eq(frame_build(&bc->b, 2), WIRE_OK);
	wire_msg_free(&m);
	wire_buf_free(&bc->b);
}

START_TEST(test_wire_build_oom)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
	};
	static const struct fault_op op = { "wire_begin/put/end",
	    build_prep, build_body, build_test };
	struct build_ctx bc;

	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &bc), 6);
}
END_TEST

/* --- wire_parse --------------------------------------------------------- */

/* Parsing all frames into one message, then copying strings out. */
struct parse_ctx {
	wire_msg m;
	int parsed;     /* frames parsed */
	char *dup[3];   /* wire_field_strdup() of frame 3's first keys */
};

static void
parse_prep(void *arg)
{
	struct parse_ctx *pc = arg;

	memset(pc, 0, sizeof *pc);
	wire_msg_init(&pc->m);
}

/* Parse the frames in turn into one message (its array grows at frame 3),
 * then copy three keys out. */
static int
parse_body(void *arg)
{
	struct parse_ctx *pc = arg;
	size_t pos = 0, used;
	int i, rc;

	for (i = 0; i < NFRAMES; i++) {
		rc = wire_parse(all_frames.data + pos, all_frames.len - pos,
		    WIRE_DEFAULT_MAX_FRAME, &pc->m, &used);
		if (rc != WIRE_OK)
			return rc;
		if (!frame_ok(&pc->m, i))
			return WIRE_E_MALFORMED;
		pc->parsed++;
		pos += used;
	}
	for (i = 0; i < 3; i++) {
		if ((pc->dup[i] = wire_field_strdup(&pc->m.fields[i])) == NULL)
			return WIRE_E_NOMEM;
	}
	return WIRE_OK;
}

static void
parse_test(void *arg, const struct fault_spec *fs, int rc, int err,
           long hits)
{
	struct parse_ctx *pc = arg;
	char key[16];
	size_t used;
	int i;

	if (rc != WIRE_OK) {
		ck_assert_msg(rc == WIRE_E_NOMEM, "run %ld: %s", fault_run,
		    wire_strerror(rc));
		if (pc->parsed < NFRAMES) /* no fields after a failure */
			ck_assert_uint_eq(pc->m.nfields, 0);
	}
	for (i = 0; i < 3; i++) {
		if (pc->dup[i] == NULL)
			continue;
		snprintf(key, sizeof key, "key%03d", i);
		ck_assert_str_eq(pc->dup[i], key);
		free(pc->dup[i]);
	}
	/* The same message parses the big frame again now. */
	used = all_frames.len;
	ck_assert_int_eq(wire_parse(all_frames.data, all_frames.len,
	    WIRE_DEFAULT_MAX_FRAME, &pc->m, &used), WIRE_OK);
	ck_assert(frame_ok(&pc->m, 0));
	wire_msg_free(&pc->m);
}

START_TEST(test_wire_parse_oom)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
	};
	static const struct fault_op op = { "wire_parse",
	    parse_prep, parse_body, parse_test };
	struct parse_ctx pc;

	all_frames_build();
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &pc), 6);
	wire_buf_free(&all_frames);
}
END_TEST

/* --- wire_conn_read over a socketpair ----------------------------------- */

/* A connection reading all frames, then EOF. */
struct conn_ctx {
	int sv[2];          /* [0] read by the connection, [1] the peer */
	wire_conn c;
	wire_msg m;
	int timeout_ms;     /* passed to wire_conn_read */
	int nread;          /* frames read */
	int ok[NFRAMES];    /* frame_ok() of each, checked while reading */
};

/* A socketpair with all frames sent and the peer's side shut. */
static void
conn_prep(void *arg)
{
	struct conn_ctx *cc = arg;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, cc->sv), 0);
	ck_assert_int_eq(tu_write_full(cc->sv[1], all_frames.data,
	    all_frames.len), 0);
	ck_assert_int_eq(shutdown(cc->sv[1], SHUT_WR), 0);
	wire_conn_init(&cc->c, cc->sv[0], cc->sv[0], WIRE_DEFAULT_MAX_FRAME);
	wire_msg_init(&cc->m);
	cc->nread = 0;
	memset(cc->ok, 0, sizeof cc->ok);
}

/* Read every frame, checking each before the next read reuses the
 * buffer, then the clean EOF after them. */
static int
conn_body(void *arg)
{
	struct conn_ctx *cc = arg;
	int rc;

	while (cc->nread < NFRAMES) {
		rc = wire_conn_read(&cc->c, &cc->m, cc->timeout_ms);
		if (rc != WIRE_OK)
			return rc;
		cc->ok[cc->nread] = frame_ok(&cc->m, cc->nread);
		cc->nread++;
	}
	rc = wire_conn_read(&cc->c, &cc->m, cc->timeout_ms);
	return rc == WIRE_E_EOF ? WIRE_OK : rc == WIRE_OK ? WIRE_E_MALFORMED : rc;
}

/* Whether rc is a documented result of wire_conn_read under fs. */
static int
conn_rc_clean(const struct fault_spec *fs, int rc, int err)
{
	if (fs->kinds & FK_ALLOC)
		return rc == WIRE_E_NOMEM;
	if ((fs->kinds & FK_READ) && fs->errs[0] == 0)
		return rc == WIRE_E_EOF || rc == WIRE_E_TRUNCATED;
	return rc == WIRE_E_IO && errno_matches(fs, err);
}

static void
conn_test(void *arg, const struct fault_spec *fs, int rc, int err,
          long hits)
{
	struct conn_ctx *cc = arg;
	int i;

	for (i = 0; i < cc->nread; i++)
		ck_assert_msg(cc->ok[i], "%s, run %ld: frame %d damaged",
		    fs->name, fault_run, i);
	if (rc == WIRE_OK)
		ck_assert_int_eq(cc->nread, NFRAMES);
	else
		ck_assert_msg(conn_rc_clean(fs, rc, err), "%s, run %ld: "
		    "frame %d: %s (%s)", fs->name, fault_run, cc->nread,
		    wire_strerror(rc), strerror(err));
	/* Out of step after an error: the connection is closed. */
	wire_msg_free(&cc->m);
	wire_conn_free(&cc->c);
	close(cc->sv[0]);
	close(cc->sv[1]);
}

static const struct fault_op conn_op = { "wire_conn_read",
    conn_prep, conn_body, conn_test };

START_TEST(test_conn_read_oom)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
		{ "oom once, 4 KiB reads", FK_ALLOC, {ENOMEM}, 1, 0, 4096, 0,
		  FK_READ },
	};
	struct conn_ctx cc;

	cc.timeout_ms = -1;
	all_frames_build();
	ck_assert_int_ge(faultsim_all(&conn_op, specs, NELEM(specs), &cc), 6);
	wire_buf_free(&all_frames);
}
END_TEST

START_TEST(test_conn_read_io)
{
	static const struct fault_spec specs[] = {
		{ "read EIO", FK_READ, {EIO}, 1, 0, 0, 0, 0 },
		{ "read EIO, 4 KiB reads", FK_READ, {EIO}, 1, 0, 4096, 0, 0 },
		{ "read EIO from then on, 4 KiB", FK_READ, {EIO}, 1, 1, 4096, 0, 0 },
		{ "read ECONNRESET, 1000 B reads", FK_READ, {ECONNRESET},
		  1, 0, 1000, 0, 0 },
		{ "read EINTR, 4 KiB reads", FK_READ, {EINTR}, 1, 0, 4096, 1, 0 },
		{ "read EINTR twice, 4 KiB reads", FK_READ, {EINTR, EINTR},
		  2, 0, 4096, 1, 0 },
		{ "read EAGAIN, 4 KiB reads", FK_READ, {EAGAIN}, 1, 0, 4096, 1, 0 },
		{ "read early EOF, 4 KiB reads", FK_READ, {0}, 1, 0, 4096, 0, 0 },
	};
	struct conn_ctx cc;

	cc.timeout_ms = -1;
	all_frames_build();
	ck_assert_int_ge(faultsim_all(&conn_op, specs, NELEM(specs), &cc),
	    60);
	/* The same with a deadline, which takes the other poll branch. */
	cc.timeout_ms = 10000;
	faultsim(&conn_op, &specs[4], &cc);
	wire_buf_free(&all_frames);
}
END_TEST

START_TEST(test_conn_read_poll)
{
	static const struct fault_spec specs[] = {
		{ "poll EINTR, 4 KiB reads", FK_POLL, {EINTR}, 1, 0, 4096, 1,
		  FK_READ },
		{ "poll woke empty, 4 KiB reads", FK_POLL, {0}, 1, 0, 4096, 1,
		  FK_READ },
		{ "poll ENOMEM, 4 KiB reads", FK_POLL, {ENOMEM}, 1, 0, 4096, 0,
		  FK_READ },
		{ "poll ENOMEM from then on", FK_POLL, {ENOMEM}, 1, 1, 0, 0, 0 },
	};
	struct conn_ctx cc;

	all_frames_build();
	cc.timeout_ms = -1;
	ck_assert_int_ge(faultsim_all(&conn_op, specs, NELEM(specs), &cc),
	    40);
	cc.timeout_ms = 10000;
	ck_assert_int_ge(faultsim_all(&conn_op, specs, NELEM(specs), &cc),
	    40);
	wire_buf_free(&all_frames);
}
END_TEST

/* --- wire_write_all ----------------------------------------------------- */

#define WRITE_SIZE (48 * 1024)

/* One wire_write_all() into a socketpair, a thread reading the other end
 * as a peer would (a unix socket reports POLLOUT only while less than a
 * quarter of its buffer is in use, so without a reader an EAGAIN late in
 * the write would wait forever). */
struct write_ctx {
	int sv[2];                /* [0] written, [1] read by the drainer */
	pthread_t drainer;
	size_t size;              /* bytes to write */
	size_t ngot;              /* bytes the drainer read */
	uint8_t data[WRITE_SIZE];
	uint8_t got[WRITE_SIZE + 1];
};

/* Drainer thread: read sv[1] until EOF.  It calls the real read(), never
 * the wrapper, so it neither counts nor races with the fault switch. */
static void *
write_drain(void *arg)
{
	struct write_ctx *wc = arg;
	ssize_t r;

	wc->ngot = 0;
	while (wc->ngot < sizeof wc->got) {
		r = __real_read(wc->sv[1], wc->got + wc->ngot,
		    sizeof wc->got - wc->ngot);
		if (r > 0)
			wc->ngot += (size_t)r;
		else if (r == 0 || errno != EINTR)
			break;
	}
	return NULL;
}

static void
write_prep(void *arg)
{
	struct write_ctx *wc = arg;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, wc->sv), 0);
	ck_assert_int_eq(pthread_create(&wc->drainer, NULL, write_drain, wc),
	    0);
}

static int
write_body(void *arg)
{
	struct write_ctx *wc = arg;

	return wire_write_all(wc->sv[0], wc->data, wc->size);
}

/* All bytes arrived after success; after WIRE_E_IO (errno kept) a prefix
 * did, in order. */
static void
write_test(void *arg, const struct fault_spec *fs, int rc, int err,
           long hits)
{
	struct write_ctx *wc = arg;
	size_t n;

	close(wc->sv[0]);
	ck_assert_int_eq(pthread_join(wc->drainer, NULL), 0);
	close(wc->sv[1]);
	n = wc->ngot;
	if (rc == WIRE_OK)
		ck_assert_uint_eq(n, wc->size);
	else {
		ck_assert_msg(rc == WIRE_E_IO && errno_matches(fs, err),
		    "%s, run %ld: %s (%s)", fs->name, fault_run,
		    wire_strerror(rc), strerror(err));
		ck_assert_uint_lt(n, wc->size);
	}
	ck_assert(memcmp(wc->got, wc->data, n) == 0);
}

static const struct fault_op write_op = { "wire_write_all",
    write_prep, write_body, write_test };

START_TEST(test_write_all_faults)
{
	static const struct fault_spec specs[] = {
		{ "write EINTR, 4 KiB writes", FK_WRITE, {EINTR}, 1, 0, 4096, 1, 0 },
		{ "write EAGAIN, 4 KiB writes", FK_WRITE, {EAGAIN}, 1, 0, 4096, 1, 0 },
		{ "write EAGAIN, poll EINTR", FK_WRITE | FK_POLL,
		  {EAGAIN, EINTR}, 2, 0, 4096, 1, 0 },
		{ "write EAGAIN, poll ENOMEM", FK_WRITE | FK_POLL,
		  {EAGAIN, ENOMEM}, 2, 0, 4096, 0, 0 },
		{ "write EIO", FK_WRITE, {EIO}, 1, 0, 0, 0, 0 },
		{ "write EPIPE, 4 KiB writes", FK_WRITE, {EPIPE}, 1, 0, 4096, 0, 0 },
		{ "write EIO from then on, 4 KiB", FK_WRITE, {EIO}, 1, 1, 4096, 0, 0 },
		{ "write returns 0, 4 KiB writes", FK_WRITE, {0}, 1, 0, 4096, 0, 0 },
	};
	struct write_ctx *wc = malloc(sizeof *wc);

	ck_assert_ptr_nonnull(wc);
	wc->size = WRITE_SIZE;
	pattern_fill(wc->data, wc->size, 7);
	ck_assert_int_ge(faultsim_all(&write_op, specs, NELEM(specs), wc),
	    60);
	free(wc);
}
END_TEST

/* --- store helpers ------------------------------------------------------ */

/* Entries of the "keep" session, committed before any fault. */
#define KEEP_N 4
/* Entries each put run writes in one transaction. */
#define PUT_N 6
/* Entries of each session the purge tests kill and purge. */
#define DOOMED_N 7

/* Payload scratch of the put callback (no allocation while armed). */
static uint8_t payload_buf[64 * 1024];

/* Payload size of the ith entry of a batch: small, medium, overflow. */
static size_t
entry_size(int i)
{
	static const size_t sz[] = {100, 3000, 20000, 10, 700, 9000};

	return sz[i % (int)NELEM(sz)];
}

/* Argument of cb_put: count entries prefix0, prefix1... into sid. */
struct put_arg {
	const uint8_t *sid;
	const char *prefix;
	int count;
};

/* Put the entries in one transaction; idempotent, as store_write needs. */
static int
cb_put(store_txn *t, void *a)
{
	struct put_arg *pa = a;
	store_entry_in in;
	struct iovec iov[2];
	char name[64];
	size_t size;
	int i, rc;

	for (i = 0; i < pa->count; i++) {
		snprintf(name, sizeof name, "%s%d", pa->prefix, i);
		size = entry_size(i);
		pattern_fill(payload_buf, size, seed_of(name));
		memset(&in, 0, sizeof in);
		in.kind = STORE_KIND_GLOBAL;
		in.name = name;
		in.name_len = strlen(name);
		in.pickler = STORE_PICKLER_PICKLE;
		in.type_name = "bytes";
		iov[0].iov_base = payload_buf;
		iov[0].iov_len = size / 2;
		iov[1].iov_base = payload_buf + size / 2;
		iov[1].iov_len = size - size / 2;
		in.iov = iov;
		in.iovcnt = 2;
		if ((rc = entry_put(t, pa->sid, &in, 1000 + (uint64_t)i)) != 0)
			return rc;
	}
	return 0;
}

/* The same entries through entry_put_sorted (one cursor, appends). */
static uint8_t sorted_bufs[PUT_N][20000];
static int
cb_put_sorted(store_txn *t, void *a)
{
	struct put_arg *pa = a;
	store_entry_in in[PUT_N];
	const store_entry_in *order[PUT_N];
	struct iovec iov[PUT_N];
	char names[PUT_N][64];
	int i;

	/* no check assertion here: they allocate, and faults are armed */
	if (pa->count > PUT_N)
		return STORE_E_INVAL;
	for (i = 0; i < pa->count; i++) {
		snprintf(names[i], sizeof names[i], "%s%d", pa->prefix, i);
		if (entry_size(i) > sizeof sorted_bufs[i])
			return STORE_E_INVAL;
		pattern_fill(sorted_bufs[i], entry_size(i), seed_of(names[i]));
		memset(&in[i], 0, sizeof in[i]);
		in[i].kind = STORE_KIND_GLOBAL;
		in[i].name = names[i];
		in[i].name_len = strlen(names[i]);
		in[i].pickler = STORE_PICKLER_PICKLE;
		in[i].type_name = "bytes";
		iov[i].iov_base = sorted_bufs[i];
		iov[i].iov_len = entry_size(i);
		in[i].iov = &iov[i];
		in[i].iovcnt = 1;
		order[i] = &in[i];
	}
	return entry_put_sorted(t, pa->sid, order, (size_t)pa->count, 1000);
}

/* Argument of cb_get: look one entry up and compare it. */
struct get_arg {
	const uint8_t *sid;
	const char *name;
	size_t size;
	int match;   /* out: payload and type as written */
};

static int
cb_get(store_txn *t, void *a)
{
	struct get_arg *ga = a;
	store_record r;
	int rc;

	rc = entry_get(t, ga->sid, STORE_KIND_GLOBAL, ga->name,
	    strlen(ga->name), 0, &r);
	if (rc != 0)
		return rc;
	ga->match = r.payload_len == ga->size && r.type_len == 5 &&
	    memcmp(r.type_name, "bytes", 5) == 0 &&
	    pattern_ok(r.payload, r.payload_len, seed_of(ga->name));
	return 0;
}

/* 0 when entry name of sid is there as cb_put wrote it (the ith of its
 * batch), STORE_E_NOTFOUND when absent, else an error (-1: differs). */
static int
entry_check(store *s, const uint8_t *sid, const char *name, int i)
{
	struct get_arg ga = { sid, name, entry_size(i), 0 };
	int rc = store_read(s, cb_get, &ga);

	return rc != 0 ? rc : ga.match ? 0 : -1;
}

/* Argument of cb_count. */
struct count_arg {
	const uint8_t *sid;
	uint64_t n;
};

static int
cb_count(store_txn *t, void *a)
{
	struct count_arg *ca = a;

	return session_count(t, ca->sid, &ca->n, NULL);
}

/* Entries of sid, failing the test on an error. */
static uint64_t
entry_count(store *s, const uint8_t *sid)
{
	struct count_arg ca = { sid, 0 };

	ck_assert_int_eq(store_read(s, cb_count, &ca), 0);
	return ca.n;
}

/* Argument of the session callbacks. */
struct sess_arg {
	const char *name;
	const uint8_t *id;
	store_session ss;  /* out */
};

static int
cb_create(store_txn *t, void *a)
{
	static const uint8_t token[STORE_TOKEN_SIZE] = {1, 2, 3};
	struct sess_arg *sa = a;

	return session_create(t, sa->name, token, 60000, 5000, &sa->ss);
}

static int
cb_by_name(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_get_by_name(t, sa->name, &sa->ss);
}

static int
cb_by_id(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_get_by_id(t, sa->id, &sa->ss);
}

static int
cb_kill(store_txn *t, void *a)
{
	struct sess_arg *sa = a;

	return session_kill(t, sa->id);
}

/* Create session name (failing the test on an error); its id into id. */
static void
session_make(store *s, const char *name, uint8_t *id)
{
	struct sess_arg sa = { .name = name };
	int rc = store_write(s, cb_create, &sa);

	ck_assert_msg(rc == 0, "create %s: %s", name, store_strerror(rc));
	memcpy(id, sa.ss.id, STORE_ID_SIZE);
}

/* A store under test: a "keep" session committed before the faults, a
 * "work" session the writes go to, and the open handle. */
struct st_ctx {
	char dir[PATH_MAX + 64];      /* the store's directory */
	store_options opt;            /* how it is opened */
	store *s;                     /* open between prep and test */
	char *cause;                  /* store_open's sentence */
	uint8_t keep[STORE_ID_SIZE];
	uint8_t work[STORE_ID_SIZE];
	uint64_t work_n;              /* entries of work committed so far */
	long run;                     /* runs so far: names data uniquely */
	char name[64];                /* the run's session or prefix */
	uint8_t sid[STORE_ID_SIZE];   /* the run's session */
	size_t deleted;               /* session_purge's count */
	size_t rows;                  /* refs rows of the run's target */
	int any;                      /* refs_any of sid */
};

/* Open ctx->dir with ctx->opt into ctx->s, failing the test on an error. */
static void
st_open(struct st_ctx *sc)
{
	char *cause = NULL;
	int rc = store_open(&sc->s, sc->dir, &sc->opt, &cause);

	ck_assert_msg(rc == 0, "store_open %s: %s (%s)", sc->dir,
	    store_strerror(rc), cause != NULL ? cause : "no cause");
	free(cause);
}

/* Close ctx->s when open. */
static void
st_close(struct st_ctx *sc)
{
	store_close(sc->s);
	sc->s = NULL;
}

/* Make a store in test_dir/db with sessions keep (KEEP_N entries) and
 * work (none), and leave it closed. */
static void
st_init(struct st_ctx *sc, enum store_sync sync)
{
	struct put_arg pa;

	memset(sc, 0, sizeof *sc);
	snprintf(sc->dir, sizeof sc->dir, "%s/db", test_dir);
	sc->opt.create = 1;
	sc->opt.map_initial = (size_t)1 << 20;
	sc->opt.sync = sync;
	st_open(sc);
	session_make(sc->s, "keep", sc->keep);
	session_make(sc->s, "work", sc->work);
	pa.sid = sc->keep;
	pa.prefix = "k";
	pa.count = KEEP_N;
	ck_assert_int_eq(store_write(sc->s, cb_put, &pa), 0);
	st_close(sc);
}

/* Assert that the data committed before the faults is all there. */
static void
keep_check(struct st_ctx *sc)
{
	struct sess_arg sa = { .name = "keep" };
	char name[16];
	int i, rc;

	ck_assert_int_eq(store_read(sc->s, cb_by_name, &sa), 0);
	ck_assert(memcmp(sa.ss.id, sc->keep, STORE_ID_SIZE) == 0);
	ck_assert_uint_eq(entry_count(sc->s, sc->keep), KEEP_N);
	for (i = 0; i < KEEP_N; i++) {
		snprintf(name, sizeof name, "k%d", i);
		rc = entry_check(sc->s, sc->keep, name, i);
		ck_assert_msg(rc == 0, "run %ld: keep entry %s: %d", fault_run,
		    name, rc);
	}
	ck_assert_uint_eq(entry_count(sc->s, sc->work), sc->work_n);
}

/* After a failed store operation the environment in this process is
 * either fine or, when LMDB could not write its meta page, refuses every
 * transaction (MDB_PANIC, STORE_E_LMDB).  Returns nonzero when usable. */
static int
st_usable(struct st_ctx *sc)
{
	struct sess_arg sa = { .name = "keep" };
	int rc = store_read(sc->s, cb_by_name, &sa);

	ck_assert_msg(rc == 0 || rc == STORE_E_LMDB, "run %ld: after the "
	    "fault: %s", fault_run, store_strerror(rc));
	if (rc != 0 && fault_verbose > 1)
		printf("fault: run %ld: the environment refuses transactions "
		    "now; opening it again\n", fault_run);
	return rc == 0;
}

/* Whether rc is a clean store error for fs: allocation failures are
 * NOMEM, refused I/O is IO, a full disk is FULL, and a failed meta write
 * leaves LMDB refusing further transactions (LMDB). */
static int
store_rc_clean(const struct fault_spec *fs, int rc)
{
	if (fs->kinds & FK_ALLOC)
		return rc == STORE_E_NOMEM;
	if (fs->kinds & (FK_MKDIR | FK_RANDOM))
		return rc == STORE_E_IO;
	if (fs->errs[0] == ENOSPC)
		return rc == STORE_E_FULL || rc == STORE_E_LMDB;
	return rc == STORE_E_IO || rc == STORE_E_LMDB;
}

/* Disk faults: refused, full, interrupted; once and from then on. */
static const struct fault_spec disk_specs[] = {
	{ "disk EIO", FK_DISK, {EIO}, 1, 0, 0, 0, 0 },
	{ "disk ENOSPC", FK_DISK, {ENOSPC}, 1, 0, 0, 0, 0 },
	{ "disk EIO from then on", FK_DISK, {EIO}, 1, 1, 0, 0, 0 },
	{ "disk EINTR", FK_DISK, {EINTR}, 1, 0, 0, 0, 0 },
	{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
};

/* Blob files, besides the disk faults: their own write(2)s refused, full,
 * interrupted, or making no progress. */
static const struct fault_spec file_specs[] = {
	{ "file write EIO", FK_WRITE, {EIO}, 1, 0, 0, 0, 0 },
	{ "file write ENOSPC", FK_WRITE, {ENOSPC}, 1, 0, 0, 0, 0 },
	{ "file write EINTR", FK_WRITE, {EINTR}, 1, 0, 0, 0, 0 },
	{ "file write of nothing", FK_WRITE, {0}, 1, 0, 0, 0, 0 },
};

/* --- store_open --------------------------------------------------------- */

/* A fresh nested path per run: store_open creates the parents too. */
static void
open_create_prep(void *arg)
{
	struct st_ctx *sc = arg;

	sc->run++;
	snprintf(sc->dir, sizeof sc->dir, "%s/o%ld/a/db", test_dir, sc->run);
	sc->s = NULL;
	sc->cause = NULL;
}

static int
open_body(void *arg)
{
	struct st_ctx *sc = arg;

	return store_open(&sc->s, sc->dir, &sc->opt, &sc->cause);
}

/* Assert store_open's result: a store and no cause, or a clean code, no
 * store and perhaps a cause. */
static void
open_result_check(struct st_ctx *sc, const struct fault_spec *fs, int rc)
{
	if (rc == 0) {
		ck_assert_ptr_nonnull(sc->s);
		ck_assert_ptr_null(sc->cause);
		return;
	}
	ck_assert_msg(store_rc_clean(fs, rc), "%s, run %ld: %s (%s)",
	    fs->name, fault_run, store_strerror(rc),
	    sc->cause != NULL ? sc->cause : "no cause");
	ck_assert_ptr_null(sc->s);
	free(sc->cause);
	sc->cause = NULL;
}

/* After a failed create the same path opens, and the store works. */
static void
open_create_test(void *arg, const struct fault_spec *fs, int rc, int err,
                 long hits)
{
	struct st_ctx *sc = arg;
	uint8_t id[STORE_ID_SIZE];
	struct put_arg pa = { id, "x", 3 };
	char top[PATH_MAX + 64];

	open_result_check(sc, fs, rc);
	if (sc->s == NULL)
		st_open(sc);
	session_make(sc->s, "x", id);
	ck_assert_int_eq(store_write(sc->s, cb_put, &pa), 0);
	ck_assert_int_eq(entry_check(sc->s, id, "x2", 2), 0);
	st_close(sc);
	snprintf(top, sizeof top, "%s/o%ld", test_dir, sc->run);
	tu_rmtree(top);
}

START_TEST(test_store_open_create_faults)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
		{ "mkdir EACCES", FK_MKDIR, {EACCES}, 1, 0, 0, 0, 0 },
		{ "mkdir ENOSPC from then on", FK_MKDIR, {ENOSPC}, 1, 1, 0, 0, 0 },
		{ "disk EIO", FK_DISK, {EIO}, 1, 0, 0, 0, 0 },
		{ "disk ENOSPC", FK_DISK, {ENOSPC}, 1, 0, 0, 0, 0 },
		{ "disk EIO from then on", FK_DISK, {EIO}, 1, 1, 0, 0, 0 },
	};
	static const struct fault_op op = { "store_open (create)",
	    open_create_prep, open_body, open_create_test };
	struct st_ctx sc;

	memset(&sc, 0, sizeof sc);
	sc.opt.create = 1;
	sc.opt.map_initial = (size_t)1 << 20;
	sc.opt.sync = STORE_SYNC_ALWAYS;
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &sc), 15);
}
END_TEST

static void
open_existing_prep(void *arg)
{
	struct st_ctx *sc = arg;

	sc->s = NULL;
	sc->cause = NULL;
}

/* After a failed open the store opens and holds all it held. */
static void
open_existing_test(void *arg, const struct fault_spec *fs, int rc, int err,
                   long hits)
{
	struct st_ctx *sc = arg;

	open_result_check(sc, fs, rc);
	if (sc->s == NULL)
		st_open(sc);
	keep_check(sc);
	st_close(sc);
}

START_TEST(test_store_open_existing_faults)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
		{ "disk EIO", FK_DISK, {EIO}, 1, 0, 0, 0, 0 },
		{ "disk EIO from then on", FK_DISK, {EIO}, 1, 1, 0, 0, 0 },
	};
	static const struct fault_op op = { "store_open (existing)",
	    open_existing_prep, open_body, open_existing_test };
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_ALWAYS);
	sc.opt.create = 0;
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &sc), 3);
}
END_TEST

/* --- session_create ----------------------------------------------------- */

/* Open the store; the run creates session new<run>. */
static void
create_prep(void *arg)
{
	struct st_ctx *sc = arg;

	st_open(sc);
	snprintf(sc->name, sizeof sc->name, "new%ld", ++sc->run);
}

static int
create_body(void *arg)
{
	struct st_ctx *sc = arg;
	struct sess_arg sa = { .name = sc->name };
	int rc = store_write(sc->s, cb_create, &sa);

	memcpy(sc->sid, sa.ss.id, STORE_ID_SIZE);
	return rc;
}

/* Assert that session sc->name exists (with id sc->sid) iff want. */
static void
created_check(struct st_ctx *sc, int want)
{
	struct sess_arg sa = { .name = sc->name };
	int rc = store_read(sc->s, cb_by_name, &sa);

	if (!want) {
		ck_assert_msg(rc == STORE_E_NOTFOUND, "run %ld: %s after a "
		    "failed create: %s", fault_run, sc->name,
		    store_strerror(rc));
		return;
	}
	ck_assert_msg(rc == 0, "run %ld: %s: %s", fault_run, sc->name,
	    store_strerror(rc));
	ck_assert(memcmp(sa.ss.id, sc->sid, STORE_ID_SIZE) == 0);
	ck_assert_int_eq(sa.ss.state, STORE_STATE_LIVE);
}

/* The session is there iff the create succeeded, in this environment (when
 * LMDB still lets it be used) and after opening the store again. */
static void
create_test(void *arg, const struct fault_spec *fs, int rc, int err,
            long hits)
{
	struct st_ctx *sc = arg;

	ck_assert_msg(rc == 0 || store_rc_clean(fs, rc), "%s, run %ld: %s",
	    fs->name, fault_run, store_strerror(rc));
	if (st_usable(sc))
		created_check(sc, rc == 0);
	st_close(sc);
	st_open(sc);
	created_check(sc, rc == 0);
	keep_check(sc);
	st_close(sc);
}

START_TEST(test_session_create_faults)
{
	static const struct fault_spec specs[] = {
		{ "getrandom EIO", FK_RANDOM, {EIO}, 1, 0, 0, 0, 0 },
		{ "getrandom EINTR, 5 B reads", FK_RANDOM, {EINTR}, 1, 0, 5, 1, 0 },
		{ "getrandom EAGAIN", FK_RANDOM, {EAGAIN}, 1, 0, 0, 0, 0 },
	};
	static const struct fault_op op = { "session_create",
	    create_prep, create_body, create_test };
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_ALWAYS);
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &sc), 5);
	ck_assert_int_ge(faultsim_all(&op, disk_specs, NELEM(disk_specs),
	    &sc), 6);
}
END_TEST

/* --- entry_put: several entries in one store_write ---------------------- */

static void
put_prep(void *arg)
{
	struct st_ctx *sc = arg;

	st_open(sc);
	snprintf(sc->name, sizeof sc->name, "n%ld_", ++sc->run);
}

static int
put_body(void *arg)
{
	struct st_ctx *sc = arg;
	struct put_arg pa = { sc->work, sc->name, PUT_N };

	return store_write(sc->s, cb_put, &pa);
}

static int
put_sorted_body(void *arg)
{
	struct st_ctx *sc = arg;
	struct put_arg pa = { sc->work, sc->name, PUT_N };

	return store_write(sc->s, cb_put_sorted, &pa);
}

/* Assert that all PUT_N entries of the run are there (want) or none is. */
static void
put_check(struct st_ctx *sc, int want)
{
	char name[80];
	int i, rc;

	for (i = 0; i < PUT_N; i++) {
		snprintf(name, sizeof name, "%s%d", sc->name, i);
		rc = entry_check(sc->s, sc->work, name, i);
		ck_assert_msg(rc == (want ? 0 : STORE_E_NOTFOUND), "run %ld: "
		    "%s after a %s write: %d", fault_run, name,
		    want ? "committed" : "failed", rc);
	}
}

static int
cb_blob_row(const uint8_t *sid, const store_key *k, const uint8_t *name,
            uint64_t size, void *a)
{
	(void)sid;
	(void)k;
	(void)name;
	(void)size;
	(*(long *)a)++;
	return 0;
}

static int
cb_blob_rows(store_txn *t, void *a)
{
	return blob_walk(t, cb_blob_row, a);
}

/* The blob files of the store are exactly those its `blobs` rows name:
 * a failed transaction left none behind. */
static void
blob_files_check(struct st_ctx *sc)
{
	char dir[PATH_MAX + 80];
	struct dirent *de;
	long files = 0, rows = 0;
	DIR *d;

	snprintf(dir, sizeof dir, "%s/blobs", sc->dir);
	ck_assert_ptr_nonnull(d = opendir(dir));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			files++;
	closedir(d);
	ck_assert_int_eq(store_read(sc->s, cb_blob_rows, &rows), 0);
	ck_assert_msg(files == rows, "run %ld: %ld blob files, %ld rows",
	    fault_run, files, rows);
}

static void
put_test(void *arg, const struct fault_spec *fs, int rc, int err, long hits)
{
	struct st_ctx *sc = arg;

	ck_assert_msg(rc == 0 || store_rc_clean(fs, rc), "%s, run %ld: %s",
	    fs->name, fault_run, store_strerror(rc));
	if (rc == 0)
		sc->work_n += PUT_N;
	if (st_usable(sc)) {
		put_check(sc, rc == 0);
		keep_check(sc);
		blob_files_check(sc);
	}
	st_close(sc);
	st_open(sc);
	put_check(sc, rc == 0);
	keep_check(sc);
	blob_files_check(sc);
	st_close(sc);
}

/* The disk faults for one way of putting the six entries, without sync
 * and then with it (more calls can fail: the fsyncs). */
static void
put_faults(const struct fault_op *op, const struct fault_op *op_sync,
           size_t blob_min)
{
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_NEVER);
	sc.opt.blob_min = blob_min;   /* from the next open on */
	ck_assert_int_ge(faultsim_all(op, disk_specs, NELEM(disk_specs), &sc),
	    6);
	if (blob_min != 0)
		ck_assert_int_ge(faultsim_all(op, file_specs,
		    NELEM(file_specs), &sc), 6);
	sc.opt.sync = STORE_SYNC_ALWAYS;
	ck_assert_int_ge(faultsim_all(op_sync, disk_specs, NELEM(disk_specs),
	    &sc), 8);
	if (blob_min != 0)
		ck_assert_int_ge(faultsim_all(op_sync, file_specs,
		    NELEM(file_specs), &sc), 6);
}

START_TEST(test_entry_put_faults)
{
	static const struct fault_op op = { "entry_put x6 (no sync)",
	    put_prep, put_body, put_test };
	static const struct fault_op op_sync = { "entry_put x6 (sync)",
	    put_prep, put_body, put_test };

	put_faults(&op, &op_sync, 0);
}
END_TEST

/* Every payload in a blob file: its writes, the sync of the file and the
 * directory, and the lists the transaction keeps fail in turn. */
START_TEST(test_entry_put_blob_faults)
{
	static const struct fault_op op = { "entry_put x6 blobs (no sync)",
	    put_prep, put_body, put_test };
	static const struct fault_op op_sync = { "entry_put x6 blobs (sync)",
	    put_prep, put_body, put_test };

	put_faults(&op, &op_sync, 1);
}
END_TEST

START_TEST(test_entry_put_sorted_faults)
{
	static const struct fault_op op = { "entry_put_sorted x6 (no sync)",
	    put_prep, put_sorted_body, put_test };
	static const struct fault_op op_sync = {
	    "entry_put_sorted x6 (sync)", put_prep, put_sorted_body, put_test };

	put_faults(&op, &op_sync, 0);
}
END_TEST

START_TEST(test_entry_put_sorted_blob_faults)
{
	static const struct fault_op op = {
	    "entry_put_sorted x6 blobs (no sync)", put_prep, put_sorted_body,
	    put_test };
	static const struct fault_op op_sync = {
	    "entry_put_sorted x6 blobs (sync)", put_prep, put_sorted_body,
	    put_test };

	put_faults(&op, &op_sync, 1);
}
END_TEST

/* --- refs_put, refs_del: several rows in one store_write --------------- */

/* Rows of one run: handles 0..REFS_N-1 refer to global sc->name of sid,
 * then handle 0's row is forgotten. */
#define REFS_N 40

static int
cb_refs(store_txn *t, void *a)
{
	struct st_ctx *sc = a;
	store_key g = { .kind = STORE_KIND_GLOBAL, .name = sc->name,
	    .name_len = strlen(sc->name) }, h = { .kind = STORE_KIND_HANDLE };
	int rc;

	for (h.handle = 0; h.handle < REFS_N; h.handle++)
		if ((rc = refs_put(t, sc->sid, &g, &h)) != 0)
			return rc;
	h.handle = 0;
	return refs_del(t, sc->sid, &g, &h);
}

/* refs_list callback: count into rows. */
static int
cb_count_ref(const store_key *k, void *a)
{
	(void)k;
	((struct st_ctx *)a)->rows++;
	return 0;
}

/* Count the run's rows (refs_list), and ask refs_any of sid. */
static int
cb_refs_count(store_txn *t, void *a)
{
	struct st_ctx *sc = a;
	store_key g = { .kind = STORE_KIND_GLOBAL, .name = sc->name,
	    .name_len = strlen(sc->name) };
	int rc;

	sc->rows = 0;
	if ((rc = refs_list(t, sc->sid, &g, cb_count_ref, sc)) != 0)
		return rc;
	return refs_any(t, sc->sid, &sc->any);
}

/* The run's rows go to work (put_prep named the run). */
static int
refs_body(void *arg)
{
	struct st_ctx *sc = arg;

	memcpy(sc->sid, sc->work, STORE_ID_SIZE);
	return store_write(sc->s, cb_refs, sc);
}

/* The run's REFS_N - 1 rows are all there or none: here, when LMDB still
 * lets the environment be used (i starts at 0), and after a reopen. */
static void
refs_test(void *arg, const struct fault_spec *fs, int rc, int err, long hits)
{
	struct st_ctx *sc = arg;
	int i;

	ck_assert_msg(rc == 0 || store_rc_clean(fs, rc), "%s, run %ld: %s",
	    fs->name, fault_run, store_strerror(rc));
	for (i = st_usable(sc) ? 0 : 1; i < 2; i++) {
		if (i == 1) {
			st_close(sc);
			st_open(sc);
		}
		ck_assert_int_eq(store_read(sc->s, cb_refs_count, sc), 0);
		ck_assert_uint_eq(sc->rows, rc == 0 ? REFS_N - 1 : 0);
		keep_check(sc);
	}
	st_close(sc);
}

START_TEST(test_refs_faults)
{
	static const struct fault_op op = { "refs_put x40 (no sync)",
	    put_prep, refs_body, refs_test };
	static const struct fault_op op_sync = { "refs_put x40 (sync)",
	    put_prep, refs_body, refs_test };

	put_faults(&op, &op_sync, 0);
}
END_TEST

/* --- entry_get, copied out of the transaction --------------------------- */

/* Argument of cb_get_copy: one entry copied out, as STYLE.md wants. */
struct copy_arg {
	const uint8_t *sid;
	const char *name;
	uint8_t *payload;    /* malloc'd copy */
	size_t len;
	char *type;          /* malloc'd, NUL-terminated */
};

/* Copy entry name out; STORE_E_NOMEM (nothing kept) when memory fails. */
static int
cb_get_copy(store_txn *t, void *a)
{
	struct copy_arg *ca = a;
	store_record r;
	int rc;

	rc = entry_get(t, ca->sid, STORE_KIND_GLOBAL, ca->name,
	    strlen(ca->name), 0, &r);
	if (rc != 0)
		return rc;
	if ((ca->payload = malloc(r.payload_len)) == NULL)
		return STORE_E_NOMEM;
	if ((ca->type = malloc((size_t)r.type_len + 1)) == NULL) {
		free(ca->payload);
		ca->payload = NULL;
		return STORE_E_NOMEM;
	}
	memcpy(ca->payload, r.payload, r.payload_len);
	ca->len = r.payload_len;
	memcpy(ca->type, r.type_name, r.type_len);
	ca->type[r.type_len] = '\0';
	return 0;
}

/* The store stays open across the runs of a read test. */
static struct copy_arg copy_arg;

static int
get_body(void *arg)
{
	struct st_ctx *sc = arg;

	memset(&copy_arg, 0, sizeof copy_arg);
	copy_arg.sid = sc->keep;
	copy_arg.name = "k2";
	return store_read(sc->s, cb_get_copy, &copy_arg);
}

static void
get_test(void *arg, const struct fault_spec *fs, int rc, int err, long hits)
{
	struct st_ctx *sc = arg;

	if (rc != 0) {
		ck_assert_int_eq(rc, STORE_E_NOMEM);
		ck_assert_ptr_null(copy_arg.payload);
	} else {
		ck_assert_uint_eq(copy_arg.len, entry_size(2));
		ck_assert(pattern_ok(copy_arg.payload, copy_arg.len,
		    seed_of("k2")));
		ck_assert_str_eq(copy_arg.type, "bytes");
	}
	free(copy_arg.payload);
	free(copy_arg.type);
	keep_check(sc);
}

START_TEST(test_entry_get_faults)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
		{ "disk EIO", FK_DISK, {EIO}, 1, 0, 0, 0, 0 },
	};
	static const struct fault_op op = { "entry_get + copy",
	    NULL, get_body, get_test };
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_NEVER);
	st_open(&sc);
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &sc), 2);
	st_close(&sc);
}
END_TEST

/* --- store_read of a listing -------------------------------------------- */

/* A listing copied out of a read transaction. */
struct list_arg {
	const uint8_t *sid;
	char **names;   /* malloc'd array of malloc'd names */
	size_t n, cap;
};

/* entry_list callback: copy the name (STORE_E_NOMEM on failure). */
static int
cb_collect(const store_key *k, void *a)
{
	struct list_arg *la = a;
	char **p;

	if (la->n == la->cap) {
		p = realloc(la->names, (la->cap * 2 + 1) * sizeof *p);
		if (p == NULL)
			return STORE_E_NOMEM;
		la->names = p;
		la->cap = la->cap * 2 + 1;
	}
	if ((la->names[la->n] = malloc(k->name_len + 1)) == NULL)
		return STORE_E_NOMEM;
	memcpy(la->names[la->n], k->name, k->name_len);
	la->names[la->n][k->name_len] = '\0';
	la->n++;
	return 0;
}

static int
cb_list(store_txn *t, void *a)
{
	struct list_arg *la = a;

	return entry_list(t, la->sid, STORE_KIND_GLOBAL, cb_collect, la);
}

static struct list_arg list_arg;

static int
list_body(void *arg)
{
	struct st_ctx *sc = arg;

	memset(&list_arg, 0, sizeof list_arg);
	list_arg.sid = sc->keep;
	return store_read(sc->s, cb_list, &list_arg);
}

/* A failed listing returns the callback's NOMEM and keeps the names it
 * copied so far (freed here); a complete one lists k0..k3 in order. */
static void
list_test(void *arg, const struct fault_spec *fs, int rc, int err,
          long hits)
{
	struct st_ctx *sc = arg;
	char name[16];
	size_t i;

	if (rc != 0)
		ck_assert_int_eq(rc, STORE_E_NOMEM);
	else
		ck_assert_uint_eq(list_arg.n, KEEP_N);
	for (i = 0; i < list_arg.n; i++) {
		snprintf(name, sizeof name, "k%u", (unsigned)i);
		ck_assert_str_eq(list_arg.names[i], name);
		free(list_arg.names[i]);
	}
	free(list_arg.names);
	keep_check(sc);
}

START_TEST(test_store_read_listing_faults)
{
	static const struct fault_spec specs[] = {
		{ "oom once", FK_ALLOC, {ENOMEM}, 1, 0, 0, 0, 0 },
		{ "oom from then on", FK_ALLOC, {ENOMEM}, 1, 1, 0, 0, 0 },
		{ "disk EIO", FK_DISK, {EIO}, 1, 0, 0, 0, 0 },
	};
	static const struct fault_op op = { "store_read listing",
	    NULL, list_body, list_test };
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_NEVER);
	st_open(&sc);
	ck_assert_int_ge(faultsim_all(&op, specs, NELEM(specs), &sc), 8);
	st_close(&sc);
}
END_TEST

/* --- session_purge ------------------------------------------------------ */

/* Open the store; make session d<run> with DOOMED_N entries and REFS_N - 1
 * refs rows, and kill it. */
static void
purge_prep(void *arg)
{
	struct st_ctx *sc = arg;
	struct put_arg pa;
	struct sess_arg sa = { .id = sc->sid };

	st_open(sc);
	snprintf(sc->name, sizeof sc->name, "d%ld", ++sc->run);
	session_make(sc->s, sc->name, sc->sid);
	pa.sid = sc->sid;
	pa.prefix = "e";
	pa.count = DOOMED_N;
	ck_assert_int_eq(store_write(sc->s, cb_put, &pa), 0);
	ck_assert_int_eq(store_write(sc->s, cb_refs, sc), 0);
	ck_assert_int_eq(store_write(sc->s, cb_kill, &sa), 0);
	sc->deleted = 0;
}

static int
purge_body(void *arg)
{
	struct st_ctx *sc = arg;

	return session_purge(sc->s, sc->sid, 3, &sc->deleted);
}

/* Batches commit one by one: a failed purge removed whole batches (as
 * *deleted says), and running it again finishes the job. */
static void
purge_test(void *arg, const struct fault_spec *fs, int rc, int err,
           long hits)
{
	struct st_ctx *sc = arg;
	struct sess_arg sa = { .id = sc->sid };
	uint64_t left;

	ck_assert_msg(rc == 0 || store_rc_clean(fs, rc), "%s, run %ld: %s",
	    fs->name, fault_run, store_strerror(rc));
	st_close(sc);
	st_open(sc);
	left = entry_count(sc->s, sc->sid);
	ck_assert_uint_eq(left + sc->deleted, DOOMED_N);
	ck_assert_msg(left == 0 || sc->deleted % 3 == 0, "run %ld: %zu "
	    "deleted in batches of 3", fault_run, sc->deleted);
	if (rc == 0)
		ck_assert_int_eq(store_read(sc->s, cb_by_id, &sa),
		    STORE_E_NOTFOUND);
	ck_assert_int_eq(session_purge(sc->s, sc->sid, 3, NULL), 0);
	ck_assert_uint_eq(entry_count(sc->s, sc->sid), 0);
	ck_assert_int_eq(store_read(sc->s, cb_refs_count, sc), 0);
	ck_assert_uint_eq(sc->rows, 0);
	ck_assert_int_eq(sc->any, 0);
	ck_assert_int_eq(store_read(sc->s, cb_by_id, &sa), STORE_E_NOTFOUND);
	keep_check(sc);
	st_close(sc);
}

START_TEST(test_session_purge_faults)
{
	static const struct fault_op op = { "session_purge",
	    purge_prep, purge_body, purge_test };
	struct st_ctx sc;

	st_init(&sc, STORE_SYNC_NEVER);
	ck_assert_int_ge(faultsim_all(&op, disk_specs, NELEM(disk_specs),
	    &sc), 15);
}
END_TEST

/* --- Limits: a really full map ------------------------------------------ */

/* The map's most, and the entries of the write that cannot fit. */
#define FULL_MAP_MAX ((size_t)512 << 10)
#define FULL_N 20

/* Argument of cb_put_big: count entries of size bytes. */
struct big_arg {
	const uint8_t *sid;
	const char *prefix;
	int count;
	size_t size;
};

static int
cb_put_big(store_txn *t, void *a)
{
	struct big_arg *ba = a;
	store_entry_in in;
	struct iovec iov;
	char name[64];
	int i, rc;

	for (i = 0; i < ba->count; i++) {
		snprintf(name, sizeof name, "%s%d", ba->prefix, i);
		pattern_fill(payload_buf, ba->size, seed_of(name));
		memset(&in, 0, sizeof in);
		in.kind = STORE_KIND_GLOBAL;
		in.name = name;
		in.name_len = strlen(name);
		in.type_name = "bytes";
		iov.iov_base = payload_buf;
		iov.iov_len = ba->size;
		in.iov = &iov;
		in.iovcnt = 1;
		if ((rc = entry_put(t, ba->sid, &in, 1)) != 0)
			return rc;
	}
	return 0;
}

/* Assert that big entries prefix0.. of size are all there or none. */
static void
big_check(store *s, const uint8_t *sid, const char *prefix, int count,
          size_t size, int want)
{
	struct get_arg ga = { sid, NULL, size, 0 };
	char name[64];
	int i, rc;

	for (i = 0; i < count; i++) {
		snprintf(name, sizeof name, "%s%d", prefix, i);
		ga.name = name;
		ga.match = 0;
		rc = store_read(s, cb_get, &ga);
		if (want)
			ck_assert_msg(rc == 0 && ga.match, "%s: %d", name, rc);
		else
			ck_assert_msg(rc == STORE_E_NOTFOUND, "%s: %d", name, rc);
	}
}


/* A write callback that fails for a reason of its own. */
static int
cb_fail(store_txn *t, void *a)
{
	(void)t;
	(void)a;
	return STORE_E_NOTFOUND;
}

/* --- which durable step failed (store_write_cause) ----------------------- */

/* Whether cause is "<step> <dir>/blobs/<32 hex digits>: <msg>" (file) or
 * "<step> <dir>/blobs: <msg>" (the directory) or "<step> <dir>/data.mdb:
 * <msg>" (LMDB's file). */
static int
cause_is(const char *cause, const char *step, const char *dir,
         const char *what, const char *msg)
{
	size_t n;
	int i;

	n = strlen(step);
	if (strncmp(cause, step, n) != 0 || cause[n] != ' ')
		return 0;
	cause += n + 1;
	n = strlen(dir);
	if (strncmp(cause, dir, n) != 0)
		return 0;
	cause += n;
	if (strcmp(what, "file") == 0) {
		if (strncmp(cause, "/blobs/", 7) != 0)
			return 0;
		for (i = 0, cause += 7; i < 32; i++, cause++)
			if (!((*cause >= '0' && *cause <= '9') ||
			    (*cause >= 'a' && *cause <= 'f')))
				return 0;
	} else {
		n = strlen(what);
		if (strncmp(cause, what, n) != 0)
			return 0;
		cause += n;
	}
	return strncmp(cause, ": ", 2) == 0 && strcmp(cause + 2, msg) == 0;
}

/* The steps a blob write under STORE_SYNC_ALWAYS can fail at, each with
 * the call kind that reaches it and the errno injected. */
static const struct {
	const char *step;
	const char *what;      /* "file", "/blobs" or "/data.mdb" */
	unsigned kind;
	int err;
	int rc;                /* what store_write_cause returns */
} cause_steps[] = {
	{"openat", "file", FK_OPENAT, EMFILE, STORE_E_IO},
	{"write", "file", FK_WRITE, ENOSPC, STORE_E_FULL},
	{"fdatasync", "file", FK_DISK, EIO, STORE_E_IO},
	{"fsync", "/blobs", FK_DISK, EIO, STORE_E_IO},
	{"mdb_txn_commit", "/data.mdb", FK_DISK, EIO, 0},
};

/* Each durable step of a write fails in turn: store_write_cause says
 * which step, on which file, with the errno of the failed call (kept
 * across the close() that follows it), and returns the same code as
 * store_write.  A write that no fault reaches has no cause. */
START_TEST(test_write_cause)
{
	static const unsigned kinds[] = {FK_OPENAT, FK_WRITE, FK_DISK};
	int seen[NELEM(cause_steps)] = {0};
	struct st_ctx sc;
	size_t k, j;

	st_init(&sc, STORE_SYNC_ALWAYS);
	sc.opt.blob_min = 1;         /* every payload in a blob file */
	for (k = 0; k < NELEM(kinds); k++) {
		int err = kinds[k] == FK_OPENAT ? EMFILE :
		    kinds[k] == FK_WRITE ? ENOSPC : EIO;
		struct fault_spec fs = {"cause", kinds[k], {err}, 1, 0, 0, 0,
		    0};
		long n, hits;

		for (n = 1; n < FAULT_RUNS_MAX; n++) {
			struct put_arg pa;
			char *cause = (char *)"untouched", prefix[32];
			int rc, matched = 0;

			st_open(&sc);
			snprintf(prefix, sizeof prefix, "c%zu_%ld_", k, n);
			pa.sid = sc.work;
			pa.prefix = prefix;
			pa.count = 2;
			fault_arm(&fs, n);
			rc = store_write_cause(sc.s, cb_put, &pa, &cause);
			hits = fault_disarm();
			if (hits == 0) {
				ck_assert_msg(rc == 0, "kind %#x: %s (%s)",
				    kinds[k], store_strerror(rc),
				    cause != NULL ? cause : "no cause");
				ck_assert_ptr_null(cause);
				st_close(&sc);
				break;
			}
			ck_assert_msg(rc != 0, "kind %#x, call %ld failed but "
			    "the write succeeded", kinds[k], n);
			ck_assert_msg(cause != NULL, "kind %#x, call %ld: %s "
			    "without a cause", kinds[k], n, store_strerror(rc));
			for (j = 0; j < NELEM(cause_steps); j++)
				if (cause_steps[j].kind == kinds[k] &&
				    cause_is(cause, cause_steps[j].step, sc.dir,
				    cause_steps[j].what, strerror(err)) &&
				    (cause_steps[j].rc == 0 ||
				    rc == cause_steps[j].rc)) {
					seen[j]++;
					matched = 1;
				}
			ck_assert_msg(matched, "kind %#x, call %ld: unexpected "
			    "cause \"%s\" (%s)", kinds[k], n, cause,
			    store_strerror(rc));
			free(cause);
			st_close(&sc);
		}
		ck_assert_int_lt(n, FAULT_RUNS_MAX);
	}
	for (j = 0; j < NELEM(cause_steps); j++)
		ck_assert_msg(seen[j] > 0, "no write failed at %s",
		    cause_steps[j].step);
	/* the caller that does not ask gets the same code, and nothing
	 * leaks (valgrind) */
	{
		struct fault_spec fs = {"cause", FK_DISK, {EIO}, 1, 0, 0, 0, 0};
		struct put_arg pa = {sc.work, "nocause_", 2};
		char *cause = NULL;
		int rc;

		st_open(&sc);
		fault_arm(&fs, 1);
		rc = store_write(sc.s, cb_put, &pa);
		ck_assert_int_eq(fault_disarm(), 1);
		ck_assert_int_eq(rc, STORE_E_IO);
		/* and a write that fails for a reason of its own says none */
		ck_assert_int_eq(store_write_cause(sc.s, cb_fail, NULL, &cause),
		    STORE_E_NOTFOUND);
		ck_assert_ptr_null(cause);
		st_close(&sc);
	}
}
END_TEST


/* store_sync_cause, the same for the sync of STORE_SYNC_INTERVAL: the
 * files committed since the last sync, the directory, then LMDB's file. */
START_TEST(test_sync_cause)
{
	static const struct {
		const char *step, *what;
		unsigned kind;
	} steps[] = {
		{"openat", "file", FK_OPENAT},
		{"fdatasync", "file", FK_DISK},
		{"fsync", "/blobs", FK_DISK},
		{"mdb_env_sync", "/data.mdb", FK_DISK},
	};
	static const unsigned kinds[] = {FK_OPENAT, FK_DISK};
	int seen[NELEM(steps)] = {0};
	struct st_ctx sc;
	size_t k, j;

	st_init(&sc, STORE_SYNC_INTERVAL);
	sc.opt.blob_min = 1;
	for (k = 0; k < NELEM(kinds); k++) {
		struct fault_spec fs = {"sync cause", kinds[k], {EIO}, 1, 0, 0,
		    0, 0};
		long n;

		for (n = 1; n < FAULT_RUNS_MAX; n++) {
			struct put_arg pa;
			char *cause = (char *)"untouched", prefix[32];
			int rc, matched = 0;
			long hits;

			st_open(&sc);
			snprintf(prefix, sizeof prefix, "s%zu_%ld_", k, n);
			pa.sid = sc.work;
			pa.prefix = prefix;
			pa.count = 2;
			ck_assert_int_eq(store_write(sc.s, cb_put, &pa), 0);
			fault_arm(&fs, n);
			rc = store_sync_cause(sc.s, &cause);
			hits = fault_disarm();
			if (hits == 0) {
				ck_assert_int_eq(rc, 0);
				ck_assert_ptr_null(cause);
				st_close(&sc);
				break;
			}
			ck_assert_msg(rc != 0 && cause != NULL, "kind %#x, call "
			    "%ld: %s, cause %s", kinds[k], n,
			    store_strerror(rc), cause ? cause : "none");
			for (j = 0; j < NELEM(steps); j++)
				if (steps[j].kind == kinds[k] &&
				    cause_is(cause, steps[j].step, sc.dir,
				    steps[j].what, strerror(EIO))) {
					seen[j]++;
					matched = 1;
				}
			ck_assert_msg(matched, "kind %#x, call %ld: unexpected "
			    "cause \"%s\"", kinds[k], n, cause);
			free(cause);
			st_close(&sc);
		}
		ck_assert_int_lt(n, FAULT_RUNS_MAX);
	}
	for (j = 0; j < NELEM(steps); j++)
		ck_assert_msg(seen[j] > 0, "no sync failed at %s",
		    steps[j].step);
}
END_TEST

/* A write of FULL_N 40 KB entries grows the map to its maximum and still
 * does not fit: STORE_E_FULL, none of it visible, the earlier data intact,
 * and a smaller write then succeeds. */
START_TEST(test_store_full_map)
{
	struct big_arg early = { NULL, "early", 5, 8000 };
	struct big_arg huge = { NULL, "huge", FULL_N, 40000 };
	struct big_arg small = { NULL, "small", 2, 8000 };
	struct st_ctx sc;
	size_t map, used, max;
	int rc;

	st_init(&sc, STORE_SYNC_NEVER);
	tu_rmtree(sc.dir); /* again, with a small map */
	sc.opt.map_initial = (size_t)128 << 10;
	sc.opt.map_max = FULL_MAP_MAX;
	st_open(&sc);
	session_make(sc.s, "full", sc.sid);
	early.sid = huge.sid = small.sid = sc.sid;
	ck_assert_int_eq(store_write(sc.s, cb_put_big, &early), 0);
	rc = store_write(sc.s, cb_put_big, &huge);
	ck_assert_msg(rc == STORE_E_FULL, "%s", store_strerror(rc));
	ck_assert_int_eq(store_usage(sc.s, &map, &used, &max), 0);
	ck_assert_uint_eq(map, FULL_MAP_MAX);
	ck_assert_uint_eq(max, FULL_MAP_MAX);
	big_check(sc.s, sc.sid, "huge", FULL_N, huge.size, 0);
	big_check(sc.s, sc.sid, "early", early.count, early.size, 1);
	ck_assert_uint_eq(entry_count(sc.s, sc.sid), early.count);
	/* Full again, still nothing of it. */
	ck_assert_int_eq(store_write(sc.s, cb_put_big, &huge), STORE_E_FULL);
	ck_assert_int_eq(store_write(sc.s, cb_put_big, &small), 0);
	big_check(sc.s, sc.sid, "small", small.count, small.size, 1);
	st_close(&sc);
	st_open(&sc);
	big_check(sc.s, sc.sid, "huge", FULL_N, huge.size, 0);
	big_check(sc.s, sc.sid, "early", early.count, early.size, 1);
	big_check(sc.s, sc.sid, "small", small.count, small.size, 1);
	ck_assert_uint_eq(entry_count(sc.s, sc.sid),
	    early.count + small.count);
	st_close(&sc);
}
END_TEST

/* --- Limits: short I/O, polls that never report, odd returns ------------ */

/* One-byte reads and writes throughout: nothing fails, frames arrive. */
START_TEST(test_wire_one_byte_io)
{
	static const struct fault_spec rd = { "1 B reads", FK_READ, {0}, 1,
	    0, 1, 1, 0 };
	static const struct fault_spec wr = { "1 B writes", FK_WRITE, {0}, 1,
	    0, 1, 1, 0 };
	struct conn_ctx cc;
	struct write_ctx *wc = malloc(sizeof *wc);
	int rc;

	ck_assert_ptr_nonnull(wc);
	all_frames_build();
	cc.timeout_ms = -1;
	conn_prep(&cc);
	fault_arm(&rd, 0);
	rc = conn_body(&cc);
	ck_assert_int_eq(fault_disarm(), 0);
	ck_assert_int_eq(rc, WIRE_OK);
	ck_assert_int_ge(F.calls, (long)all_frames.len);
	conn_test(&cc, &rd, rc, 0, 0);

	wc->size = 4096;
	pattern_fill(wc->data, wc->size, 9);
	write_prep(wc);
	fault_arm(&wr, 0);
	rc = write_body(wc);
	fault_disarm();
	ck_assert_int_eq(F.calls, 4096);
	write_test(wc, &wr, rc, 0, 0);
	free(wc);
	wire_buf_free(&all_frames);
}
END_TEST

/* A poll that never reports data times out at the deadline (and not much
 * later); TIMEOUT leaves the stream in step, so reading goes on. */
START_TEST(test_conn_read_poll_never_ready)
{
	static const struct fault_spec never = { "poll always empty",
	    FK_POLL, {0}, 1, 1, 0, 0, 0 };
	struct conn_ctx cc;
	uint64_t t0, dt;
	int rc;

	all_frames_build();
	cc.timeout_ms = -1;
	conn_prep(&cc);
	t0 = tu_mono_ms();
	fault_arm(&never, 1);
	rc = wire_conn_read(&cc.c, &cc.m, 50);
	fault_disarm();
	dt = tu_mono_ms() - t0;
	ck_assert_int_eq(rc, WIRE_E_TIMEOUT);
	ck_assert_uint_ge(dt, 50);
	ck_assert_uint_lt(dt, 5000);
	ck_assert_int_eq(conn_body(&cc), WIRE_OK);
	conn_test(&cc, &never, WIRE_OK, 0, 0);
	wire_buf_free(&all_frames);
}
END_TEST

/* A read with a timeout of 0 polls once: "nothing ready" is TIMEOUT. */
START_TEST(test_conn_read_zero_timeout)
{
	static const struct fault_spec once = { "poll empty once",
	    FK_POLL, {0}, 1, 0, 0, 0, 0 };
	struct conn_ctx cc;

	all_frames_build();
	cc.timeout_ms = 0;
	conn_prep(&cc);
	fault_arm(&once, 1);
	ck_assert_int_eq(wire_conn_read(&cc.c, &cc.m, 0), WIRE_E_TIMEOUT);
	ck_assert_int_eq(fault_disarm(), 1);
	ck_assert_int_eq(conn_body(&cc), WIRE_OK);
	conn_test(&cc, &once, WIRE_OK, 0, 0);
	wire_buf_free(&all_frames);
}
END_TEST

/* A write that keeps returning 0 is an error (EIO), not a busy loop. */
START_TEST(test_write_all_zero_forever)
{
	static const struct fault_spec zero = { "write returns 0 always",
	    FK_WRITE, {0}, 1, 1, 0, 0, 0 };
	struct write_ctx *wc = malloc(sizeof *wc);
	int rc, err;

	ck_assert_ptr_nonnull(wc);
	wc->size = 100;
	pattern_fill(wc->data, wc->size, 3);
	write_prep(wc);
	fault_arm(&zero, 1);
	errno = 0;
	rc = wire_write_all(wc->sv[0], wc->data, wc->size);
	err = errno;
	ck_assert_int_eq(fault_disarm(), 1);
	ck_assert_int_eq(err, EIO);
	write_test(wc, &zero, rc, err, 1);
	/* Nothing to write is no call at all. */
	fault_arm(&zero, 1);
	rc = wire_write_all(-1, wc->data, 0);
	ck_assert_int_eq(fault_disarm(), 0);
	ck_assert_int_eq(rc, WIRE_OK);
	free(wc);
}
END_TEST

/* store_default_path() is NULL when memory fails, never a bad string. */
static int
default_path_body(void *arg)
{
	char **p = arg;

	*p = store_default_path();
	return *p == NULL ? STORE_E_NOMEM : 0;
}

static void
default_path_test(void *arg, const struct fault_spec *fs, int rc, int err,
                  long hits)
{
	char **p = arg;

	if (rc == 0)
		ck_assert_str_eq(*p + strlen(*p) - strlen("/pyshelf"),
		    "/pyshelf");
	free(*p);
}

START_TEST(test_default_path_oom)
{
	static const struct fault_spec oom = { "oom once", FK_ALLOC,
	    {ENOMEM}, 1, 0, 0, 0, 0 };
	static const struct fault_op op = { "store_default_path", NULL,
	    default_path_body, default_path_test };
	char *p = NULL;

	ck_assert_int_eq(faultsim(&op, &oom, &p), 1);
}
END_TEST

/* Every disk write short: the commit fails cleanly (LMDB calls a short
 * write EIO) and nothing of it is visible, in this process or the next
 * open. */
START_TEST(test_store_short_disk_writes)
{
	static const struct fault_spec shortw = { "disk writes of 512 B",
	    FK_DISK, {EIO}, 1, 0, 512, 0, 0 };
	struct st_ctx sc;
	int rc;

	st_init(&sc, STORE_SYNC_ALWAYS);
	st_open(&sc);
	snprintf(sc.name, sizeof sc.name, "short_");
	fault_arm(&shortw, 0);
	rc = put_body(&sc);
	fault_disarm();
	ck_assert_msg(rc == STORE_E_IO || rc == STORE_E_LMDB, "%s",
	    store_strerror(rc));
	if (st_usable(&sc))
		put_check(&sc, 0);
	st_close(&sc);
	st_open(&sc);
	put_check(&sc, 0);
	keep_check(&sc);
	/* And with whole writes again, the same write commits. */
	ck_assert_int_eq(put_body(&sc), 0);
	sc.work_n += PUT_N;
	put_check(&sc, 1);
	keep_check(&sc);
	st_close(&sc);
}
END_TEST

/* --- suite -------------------------------------------------------------- */

static Suite *
fault_suite(void)
{
	Suite *s = suite_create("fault");
	TCase *tc;

	tc = tcase_create("Core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_wire_build_oom);
	tcase_add_test(tc, test_wire_parse_oom);
	tcase_add_test(tc, test_conn_read_oom);
	tcase_add_test(tc, test_conn_read_io);
	tcase_add_test(tc, test_conn_read_poll);
	tcase_add_test(tc, test_write_all_faults);
	tcase_add_test(tc, test_store_open_create_faults);
	tcase_add_test(tc, test_store_open_existing_faults);
	tcase_add_test(tc, test_session_create_faults);
	tcase_add_test(tc, test_entry_put_faults);
	tcase_add_test(tc, test_entry_put_sorted_faults);
	tcase_add_test(tc, test_entry_put_blob_faults);
	tcase_add_test(tc, test_entry_put_sorted_blob_faults);
	tcase_add_test(tc, test_refs_faults);
	tcase_add_test(tc, test_entry_get_faults);
	tcase_add_test(tc, test_store_read_listing_faults);
	tcase_add_test(tc, test_session_purge_faults);
	tcase_add_test(tc, test_write_cause);
	tcase_add_test(tc, test_sync_cause);
	suite_add_tcase(s, tc);

	tc = tcase_create("Limits");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, TU_TIMEOUT);
	tcase_add_test(tc, test_store_full_map);
	tcase_add_test(tc, test_wire_one_byte_io);
	tcase_add_test(tc, test_conn_read_poll_never_ready);
	tcase_add_test(tc, test_conn_read_zero_timeout);
	tcase_add_test(tc, test_write_all_zero_forever);
	tcase_add_test(tc, test_default_path_oom);
	tcase_add_test(tc, test_store_short_disk_writes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	const char *v = getenv("FAULT_VERBOSE");
	SRunner *sr;
	int failed;

	fault_verbose = v != NULL ? atoi(v) : 0;
	if (tu_mkdtemp(base_dir, sizeof base_dir, tu_tmpdir(),
	    "check_fault") != 0) {
		fprintf(stderr, "check_fault: mkdtemp in %s: %s\n", tu_tmpdir(),
		    strerror(errno));
		return EXIT_FAILURE;
	}
	sr = srunner_create(fault_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmtree(base_dir);
	if (fault_verbose)
		printf("fault: %ld fault points in this process\n",
		    fault_points_total);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
