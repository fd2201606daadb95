/*
 * pyshelfd.c - the backend's entry point: options, --help, and the stdio
 * mode that serves one client and one session over stdin/stdout.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "exec.h"
#include "server.h"

void
pyshelfd_usage(FILE *f)
{
	fprintf(f,
"NAME\n"
"    pyshelfd - backend of pyshelf: persistent Python workspaces in LMDB\n"
"\n"
"SYNOPSIS\n"
"    pyshelfd --stdio --session NAME [--db DIR] [--create | --new |\n"
"             --read-only] [options]\n"
"    pyshelfd --server [--socket PATH] [--db DIR] [--foreground]\n"
"             [--exit-empty S] [--idle-exit S] [worker options]\n"
"    pyshelfd --sweep [--db DIR] [--end NAME] [--since MS] [options]\n"
"    pyshelfd --worker --session NAME --control-fd N [--control PATH]\n"
"             [--db DIR] [--create | --new] [--idle-exit S]\n"
"             [--hard-grace S] [options]\n"
"    pyshelfd --help | --version\n"
"\n"
"DESCRIPTION\n"
"    pyshelfd runs Python code that a client ships to it in a long-lived\n"
"    workspace, keeps the results as handles, and pickles every global and\n"
"    handle into an LMDB store under the session's keys, so that a new\n"
"    pyshelfd on the same store and session serves the same objects after a\n"
"    detach, a crash or a reboot.\n"
"\n"
"    In --stdio mode it speaks the pyshelf protocol (docs/PROTOCOL.md) on\n"
"    stdin/stdout with exactly one client and serves one session; clients\n"
"    (the pyshelf Python package, libpyshelf) spawn it this way.  The\n"
"    protocol uses private copies of fds 0 and 1: shipped code reads\n"
"    /dev/null on fd 0 (input() gets EOFError), and fds 1 and 2 are pipes\n"
"    whose bytes (C code, child processes, faulthandler) are streamed to the\n"
"    client as output of the running request, like sys.stdout/sys.stderr;\n"
"    outside a request they go to pyshelfd's stderr.\n"
"\n"
"OPTIONS\n"
"    --stdio                 serve one client on stdin/stdout (required)\n"
"    --db DIR                the store directory (default:\n"
"                            $XDG_DATA_HOME/pyshelf or ~/.local/share/pyshelf)\n"
"    --session NAME          the session to serve (default: \"default\")\n"
"    --create                create the session when it does not exist\n"
"                            (shelve's flag 'c'); without it the session\n"
"                            must exist (flag 'w')\n"
"    --new                   always a new, empty session (flag 'n'; implies\n"
"                            --create): a live session of that name is\n"
"                            ended (its entries deleted, a tombstone kept)\n"
"                            unless in use\n"
"    --read-only             serve an existing session read-only (flag\n"
"                            'r'): SET, DEL and CLOSE are refused (error\n"
"                            READ_ONLY); EXEC runs, but no checkpoint is\n"
"                            ever written, so what it changes lives only\n"
"                            in this process; nothing is written to the\n"
"                            store, no sweep runs.  Several read-only\n"
"                            pyshelfds may serve one session at once, never\n"
"                            beside a writing one\n"
"    --create-db             create the store directory's missing parents;\n"
"                            without it a store directory is only created\n"
"                            where its parent exists (a typo in --db is an\n"
"                            error, not a new tree of directories)\n"
"    --allow-foreign-store   open a store that another user owns, or that\n"
"                            others may write to.  Without it pyshelfd refuses\n"
"                            such a store (as ssh refuses a key file open to\n"
"                            others): its records are pickles, and loading one\n"
"                            runs whatever code its writer put there, with\n"
"                            the rights of the user running pyshelfd\n"
"    --lease SECONDS         lease of the session: how long it lives with no\n"
"                            client attached and no code running, counted\n"
"                            from the last request or detach (default\n"
"                            2592000 = 30 days; 0 = forever).  A session\n"
"                            whose lease ran out is ended by the next sweep\n"
"                            (a server's sweeper, or the next pyshelfd\n"
"                            --stdio that opens the store; see SWEEP); its\n"
"                            tombstone (name, id, when and why\n"
"                            it ended, entries and bytes freed) is kept 90\n"
"                            days: opening the name again with --create\n"
"                            warns, without it is an error (SESSION_DEAD)\n"
"    --checkpoint-interval S seconds between checkpoints of loaded mutable\n"
"                            entries (at most 20,000 each, round robin),\n"
"                            catching in-place changes no request named:\n"
"                            while threads of shipped code run, and after a\n"
"                            request until all were looked at (default 5;\n"
"                            0 = only on sync, detach and shutdown)\n"
"    --sync POLICY           always: fsync every commit (survives power loss;\n"
"                            slowest); interval: fsync at each interval\n"
"                            checkpoint and at shutdown (default); never:\n"
"                            leave flushing to the kernel.  Every policy\n"
"                            survives a crash of pyshelfd itself (SIGKILL).\n"
"    --max-frame BYTES       largest incoming frame body (default 67108864)\n"
"    --map-max BYTES         largest the store may grow to: the LMDB map's\n"
"                            pages plus the blob files (default 1 TiB).\n"
"                            When it, or the disk, is full, a checkpoint\n"
"                            commits what fits and names what it could not\n"
"                            write (ERROR STORE); that stays pending, and is\n"
"                            written once there is room (a del, or sync()\n"
"                            after freeing disk space)\n"
"    --memory-limit BYTES    the most memory the workspace may allocate\n"
"                            (RLIMIT_DATA; default none): past it, shipped code\n"
"                            gets MemoryError, seen as a WrappedExcinfo, and\n"
"                            the workspace goes on\n"
"    BYTES is a number of bytes, or one ending in K, M, G or T (KiB, MiB,\n"
"    GiB, TiB: --map-max 64G).  A bad value is an error naming the option\n"
"    (exit status 2); with --stdio it is also sent on stdout as an ERROR\n"
"    frame with ERRCODE USAGE, so that the client can show it.\n"
"\n"
"  Worker mode (started by pyshelfd --server; see docs/OPERATIONS.md)\n"
"    --worker                serve one session to the clients a supervisor\n"
"                            hands over its control channel (several at\n"
"                            once; running code goes on when they detach)\n"
"    --control-fd N          the control channel: an AF_UNIX SOCK_SEQPACKET\n"
"                            socket to the supervisor (docs/PROTOCOL.md,\n"
"                            \"Server mode\"); without one the worker serves\n"
"                            the clients it has and exits when idle\n"
"    --control PATH          also listen there (mode 0600, same uid only):\n"
"                            a supervisor that restarted connects and\n"
"                            becomes the control channel\n"
"    --idle-exit SECONDS     with no client attached and nothing running for\n"
"                            this long, checkpoint and exit 0, once the\n"
"                            supervisor agrees (default 300; 0 = never);\n"
"                            never while the session holds volatile\n"
"                            entries (they would be lost); a thread that\n"
"                            shipped code started (daemon or not) is\n"
"                            running code until it ends\n"
"    --hard-grace SECONDS    an interrupt or timeout that has not stopped\n"
"                            the running code after this long (code stuck\n"
"                            in C) restarts the worker: same pid, same\n"
"                            connections, the session resumed from its\n"
"                            last checkpoint; the call's client gets ERROR\n"
"                            WORKER_RESTARTED saying what was lost\n"
"                            (default 5; 0 = never).  In --stdio mode:\n"
"                            when the client has left and its running code\n"
"                            did not stop within this time, pyshelfd exits\n"
"                            (status 1; the session keeps its last\n"
"                            checkpoint) instead of spinning on\n"
"    --since MS              internal: the supervisor's start (ms since the\n"
"                            epoch); an attach finds a session whose lease,\n"
"                            counted from no earlier, ran out ended\n"
"    --adopt CTL,FD,...      internal: the descriptors a restarting worker\n"
"                            keeps (control channel, then connections:\n"
"                            FD, or IN/OUT for one on pipes)\n"
"    --stopping              internal: with --adopt, the supervisor is\n"
"                            stopping: open the session and exit\n"
"    -h, --help              this text\n"
"    -V, --version           print the version\n"
"\n"
"SIGNALS\n"
"    SIGTERM and SIGINT stop pyshelfd cleanly: running code is interrupted,\n"
"    everything is checkpointed, the store is synced.  End of input does\n"
"    the same.  After SIGKILL, the next pyshelfd serves everything up to the\n"
"    last completed checkpoint (one per request, and the interval ones).\n""    At exit, after the final checkpoint, pyshelfd waits up to 2 s for\n"
"    non-daemon threads of shipped code, then exits without them.\n"
"\n"
"ENVIRONMENT\n"
"    MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_\n"
"                            glibc's malloc tuning (mallopt(3)).  Unset,\n"
"                            pyshelfd takes 128 MiB and 256 MiB: the buffer\n"
"                            LMDB fills for a checkpoint (values under\n"
"                            1 MiB; larger ones go to blob files) is reused\n"
"                            by the next one instead of mapped anew, and up\n"
"                            to 256 MiB of free heap stays with the process.\n"
"    GLIBC_TUNABLES          glibc's tunables.  libpyshelf starts pyshelfd\n"
"                            with glibc.malloc.hugetlb=1 added, unless that\n"
"                            tunable is set: the heap is backed by\n"
"                            transparent huge pages, so large allocations\n"
"                            (arrays, a checkpoint's buffer) fault in 2 MiB\n"
"                            pages instead of 4 KiB ones.  Started by hand,\n"
"                            set it yourself for the same effect.\n"
"    PYSHELFD_COMPILE_BACKEND\n"
"                            set and not empty: compile the backend's\n"
"                            Python half from its embedded source at start,\n"
"                            instead of loading the bytecode made at build\n"
"                            time (which pyshelfd does only when the\n"
"                            interpreter's magic number is the one it was\n"
"                            made with).  Slower to start, same behaviour.\n"
"\n"
"SERVER MODE\n"
"    pyshelfd --server is the supervisor that pyshelf.open() starts when\n"
"    no server answers (docs/OPERATIONS.md, \"Server mode\").  It serves\n"
"    one store on a Unix socket, never runs Python and never opens the\n"
"    store itself: for each live session it starts a worker (this binary,\n"
"    fork + exec, `pyshelfd --worker`), reads each client's HELLO and\n"
"    ATTACH, and hands the connection to the session's worker; from then\n"
"    on client and worker talk directly.  Workers outlive clients: code\n"
"    keeps running after a detach, and a worker with no client exits on\n"
"    its own after --idle-exit.  Workers outlive the supervisor too: one\n"
"    started later (by the next client) adopts them.\n"
"    --socket PATH           listen on PATH (its directory: ours, not\n"
"                            writable by others).  Default: DIR/NAME, DIR\n"
"                            $XDG_RUNTIME_DIR/pyshelf else\n"
"                            /tmp/pyshelf-UID (created 0700, refused when\n"
"                            another user owns it or others may use it),\n"
"                            NAME \"default\" for the default store, else\n"
"                            db-<16 hex digits of the store's real path>.\n"
"                            The socket is 0600 and every peer's uid is\n"
"                            checked (SO_PEERCRED): another user's\n"
"                            connection is refused before it is read.\n"
"                            The server records its socket in the store's\n"
"                            directory (server.sock, a symbolic link, while\n"
"                            it holds server.lock): clients of every\n"
"                            runtime directory find it there, and a second\n"
"                            server for the store refuses to start\n"
"    --foreground            stay in the foreground, log on stderr.\n"
"                            Without it pyshelfd becomes a daemon (log:\n"
"                            DIR/NAME.log) and the command exits 0 only\n"
"                            once the socket accepts, 1 with the reason\n"
"                            when the server could not start, so\n"
"                            `pyshelfd --server && client` never races\n"
"    --exit-empty SECONDS    exit when no worker runs and no client is\n"
"                            connected for this long (default 10; 0 =\n"
"                            never)\n"
"    --idle-exit SECONDS     a worker with no client and no running code\n"
"                            (no call, no thread of shipped code alive)\n"
"                            checkpoints and exits after this long\n"
"                            (default 300; 0 = never); the next attach\n"
"                            starts a new one, which resumes the session\n"
"    --hard-grace SECONDS    passed on to the workers (see --worker)\n"
"    --sweep-interval SECONDS\n"
"                            run the sweep (pyshelfd --sweep, a child\n"
"                            process) at start, then every SECONDS, each\n"
"                            wait drawn within 20%% of it (default 60; 0 =\n"
"                            only at start and when a session ends).  Leases\n"
"                            count from no earlier than the server's start:\n"
"                            its downtime expires no session\n"
"    --sweep-batch N, --sweep-batch-ms MS, --sweep-pause-ms MS\n"
"                            passed on to each sweep (see SWEEP)\n"
"    --db, --create-db, --allow-foreign-store, --lease,\n"
"    --checkpoint-interval, --sync, --max-frame, --map-max,\n"
"    --memory-limit          as above, passed on to every worker\n"
"    One server runs per socket: it holds a lock on DIR/NAME.pid (its\n"
"    pid) for its life.  A second `pyshelfd --server` for the same socket\n"
"    waits until the first accepts, says so and exits 0.  A socket file\n"
"    whose server died (connections refused) is replaced.\n"
"    SIGTERM (or SIGINT) to the supervisor: it asks every worker to stop\n"
"    over its control channel, whatever shipped code did to the worker's\n"
"    signals (each stops its running call, as a hard interrupt after\n"
"    --hard-grace, checkpoints and exits), waits for them all, removes\n"
"    the socket and exits 0; meanwhile a new client is told the server\n"
"    is stopping.  SIGKILL of the supervisor\n"
"    takes no worker with it.  A worker that dies (a signal, an exit\n"
"    status) is logged; the next client of its session learns how in\n"
"    ATTACHED (SIGNAL, MESSAGE), and gets a new worker.\n"
"\n"
"SWEEP\n"
"    pyshelfd --sweep [--db DIR] [--end NAME] [options] ends the sessions\n"
"    whose lease ran out and that no process holds (tombstone \"expired\"),\n"
"    then deletes what ended sessions left (entries, references, calls, blob\n"
"    files, the record last), and drops tombstones older than 90 days.  No\n"
"    Python; it may run beside a server.  Killed halfway, the next sweep\n"
"    resumes where it stopped.  A server runs it itself (--sweep-interval).\n"
"    --end NAME              first end session NAME (tombstone \"ended\"):\n"
"                            pyshelf.end() with no server running.  Exit\n"
"                            status 0 (stdout: ENDED_MS ended), 3 no such\n"
"                            session, 4 it had ended (stdout: ENDED_MS\n"
"                            REASON), 5 a pyshelfd serves it (stdout: its\n"
"                            pid, 0 unknown)\n"
"    --end-only              with --end: end it and stop (the next sweep\n"
"                            deletes it)\n"
"    --since MS              count leases from no earlier than MS (ms since\n"
"                            the epoch: a server passes its start)\n"
"    --sweep-batch N         most deletions per write transaction (default\n"
"                            1000)\n"
"    --sweep-batch-ms MS     most milliseconds per write transaction\n"
"                            (default 5; 0 = no bound); the write lock is\n"
"                            let go between transactions\n"
"    --sweep-pause-ms MS     pause between transactions, so that a waiting\n"
"                            writer gets the lock (default 1)\n"
"    --progress              a line on stderr per transaction\n"
"    --sync POLICY           as above (default interval: no fsync per\n"
"                            transaction, which would hold the write lock\n"
"                            through it; the deletions are synced before a\n"
"                            blob file they dropped is unlinked, and at the\n"
"                            end)\n"
"    --allow-foreign-store   as above\n"
"\n"
"EXIT STATUS\n"
"    0 after a clean shutdown, 1 on errors, 2 on bad usage, 70 when a\n"
"    worker found descriptors of its own closed or replaced by the code\n"
"    it ran (it exits before touching the files in their place; the\n"
"    session keeps its last checkpoint).\n"
"\n"
"SESSION LOCK\n"
"    The pyshelfd serving a session holds an OFD lock (fcntl(2)) on\n"
"    DIR/locks/<session id in hex> for its whole life; the kernel drops it\n"
"    when the process dies, however it dies.  A second pyshelfd on the same\n"
"    session is refused (ERRCODE SESSION_BUSY, with the holder's pid when\n"
"    it runs in the same pid namespace); a holder on its way out (killed)\n"
"    is waited for.  The sweep never ends a session whose lock is held.\n"
"    A child that shipped code fork()s closes its copy of the lock's\n"
"    descriptor: its exit does not drop the lock, and it cannot keep it\n"
"    after pyshelfd exits.\n"
"\n"
"FILES\n"
"    DIR/data.mdb, DIR/lock.mdb   the LMDB environment (docs/STORAGE.md)\n"
"    DIR/locks/                   one lock file per session (see above);\n"
"                                 removed when the session is purged\n"
"    DIR/blobs/                   payloads of 1 MiB or more, one file each;\n"
"                                 files no record names (left by a crash)\n"
"                                 are removed when pyshelfd opens the store\n"
"\n"
"SEE ALSO\n"
"    pyshelf-dump(1), docs/PROTOCOL.md, docs/STORAGE.md\n");
}

/* Parse a non-negative finite number; with size set, it may end in K, M,
 * G or T (times 1024, 1024^2, ...; "KiB", "MB" and the like too).  -1 on
 * garbage ("inf" and "nan" are). */
static int
pyshelfd_parse_value(const char *s, double *out, int size)
{
	static const char units[] = "KMGT";
	const char *u;
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	if (errno != 0 || end == s || !(*out >= 0 && *out <= 1e300))
		return -1;
	if (size && *end != '\0' && (u = strchr(units, *end)) != NULL) {
		*out *= (double)(1ull << (10 * (u - units + 1)));
		end++;
		if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
			end += strlen(end);
	}
	return *end == '\0' ? 0 : -1;
}

static int
pyshelfd_parse_num(const char *s, double *out)
{
	return pyshelfd_parse_value(s, out, 0);
}

static int
pyshelfd_parse_size(const char *s, double *out)
{
	return pyshelfd_parse_value(s, out, 1);
}

/*
 * LMDB builds each transaction's dirty pages in malloc'd memory, a whole
 * large value's overflow pages in one block.  Past glibc's mmap threshold
 * (at most 32 MiB by default) every such block is a fresh mapping: a
 * checkpoint of a 100 MB array page-faults through 100 MB of new zeroed
 * memory each time, about a third of its cost here.  Blocks up to 128 MiB
 * come from the heap instead, and up to 256 MiB of free heap is kept for
 * the next checkpoint; larger ones still map and unmap.  The glibc
 * variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ override
 * this (see mallopt(3)).
 */
static void
pyshelfd_malloc_tune(void)
{
	if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL)
		mallopt(M_MMAP_THRESHOLD, 128 << 20);
	if (getenv("MALLOC_TRIM_THRESHOLD_") == NULL)
		mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

/* --stdio given: stdout is the protocol, so refusals go there too. */
static int pyshelfd_stdio_mode;

/* Refuse the command line: say why on stderr and, in --stdio mode, as an
 * ERROR frame (ERRCODE USAGE) on stdout, then exit status 2. */
static int
pyshelfd_usage_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	wire_buf b;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "pyshelfd: %s\n", msg);
	fprintf(stderr, "usage: pyshelfd --stdio --session NAME [--db DIR] "
	    "[--create] [options]; see pyshelfd --help\n");
	if (pyshelfd_stdio_mode) {
		wire_buf_init(&b);
		wire_begin(&b, WIRE_MSG_ERROR, 0);
		wire_put_u64(&b, WIRE_TAG_ERRCODE, WIRE_ERR_USAGE);
		wire_put_str(&b, WIRE_TAG_MESSAGE, msg);
		if (wire_end(&b) == WIRE_OK)
			(void)wire_write_all(1, b.data, b.len);
		wire_buf_free(&b);
	}
	return 2;
}

/* The long options (none has a short form but -h and -V). */
static const struct option pyshelfd_longopts[] = {
	{"stdio", no_argument, NULL, 's'},
	{"db", required_argument, NULL, 'd'},
	{"session", required_argument, NULL, 'S'},
	{"create", no_argument, NULL, 'c'},
	{"new", no_argument, NULL, 'n'},
	{"read-only", no_argument, NULL, 'r'},
	{"create-db", no_argument, NULL, 'D'},
	{"allow-foreign-store", no_argument, NULL, 'F'},
	{"lease", required_argument, NULL, 'l'},
	{"checkpoint-interval", required_argument, NULL, 'i'},
	{"sync", required_argument, NULL, 'y'},
	{"max-frame", required_argument, NULL, 'm'},
	{"map-max", required_argument, NULL, 'M'},
	{"memory-limit", required_argument, NULL, 'L'},
	/* worker mode (--server's part is the supervisor's) */
	{"worker", no_argument, NULL, 'W'},
	{"control-fd", required_argument, NULL, 'C'},
	{"control", required_argument, NULL, 'P'},
	{"idle-exit", required_argument, NULL, 'I'},
	{"hard-grace", required_argument, NULL, 'G'},
	{"adopt", required_argument, NULL, 'A'},
	{"stopping", no_argument, NULL, 'Z'},
	{"since", required_argument, NULL, 'T'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0}
};

/* Set the option c that takes a number or a word from arg.  -1 when arg
 * is not a value it takes.  The supervisor checks the options it passes
 * on to its workers with it (server.h). */
int
pyshelfd_option_value(int c, const char *arg, worker_options *o)
{
	double d;

	switch (c) {
	case 'l':
		/* milliseconds must fit 64 bits: 10^15 s is plenty */
		if (pyshelfd_parse_num(arg, &d) < 0 || d > 1e15)
			return -1;
		o->lease_ms = (uint64_t)(d * 1000);
		o->lease_set = 1;
		return 0;
	case 'i':
		if (pyshelfd_parse_num(arg, &d) < 0 || d > 1e9)
			return -1;
		o->checkpoint_interval = d;
		return 0;
	case 'y':
		if (strcmp(arg, "always") == 0)
			o->sync = STORE_SYNC_ALWAYS;
		else if (strcmp(arg, "interval") == 0)
			o->sync = STORE_SYNC_INTERVAL;
		else if (strcmp(arg, "never") == 0)
			o->sync = STORE_SYNC_NEVER;
		else
			return -1;
		return 0;
	case 'm':
		if (pyshelfd_parse_size(arg, &d) < 0 || d < 1024 ||
		    d > 4294967295.0)
			return -1;
		o->max_frame = (size_t)d;
		return 0;
	case 'M':
		if (pyshelfd_parse_size(arg, &d) < 0 || d < 1048576 ||
		    d > (double)SIZE_MAX / 2)
			return -1;
		o->map_max = (size_t)d;
		return 0;
	case 'I':
	case 'G':
		if (pyshelfd_parse_num(arg, &d) < 0 || d > 1e9)
			return -1;
		if (c == 'I')
			o->idle_exit = d;
		else
			o->hard_grace = d;
		return 0;
	case 'C':
		if (pyshelfd_parse_num(arg, &d) < 0 || d > 1 << 20 ||
		    d != (double)(int)d)
			return -1;
		o->control_fd = (int)d;
		return 0;
	case 'L':
		if (pyshelfd_parse_size(arg, &d) < 0 ||
		    (d != 0 && d < 16777216) || d > (double)SIZE_MAX / 2)
			return -1;
		o->memory_limit = (size_t)d;
		return 0;
	}
	return -1;
}

/*
 * Read the command line into *o (defaults first).  -1: go on and serve;
 * otherwise the exit status: 0 after --help or --version, 2 after a
 * refusal (said by pyshelfd_usage_fail).
 */
static int
pyshelfd_options(int argc, char **argv, worker_options *o)
{
	int stdio = 0, c, li = -1, nnew = 0, nro = 0;

	opterr = 0; /* pyshelfd_usage_fail says it, on both channels */
	o->argc = argc;
	o->argv = argv;
	o->control_fd = -1;
	o->idle_exit = 300;
	o->hard_grace = 5;
	o->session = "default";
	o->lease_ms = 30ull * 24 * 3600 * 1000;
	o->checkpoint_interval = 5;
	o->sync = STORE_SYNC_INTERVAL;
	o->max_frame = WIRE_DEFAULT_MAX_FRAME;
	while ((c = getopt_long(argc, argv, "hV", pyshelfd_longopts, &li)) !=
	    -1) {
		switch (c) {
		case 's':
			stdio = 1;
			break;
		case 'd':
			o->db = optarg;
			break;
		case 'S':
			o->session = optarg;
			break;
		case 'c':
			o->create = 1;
			break;
		case 'n':
			nnew = 1;
			break;
		case 'r':
			nro = 1;
			break;
		case 'D':
			o->create_db = 1;
			break;
		case 'F':
			o->allow_foreign = 1;
			break;
		case 'W':
			o->server = 1;
			break;
		case 'P':
			o->control_path = optarg;
			break;
		case 'A':
			o->adopt = optarg;
			break;
		case 'Z':
			o->stopping = 1;
			break;
		case 'T':
			{
				char *end;

				errno = 0;
				o->since_ms = strtoull(optarg, &end, 10);
				if (errno != 0 || end == optarg || *end != '\0' ||
				    *optarg < '0' || *optarg > '9')
					return pyshelfd_usage_fail("bad value '%s' "
					    "for --since (ms since the epoch)",
					    optarg);
			}
			break;
		case 'l': case 'i': case 'y': case 'm': case 'M': case 'L':
		case 'I': case 'G': case 'C':
			if (pyshelfd_option_value(c, optarg, o) != 0)
				return pyshelfd_usage_fail("bad value '%s' for "
				    "--%s (see pyshelfd --help)", optarg, li >= 0 ?
				    pyshelfd_longopts[li].name : "?");
			break;
		case 'h':
			pyshelfd_usage(stdout);
			return 0;
		case 'V':
			printf("pyshelfd %s (protocol %d, store format %d)\n",
			    PACKAGE_VERSION, WIRE_PROTOCOL_VERSION,
			    STORE_FORMAT_VERSION);
			return 0;
		default:
			if (optopt != 0 && optopt != '?')
				return pyshelfd_usage_fail("option -%c: unknown "
				    "or missing its value", optopt);
			return pyshelfd_usage_fail("option %s: unknown or "
			    "missing its value", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return pyshelfd_usage_fail("unexpected argument");
	if (stdio + o->server != 1)
		return pyshelfd_usage_fail("%s", stdio ? "--stdio and --worker "
		    "exclude each other" : "pass --stdio (or, as a server's "
		    "worker, --worker)");
	if (o->server && nro)
		return pyshelfd_usage_fail("--worker serves no read-only "
		    "session (flag 'r' has a private --stdio backend)");
	if (!o->server && (o->control_fd >= 0 || o->control_path != NULL ||
	    o->adopt != NULL || o->stopping))
		return pyshelfd_usage_fail("--control-fd, --control, --adopt "
		    "and --stopping go with --worker");
	if (strlen(o->session) == 0 || strlen(o->session) > STORE_NAME_MAX)
		return pyshelfd_usage_fail("bad session name '%s': a session "
		    "name has 1 to %d bytes", o->session, STORE_NAME_MAX);
	if (nro && (nnew || o->create))
		return pyshelfd_usage_fail("--read-only excludes --create and "
		    "--new (shelve's flags 'r', 'c' and 'n')");
	o->mode = nro ? 'r' : nnew ? 'n' : o->create ? 'c' : 'w';
	if (nnew)
		o->create = 1;
	return -1;
}

/* --memory-limit: RLIMIT_DATA counts what the interpreter allocates (heap
 * and private mappings), not LMDB's shared read-only map.  0, or -1 said
 * on stderr. */
static int
pyshelfd_limit_memory(size_t limit)
{
	struct rlimit rl;

	rl.rlim_cur = rl.rlim_max = limit;
	if (setrlimit(RLIMIT_DATA, &rl) != 0) {
		fprintf(stderr, "pyshelfd: --memory-limit: %s\n",
		    strerror(errno));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static worker w;
	int i, rc;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--server") == 0)
			return server_main(argc, argv);  /* no Python */
		else if (strcmp(argv[i], "--sweep") == 0)
			return sweep_main(argc, argv);   /* no Python */
	pyshelfd_malloc_tune();
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--stdio") == 0)
			pyshelfd_stdio_mode = 1;
	if ((rc = pyshelfd_options(argc, argv, &w.opt)) >= 0)
		return rc;
	if (w.opt.memory_limit != 0 &&
	    pyshelfd_limit_memory(w.opt.memory_limit) != 0)
		return 1;
	return worker_run(&w);
}
