/*
 * dump-list.c - the two table views of pyshelf-dump: every session with its
 * lease, expiry and size, and the store's totals (no argument); one
 * session's entries with type, size, time and flags (SESSION), sortable and
 * cut to the biggest.  Also finding the session a SESSION argument names.
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"

/* One session row. */
struct dump_srow {
	store_session ss;         /* the record */
	uint64_t entries;         /* its entries */
	uint64_t bytes;           /* and their stored bytes */
};

/* Collected sessions. */
struct dump_srows {
	struct dump_srow *v;
	size_t n, cap;
	int nomem;                /* an allocation failed */
};

/* One entry row (strings copied out of the snapshot). */
struct dump_erow {
	size_t idx;               /* position in key order */
	store_key key;            /* key.name points at name */
	char *name;               /* global name (malloc'd), NULL for handles */
	char *type;               /* type name as printable text (malloc'd) */
	char *reason;             /* volatile: why (malloc'd), else NULL */
	const char *problem;      /* damage (static text), else NULL */
	uint64_t size;            /* stored bytes */
	uint64_t time_ms;         /* when written */
	uint16_t flags;           /* STORE_FLAG_* */
	uint8_t pickler;          /* STORE_PICKLER_* */
	uint32_t nrefs;           /* persistent references */
};

/* Collecting one session's entries. */
struct dump_erows {
	struct dump *d;
	store_txn *t;
	const store_session *ss;
	struct dump_erow *v;
	size_t n, cap;
	int rc;                   /* exit status when stopped early */
};

/* The expiry time of a live session; 0 when it has none. */
static uint64_t
dump_list_expiry(const store_session *ss)
{
	if (ss->state != STORE_STATE_LIVE || ss->lease_ms == 0)
		return 0;
	if (ss->lease_ms > UINT64_MAX - ss->last_seen_ms)
		return UINT64_MAX;
	return ss->last_seen_ms + ss->lease_ms;
}

/* State word: live, expired (lease ran out, not swept yet) or dead. */
static const char *
dump_list_state(const struct dump *d, const store_session *ss)
{
	uint64_t e = dump_list_expiry(ss);

	if (ss->state == STORE_STATE_DEAD)
		return "dead";
	if (ss->state != STORE_STATE_LIVE)
		return "invalid";
	return e != 0 && e <= d->now_ms ? "expired" : "live";
}

/* session_list callback: keep a copy. */
static int
dump_list_collect_session(const store_session *ss, void *arg)
{
	struct dump_srows *rows = arg;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (rows->n == rows->cap) {
		size_t ncap = rows->cap ? rows->cap * 2 : 16;
		struct dump_srow *nv = realloc(rows->v, ncap * sizeof *nv);
		if (nv == NULL) {
			rows->nomem = 1;
			return DUMP_EXIT_ERROR;
		}
		rows->v = nv;
		rows->cap = ncap;
	}
	memset(&rows->v[rows->n], 0, sizeof rows->v[0]);
	rows->v[rows->n++].ss = *ss;
	return 0;
}

static int
dump_list_cmp_srow_name(const void *a, const void *b)
{
	const struct dump_srow *x = a, *y = b;
	int c = strcmp(x->ss.name, y->ss.name);

	return c != 0 ? c : memcmp(x->ss.id, y->ss.id, STORE_ID_SIZE);
}

static int
dump_list_cmp_srow_size(const void *a, const void *b)
{
	const struct dump_srow *x = a, *y = b;

	if (x->bytes != y->bytes)
		return x->bytes < y->bytes ? 1 : -1;
	return dump_list_cmp_srow_name(a, b);
}

static int
dump_list_cmp_srow_time(const void *a, const void *b)
{
	const struct dump_srow *x = a, *y = b;

	if (x->ss.last_seen_ms != y->ss.last_seen_ms)
		return x->ss.last_seen_ms < y->ss.last_seen_ms ? 1 : -1;
	return dump_list_cmp_srow_name(a, b);
}

/* One session as a JSON row. */
static void
dump_list_json_session(struct dump *d, const struct dump_srow *r)
{
	char idhex[2 * STORE_ID_SIZE + 1];
	uint64_t e = dump_list_expiry(&r->ss);

	store_hex(r->ss.id, STORE_ID_SIZE, idhex);
	dump_json_row(d, "session");
	dump_json_cstr(d, "name", r->ss.name);
	dump_json_cstr(d, "id", idhex);
	dump_json_cstr(d, "state", r->ss.state == STORE_STATE_LIVE ? "live" :
	    r->ss.state == STORE_STATE_DEAD ? "dead" : "invalid");
	dump_json_bool(d, "expired", e != 0 && e <= d->now_ms);
	dump_json_u64(d, "created_ms", r->ss.created_ms);
	dump_json_u64(d, "last_seen_ms", r->ss.last_seen_ms);
	dump_json_u64(d, "lease_ms", r->ss.lease_ms);
	if (e != 0)
		dump_json_u64(d, "expires_ms", e);
	else
		dump_json_null(d, "expires_ms");
	dump_json_u64(d, "pid", r->ss.pid);
	dump_json_u64(d, "next_handle", r->ss.next_handle);
	if (d->o->records && !r->ss.counts_known) {
		dump_json_null(d, "entries");
		dump_json_null(d, "bytes");
	} else {
		dump_json_u64(d, "entries", r->entries);
		dump_json_u64(d, "bytes", r->bytes);
	}
	dump_json_row_end(d);
}

/* The sessions as a text table. */
static void
dump_list_text_sessions(struct dump *d, const struct dump_srow *v, size_t n)
{
	char name[STORE_NAME_MAX * 4 + 8], idhex[2 * STORE_ID_SIZE + 1];
	char c[40], l[40], ls[32], e[40], sz[32];
	int w = 4;
	size_t i;

	for (i = 0; i < n; i++) {
		int x = dump_out_width(dump_out_text(name, sizeof name,
		    v[i].ss.name, strlen(v[i].ss.name)));
		if (x > w)
			w = x;
	}
	if (w > 40)
		w = 40;
	dump_out_pad(d->out, "NAME", w);
	fprintf(d->out, "  %-32s  %-7s  %-24s  %-24s  %-6s  %-24s  %7s  %9s  "
	    "%10s\n", "ID", "STATE", "CREATED", "LAST SEEN", "LEASE",
	    "EXPIRES", "PID", "ENTRIES", "BYTES");
	for (i = 0; i < n; i++) {
		const store_session *ss = &v[i].ss;
		uint64_t ex = dump_list_expiry(ss);
		dump_out_text(name, sizeof name, ss->name, strlen(ss->name));
		store_hex(ss->id, STORE_ID_SIZE, idhex);
		dump_out_pad(d->out, name, w);
		if (ex == UINT64_MAX)
			snprintf(e, sizeof e, "never");
		else if (ex == 0)
			snprintf(e, sizeof e, ss->state == STORE_STATE_LIVE ?
			    "never" : "-");
		else
			dump_out_time(e, sizeof e, ex);
		if (ss->pid != 0)
			snprintf(sz, sizeof sz, "%" PRIu64, ss->pid);
		else
			snprintf(sz, sizeof sz, "-");
		fprintf(d->out, "  %s  %-7s  %-24s  %-24s  %-6s  %-24s  %7s  %9"
		    PRIu64 "  ", idhex, dump_list_state(d, ss),
		    dump_out_time(c, sizeof c, ss->created_ms),
		    dump_out_time(l, sizeof l, ss->last_seen_ms),
		    dump_out_duration(ls, sizeof ls, ss->lease_ms), e, sz,
		    v[i].entries);
		fprintf(d->out, "%10s\n", dump_out_size(sz, sizeof sz,
		    v[i].bytes));
	}
}

/* The store's totals: text or a JSON row "store". */
static void
dump_list_totals(struct dump *d, store_txn *t, const struct dump_srow *v,
                 size_t n, size_t ntombs, size_t ncalls)
{
	size_t map = 0, used = 0, i;
	uint64_t entries = 0, bytes = 0, live = 0, dead = 0;
	char a[32], b[32], c[40];
	MDB_stat st;

	store_usage(d->s, &map, &used, NULL);
	memset(&st, 0, sizeof st);
	mdb_stat(t->txn, t->s->entries, &st);
	for (i = 0; i < n; i++) {
		entries += v[i].entries;
		bytes += v[i].bytes;
		live += v[i].ss.state == STORE_STATE_LIVE;
		dead += v[i].ss.state == STORE_STATE_DEAD;
	}
	if (d->o->json) {
		dump_json_row(d, "store");
		dump_json_cstr(d, "path", store_path(d->s));
		dump_json_u64(d, "store_format", d->format);
		dump_json_u64(d, "created_ms", d->created_ms);
		dump_json_u64(d, "map_size", map);
		dump_json_u64(d, "map_used", used);
		dump_json_u64(d, "sessions", n);
		dump_json_u64(d, "live", live);
		dump_json_u64(d, "dead", dead);
		dump_json_u64(d, "tombstones", ntombs);
		dump_json_u64(d, "calls", ncalls);
		dump_json_u64(d, "entries", entries);
		dump_json_u64(d, "bytes", bytes);
		dump_json_u64(d, "entries_in_db", st.ms_entries);
		dump_json_row_end(d);
		return;
	}
	fprintf(d->out, "\nstore     %s\nformat    %" PRIu32 " (created %s)\n",
	    store_path(d->s), d->format, dump_out_time(c, sizeof c,
	    d->created_ms));
	fprintf(d->out, "map       %s, %s used (%.0f%%)\n",
	    dump_out_size(a, sizeof a, map), dump_out_size(b, sizeof b, used),
	    map ? 100.0 * (double)used / (double)map : 0.0);
	fprintf(d->out, "sessions  %zu (%" PRIu64 " live, %" PRIu64 " dead)\n",
	    n, live, dead);
	if (ntombs > 0)
		fprintf(d->out, "ended     %zu (tombstones, listed above)\n",
		    ntombs);
	if (ncalls > 0)
		fprintf(d->out, "calls     %zu (journaled, listed above)\n",
		    ncalls);
	fprintf(d->out, "entries   %" PRIu64 ", %s\n", entries,
	    dump_out_size(a, sizeof a, bytes));
	if (st.ms_entries != entries)
		fprintf(d->out, "warning   %" PRIu64 " entries belong to no "
		    "session listed here: run --check\n",
		    (uint64_t)st.ms_entries - entries);
}

/* Collected tombstones. */
struct dump_trows {
	store_tomb *v;
	size_t n, cap;
	int nomem;
};

/* tomb_list callback: keep a copy. */
static int
dump_list_collect_tomb(const store_tomb *tb, void *arg)
{
	struct dump_trows *r = arg;
	store_tomb *nv;

	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 16;
		if ((nv = realloc(r->v, ncap * sizeof *nv)) == NULL) {
			r->nomem = 1;
			return DUMP_EXIT_ERROR;
		}
		r->v = nv;
		r->cap = ncap;
	}
	r->v[r->n++] = *tb;
	return 0;
}

/* Newest first. */
static int
dump_list_cmp_tomb(const void *a, const void *b)
{
	const store_tomb *x = a, *y = b;

	if (x->ended_ms != y->ended_ms)
		return x->ended_ms < y->ended_ms ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* The tombstones of ended sessions: text (after the sessions, when there
 * are any) or JSON rows "tombstone".  *count gets how many. */
static int
dump_list_tombs(struct dump *d, store_txn *t, size_t *count)
{
	char name[STORE_NAME_MAX * 4 + 8], idhex[2 * STORE_ID_SIZE + 1];
	char en[40], cr[40], ls[32], sz[32];
	struct dump_trows rows;
	size_t i;
	int rc, w = 4;

	memset(&rows, 0, sizeof rows);
	if ((rc = tomb_list(t, dump_list_collect_tomb, &rows)) != 0) {
		free(rows.v);
		if (rows.nomem)
			dump_warn("out of memory");
		else
			dump_warn("listing tombstones: %s", store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	*count = rows.n;
	if (rows.n > 1)   /* rows.v is NULL when there are none */
		qsort(rows.v, rows.n, sizeof *rows.v, dump_list_cmp_tomb);
	for (i = 0; i < rows.n; i++) {
		const store_tomb *tb = &rows.v[i];
		store_hex(tb->id, STORE_ID_SIZE, idhex);
		if (d->o->json) {
			dump_json_row(d, "tombstone");
			dump_json_cstr(d, "name", tb->name);
			dump_json_cstr(d, "id", idhex);
			dump_json_cstr(d, "reason", tomb_why_name(tb->why));
			dump_json_u64(d, "ended_ms", tb->ended_ms);
			dump_json_u64(d, "created_ms", tb->created_ms);
			dump_json_u64(d, "last_seen_ms", tb->last_seen_ms);
			dump_json_u64(d, "lease_ms", tb->lease_ms);
			dump_json_u64(d, "entries", tb->entries);
			dump_json_u64(d, "bytes", tb->bytes);
			dump_json_u64(d, "drop_ms", tb->ended_ms +
			    STORE_TOMB_KEEP_MS);
			dump_json_row_end(d);
			continue;
		}
		int x = dump_out_width(dump_out_text(name, sizeof name,
		    tb->name, strlen(tb->name)));
		if (x > w)
			w = x;
	}
	if (!d->o->json && rows.n > 0) {
		if (w > 40)
			w = 40;
		fprintf(d->out, "\nended sessions (tombstones, kept %llu days):"
		    "\n", (unsigned long long)(STORE_TOMB_KEEP_MS /
		    (24ull * 3600 * 1000)));
		dump_out_pad(d->out, "NAME", w);
		fprintf(d->out, "  %-32s  %-8s  %-24s  %-24s  %-6s  %9s  "
		    "%10s\n", "ID", "REASON", "ENDED", "CREATED", "LEASE",
		    "ENTRIES", "BYTES");
		for (i = 0; i < rows.n; i++) {
			const store_tomb *tb = &rows.v[i];
			dump_out_text(name, sizeof name, tb->name,
			    strlen(tb->name));
			store_hex(tb->id, STORE_ID_SIZE, idhex);
			dump_out_pad(d->out, name, w);
			fprintf(d->out, "  %s  %-8s  %-24s  %-24s  %-6s  %9" PRIu64
			    "  ", idhex, tomb_why_name(tb->why),
			    dump_out_time(en, sizeof en, tb->ended_ms),
			    dump_out_time(cr, sizeof cr, tb->created_ms),
			    dump_out_duration(ls, sizeof ls, tb->lease_ms),
			    tb->entries);
			fprintf(d->out, "%10s\n", dump_out_size(sz, sizeof sz,
			    tb->bytes));
		}
	}
	free(rows.v);
	return DUMP_EXIT_OK;
}


/* One call of the journal (copied out of the snapshot). */
struct dump_crow {
	uint8_t sid[STORE_ID_SIZE];
	uint8_t id[STORE_ID_SIZE];
	int state;                /* STORE_CALL_*; 0 for a damaged row */
	int end;                  /* STORE_CALL_END_* */
	uint64_t started_ms, ended_ms, output_bytes, output_dropped;
	uint64_t output_kept, body_len;
	char summary[4 * 80 + 8]; /* printable */
	char *summary_raw;        /* malloc'd, for JSON */
	size_t summary_len;
	const char *problem;      /* static: why the row does not parse */
};

/* Collected calls. */
struct dump_crows {
	struct dump_crow *v;
	size_t n, cap;
	int nomem;
};

/* calls_list callback: keep a copy. */
static int
dump_list_collect_call(const store_call *c, int rc, const char *why,
                       void *arg)
{
	struct dump_crows *r = arg;
	struct dump_crow *cr, *nv;
	const uint8_t *data;
	uint64_t len;
	size_t off = 0;
	int kind;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 16;
		if ((nv = realloc(r->v, ncap * sizeof *nv)) == NULL) {
			r->nomem = 1;
			return DUMP_EXIT_ERROR;
		}
		r->v = nv;
		r->cap = ncap;
	}
	cr = &r->v[r->n];
	memset(cr, 0, sizeof *cr);
	memcpy(cr->sid, c->sid, STORE_ID_SIZE);
	memcpy(cr->id, c->id, STORE_ID_SIZE);
	cr->started_ms = c->started_ms;
	if (rc != 0) {
		cr->problem = why != NULL ? why : "it does not parse";
		r->n++;
		return 0;
	}
	cr->state = c->state;
	cr->end = c->end;
	cr->ended_ms = c->ended_ms;
	cr->output_bytes = c->output_bytes;
	cr->output_dropped = c->output_dropped;
	cr->body_len = c->body_len;
	while (calls_chunk_next(c->chunks, c->chunks_len, &off, &kind, &data,
	    &len, NULL) == 1)
		if (kind != STORE_CHUNK_GAP)
			cr->output_kept += len;
	dump_out_text(cr->summary, sizeof cr->summary, c->summary,
	    c->summary_len);
	if (c->summary_len > 0) {
		if ((cr->summary_raw = malloc(c->summary_len)) == NULL) {
			r->nomem = 1;
			return DUMP_EXIT_ERROR;
		}
		memcpy(cr->summary_raw, c->summary, c->summary_len);
		cr->summary_len = c->summary_len;
	}
	r->n++;
	return 0;
}

/* The name of session sid among the rows, or NULL. */
static const char *
dump_list_sname(const struct dump_srow *v, size_t n, const uint8_t *sid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (memcmp(v[i].ss.id, sid, STORE_ID_SIZE) == 0)
			return v[i].ss.name;
	return NULL;
}

/*
 * The call journal of server mode (the calls database), of session sid
 * (NULL: all): text (after the tombstones or the entries, when there are
 * any) or JSON rows "call", by session, oldest first.  A row that does not parse is listed with its problem and counts
 * as damage.  *count gets how many.
 */
static int
dump_list_calls(struct dump *d, store_txn *t, const uint8_t *sid,
                const struct dump_srow *sv, size_t sn, size_t *count)
{
	char name[STORE_NAME_MAX * 4 + 8], idhex[2 * STORE_ID_SIZE + 1];
	char sidhex[2 * STORE_ID_SIZE + 1], st[40], en[40], sz[32];
	struct dump_crows rows;
	const char *sname;
	size_t i;
	int rc, w = 7;

	memset(&rows, 0, sizeof rows);
	dump_progress_db("calls");
	if ((rc = calls_list(t, sid, dump_list_collect_call, &rows)) != 0) {
		if (rows.nomem)
			dump_warn("out of memory");
		else if (rc != DUMP_EXIT_INTERRUPTED)
			dump_warn("listing calls: %s", store_strerror(rc));
		rc = rc > 0 ? rc : DUMP_EXIT_ERROR;
		goto out;
	}
	*count = rows.n;
	for (i = 0; i < rows.n; i++) {
		const struct dump_crow *cr = &rows.v[i];

		if (cr->problem != NULL)
			d->damaged++;
		sname = dump_list_sname(sv, sn, cr->sid);
		store_hex(cr->id, STORE_ID_SIZE, idhex);
		store_hex(cr->sid, STORE_ID_SIZE, sidhex);
		if (d->o->json) {
			dump_json_row(d, "call");
			dump_json_cstr(d, "session", sname);
			dump_json_cstr(d, "session_id", sidhex);
			dump_json_cstr(d, "id", idhex);
			dump_json_cstr(d, "state", cr->problem != NULL ? NULL :
			    calls_state_name(cr->state));
			dump_json_u64(d, "started_ms", cr->started_ms);
			if (cr->problem == NULL && cr->ended_ms != 0)
				dump_json_u64(d, "ended_ms", cr->ended_ms);
			else
				dump_json_null(d, "ended_ms");
			if (cr->problem == NULL)
				dump_json_str(d, "summary", cr->summary_raw != NULL ?
				    cr->summary_raw : "", cr->summary_len);
			else
				dump_json_null(d, "summary");
			dump_json_u64(d, "output_bytes", cr->output_bytes);
			dump_json_u64(d, "output_dropped", cr->output_dropped);
			dump_json_u64(d, "output_kept", cr->output_kept);
			dump_json_cstr(d, "end", cr->problem != NULL ? NULL :
			    cr->end == STORE_CALL_END_RESULT ? "result" :
			    cr->end == STORE_CALL_END_ERROR ? "error" : "none");
			dump_json_u64(d, "body_bytes", cr->body_len);
			dump_json_cstr(d, "problem", cr->problem);
			dump_json_row_end(d);
			continue;
		}
		if (sname != NULL) {
			int x = dump_out_width(dump_out_text(name, sizeof name,
			    sname, strlen(sname)));
			if (x > w)
				w = x;
		}
	}
	if (!d->o->json && rows.n > 0) {
		if (w > 40)
			w = 40;
		fprintf(d->out, "\ncalls (the journal of server mode):\n");
		dump_out_pad(d->out, "SESSION", w);
		fprintf(d->out, "  %-32s  %-7s  %-24s  %-24s  %10s  %s\n",
		    "CALL ID", "STATE", "STARTED", "ENDED", "OUTPUT",
		    "SUMMARY");
		for (i = 0; i < rows.n; i++) {
			const struct dump_crow *cr = &rows.v[i];

			sname = dump_list_sname(sv, sn, cr->sid);
			if (sname != NULL)
				dump_out_text(name, sizeof name, sname,
				    strlen(sname));
			else {
				store_hex(cr->sid, 4, name);
				strcat(name, "...");
			}
			store_hex(cr->id, STORE_ID_SIZE, idhex);
			dump_out_pad(d->out, name, w);
			if (cr->problem != NULL) {
				fprintf(d->out, "  %s  %-7s  %-24s  DAMAGED: %s\n",
				    idhex, "?", dump_out_time(st, sizeof st,
				    cr->started_ms), cr->problem);
				continue;
			}
			if (cr->ended_ms != 0)
				dump_out_time(en, sizeof en, cr->ended_ms);
			else
				snprintf(en, sizeof en, "-");
			fprintf(d->out, "  %s  %-7s  %-24s  %-24s  %10s  %s\n",
			    idhex, calls_state_name(cr->state),
			    dump_out_time(st, sizeof st, cr->started_ms), en,
			    dump_out_size(sz, sizeof sz, cr->output_bytes),
			    cr->summary);
		}
	}
	rc = DUMP_EXIT_OK;
out:
	for (i = 0; i < rows.n; i++)
		free(rows.v[i].summary_raw);
	free(rows.v);
	return rc;
}

/* pyshelf-dump with no argument: the sessions and the store's totals. */
int
dump_list_sessions(struct dump *d, store_txn *t)
{
	struct dump_srows rows;
	size_t i, shown, ntombs = 0, ncalls = 0;
	int rc;

	memset(&rows, 0, sizeof rows);
	rc = session_list(t, dump_list_collect_session, &rows);
	if (rc < 0)
		dump_warn("listing sessions: %s (the store is damaged: run "
		    "pyshelf-dump --check)", store_strerror(rc));
	for (i = 0; rc == 0 && i < rows.n; i++) {
		if (dump_interrupted)
			rc = DUMP_EXIT_INTERRUPTED;
		else if (rows.v[i].ss.counts_known) {
			/* the record's own, exact: no walk */
			rows.v[i].entries = rows.v[i].ss.entries;
			rows.v[i].bytes = rows.v[i].ss.bytes;
		} else if ((rc = session_count(t, rows.v[i].ss.id,
		    &rows.v[i].entries, &rows.v[i].bytes)) != 0)
			dump_warn("counting entries: %s", store_strerror(rc));
		dump_out_progress(d, "counted sessions:", i, rows.n, 0);
	}
	dump_out_progress(d, "", 0, 0, 1);
	if (rc != 0) {
		free(rows.v);
		if (rows.nomem)
			dump_warn("out of memory");
		return rc > 0 ? rc : rc == STORE_E_CORRUPT ||
		    rc == STORE_E_LMDB ? DUMP_EXIT_DAMAGE : DUMP_EXIT_ERROR;
	}
	if (rows.n > 1)
		qsort(rows.v, rows.n, sizeof *rows.v,
		    d->o->sort == DUMP_SORT_SIZE ? dump_list_cmp_srow_size :
		    d->o->sort == DUMP_SORT_TIME ? dump_list_cmp_srow_time :
		    dump_list_cmp_srow_name);
	shown = d->o->top > 0 && d->o->top < rows.n ? (size_t)d->o->top :
	    rows.n;
	if (d->o->json) {
		dump_json_header(d, "sessions");
		for (i = 0; i < shown; i++)
			dump_list_json_session(d, &rows.v[i]);
	} else
		dump_list_text_sessions(d, rows.v, shown);
	if ((rc = dump_list_tombs(d, t, &ntombs)) != DUMP_EXIT_OK) {
		free(rows.v);
		return rc;
	}
	if ((rc = dump_list_calls(d, t, NULL, rows.v, rows.n, &ncalls)) !=
	    DUMP_EXIT_OK) {
		free(rows.v);
		return rc;
	}
	dump_list_totals(d, t, rows.v, rows.n, ntombs, ncalls);
	free(rows.v);
	return d->damaged > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}

/*
 * pyshelf-dump --sessions: the session records alone, in name order, with
 * the counts they keep.  Reads the sessions database and nothing else: no
 * entry, key or value (what pyshelf.sessions() relies on).
 */
int
dump_list_records(struct dump *d, store_txn *t)
{
	struct dump_srows rows;
	size_t i;
	int rc;

	memset(&rows, 0, sizeof rows);
	dump_progress_db("sessions");
	rc = session_list(t, dump_list_collect_session, &rows);
	if (rc != 0) {
		free(rows.v);
		if (rows.nomem)
			dump_warn("out of memory");
		else if (rc < 0)
			dump_warn("listing sessions: %s (the store is damaged: "
			    "run pyshelf-dump --check)", store_strerror(rc));
		return rc > 0 ? rc : rc == STORE_E_CORRUPT ||
		    rc == STORE_E_LMDB ? DUMP_EXIT_DAMAGE : DUMP_EXIT_ERROR;
	}
	for (i = 0; i < rows.n; i++) {
		rows.v[i].entries = rows.v[i].ss.entries;
		rows.v[i].bytes = rows.v[i].ss.bytes;
	}
	if (rows.n > 1)
		qsort(rows.v, rows.n, sizeof *rows.v, dump_list_cmp_srow_name);
	if (d->o->json) {
		dump_json_header(d, "records");
		for (i = 0; i < rows.n; i++)
			dump_list_json_session(d, &rows.v[i]);
	} else
		dump_list_text_sessions(d, rows.v, rows.n);
	free(rows.v);
	return DUMP_EXIT_OK;
}

/* --- finding a session ------------------------------------------------------ */

/* Matching dead sessions by name. */
struct dump_find {
	const char *name;
	store_session found;
	int n;
};

static int
dump_list_find_dead(const store_session *ss, void *arg)
{
	struct dump_find *f = arg;
	char idhex[2 * STORE_ID_SIZE + 1];

	if (strcmp(ss->name, f->name) != 0)
		return 0;
	if (f->n++ == 0)
		f->found = *ss;
	else {
		if (f->n == 2) {
			store_hex(f->found.id, STORE_ID_SIZE, idhex);
			dump_warn("several dead sessions are named %s; give "
			    "one's id:\n  %s", f->name, idhex);
		}
		store_hex(ss->id, STORE_ID_SIZE, idhex);
		fprintf(stderr, "  %s\n", idhex);
	}
	return 0;
}

/* The session a SESSION argument names: a live session's name, a session's
 * hex id, or the name of a dead session (whose name was freed). */
int
dump_list_find_session(struct dump *d, store_txn *t, const char *arg,
                       store_session *out)
{
	struct dump_find f;
	uint8_t id[STORE_ID_SIZE];
	store_tomb tb;
	char when[40];
	int rc;

	memset(&f, 0, sizeof f);
	f.name = arg;
	if (strlen(arg) <= STORE_NAME_MAX &&
	    (rc = session_get_by_name(t, arg, out)) != STORE_E_NOTFOUND &&
	    rc != STORE_E_INVAL) {
		if (rc == 0)
			return 0;
		dump_warn("session %s: %s", arg, store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	if (store_unhex(arg, id, STORE_ID_SIZE) == 0 &&
	    (rc = session_get_by_id(t, id, out)) != STORE_E_NOTFOUND) {
		if (rc == 0)
			return 0;
		dump_warn("session %s: %s", arg, store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	if ((rc = session_list(t, dump_list_find_dead, &f)) != 0) {
		dump_warn("listing sessions: %s", store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	if (f.n == 1) {
		*out = f.found;
		return 0;
	}
	if (f.n == 0 && strlen(arg) > 0 && strlen(arg) <= STORE_NAME_MAX &&
	    tomb_last(t, arg, &tb) == 0) {
		dump_out_time(when, sizeof when, tb.ended_ms);
		dump_warn("session %s ended at %s (%s); its entries are gone "
		    "(run pyshelf-dump with no argument to list the "
		    "tombstones)", arg, when, tomb_why_name(tb.why));
	} else if (f.n == 0)
		dump_warn("no session named or with id %s in %s (run "
		    "pyshelf-dump with no argument to list them)", arg,
		    store_path(d->s));
	return DUMP_EXIT_ERROR;
}

/* --- one session's entries -------------------------------------------------- */

/* Copy one entry's row out of the snapshot. */
static int
dump_list_fill_erow(struct dump_erows *er, const store_key *k,
                    struct dump_erow *row)
{
	char buf[1024];
	const uint8_t *val;
	store_record r;
	size_t len, off = 0;
	store_key ref;
	const char *why;
	int rc;

	memset(row, 0, sizeof *row);
	row->idx = er->n;
	row->key = *k;
	if (k->kind == STORE_KIND_GLOBAL) {
		if ((row->name = malloc(k->name_len + 1)) == NULL)
			return -1;
		memcpy(row->name, k->name, k->name_len);
		row->name[k->name_len] = '\0';
		row->key.name = row->name;
	}
	row->size = k->value_len;
	if ((rc = dump_entry_fetch(er->t, er->ss->id, k, &val, &len)) != 0) {
		/* the row must still have a type: the table and the JSON
		 * print it */
		row->problem = "cannot be read back";
		return (row->type = strdup("?")) == NULL ? -1 : 0;
	}
	if (record_decode(val, len, &r) != 0) {
		row->problem = "damaged: digest mismatch";
		if (record_decode_nocheck(val, len, &r) != 0) {
			row->problem = "damaged: record does not parse";
			return (row->type = strdup("?")) == NULL ? -1 : 0;
		}
	}
	row->time_ms = r.time_ms;
	row->flags = r.flags;
	row->pickler = r.pickler;
	while (refs_blob_next(r.refs, r.refs_len, &off, &ref, &why) == 1)
		row->nrefs++;
	if ((row->type = strdup(dump_out_text(buf, sizeof buf, r.type_name,
	    r.type_len))) == NULL)
		return -1;
	if (r.flags & STORE_FLAG_VOLATILE && (row->reason = strdup(
	    dump_out_text(buf, 400, r.payload, r.payload_len))) == NULL)
		return -1;
	return 0;
}

/* entry_list callback: one row per key. */
static int
dump_list_collect_entry(const store_key *k, void *arg)
{
	struct dump_erows *er = arg;

	if (dump_interrupted)
		return er->rc = DUMP_EXIT_INTERRUPTED;
	if (er->n == er->cap) {
		size_t ncap = er->cap ? er->cap * 2 : 64;
		struct dump_erow *nv = realloc(er->v, ncap * sizeof *nv);
		if (nv == NULL)
			return er->rc = DUMP_EXIT_ERROR;
		er->v = nv;
		er->cap = ncap;
	}
	if (dump_list_fill_erow(er, k, &er->v[er->n]) != 0) {
		er->n++;
		return er->rc = DUMP_EXIT_ERROR;
	}
	if (er->v[er->n].problem != NULL)
		er->d->damaged++;
	{
		uint8_t kb[ENTRY_KEY_MAX];
		size_t kl = entry_key_make(kb, er->ss->id, k->kind, k->name,
		    k->name_len, k->handle);
		if (kl > 0)
			dump_progress_key(kb, kl);
	}
	er->n++;
	if ((er->n & 0xfff) == 0)
		dump_out_progress(er->d, "read entries:", er->n, 0, 0);
	return 0;
}

static int
dump_list_cmp_erow_size(const void *a, const void *b)
{
	const struct dump_erow *x = a, *y = b;

	if (x->size != y->size)
		return x->size < y->size ? 1 : -1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int
dump_list_cmp_erow_time(const void *a, const void *b)
{
	const struct dump_erow *x = a, *y = b;

	if (x->time_ms != y->time_ms)
		return x->time_ms < y->time_ms ? 1 : -1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* One entry as a JSON row. */
static void
dump_list_json_entry(struct dump *d, const store_session *ss,
                     const struct dump_erow *r)
{
	char idhex[2 * STORE_ID_SIZE + 1];

	store_hex(ss->id, STORE_ID_SIZE, idhex);
	dump_json_row(d, "entry");
	dump_json_cstr(d, "session", ss->name);
	dump_json_cstr(d, "session_id", idhex);
	dump_json_key_fields(d, &r->key);
	dump_json_cstr(d, "type", r->type);
	dump_json_u64(d, "size", r->size);
	dump_json_u64(d, "time_ms", r->time_ms);
	dump_json_cstr(d, "pickler", dump_out_pickler(r->pickler));
	dump_json_u64(d, "flags", r->flags);
	dump_json_bool(d, "volatile", r->flags & STORE_FLAG_VOLATILE);
	dump_json_cstr(d, "reason", r->reason);
	dump_json_bool(d, "excinfo", r->flags & STORE_FLAG_EXCINFO);
	dump_json_bool(d, "oob", r->flags & STORE_FLAG_OOB);
	dump_json_bool(d, "hidden", r->flags & STORE_FLAG_HIDDEN);
	dump_json_bool(d, "blob", r->flags & STORE_FLAG_BLOB);
	dump_json_u64(d, "nrefs", r->nrefs);
	dump_json_cstr(d, "problem", r->problem);
	dump_json_row_end(d);
}

/* The entries as a text table. */
static void
dump_list_text_entries(struct dump *d, const struct dump_erow *v, size_t n)
{
	char key[STORE_KEY_MAX * 4 + 16], t[40], fl[64];
	int wk = 3, wt = 4;
	size_t i;

	for (i = 0; i < n; i++) {
		int x = dump_out_width(dump_out_key(key, sizeof key, &v[i].key));
		if (x > wk)
			wk = x;
		if ((x = dump_out_width(v[i].type)) > wt)
			wt = x;
	}
	wk = wk > 32 ? 32 : wk;
	wt = wt > 32 ? 32 : wt;
	fprintf(d->out, "%-6s  ", "KIND");
	dump_out_pad(d->out, "KEY", wk);
	fputs("  ", d->out);
	dump_out_pad(d->out, "TYPE", wt);
	fprintf(d->out, "  %10s  %-11s  %-24s  %s\n", "SIZE", "PICKLER",
	    "TIME", "FLAGS");
	for (i = 0; i < n; i++) {
		const struct dump_erow *r = &v[i];
		fprintf(d->out, "%-6s  ", r->key.kind == STORE_KIND_GLOBAL ?
		    "global" : "handle");
		dump_out_pad(d->out, dump_out_key(key, sizeof key, &r->key), wk);
		fputs("  ", d->out);
		dump_out_pad(d->out, r->type, wt);
		fprintf(d->out, "  %10" PRIu64 "  %-11s  %-24s  %s", r->size,
		    dump_out_pickler(r->pickler), dump_out_time(t, sizeof t,
		    r->time_ms), dump_out_flags(fl, sizeof fl, r->flags));
		if (r->nrefs > 0)
			fprintf(d->out, "  refs=%" PRIu32, r->nrefs);
		if (r->reason != NULL)
			fprintf(d->out, "  (%s)", r->reason);
		if (r->problem != NULL)
			fprintf(d->out, "  DAMAGED: %s", r->problem);
		fputc('\n', d->out);
	}
}

/* Free the rows' strings. */
static void
dump_list_free_erows(struct dump_erows *er)
{
	size_t i;

	for (i = 0; i < er->n; i++) {
		free(er->v[i].name);
		free(er->v[i].type);
		free(er->v[i].reason);
	}
	free(er->v);
}

/* The line under the table: how many, how big, how sorted. */
static void
dump_list_entries_footer(struct dump *d, const store_session *ss,
                         const struct dump_erows *er, size_t shown)
{
	char idhex[2 * STORE_ID_SIZE + 1], sz[32], name[STORE_NAME_MAX * 4 + 8];
	uint64_t bytes = 0, vol = 0;
	size_t i;

	for (i = 0; i < er->n; i++) {
		bytes += er->v[i].size;
		vol += (er->v[i].flags & STORE_FLAG_VOLATILE) != 0;
	}
	store_hex(ss->id, STORE_ID_SIZE, idhex);
	fprintf(d->out, "\nsession %s (id %s, %s): %zu entries, %s, %" PRIu64
	    " volatile", dump_out_text(name, sizeof name, ss->name,
	    strlen(ss->name)), idhex, dump_list_state(d, ss), er->n,
	    dump_out_size(sz, sizeof sz, bytes), vol);
	if (shown < er->n)
		fprintf(d->out, "; showing %zu by %s", shown,
		    d->o->sort == DUMP_SORT_SIZE ? "size" :
		    d->o->sort == DUMP_SORT_TIME ? "time" : "key");
	fputc('\n', d->out);
	if (d->damaged > 0)
		fprintf(d->out, "DAMAGED   %" PRIu64 " records: run --check\n",
		    d->damaged);
}

/* pyshelf-dump SESSION: the session's entries. */
int
dump_list_entries(struct dump *d, store_txn *t, const store_session *ss)
{
	struct dump_erows er = {d, t, ss, NULL, 0, 0, 0};
	size_t i, shown;
	int rc;

	dump_progress_db("entries");
	rc = entry_list(t, ss->id, 0, dump_list_collect_entry, &er);
	dump_out_progress(d, "", 0, 0, 1);
	if (rc != 0 || er.rc != 0) {
		if (er.rc == 0)
			dump_warn("listing entries: %s", store_strerror(rc));
		else if (er.rc == DUMP_EXIT_ERROR)
			dump_warn("out of memory");
		dump_list_free_erows(&er);
		return er.rc != 0 ? er.rc : DUMP_EXIT_ERROR;
	}
	if (er.n < 2)
		;   /* nothing to sort (er.v may be NULL) */
	else if (d->o->sort == DUMP_SORT_SIZE)
		qsort(er.v, er.n, sizeof *er.v, dump_list_cmp_erow_size);
	else if (d->o->sort == DUMP_SORT_TIME)
		qsort(er.v, er.n, sizeof *er.v, dump_list_cmp_erow_time);
	shown = d->o->top > 0 && d->o->top < er.n ? (size_t)d->o->top : er.n;
	if (d->o->json) {
		dump_json_header(d, "session");
		for (i = 0; i < shown; i++)
			dump_list_json_entry(d, ss, &er.v[i]);
	} else {
		dump_list_text_entries(d, er.v, shown);
		dump_list_entries_footer(d, ss, &er, shown);
	}
	dump_list_free_erows(&er);
	{
		struct dump_srow one;
		size_t ncalls = 0;

		memset(&one, 0, sizeof one);
		one.ss = *ss;
		if ((rc = dump_list_calls(d, t, ss->id, &one, 1, &ncalls)) !=
		    DUMP_EXIT_OK)
			return rc;
	}
	if (d->damaged > 0)
		dump_warn("%" PRIu64 " damaged record%s in session %s: run "
		    "pyshelf-dump --check", d->damaged, d->damaged == 1 ? "" :
		    "s", ss->name);
	return d->damaged > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}
