/*
 * dump-check.c - pyshelf-dump --check: verify the whole store in one
 * read-only snapshot and report each problem with where (session and key)
 * and what.  In order: the session records parse and have a known state;
 * the name index and the sessions agree; the expiry index and the sessions
 * agree both ways; then every entry: its key parses, its session exists,
 * its record decodes and its digest matches (record_decode), its refs blob
 * parses and each reference names an entry of the same session, its pickle
 * is well formed (pickledis) and its persistent ids are the refs blob's,
 * out-of-band tables add up, volatile reasons are UTF-8; last, every row
 * of the call journal parses and belongs to an existing session.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "dump-check.h"

/* Keep the parent's copy of the counters (dump_progress) up to date. */
void
dump_check_mirror(const struct check *c)
{
	if (dump_prog == NULL)
		return;
	dump_prog->check = 1;
	dump_prog->problems = c->problems;
	dump_prog->sessions = c->sessions;
	dump_prog->entries = c->entries;
	dump_prog->bytes = c->bytes;
	dump_prog->blobs = c->blobs;
	dump_prog->changed = c->changed;
}

/* Report one problem: a text line or a JSON row "problem". */
void
dump_check_problem(struct check *c, const uint8_t *sid, const char *sname,
                   const store_key *k, const char *what, const char *fmt, ...)
{
	struct dump *d = c->d;
	char msg[600], idhex[2 * STORE_ID_SIZE + 1], kb[STORE_KEY_MAX * 4 + 16];
	char nb[STORE_NAME_MAX * 4 + 8];
	va_list ap;

	c->problems++;
	dump_check_mirror(c);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (sid != NULL)
		store_hex(sid, STORE_ID_SIZE, idhex);
	dump_out_progress(d, "", 0, 0, 1);
	if (d->o->json) {
		dump_json_row(d, "problem");
		dump_json_cstr(d, "check", what);
		dump_json_cstr(d, "session", sname);
		dump_json_cstr(d, "session_id", sid != NULL ? idhex : NULL);
		if (k != NULL)
			dump_json_key_fields(d, k);
		else {
			dump_json_null(d, "kind");
			dump_json_null(d, "key");
			dump_json_null(d, "name");
			dump_json_null(d, "handle");
		}
		dump_json_cstr(d, "message", msg);
		dump_json_row_end(d);
		fflush(d->out);
		return;
	}
	fprintf(d->out, "DAMAGE [%s]", what);
	if (sname != NULL)
		fprintf(d->out, " session %s", dump_out_text(nb, sizeof nb,
		    sname, strlen(sname)));
	if (sid != NULL)
		fprintf(d->out, " (id %s)", idhex);
	if (k != NULL)
		fprintf(d->out, ", %s %s", k->kind == STORE_KIND_HANDLE ?
		    "handle" : "global", dump_out_key(kb, sizeof kb, k));
	fprintf(d->out, ": %s\n", msg);
	fflush(d->out);
}

/*
 * After a page error LMDB marks the whole transaction as failed, and every
 * later read in it fails too (MDB_BAD_TXN): the next walk starts in a new
 * snapshot, so that each database is checked whatever happened to the one
 * before it.
 */
static void
dump_check_renew(struct check *c)
{
	MDB_txn *n;

	if (mdb_txn_begin(c->t->s->env, NULL, MDB_RDONLY, &n) != 0)
		return;
	mdb_txn_abort(c->t->txn);
	c->t->txn = n;
}

/* Open a cursor on one of the store's databases. */
static int
dump_check_cursor(struct check *c, MDB_dbi dbi, const char *db,
                  MDB_cursor **cur)
{
	int rc = mdb_cursor_open(c->t->txn, dbi, cur);

	dump_progress_db(db);
	if (rc != 0) {
		dump_check_problem(c, NULL, NULL, NULL, "walk", "the %s "
		    "database cannot be read: %s", db, mdb_strerror(rc));
		dump_check_renew(c);
	}
	return rc;
}

/*
 * A walk that stopped on an error: damage, reported with where it
 * stopped; the checks after it still run and the summary is printed.
 * Returns 0, or DUMP_EXIT_INTERRUPTED.
 */
static int
dump_check_walk_end(struct check *c, const char *db, int rc)
{
	char where[STORE_KEY_MAX * 4 + 64];

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (rc == 0 || rc == MDB_NOTFOUND || rc == STORE_E_NOTFOUND)
		return 0;
	/* LMDB fails a transaction at a damaged page, sometimes inside a
	 * call that does not return the error: the next call then says
	 * only MDB_BAD_TXN (STORE_E_LMDB) */
	dump_check_problem(c, NULL, NULL, NULL, "walk", "reading the %s "
	    "database failed %s: %s", db, dump_progress_where(where,
	    sizeof where), rc == STORE_E_LMDB || rc == MDB_BAD_TXN ?
	    "LMDB gave up on a damaged page on the way" : rc <= -40000 ?
	    store_strerror(rc) : mdb_strerror(rc));
	dump_check_renew(c);
	return 0;
}

/* A key or value of a walk that runs past the end of the file. */
static int
dump_check_val(struct check *c, const MDB_val *k, const MDB_val *v)
{
	if (store_val_ok(c->t, k) && (v == NULL || store_val_ok(c->t, v)))
		return 1;
	return 0;
}

/* One session record: parses, known state, in the name index, and its
 * expiry key present. */
static void
dump_check_session_record(struct check *c, const MDB_val *k)
{
	store_session ss;
	uint8_t ek[EXPIRY_KEY_SIZE];
	MDB_val nk, nv;
	int rc;

	if (k->mv_size != STORE_ID_SIZE) {
		dump_check_problem(c, NULL, NULL, NULL, "session_record",
		    "a session key of %zu bytes (ids have %d)", k->mv_size,
		    STORE_ID_SIZE);
		return;
	}
	if ((rc = session_get_by_id(c->t, k->mv_data, &ss)) != 0) {
		dump_check_problem(c, k->mv_data, NULL, NULL, "session_record",
		    "the session record does not parse (%s)",
		    store_strerror(rc));
		return;
	}
	if (ss.state != STORE_STATE_LIVE && ss.state != STORE_STATE_DEAD)
		dump_check_problem(c, ss.id, ss.name, NULL, "session_state",
		    "unknown state %u (1 live, 2 dead)", ss.state);
	if (ss.state == STORE_STATE_LIVE) {
		nk.mv_data = ss.name;
		nk.mv_size = strlen(ss.name);
		rc = nk.mv_size > 0 ? mdb_get(c->t->txn, c->t->s->names, &nk,
		    &nv) : MDB_NOTFOUND;
		if (rc != 0 || nv.mv_size != STORE_ID_SIZE ||
		    memcmp(nv.mv_data, ss.id, STORE_ID_SIZE) != 0)
			dump_check_problem(c, ss.id, ss.name, NULL,
			    "name_index", "a live session whose name does not "
			    "lead to it in the name index");
	}
	if (session_expiry_key(&ss, ek)) {
		nk.mv_data = ek;
		nk.mv_size = sizeof ek;
		if (mdb_get(c->t->txn, c->t->s->expiry, &nk, &nv) != 0)
			dump_check_problem(c, ss.id, ss.name, NULL,
			    "expiry_index", "no expiry key for this %s session "
			    "(the sweeper would never reclaim it)", ss.state ==
			    STORE_STATE_DEAD ? "dead" : "leased");
	}
}

/* session_list callback: a record's counts against its entries. */
static int
dump_check_counts_one(const store_session *ss, void *arg)
{
	struct check *c = arg;
	uint64_t n, bytes;
	int rc;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (!ss->counts_known)
		return 0;
	if ((rc = session_count(c->t, ss->id, &n, &bytes)) != 0)
		return rc;
	if (n != ss->entries || bytes != ss->bytes)
		dump_check_problem(c, ss->id, ss->name, NULL, "session_counts",
		    "the record counts %" PRIu64 " entries of %" PRIu64
		    " bytes; the session has %" PRIu64 " of %" PRIu64,
		    ss->entries, ss->bytes, n, bytes);
	return 0;
}

/* Each session record's counts (entries, bytes) against its entries: a
 * pass of its own, once the entries database has been walked whole (a
 * count that met a damaged page would end the walks before it). */
static int
dump_check_counts(struct check *c)
{
	int rc;

	dump_progress_db("sessions");
	rc = session_list(c->t, dump_check_counts_one, c);
	if (rc < 0)
		rc = dump_check_walk_end(c, "sessions", rc);
	return rc;
}

/* The sessions database, record by record. */
static int
dump_check_sessions(struct check *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (dump_check_cursor(c, c->t->s->sessions, "sessions", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (dump_interrupted)
			break;
		if (!dump_check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		c->sessions++;
		dump_check_session_record(c, &k);
	}
	mdb_cursor_close(cur);
	return dump_check_walk_end(c, "sessions", rc);
}

/* The name index: each name leads to a live session of that name. */
static int
dump_check_names(struct check *c)
{
	char name[STORE_NAME_MAX + 1];
	store_session ss;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (dump_check_cursor(c, c->t->s->names, "names", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!dump_check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		dump_out_text(name, sizeof name, k.mv_data, k.mv_size);
		if (v.mv_size != STORE_ID_SIZE) {
			dump_check_problem(c, NULL, name, NULL, "name_index",
			    "the name index holds %zu bytes for this name, "
			    "not a session id", v.mv_size);
			continue;
		}
		if (session_get_by_id(c->t, v.mv_data, &ss) != 0) {
			dump_check_problem(c, v.mv_data, name, NULL,
			    "name_index", "the name leads to a session that "
			    "does not exist");
			continue;
		}
		if (ss.state != STORE_STATE_LIVE || strlen(ss.name) !=
		    k.mv_size || memcmp(ss.name, k.mv_data, k.mv_size) != 0)
			dump_check_problem(c, ss.id, name, NULL, "name_index",
			    "the name leads to a %s session named %s",
			    ss.state == STORE_STATE_LIVE ? "live" : "dead",
			    ss.name);
	}
	mdb_cursor_close(cur);
	return dump_check_walk_end(c, "names", rc);
}

/* One expiry key: well formed, of an existing session, the one its lease
 * gives. */
static void
dump_check_expiry_key_one(struct check *c, const MDB_val *k)
{
	uint8_t want[EXPIRY_KEY_SIZE];
	const uint8_t *p = k->mv_data;
	char a[40], b[40];
	store_session ss;
	int rc;

	if (k->mv_size != EXPIRY_KEY_SIZE) {
		dump_check_problem(c, NULL, NULL, NULL, "expiry_index",
		    "an expiry key of %zu bytes (they have %d)", k->mv_size,
		    EXPIRY_KEY_SIZE);
		return;
	}
	if ((rc = session_get_by_id(c->t, p + 8, &ss)) != 0) {
		if (rc == STORE_E_NOTFOUND)
			dump_check_problem(c, p + 8, NULL, NULL, "expiry_index",
			    "an expiry key (at %s) for a session that does "
			    "not exist", dump_out_time(a, sizeof a,
			    be64_get(p)));
		return; /* an unparsable record was reported already */
	}
	if (!session_expiry_key(&ss, want))
		dump_check_problem(c, ss.id, ss.name, NULL, "expiry_index",
		    "an expiry key (at %s) for a live session without a "
		    "lease", dump_out_time(a, sizeof a, be64_get(p)));
	else if (memcmp(want, p, EXPIRY_KEY_SIZE) != 0)
		dump_check_problem(c, ss.id, ss.name, NULL, "expiry_index",
		    "a stale expiry key at %s; the session's %s gives %s",
		    dump_out_time(a, sizeof a, be64_get(p)),
		    ss.state == STORE_STATE_DEAD ? "state (dead)" : "lease",
		    ss.state == STORE_STATE_DEAD ? "time 0" :
		    dump_out_time(b, sizeof b, be64_get(want)));
}

/* The expiry index, key by key (the other way round is in
 * dump_check_session_record). */
static int
dump_check_expiry(struct check *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (dump_check_cursor(c, c->t->s->expiry, "expiry", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!dump_check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		dump_check_expiry_key_one(c, &k);
	}
	mdb_cursor_close(cur);
	return dump_check_walk_end(c, "expiry", rc);
}

/* The references index (the refs database, when the store has one): every
 * row's key an entry key of an existing session, every value a referrer's
 * kind and key.  Stale rows (a referrer that no longer refers) are hints,
 * not damage, and are not reported. */
static int
dump_check_refs_index(struct check *c)
{
	uint8_t last[STORE_ID_SIZE];
	int rc, op = MDB_FIRST, have = 0, exists = 0;
	const uint8_t *p;
	MDB_cursor *cur;
	store_key tk;
	MDB_val k, v;

	if (!c->t->s->has_refs)
		return 0;
	if (dump_check_cursor(c, c->t->s->refs, "refs", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!dump_check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		p = k.mv_data;
		if (entry_key_parse(p, k.mv_size, &tk) != 0) {
			dump_check_problem(c, NULL, NULL, NULL, "refs_index",
			    "a references-index key of %zu bytes that is not "
			    "an entry key", k.mv_size);
			continue;
		}
		if (!have || memcmp(last, p, STORE_ID_SIZE) != 0) {
			MDB_val sk = {STORE_ID_SIZE, (void *)p}, sv;
			memcpy(last, p, STORE_ID_SIZE);
			have = 1;
			exists = mdb_get(c->t->txn, c->t->s->sessions, &sk,
			    &sv) == 0;
			if (!exists)
				dump_check_problem(c, p, NULL, &tk,
				    "refs_index", "references-index rows of a "
				    "session that does not exist");
		}
		p = v.mv_data;
		if (v.mv_size < 2 || (p[0] != STORE_KIND_GLOBAL &&
		    p[0] != STORE_KIND_HANDLE) || (p[0] == STORE_KIND_HANDLE &&
		    v.mv_size != 9) || v.mv_size > 1 + STORE_KEY_MAX)
			dump_check_problem(c, k.mv_data, NULL, &tk,
			    "refs_index", "a references-index row of %zu bytes "
			    "that names no entry", v.mv_size);
	}
	mdb_cursor_close(cur);
	return dump_check_walk_end(c, "refs", rc);
}

/* calls_list callback of --check: every row parses and its session
 * exists (the purge deletes a session's rows with it). */
static int
dump_check_call(const store_call *sc, int rc, const char *why, void *arg)
{
	struct check *c = arg;
	char idhex[2 * STORE_ID_SIZE + 1];
	MDB_val sk, sv;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	c->calls++;
	store_hex(sc->id, STORE_ID_SIZE, idhex);
	if (rc != 0)
		dump_check_problem(c, sc->sid, NULL, NULL, "call_record",
		    "call %s (started %" PRIu64 "): %s", idhex, sc->started_ms,
		    why != NULL ? why : "it does not parse");
	if (!c->have_call_sid ||
	    memcmp(c->call_sid, sc->sid, STORE_ID_SIZE) != 0) {
		memcpy(c->call_sid, sc->sid, STORE_ID_SIZE);
		c->have_call_sid = 1;
		sk.mv_size = STORE_ID_SIZE;
		sk.mv_data = c->call_sid;
		c->call_sid_exists = mdb_get(c->t->txn, c->t->s->sessions, &sk,
		    &sv) == 0;
		if (!c->call_sid_exists)
			dump_check_problem(c, sc->sid, NULL, NULL, "orphan_call",
			    "journaled calls of a session that does not exist "
			    "(first: call %s)", idhex);
	}
	return 0;
}

/* The call journal (the calls database, when the store has one). */
static int
dump_check_calls(struct check *c)
{
	int rc;

	if (!c->t->s->has_calls)
		return 0;
	dump_progress_db("calls");
	rc = calls_list(c->t, NULL, dump_check_call, c);
	if (rc > 0)
		return rc;
	return dump_check_walk_end(c, "calls", rc);
}

/* store_check_structure callback: one problem. */
static void
dump_check_structure_problem(const char *problem, void *arg)
{
	struct check *c = arg;

	dump_check_problem(c, NULL, NULL, NULL, "structure", "data.mdb: %s",
	    problem);
}

/* The pages, as a writable open checks them (with no budget): a store
 * pyshelfd refuses to write is never called sound.  Run inside the
 * check's snapshot, whose read transaction keeps a writer beside it from
 * reusing the pages the check reads. */
static void
dump_check_structure(struct check *c)
{
	int rc;

	dump_progress_db("pages");
	/* a first look that only counts, then one that reports: beside a
	 * writer a meta page can be read while it is rewritten (the pages
	 * themselves are kept by this snapshot, when there is one) */
	rc = store_check_structure(c->d->o->db, 1u << 20, NULL, NULL);
	if (rc > 0)
		rc = store_check_structure(c->d->o->db, 1u << 20,
		    dump_check_structure_problem, c);
	if (rc < 0)
		dump_check_problem(c, NULL, NULL, NULL, "structure", "data.mdb "
		    "cannot be read: %s", store_strerror(rc));
}

/* The final row: what was checked and the verdict. */
static void
dump_check_summary(struct check *c, int interrupted, uint64_t ms)
{
	struct dump *d = c->d;
	char sz[32];

	if (d->o->json) {
		dump_json_row(d, "check");
		dump_json_u64(d, "sessions", c->sessions);
		dump_json_u64(d, "entries", c->entries);
		dump_json_u64(d, "bytes", c->bytes);
		dump_json_u64(d, "blobs", c->blobs);
		dump_json_u64(d, "changed", c->changed);
		dump_json_u64(d, "calls", c->calls);
		dump_json_u64(d, "problems", c->problems);
		dump_json_bool(d, "sound", c->problems == 0 && !interrupted);
		dump_json_bool(d, "interrupted", interrupted);
		dump_json_u64(d, "elapsed_ms", ms);
		dump_json_row_end(d);
		return;
	}
	if (d->o->quiet && c->problems == 0 && !interrupted)
		return;
	fprintf(d->out, "%s: %" PRIu64 " sessions, %" PRIu64 " entries (%s) ",
	    d->s != NULL ? store_path(d->s) : d->o->db, c->sessions,
	    c->entries, dump_out_size(sz, sizeof sz, c->bytes));
	if (c->calls > 0)
		fprintf(d->out, "and %" PRIu64 " journaled calls ", c->calls);
	fprintf(d->out, "checked in %.2fs: ", (double)ms / 1000);
	if (interrupted)
		fprintf(d->out, "INTERRUPTED, %" PRIu64 " problems so far\n",
		    c->problems);
	else if (c->problems == 0)
		fprintf(d->out, "sound\n");
	else
		fprintf(d->out, "%" PRIu64 " problem%s: DAMAGED\n", c->problems,
		    c->problems == 1 ? "" : "s");
	if (c->changed > 0)
		fprintf(d->out, "(%" PRIu64 " entr%s rewritten while the check "
		    "ran: their old blob files were gone, as they should be)\n",
		    c->changed, c->changed == 1 ? "y was" : "ies were");
}

/*
 * In the parent, after the child running --check died of a signal:
 * report the crash as damage, where the walk was (dump_progress), and the
 * summary with the child's counts.  Returns the exit status.
 */
int
dump_check_crashed(struct dump *d, const char *what)
{
	char where[STORE_KEY_MAX * 4 + 64];
	struct check c;

	memset(&c, 0, sizeof c);
	c.d = d;
	if (dump_prog != NULL && dump_prog->check) {
		c.problems = dump_prog->problems;
		c.sessions = dump_prog->sessions;
		c.entries = dump_prog->entries;
		c.bytes = dump_prog->bytes;
		c.blobs = dump_prog->blobs;
		c.changed = dump_prog->changed;
	}
	if (d->o->json && (dump_prog == NULL || !dump_prog->check))
		dump_json_header(d, "check");
	if (dump_prog != NULL && dump_prog->lmdb_assert[0] != '\0') {
		/* LMDB's own sentence, in the report instead of on stderr */
		snprintf(where, sizeof where, "%s; LMDB: %s", what,
		    dump_prog->lmdb_assert);
		what = where;
	}
	if (dump_prog == NULL || strcmp(dump_prog->db, "open") == 0) {
		/* the child died opening the store, before its own
		 * structural check: run it here (it only preads) */
		dump_check_structure(&c);
		dump_check_problem(&c, NULL, NULL, NULL, "crash", "opening the "
		    "store crashed the reader (%s): a damaged meta or root "
		    "page", what);
	} else {
		char at[STORE_KEY_MAX * 4 + 64];
		dump_check_problem(&c, NULL, NULL, NULL, "crash", "reading the "
		    "%s database %s crashed the reader (%s): a damaged page",
		    dump_prog->db, dump_progress_where(at, sizeof at), what);
	}
	dump_check_summary(&c, 0, 0);
	return DUMP_EXIT_DAMAGE;
}

/*
 * --check of a store that does not open (a damaged page on the way to the
 * named databases: the main database's root, a branch page, the meta
 * database): the structural check says which pages of which database;
 * the open's own error is one more problem.  Returns the exit status, or
 * -1 when the pages are sound (then the store is not a pyshelf store, or
 * not readable: the caller says why, as for any other view).
 */
int
dump_check_unopened(struct dump *d, const char *cause)
{
	struct check c;
	int n;

	memset(&c, 0, sizeof c);
	c.d = d;
	n = store_check_structure(d->o->db, 1u << 20, NULL, NULL);
	if (n <= 0)
		return -1;
	if (d->o->json)
		dump_json_header(d, "check");
	dump_check_structure(&c);
	dump_check_problem(&c, NULL, NULL, NULL, "open", "the store cannot be "
	    "opened past the damaged page%s (%s): the walks of its databases "
	    "did not run; pyshelf-dump --salvage OUT copies what the pages "
	    "still hold", n > 1 ? "s" : "", cause != NULL ? cause :
	    "a damaged page");
	dump_check_summary(&c, 0, 0);
	return DUMP_EXIT_DAMAGE;
}

/* pyshelf-dump --check. */
int
dump_check_run(struct dump *d, store_txn *t)
{
	struct check c;
	uint64_t t0 = store_now_ms();
	MDB_txn *st_txn;
	MDB_stat st;
	int rc;

	memset(&c, 0, sizeof c);
	c.d = d;
	c.t = t;
	/* the count for the progress line, in a transaction of its own: on
	 * a damaged root mdb_stat fails the transaction and returns 0 */
	if (mdb_txn_begin(t->s->env, NULL, MDB_RDONLY, &st_txn) == 0) {
		if (mdb_stat(st_txn, t->s->entries, &st) == 0)
			c.total = st.ms_entries;
		mdb_txn_abort(st_txn);
	}
	if (d->o->json)
		dump_json_header(d, "check");
	/* the pages first: a store whose pages are damaged is not sound
	 * even where a walk happens to pass, and pyshelfd refuses to write
	 * to it (store_check_structure) */
	dump_check_structure(&c);
	if (t->s->meta_damaged)
		dump_check_problem(&c, NULL, NULL, NULL, "meta", "the meta "
		    "database (the store's format version) cannot be read: a "
		    "damaged page; the other databases are checked as format "
		    "%d", STORE_FORMAT_VERSION);
	/* a walk that fails is reported and the next one runs: each walk
	 * returns 0 or DUMP_EXIT_INTERRUPTED */
	if ((rc = dump_check_sessions(&c)) == 0 && (rc = dump_check_names(&c))
	    == 0 && (rc = dump_check_expiry(&c)) == 0 && (rc =
	    dump_check_refs_index(&c)) == 0) {
		dump_progress_db("entries");
		rc = entry_walk(t, dump_check_entry, &c);
		if (rc == 0 && c.have_sid)
			/* flush the orphan count */
			dump_check_entry_enter_session(&c, c.sid);
		if (rc < 0)
			rc = dump_check_walk_end(&c, "entries", rc);
		if (rc == 0)
			rc = dump_check_counts(&c);
		if (rc == 0) {
			dump_progress_db("blobs");
			rc = blob_walk(t, dump_check_entry_blob_row, &c);
			if (rc < 0)
				rc = dump_check_walk_end(&c, "blobs", rc);
		}
		if (rc == 0)
			rc = dump_check_calls(&c);
	}
	dump_out_progress(d, "", 0, 0, 1);
	dump_check_mirror(&c);
	dump_check_summary(&c, rc == DUMP_EXIT_INTERRUPTED,
	    store_now_ms() - t0);
	if (rc != 0)
		return rc;
	return c.problems > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}
