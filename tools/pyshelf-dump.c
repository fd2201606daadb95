/*
 * pyshelf-dump.c - the admin tool's entry point: options, --help (a man
 * page), opening the store read-only, and one read-only snapshot in which
 * the chosen view runs (the sessions table, one session's entries, one
 * entry, or --check).  Shaped like LMDB's mdb_dump.c: getopt, usage(), one
 * read transaction, a signal flag checked by every loop.  --unpickle runs
 * after the snapshot is over and the store closed.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dump.h"

volatile sig_atomic_t dump_interrupted;
struct dump_progress *dump_prog;

static void usage(FILE *f);
static int dump_child(struct dump_opts *o, int *st);

/* Print "pyshelf-dump: <message>" on stderr. */
void
dump_warn(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "pyshelf-dump: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The walk enters database db. */
void
dump_progress_db(const char *db)
{
	if (dump_prog == NULL)
		return;
	snprintf(dump_prog->db, sizeof dump_prog->db, "%s", db);
	dump_prog->n = 0;
	dump_prog->key_len = 0;
}

/* The walk passed key (of the current database). */
void
dump_progress_key(const void *key, size_t len)
{
	if (dump_prog == NULL)
		return;
	if (len > sizeof dump_prog->key)
		len = sizeof dump_prog->key;
	memcpy(dump_prog->key, key, len);
	dump_prog->key_len = len;
	dump_prog->n++;
}

/* "after N records (the last key ...)", or "at its first record". */
char *
dump_progress_where(char *buf, size_t cap)
{
	char kb[STORE_KEY_MAX * 4 + 16];
	store_key k;

	if (dump_prog == NULL || dump_prog->n == 0) {
		snprintf(buf, cap, "at its first record");
		return buf;
	}
	if (strcmp(dump_prog->db, "entries") == 0 ||
	    strcmp(dump_prog->db, "blobs") == 0 ||
	    strcmp(dump_prog->db, "refs") == 0) {
		char idhex[2 * STORE_ID_SIZE + 1];
		entry_key_parse_any(dump_prog->key, dump_prog->key_len, &k);
		if (k.kind != 0) {
			store_hex(dump_prog->key, STORE_ID_SIZE, idhex);
			snprintf(buf, cap, "after %llu records (the last: "
			    "session id %s, %s %s)",
			    (unsigned long long)dump_prog->n, idhex,
			    k.kind == STORE_KIND_HANDLE ? "handle" : "global",
			    dump_out_key(kb, sizeof kb, &k));
			return buf;
		}
	}
	memset(&k, 0, sizeof k);
	k.name = (const char *)dump_prog->key;
	k.name_len = dump_prog->key_len;
	snprintf(buf, cap, "after %llu records (the last key: %s)",
	    (unsigned long long)dump_prog->n, dump_out_key(kb, sizeof kb, &k));
	return buf;
}

/* SIGINT, SIGTERM, SIGHUP and SIGPIPE: stop at the next loop iteration. */
static void
dump_signal(int sig)
{
	dump_interrupted = sig;
}

static void
usage(FILE *f)
{
	char *def = store_default_path();

	fprintf(f,
"NAME\n"
"    pyshelf-dump - inspect and verify a pyshelf store, also while pyshelfd\n"
"    runs\n"
"\n"
"SYNOPSIS\n"
"    pyshelf-dump [--db DIR] [--json] [--sort ORDER] [--top N]\n"
"    pyshelf-dump [--db DIR] [--json] [--sort ORDER] [--top N] SESSION\n"
"    pyshelf-dump [--db DIR] [--json] [--unpickle] SESSION KEY\n"
"    pyshelf-dump [--db DIR] [--json] [--quiet] --check\n"
"    pyshelf-dump [--db DIR] --salvage OUT\n"
"    pyshelf-dump [--db DIR] [--json] --sessions\n"
"    pyshelf-dump [--db DIR] [--json] --compact\n"
"    pyshelf-dump --help | --version\n"
"\n"
"DESCRIPTION\n"
"    pyshelf-dump reads the store that pyshelfd keeps its workspaces in (an\n"
"    LMDB environment) read-only, in one consistent snapshot per run.  It\n"
"    never changes the store and never blocks pyshelfd, which may go on\n"
"    writing while it runs.  (--compact is the exception: it rewrites the\n"
"    store, and only while no process has it open.)\n"
"\n"
"    With no argument it lists the sessions: name, id, state (live;\n"
"    expired: the lease ran out and the sweeper has not ended it yet; dead:\n"
"    ended, its entries waiting to be swept), when it was created and last\n"
"    seen, its lease and expiry, the pid of the worker that last served it\n"
"    (who serves it now is known by its lock, DIR/locks/ID: pyshelfd\n"
"    --help), its entries and their bytes; then the ended sessions'\n"
"    tombstones, newest first: name, id, reason (expired: the lease ran\n"
"    out; closed: close_session(); replaced: opened with flag 'n'), when\n"
"    it ended and was created, its lease, and the entries and bytes its\n"
"    end freed (kept 90 days, then dropped by a pyshelfd's sweep); then\n"
"    the calls that server mode's workers journaled (ws.calls()), by\n"
"    session, oldest first: session, call id, state (queued, running,\n"
"    done, lost), when it started and ended, its output bytes and its\n"
"    source summary; then\n"
"    the store's path, format version, map size and use, and totals.  A\n"
"    SESSION that names only a tombstone says when and why it ended.\n"
"\n"
"    With SESSION it lists the session's entries, globals and handles:\n"
"    kind, key, type name, stored size, pickler, when written, flags\n"
"    (excinfo: an exception's (type, value, traceback); volatile: it could\n"
"    not be pickled and lives in the worker's memory only, with the reason;\n"
"    oob: out-of-band pickle buffers; hidden: a handle pyshelfd made to hold\n"
"    an old object that several records share, not listed to clients) and\n"
"    how many persistent references it holds; then the calls that server\n"
"    mode journaled for it, as above.  SESSION is a session's name, or its\n"
"    id in 32 hex digits (a dead session's name is freed for reuse: its\n"
"    old name still finds it while no other session took the name, its\n"
"    id always does).\n"
"\n"
"    With SESSION KEY it shows one entry: the record's header and digest,\n"
"    its persistent references and whether each resolves, and a\n"
"    disassembly of its pickle (protocols 0 to 5): each opcode with its\n"
"    argument, the classes and functions it loads by name (GLOBAL, INST,\n"
"    STACK_GLOBAL), its persistent references (BINPERSID) and out-of-band\n"
"    buffers (NEXT_BUFFER).  NOTHING FROM THE PICKLE IS RUN.  KEY is a\n"
"    global's name; #ID or h:ID is a handle (pyshelf-dump SESSION '#12');\n"
"    g:NAME is the global NAME, for names that begin with '#', 'h:' or\n"
"    'g:'.\n"
"\n"
"OPTIONS\n"
"    --db DIR        the store's directory (default $XDG_DATA_HOME/pyshelf,\n"
"                    else ~/.local/share/pyshelf; here: %s)\n"
"    --sort ORDER    order of the rows: key (the default: sessions by name;\n"
"                    entries as stored, globals by name then handles by\n"
"                    id), size (biggest first) or time (most recent first:\n"
"                    last seen for sessions, written for entries)\n"
"    --top N         only the first N rows after sorting; with --sort size,\n"
"                    the N biggest\n"
"    --json          JSON lines instead of tables: one object per row, see\n"
"                    JSON FIELDS\n"
"    --check         verify the whole store (see CHECKS), print each problem\n"
"                    with its session and key, exit 1 when damaged\n"
"    --salvage OUT   copy what is intact into a new store at OUT (a new or\n"
"                    empty directory): every session whose record parses,\n"
"                    with its record, and every entry of it that reads back\n"
"                    and verifies, with its references and blob file, and\n"
"                    its journaled calls whose records parse.  Each\n"
"                    thing that could not be saved is a line \"NOT SAVED\n"
"                    ...\"; exit 0 when everything was saved, 1 when\n"
"                    something was not.  Run pyshelfd on OUT afterwards\n"
"                    (keep the damaged store until you have looked at it).\n"
"                    A store whose trees are damaged (a meta, root or\n"
"                    branch page, the meta database) is salvaged by a scan\n"
"                    of its pages instead, from the sound meta page (exit 1)\n"
"    --unpickle      UNSAFE.  With SESSION KEY, also show repr() of the\n"
"                    value.  Unpickling RUNS CODE chosen by whoever wrote the\n"
"                    pickle (functions and classes that shipped code defined\n"
"                    come back and run, and so do their __repr__ methods),\n"
"                    with your rights.  Use it only on a store you trust.\n"
"                    It runs in a child %s; persistent\n"
"                    references show as <ref global 'a'> or <ref handle 7>;\n"
"                    the entries of a cycle as EntryGroup((keys), (objects))\n"
"                    for the first, <object 1 of the EntryGroup in <ref\n"
"                    global 'a'>> for the others.\n"
"    --sessions      list the session records only: no tombstones, calls\n"
"                    or totals, and no entry read.  Entries and bytes come\n"
"                    from the counts each session record keeps (null for a\n"
"                    record written by a pyshelf before format 3, until a\n"
"                    pyshelfd opens the store for writing).  What\n"
"                    pyshelf.sessions() reads\n"
"    --compact       give the space that ended sessions freed back to the\n"
"                    file system: a compacting copy of data.mdb (LMDB's\n"
"                    mdb_env_copy with MDB_CP_COMPACT), written to\n"
"                    DIR/data.mdb.compact, synced, and renamed over\n"
"                    data.mdb.  Refused while any process has the store open\n"
"                    (a worker of a server, pyshelfd --stdio, pyshelf-dump);\n"
"                    a pyshelfd that opens it meanwhile waits until it is\n"
"                    done.  blobs/ is left as it is.  Prints data.mdb's size\n"
"                    before and after; docs/OPERATIONS.md says more\n"
"    --max-repr N    with --unpickle, cut repr() after N characters\n"
"                    (default 10000)\n"
"    -q, --quiet     no progress line; --check prints only its problems\n"
"    -h, --help      this text\n"
"    -V, --version   print the version\n"
"\n"
"    Progress (of --check and of big listings) is shown on stderr when it\n"
"    is a terminal, and never when it is not.\n"
"\n", def != NULL ? def : "?", PYTHON_EXECUTABLE);
	free(def);
	fprintf(f,
"CHECKS\n"
"    --check reports each problem as a line (or a \"problem\" row) naming the\n"
"    check, the session and the key:\n"
"    session_record  every session record parses and has a known state\n"
"    session_counts  a session record's count of its entries and their\n"
"                    bytes is what its entries add up to\n"
"    name_index      every live session is found by its name; every name\n"
"                    leads to the live session of that name\n"
"    expiry_index    every leased or dead session has its expiry key, and\n"
"                    every expiry key belongs to a session and matches its\n"
"                    lease (time 0 for a dead one)\n"
"    entry_key       every entry key parses\n"
"    orphan_entry    every entry's session exists\n"
"    record_layout   every record decodes\n"
"    digest          every record's digest matches its bytes\n"
"    record_field    known pickler and flags; type names and volatile\n"
"                    reasons are UTF-8\n"
"    refs_blob       every refs blob parses\n"
"    dangling_ref    every persistent reference names an entry of the same\n"
"                    session\n"
"    pickle          every pickle is well formed: known opcodes, lengths\n"
"                    inside the record, a consistent stack, STOP at the end\n"
"    pickle_refs     the pickle's persistent ids are entry keys and are\n"
"                    those its refs blob lists\n"
"    oob_table       out-of-band buffer tables add up and match the\n"
"                    pickle's NEXT_BUFFER opcodes\n"
"    blob            a blob record's file (blobs/NAME) exists, has its size\n"
"                    and matches its digest\n"
"    blob_row        blob records and the blob index (which file is whose)\n"
"                    agree both ways\n"
"    refs_index      every row of the references index (who refers to an\n"
"                    entry) is an entry key of an existing session and a\n"
"                    referrer's key; a stale row (one whose referrer no\n"
"                    longer refers) is a hint the backend drops, not damage\n"
"    structure       data.mdb's pages, as pyshelfd checks them before it\n"
"                    writes: meta pages, page numbers, flags, free-space\n"
"                    bounds, nodes inside their page, page numbers inside\n"
"                    the file (pyshelfd refuses to write to a store that\n"
"                    fails this)\n"
"    call_record     every row of the call journal (the calls database)\n"
"                    parses: its key, layout, check value and output\n"
"                    chunks (a worker skips a damaged one)\n"
"    orphan_call     every journaled call's session exists\n"
"    walk            a database could be walked to its end (LMDB gave no\n"
"                    error, no value ran past the file)\n"
"    crash           reading a damaged page crashed the reader: the store\n"
"                    is read in a child process, and its crash is reported\n"
"                    with the database and the last key it reached (and\n"
"                    LMDB's sentence, when its assertion ended it)\n"
"    meta            the meta database (the format version) can be read\n"
"    open            the store opens past its damaged pages (when it does\n"
"                    not, only the pages are checked: salvage it)\n"
"\n");
	fprintf(f,
"JSON FIELDS\n"
"    Each line is one object; \"row\" says which kind.  Field names are\n"
"    stable for a given dump_format (now %d): fields may be added, never\n"
"    renamed or removed.  Times are milliseconds since the epoch (UTC),\n"
"    sizes are bytes, ids are lower-case hex; bytes that are not UTF-8 in\n"
"    the store become U+FFFD.\n"
"    dump     first row of every run: dump_format, view (sessions, session,\n"
"             entry, check, records, compact), path, store_format, time_ms\n"
"    session  name, id, state (live|dead), expired, created_ms,\n"
"             last_seen_ms, lease_ms, expires_ms (null: never), pid (0: no\n"
"             worker), next_handle, entries, bytes (--sessions: null when\n"
"             the record keeps no counts)\n"
"    compact  path, before, after (data.mdb's bytes), freed, blob_files,\n"
"             blob_bytes (blobs/, untouched), elapsed_ms\n"
"    tombstone name, id, reason (expired|closed|replaced), ended_ms,\n"
"             created_ms, last_seen_ms, lease_ms, entries, bytes, drop_ms\n"
"             (when a sweep drops it)\n"
"    call     session (null: no such session), session_id, id, state\n"
"             (queued|running|done|lost; null when damaged), started_ms,\n"
"             ended_ms (null: not ended), summary, output_bytes (written),\n"
"             output_dropped, output_kept, end (result|error|none),\n"
"             body_bytes, problem (null when it parses)\n"
"    store    path, store_format, created_ms, map_size, map_used, sessions,\n"
"             live, dead, tombstones, calls, entries, bytes, entries_in_db\n"
"    entry    session, session_id, kind (global|handle), key (as KEY spells\n"
"             it), name (null for handles), handle (null for globals), type,\n"
"             size, time_ms, pickler (none|pickle|cloudpickle), flags,\n"
"             volatile, reason (null unless volatile), excinfo, oob,\n"
"             hidden, problem (null when sound); SESSION adds blob and\n"
"             nrefs; SESSION KEY adds blob (blobs/NAME, null when the\n"
"             payload is in the map), payload_size, digest, digest_ok, refs (a\n"
"             list of {kind, key, name, handle, resolves}) and refs_error\n"
"    op       pos, code, op, depth, arg, note (SESSION KEY: one per opcode)\n"
"    pickle   protocol, ops, size, trailing, buffers, well_formed, error,\n"
"             error_pos, names (a list of {module, name}), refs (a list of\n"
"             {kind, key, name, handle, count})\n"
"    raw      text (an entry stored without a pickler)\n"
"    value    repr, error (--unpickle)\n"
"    problem  check, session, session_id, kind, key, name, handle, message\n"
"    check    sessions, entries, bytes, blobs, calls, changed (entries whose\n"
"             blob file a newer commit dropped), problems, sound, interrupted,\n"
"             elapsed_ms (the last row of --check)\n"
"\n", DUMP_FORMAT);
	fprintf(f,
"EXIT STATUS\n"
"    0    done; with --check: the store is sound\n"
"    1    damage found (by --check, or a damaged record met by a view;\n"
"         with --salvage: something could not be saved)\n"
"    2    bad usage; no store, not a pyshelf store, a newer store format;\n"
"         no such session or entry; another error\n"
"    130  interrupted (SIGINT; 128 + the signal for SIGTERM, SIGHUP)\n"
"\n"
"EXAMPLES\n"
"    pyshelf-dump --db /srv/pyshelf                  sessions and totals\n"
"    pyshelf-dump --db /srv/pyshelf work --sort size --top 10\n"
"                                                    the 10 biggest entries\n"
"    pyshelf-dump --db /srv/pyshelf work model       one global, disassembled\n"
"    pyshelf-dump --db /srv/pyshelf work '#12'       handle 12\n"
"    pyshelf-dump --db /srv/pyshelf --unpickle work model   (UNSAFE) its value\n"
"    pyshelf-dump --db /srv/pyshelf --check -q || echo 'store damaged'\n"
"    pyshelf-dump --db /srv/pyshelf --salvage /srv/pyshelf-saved\n"
"                                                    copy what is intact\n"
"    pyshelf-dump --json | jq -r 'select(.row == \"session\") | .name'\n"
"\n"
"NOTES\n"
"    Text output is for people and may change; scripts should use --json.\n"
"    Reading a store takes read access to DIR/data.mdb and write access to\n"
"    DIR/lock.mdb (LMDB's reader table), as for mdb_dump.\n"
"\n"
"SEE ALSO\n"
"    pyshelfd(1), mdb_dump(1), mdb_stat(1), docs/OPERATIONS.md,\n"
"    docs/STORAGE.md\n");
}

/* Report a usage error and return the exit status for it. */
static int
dump_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "pyshelf-dump: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'pyshelf-dump --help'.\n");
	return DUMP_EXIT_ERROR;
}

/* Parse a count for --top / --max-repr; -1 on garbage. */
static int
dump_parse_count(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

/* The command line into o; 0, or an exit status (-1: --help/--version
 * done, exit 0). */
static int
dump_parse_args(int argc, char **argv, struct dump_opts *o)
{
	static const struct option longopts[] = {
		{"db", required_argument, NULL, 'd'},
		{"json", no_argument, NULL, 'j'},
		{"check", no_argument, NULL, 'c'},
		{"salvage", required_argument, NULL, 'S'},
		{"sessions", no_argument, NULL, 'L'},
		{"compact", no_argument, NULL, 'C'},
		{"unpickle", no_argument, NULL, 'u'},
		{"sort", required_argument, NULL, 's'},
		{"top", required_argument, NULL, 't'},
		{"max-repr", required_argument, NULL, 'm'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	uint64_t v;
	int ch;

	o->repr_max = 10000;
	while ((ch = getopt_long(argc, argv, "qhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd': o->db = optarg; break;
		case 'j': o->json = 1; break;
		case 'c': o->check = 1; break;
		case 'S': o->salvage = optarg; break;
		case 'L': o->records = 1; break;
		case 'C': o->compact = 1; break;
		case 'u': o->unpickle = 1; break;
		case 'q': o->quiet = 1; break;
		case 's':
			if (strcmp(optarg, "key") == 0)
				o->sort = DUMP_SORT_KEY;
			else if (strcmp(optarg, "size") == 0)
				o->sort = DUMP_SORT_SIZE;
			else if (strcmp(optarg, "time") == 0)
				o->sort = DUMP_SORT_TIME;
			else
				return dump_usage_error("--sort takes size, key "
				    "or time, not '%s'", optarg);
			break;
		case 't':
			if (dump_parse_count(optarg, &o->top) != 0 || o->top == 0)
				return dump_usage_error("--top takes a positive "
				    "number, not '%s'", optarg);
			break;
		case 'm':
			if (dump_parse_count(optarg, &v) != 0 || v == 0 ||
			    v > 1u << 30)
				return dump_usage_error("--max-repr takes a "
				    "positive number, not '%s'", optarg);
			o->repr_max = (size_t)v;
			break;
		case 'h':
			usage(stdout);
			return -1;
		case 'V':
			printf("pyshelf-dump (pyshelf) %s, output format %d, "
			    "store format %d\n", PACKAGE_VERSION, DUMP_FORMAT,
			    STORE_FORMAT_VERSION);
			return -1;
		default:
			fprintf(stderr, "Try 'pyshelf-dump --help'.\n");
			return DUMP_EXIT_ERROR;
		}
	}
	if (argc - optind > 2)
		return dump_usage_error("too many arguments (SESSION [KEY])");
	if (optind < argc)
		o->session = argv[optind];
	if (optind + 1 < argc)
		o->key = argv[optind + 1];
	if (o->check && o->session != NULL)
		return dump_usage_error("--check verifies the whole store and "
		    "takes no SESSION");
	if (o->salvage != NULL && (o->session != NULL || o->check ||
	    o->json || o->unpickle))
		return dump_usage_error("--salvage OUT copies the whole store "
		    "and takes no SESSION, --check, --json or --unpickle");
	if ((o->records || o->compact) && (o->session != NULL || o->check ||
	    o->salvage != NULL || o->unpickle || o->top || (o->records &&
	    o->compact) || o->sort != DUMP_SORT_KEY))
		return dump_usage_error("--sessions and --compact take no "
		    "SESSION, --check, --salvage, --unpickle, --sort or --top, "
		    "nor each other");
	if (o->unpickle && o->key == NULL)
		return dump_usage_error("--unpickle shows one entry: give "
		    "SESSION KEY");
	if ((o->top || o->sort != DUMP_SORT_KEY) && (o->key != NULL ||
	    o->check))
		return dump_usage_error("--sort and --top are for the session "
		    "and entry lists");
	return 0;
}

/* Say why the store did not open, with what to do about it. */
static void
dump_open_error(const char *db, int rc, const char *cause)
{
	struct stat st;

	switch (rc) {
	case STORE_E_NOTSTORE:
		if (stat(db, &st) != 0)
			dump_warn("%s: %s: no store there (give the store's "
			    "directory with --db DIR)", db, strerror(errno));
		else
			dump_warn("%s\n  (a store is the directory given to "
			    "pyshelfd --db; it holds data.mdb, lock.mdb and blobs/)",
			    cause != NULL ? cause : "not a pyshelf store");
		break;
	case STORE_E_VERSION:
		dump_warn("%s", cause != NULL ? cause : store_strerror(rc));
		break;
	case STORE_E_READONLY:
		if (cause != NULL && strstr(cause, "permission denied") != NULL)
			dump_warn("%s", cause);  /* the store said which */
		else
			dump_warn("%s: permission denied (reading a store needs "
			    "read access to its data.mdb and write access to its "
			    "lock.mdb)", cause != NULL ? cause : db);
		break;
	default:
		dump_warn("cannot open the store: %s", cause != NULL ? cause :
		    store_strerror(rc));
	}
}

/* The view the options chose, inside the snapshot. */
static int
dump_snapshot(store_txn *t, void *arg)
{
	struct dump *d = arg;
	store_session ss;
	int rc;

	if (d->o->check)
		return dump_check_run(d, t);
	if (d->o->salvage != NULL)
		return dump_salvage_run(d, t);
	if (d->o->records)
		return dump_list_records(d, t);
	if (d->o->session == NULL)
		return dump_list_sessions(d, t);
	if ((rc = dump_list_find_session(d, t, d->o->session, &ss)) != 0)
		return rc;
	if (d->o->key == NULL)
		return dump_list_entries(d, t, &ss);
	if (d->o->json)
		dump_json_header(d, "entry");
	return dump_entry_show(d, t, &ss, d->o->key);
}

/* Catch the signals that end a run, without SA_RESTART so that a blocked
 * write or wait returns. */
static void
dump_signals(void)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = dump_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
}

/* The exit status of a run that may have been stopped by a signal. */
static int
dump_exit_status(int rc)
{
	if (dump_interrupted == SIGPIPE)
		return 128 + SIGPIPE;  /* the reader went away: say nothing */
	if (dump_interrupted != 0) {
		dump_warn("interrupted");
		return 128 + dump_interrupted;
	}
	return rc;
}

/* LMDB's assertion hook (store_options.on_assert): its sentence goes to
 * the parent, which reports it as damage; the child then aborts. */
static void
dump_on_assert(const char *msg)
{
	if (dump_prog != NULL)
		snprintf(dump_prog->lmdb_assert, sizeof dump_prog->lmdb_assert,
		    "%s", msg);
}

/* --salvage: must the pages be scanned (the trees are damaged, or the
 * store did not open for a reason other than access or format)? */
static int
dump_salvage_by_scan(const struct dump_opts *o, int open_rc,
                     const char *cause)
{
	struct stat st;
	char *data = NULL;
	int n, exists;

	if (asprintf(&data, "%s/data.mdb", o->db) < 0)
		return 0;
	exists = stat(data, &st) == 0 && S_ISREG(st.st_mode);
	free(data);
	if (!exists || open_rc == STORE_E_READONLY || open_rc == STORE_E_VERSION)
		return 0;
	if (open_rc != 0) {
		dump_warn("the store is damaged (%s): salvaging by a scan of "
		    "its pages", cause != NULL ? cause : store_strerror(open_rc));
		return 1;
	}
	n = store_check_structure(o->db, 1u << 20, NULL, NULL);
	if (n > 0)
		dump_warn("the store is damaged (%d problem%s in its pages): "
		    "salvaging by a scan of its pages", n, n > 1 ? "s" : "");
	return n > 0;
}

/* Open the store and run the chosen view (in the child). */
static int
dump_run(struct dump_opts *o)
{
	struct dump d;
	store_options so;
	char *cause = NULL;
	int rc;

	memset(&d, 0, sizeof d);
	d.o = o;
	d.out = stdout;
	d.progress = !o->quiet && isatty(STDERR_FILENO);
	if (o->compact) {
		rc = dump_compact_run(&d);
		goto free_cause;
	}
	if (o->salvage != NULL && (o->salvage_scan ||
	    dump_salvage_by_scan(o, 0, NULL))) {
		rc = dump_salvage_scan(&d, o->salvage_scan);
		goto free_cause;
	}
	memset(&so, 0, sizeof so);
	so.readonly = 1;
	so.tolerant = o->check;
	so.on_assert = dump_on_assert;
	dump_progress_db("open");
	if ((rc = store_open(&d.s, o->db, &so, &cause)) != 0) {
		int crc;
		if (o->check && rc != STORE_E_READONLY &&
		    (crc = dump_check_unopened(&d, cause)) >= 0) {
			rc = crc;
			goto free_cause;
		}
		if (o->salvage != NULL && dump_salvage_by_scan(o, rc, cause)) {
			rc = dump_salvage_scan(&d, 0);
			goto free_cause;
		}
		dump_open_error(o->db, rc, cause);
		rc = DUMP_EXIT_ERROR;
		goto free_cause;
	}
	if ((d.pd = pickledis_new()) == NULL) {
		dump_warn("out of memory");
		rc = DUMP_EXIT_ERROR;
		goto close_store;
	}
	store_meta(d.s, &d.format, &d.created_ms);
	d.now_ms = store_now_ms();
	rc = store_read(d.s, dump_snapshot, &d);
	if (rc < 0) {
		dump_warn("reading %s: %s", o->db, store_strerror(rc));
		rc = rc == STORE_E_CORRUPT ? DUMP_EXIT_DAMAGE : DUMP_EXIT_ERROR;
	}
	pickledis_free(d.pd);
close_store:
	store_close(d.s);
	if (rc != DUMP_EXIT_ERROR && d.want_unpickle && !dump_interrupted) {
		int urc = dump_unpickle_run(&d);
		if (urc != DUMP_EXIT_OK)
			rc = urc;
	}
	free(d.payload);
free_cause:
	free(cause);
	if (fflush(stdout) != 0 && dump_interrupted == 0) {
		dump_warn("writing the output: %s", strerror(errno));
		rc = DUMP_EXIT_ERROR;
	}
	return dump_exit_status(rc);
}

/*
 * Run dump_run in a child and wait for it.  LMDB does not verify its
 * pages: a damaged one can send a read anywhere.  A child that dies of a
 * signal is reported here as damage, with the database and the last key
 * it reached (dump_progress, in memory shared with the child).  The store
 * is opened in the child only (never use an environment across fork).
 */
static int
dump_guarded(struct dump_opts *o)
{
	struct dump d;
	char what[64];
	int st, rc;

	dump_prog = mmap(NULL, sizeof *dump_prog, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (dump_prog == MAP_FAILED) {
		dump_prog = NULL;
		return dump_run(o);
	}
	memset(dump_prog, 0, sizeof *dump_prog);
	if ((rc = dump_child(o, &st)) != 0)
		return rc;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (!WIFSIGNALED(st))
		return DUMP_EXIT_ERROR;
	if (dump_interrupted != 0 && (WTERMSIG(st) == SIGINT ||
	    WTERMSIG(st) == SIGTERM || WTERMSIG(st) == SIGHUP ||
	    WTERMSIG(st) == SIGPIPE))
		return dump_exit_status(DUMP_EXIT_ERROR);
	snprintf(what, sizeof what, "%s", strsignal(WTERMSIG(st)));
	memset(&d, 0, sizeof d);
	d.o = o;
	d.out = stdout;
	if (o->check)
		return dump_check_crashed(&d, what);
	{
		char where[STORE_KEY_MAX * 4 + 64];
		const char *la = dump_prog->lmdb_assert;
		if (strcmp(dump_prog->db, "open") == 0)
			dump_warn("the store is damaged: opening it crashed "
			    "(%s%s%s); run pyshelf-dump --check --db %s", what,
			    la[0] ? "; LMDB: " : "", la, o->db);
		else
			dump_warn("the store is damaged: reading it crashed "
			    "(%s%s%s) in the %s database %s; run pyshelf-dump "
			    "--check --db %s", what, la[0] ? "; LMDB: " : "",
			    la, dump_prog->db, dump_progress_where(where,
			    sizeof where), o->db);
	}
	if (o->salvage != NULL && !o->salvage_scan) {
		/* what the walk saved stays in OUT; the scan adds the rest */
		dump_warn("salvaging the rest by a scan of the pages");
		o->salvage_scan = 1;
		memset(dump_prog, 0, sizeof *dump_prog);
		if ((rc = dump_child(o, &st)) != 0)
			return rc;
		if (WIFEXITED(st))
			return WEXITSTATUS(st);
		dump_warn("the scan of the pages crashed (%s)", WIFSIGNALED(st) ?
		    strsignal(WTERMSIG(st)) : "?");
	}
	return DUMP_EXIT_DAMAGE;
}

/* Run dump_run in a child and wait for it: its wait status in *st, or an
 * exit status for an error of fork or waitpid. */
static int
dump_child(struct dump_opts *o, int *st)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0) {
		dump_warn("fork: %s", strerror(errno));
		return DUMP_EXIT_ERROR;
	}
	if (pid == 0) {
		/* a fault on a damaged page ends the child by its signal,
		 * which the parent reports as damage: the default action,
		 * even where a sanitizer installed a handler of its own
		 * (which would print a report and exit 1) */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		/* problem lines reach the output even when a later read
		 * kills the child */
		if (o->check || o->salvage != NULL)
			setvbuf(stdout, NULL, _IOLBF, 0);
		_exit(dump_run(o));
	}
	while (waitpid(pid, st, 0) < 0)
		if (errno != EINTR) {
			dump_warn("waitpid: %s", strerror(errno));
			return DUMP_EXIT_ERROR;
		}
	return 0;
}

int
main(int argc, char **argv)
{
	struct dump_opts o;
	char *def = NULL;
	int rc;

	memset(&o, 0, sizeof o);
	if ((rc = dump_parse_args(argc, argv, &o)) != 0)
		return rc < 0 ? DUMP_EXIT_OK : rc;
	if (o.db == NULL && (o.db = def = store_default_path()) == NULL) {
		dump_warn("out of memory");
		return DUMP_EXIT_ERROR;
	}
	dump_signals();
	rc = dump_guarded(&o);
	if (fflush(stdout) != 0 && dump_interrupted == 0) {
		dump_warn("writing the output: %s", strerror(errno));
		rc = DUMP_EXIT_ERROR;
	}
	free(def);
	return rc;
}
