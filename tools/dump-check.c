/*
 * dump-check.c - pyshelf-dump --check: verify the whole store in one
 * read-only snapshot and report each problem with where (session and key)
 * and what.  In order: the session records parse and have a known state;
 * the name index and the sessions agree; the expiry index and the sessions
 * agree both ways; then every entry: its key parses, its session exists,
 * its record decodes and its digest matches (record_decode), its refs blob
 * parses and each reference names an entry of the same session, its pickle
 * is well formed (pickledis) and its persistent ids are the refs blob's,
 * out-of-band tables add up, volatile reasons are UTF-8.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"

/* Problems reported for one session before they are only counted (a
 * whole session of orphans would otherwise print a line per entry). */
#define CHECK_ORPHANS_SHOWN 5
/* Cross-check the pickle's persistent ids against the refs blob when both
 * are at most this long (quadratic; longer lists are only resolved). */
#define CHECK_CROSS_MAX 256

/* The state of one --check run. */
struct check {
	struct dump *d;
	store_txn *t;
	uint64_t problems;        /* found so far */
	uint64_t sessions;        /* session records seen */
	uint64_t entries;         /* entries seen */
	uint64_t bytes;           /* their stored bytes */
	uint64_t blobs;           /* blob files among them */
	uint64_t changed;         /* entries whose file a newer commit
	                             dropped while the check ran */
	uint64_t total;           /* entries in the database (progress) */
	uint8_t sid[STORE_ID_SIZE]; /* session of the entries being walked */
	int have_sid;             /* sid is set */
	int sid_exists;           /* it has a (parsable) record */
	store_session ss;         /* its record, when it exists */
	uint64_t orphans;         /* orphan entries of sid */
};

/* Keep the parent's copy of the counters (dump_progress) up to date. */
static void
check_mirror(const struct check *c)
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

static void check_problem(struct check *c, const uint8_t *sid,
                          const char *sname, const store_key *k,
                          const char *what, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Report one problem: a text line or a JSON row "problem". */
static void
check_problem(struct check *c, const uint8_t *sid, const char *sname,
              const store_key *k, const char *what, const char *fmt, ...)
{
	struct dump *d = c->d;
	char msg[600], idhex[2 * STORE_ID_SIZE + 1], kb[STORE_KEY_MAX * 4 + 16];
	char nb[STORE_NAME_MAX * 4 + 8];
	va_list ap;

	c->problems++;
	check_mirror(c);
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
check_renew(struct check *c)
{
	MDB_txn *n;

	if (mdb_txn_begin(c->t->s->env, NULL, MDB_RDONLY, &n) != 0)
		return;
	mdb_txn_abort(c->t->txn);
	c->t->txn = n;
}

/* Open a cursor on one of the store's databases. */
static int
check_cursor(struct check *c, MDB_dbi dbi, const char *db, MDB_cursor **cur)
{
	int rc = mdb_cursor_open(c->t->txn, dbi, cur);

	dump_progress_db(db);
	if (rc != 0) {
		check_problem(c, NULL, NULL, NULL, "walk", "the %s database "
		    "cannot be read: %s", db, mdb_strerror(rc));
		check_renew(c);
	}
	return rc;
}

/*
 * A walk that stopped on an error: damage, reported with where it
 * stopped; the checks after it still run and the summary is printed.
 * Returns 0, or DUMP_EXIT_INTERRUPTED.
 */
static int
check_walk_end(struct check *c, const char *db, int rc)
{
	char where[STORE_KEY_MAX * 4 + 64];

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (rc == 0 || rc == MDB_NOTFOUND || rc == STORE_E_NOTFOUND)
		return 0;
	/* LMDB fails a transaction at a damaged page, sometimes inside a
	 * call that does not return the error: the next call then says
	 * only MDB_BAD_TXN (STORE_E_LMDB) */
	check_problem(c, NULL, NULL, NULL, "walk", "reading the %s database "
	    "failed %s: %s", db, dump_progress_where(where, sizeof where),
	    rc == STORE_E_LMDB || rc == MDB_BAD_TXN ? "LMDB gave up on a "
	    "damaged page on the way" : rc <= -40000 ? store_strerror(rc) :
	    mdb_strerror(rc));
	check_renew(c);
	return 0;
}

/* A key or value of a walk that runs past the end of the file. */
static int
check_val(struct check *c, const MDB_val *k, const MDB_val *v)
{
	if (store_val_ok(c->t, k) && (v == NULL || store_val_ok(c->t, v)))
		return 1;
	return 0;
}

/* One session record: parses, known state, in the name index, and its
 * expiry key present. */
static void
check_session_record(struct check *c, const MDB_val *k)
{
	store_session ss;
	uint8_t ek[EXPIRY_KEY_SIZE];
	MDB_val nk, nv;
	int rc;

	if (k->mv_size != STORE_ID_SIZE) {
		check_problem(c, NULL, NULL, NULL, "session_record",
		    "a session key of %zu bytes (ids have %d)", k->mv_size,
		    STORE_ID_SIZE);
		return;
	}
	if ((rc = session_get_by_id(c->t, k->mv_data, &ss)) != 0) {
		check_problem(c, k->mv_data, NULL, NULL, "session_record",
		    "the session record does not parse (%s)",
		    store_strerror(rc));
		return;
	}
	if (ss.state != STORE_STATE_LIVE && ss.state != STORE_STATE_DEAD)
		check_problem(c, ss.id, ss.name, NULL, "session_state",
		    "unknown state %u (1 live, 2 dead)", ss.state);
	if (ss.state == STORE_STATE_LIVE) {
		nk.mv_data = ss.name;
		nk.mv_size = strlen(ss.name);
		rc = nk.mv_size > 0 ? mdb_get(c->t->txn, c->t->s->names, &nk,
		    &nv) : MDB_NOTFOUND;
		if (rc != 0 || nv.mv_size != STORE_ID_SIZE ||
		    memcmp(nv.mv_data, ss.id, STORE_ID_SIZE) != 0)
			check_problem(c, ss.id, ss.name, NULL, "name_index",
			    "a live session whose name does not lead to it "
			    "in the name index");
	}
	if (session_expiry_key(&ss, ek)) {
		nk.mv_data = ek;
		nk.mv_size = sizeof ek;
		if (mdb_get(c->t->txn, c->t->s->expiry, &nk, &nv) != 0)
			check_problem(c, ss.id, ss.name, NULL, "expiry_index",
			    "no expiry key for this %s session (the sweeper "
			    "would never reclaim it)", ss.state ==
			    STORE_STATE_DEAD ? "dead" : "leased");
	}
}

/* The sessions database, record by record. */
static int
check_sessions(struct check *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (check_cursor(c, c->t->s->sessions, "sessions", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (dump_interrupted)
			break;
		if (!check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		c->sessions++;
		check_session_record(c, &k);
	}
	mdb_cursor_close(cur);
	return check_walk_end(c, "sessions", rc);
}

/* The name index: each name leads to a live session of that name. */
static int
check_names(struct check *c)
{
	char name[STORE_NAME_MAX + 1];
	store_session ss;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (check_cursor(c, c->t->s->names, "names", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		dump_out_text(name, sizeof name, k.mv_data, k.mv_size);
		if (v.mv_size != STORE_ID_SIZE) {
			check_problem(c, NULL, name, NULL, "name_index",
			    "the name index holds %zu bytes for this name, "
			    "not a session id", v.mv_size);
			continue;
		}
		if (session_get_by_id(c->t, v.mv_data, &ss) != 0) {
			check_problem(c, v.mv_data, name, NULL, "name_index",
			    "the name leads to a session that does not exist");
			continue;
		}
		if (ss.state != STORE_STATE_LIVE || strlen(ss.name) !=
		    k.mv_size || memcmp(ss.name, k.mv_data, k.mv_size) != 0)
			check_problem(c, ss.id, name, NULL, "name_index",
			    "the name leads to a %s session named %s",
			    ss.state == STORE_STATE_LIVE ? "live" : "dead",
			    ss.name);
	}
	mdb_cursor_close(cur);
	return check_walk_end(c, "names", rc);
}

/* One expiry key: well formed, of an existing session, the one its lease
 * gives. */
static void
check_expiry_key_one(struct check *c, const MDB_val *k)
{
	uint8_t want[EXPIRY_KEY_SIZE];
	const uint8_t *p = k->mv_data;
	char a[40], b[40];
	store_session ss;
	int rc;

	if (k->mv_size != EXPIRY_KEY_SIZE) {
		check_problem(c, NULL, NULL, NULL, "expiry_index",
		    "an expiry key of %zu bytes (they have %d)", k->mv_size,
		    EXPIRY_KEY_SIZE);
		return;
	}
	if ((rc = session_get_by_id(c->t, p + 8, &ss)) != 0) {
		if (rc == STORE_E_NOTFOUND)
			check_problem(c, p + 8, NULL, NULL, "expiry_index",
			    "an expiry key (at %s) for a session that does "
			    "not exist", dump_out_time(a, sizeof a,
			    be64_get(p)));
		return; /* an unparsable record was reported already */
	}
	if (!session_expiry_key(&ss, want))
		check_problem(c, ss.id, ss.name, NULL, "expiry_index",
		    "an expiry key (at %s) for a live session without a "
		    "lease", dump_out_time(a, sizeof a, be64_get(p)));
	else if (memcmp(want, p, EXPIRY_KEY_SIZE) != 0)
		check_problem(c, ss.id, ss.name, NULL, "expiry_index",
		    "a stale expiry key at %s; the session's %s gives %s",
		    dump_out_time(a, sizeof a, be64_get(p)),
		    ss.state == STORE_STATE_DEAD ? "state (dead)" : "lease",
		    ss.state == STORE_STATE_DEAD ? "time 0" :
		    dump_out_time(b, sizeof b, be64_get(want)));
}

/* The expiry index, key by key (the other way round is in
 * check_session_record). */
static int
check_expiry(struct check *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if (check_cursor(c, c->t->s->expiry, "expiry", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		check_expiry_key_one(c, &k);
	}
	mdb_cursor_close(cur);
	return check_walk_end(c, "expiry", rc);
}

/* The references index (the refs database, when the store has one): every
 * row's key an entry key of an existing session, every value a referrer's
 * kind and key.  Stale rows (a referrer that no longer refers) are hints,
 * not damage, and are not reported. */
static int
check_refs_index(struct check *c)
{
	uint8_t last[STORE_ID_SIZE];
	int rc, op = MDB_FIRST, have = 0, exists = 0;
	const uint8_t *p;
	MDB_cursor *cur;
	store_key tk;
	MDB_val k, v;

	if (!c->t->s->has_refs)
		return 0;
	if (check_cursor(c, c->t->s->refs, "refs", &cur) != 0)
		return 0;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 &&
	    !dump_interrupted) {
		op = MDB_NEXT;
		if (!check_val(c, &k, &v)) {
			rc = STORE_E_CORRUPT;
			break;
		}
		dump_progress_key(k.mv_data, k.mv_size);
		p = k.mv_data;
		if (entry_key_parse(p, k.mv_size, &tk) != 0) {
			check_problem(c, NULL, NULL, NULL, "refs_index",
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
				check_problem(c, p, NULL, &tk, "refs_index",
				    "references-index rows of a session that "
				    "does not exist");
		}
		p = v.mv_data;
		if (v.mv_size < 2 || (p[0] != STORE_KIND_GLOBAL &&
		    p[0] != STORE_KIND_HANDLE) || (p[0] == STORE_KIND_HANDLE &&
		    v.mv_size != 9) || v.mv_size > 1 + STORE_KEY_MAX)
			check_problem(c, k.mv_data, NULL, &tk, "refs_index",
			    "a references-index row of %zu bytes that names "
			    "no entry", v.mv_size);
	}
	mdb_cursor_close(cur);
	return check_walk_end(c, "refs", rc);
}

/* --- entries ----------------------------------------------------------------- */

/* Follow the walk into another session's range. */
static void
check_enter_session(struct check *c, const uint8_t *sid)
{
	char idhex[2 * STORE_ID_SIZE + 1];

	if (c->have_sid && c->orphans > CHECK_ORPHANS_SHOWN) {
		store_hex(c->sid, STORE_ID_SIZE, idhex);
		check_problem(c, c->sid, NULL, NULL, "orphan_entry",
		    "and %" PRIu64 " more entries of this session id, which "
		    "has no session record", c->orphans - CHECK_ORPHANS_SHOWN);
		c->problems -= 1; /* counted one by one below */
	}
	memcpy(c->sid, sid, STORE_ID_SIZE);
	c->have_sid = 1;
	c->orphans = 0;
	c->sid_exists = session_get_by_id(c->t, sid, &c->ss) == 0;
	if (!c->sid_exists) {
		/* an unparsable record is reported by check_sessions */
		MDB_val k = {STORE_ID_SIZE, (void *)sid}, v;
		c->sid_exists = mdb_get(c->t->txn, c->t->s->sessions, &k, &v) == 0;
		snprintf(c->ss.name, sizeof c->ss.name, "?");
	}
}

/* Whether a key names an entry of the current session. */
static int
check_resolves(struct check *c, const store_key *k)
{
	const uint8_t *v;
	size_t len;

	return dump_entry_fetch(c->t, c->sid, k, &v, &len) == 0;
}

/* The refs blob: parses, and each reference resolves. */
static void
check_refs_blob(struct check *c, const store_key *k, const store_record *r)
{
	char kb[STORE_KEY_MAX * 4 + 16];
	store_key rk;
	const char *why = NULL;
	size_t off = 0;
	int rc;

	while ((rc = refs_blob_next(r->refs, r->refs_len, &off, &rk,
	    &why)) == 1) {
		if (!check_resolves(c, &rk))
			check_problem(c, c->sid, c->ss.name, k, "dangling_ref",
			    "persistent reference to %s %s does not resolve "
			    "(no such entry in this session)",
			    rk.kind == STORE_KIND_GLOBAL ? "global" : "handle",
			    dump_out_key(kb, sizeof kb, &rk));
	}
	if (rc < 0)
		check_problem(c, c->sid, c->ss.name, k, "refs_blob",
		    "refs blob malformed at byte %zu: %s", off, why);
}

/* Whether the refs blob lists the pickle's reference pr. */
static int
check_blob_has(const store_record *r, const struct pickledis_ref *pr)
{
	store_key ref;
	const char *why;
	size_t off = 0;

	while (refs_blob_next(r->refs, r->refs_len, &off, &ref, &why) == 1)
		if (ref.kind == pr->kind && (pr->kind == 'h' ? ref.handle ==
		    pr->handle : (ref.name_len == pr->name_len &&
		    memcmp(ref.name, pr->name, pr->name_len) == 0)))
			return 1;
	return 0;
}

/* The pickle's persistent ids: entry keys, resolving, in the refs blob. */
static void
check_pickle_refs(struct check *c, const store_key *k, const store_record *r,
                  const struct pickledis_info *in)
{
	char kb[STORE_KEY_MAX * 4 + 16];
	size_t i, nblob = 0, off = 0;
	const char *why;
	store_key rk;

	while (refs_blob_next(r->refs, r->refs_len, &off, &rk, &why) == 1)
		nblob++;
	for (i = 0; i < in->nrefs; i++) {
		const struct pickledis_ref *pr = &in->refs[i];
		if (pr->kind == 0) {
			check_problem(c, c->sid, c->ss.name, k, "pickle_refs",
			    "persistent id at pickle offset %zu is not an "
			    "entry key ('g', name) or ('h', id)", pr->pos);
			continue;
		}
		memset(&rk, 0, sizeof rk);
		rk.kind = pr->kind;
		rk.name = (const char *)pr->name;
		rk.name_len = pr->name_len;
		rk.handle = pr->handle;
		if (in->nrefs <= CHECK_CROSS_MAX && nblob <= CHECK_CROSS_MAX &&
		    !check_blob_has(r, pr)) {
			check_problem(c, c->sid, c->ss.name, k, "pickle_refs",
			    "the pickle refers to %s %s, which its refs blob "
			    "does not list", pr->kind == 'g' ? "global" :
			    "handle", dump_out_key(kb, sizeof kb, &rk));
			if (!check_resolves(c, &rk))
				check_problem(c, c->sid, c->ss.name, k,
				    "dangling_ref", "persistent reference to %s "
				    "does not resolve", dump_out_key(kb,
				    sizeof kb, &rk));
		}
	}
	if (nblob != in->nrefs && in->nrefs <= CHECK_CROSS_MAX &&
	    nblob <= CHECK_CROSS_MAX)
		check_problem(c, c->sid, c->ss.name, k, "pickle_refs",
		    "the refs blob lists %zu references, the pickle uses %zu",
		    nblob, in->nrefs);
}

/* The payload of a pickled record: OOB table, pickle, references. */
static void
check_pickle(struct check *c, const store_key *k, const store_record *r)
{
	const struct pickledis_info *in;
	const uint8_t *pk = r->payload;
	size_t pklen = r->payload_len, nbuf = 0;
	struct dump_oob oob;
	const char *why;
	int rc;

	memset(&oob, 0, sizeof oob);
	if (r->flags & STORE_FLAG_OOB) {
		if (dump_entry_oob_split(r->payload, r->payload_len, &oob,
		    &why) != 0) {
			check_problem(c, c->sid, c->ss.name, k, "oob_table",
			    "%s", why);
			return;
		}
		pk = oob.pickle;
		pklen = oob.pickle_len;
		nbuf = oob.nbuffers;
	}
	rc = pickledis_run(c->d->pd, pk, pklen, oob.lengths, nbuf, NULL, NULL);
	dump_entry_oob_free(&oob);
	in = pickledis_info(c->d->pd);
	if (rc == PICKLEDIS_E_NOMEM)
		check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "out of memory disassembling the pickle");
	else if (rc != 0)
		check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "malformed pickle at offset %zu: %s", in->error_pos,
		    in->error);
	else if (in->trailing > 0)
		check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "%zu bytes after the pickle's STOP", in->trailing);
	else if (in->nbuffers != nbuf)
		check_problem(c, c->sid, c->ss.name, k, "oob_table",
		    "the pickle takes %zu out-of-band buffers, the record "
		    "holds %zu", in->nbuffers, nbuf);
	if (rc == 0)
		check_pickle_refs(c, k, r, in);
}

/* Bytes p[0..n) are valid UTF-8. */
static int
check_utf8(const uint8_t *p, size_t n)
{
	size_t i = 0, k;
	uint32_t cp;

	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if ((k = pickledis_utf8_seq(p + i, n - i, &cp)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* The fields of a decoded record. */
static void
check_record_fields(struct check *c, const store_key *k,
                    const store_record *r)
{
	if (r->pickler > STORE_PICKLER_CLOUDPICKLE)
		check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "unknown pickler %u", r->pickler);
	if (r->flags & ~(STORE_FLAG_EXCINFO | STORE_FLAG_VOLATILE |
	    STORE_FLAG_OOB | STORE_FLAG_HIDDEN | STORE_FLAG_BLOB))
		check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "unknown flags 0x%04x", r->flags);
	if (!check_utf8((const uint8_t *)r->type_name, r->type_len))
		check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "the type name is not UTF-8");
	if (r->flags & STORE_FLAG_VOLATILE) {
		if (!check_utf8(r->payload, r->payload_len))
			check_problem(c, c->sid, c->ss.name, k, "record_field",
			    "the volatile entry's reason is not UTF-8");
		if (r->refs_len != 0 || r->flags & STORE_FLAG_OOB)
			check_problem(c, c->sid, c->ss.name, k, "record_field",
			    "a volatile entry with references or out-of-band "
			    "buffers");
	}
}

/* A blob record's file must be in the blob index, or a writable open
 * would take it for an orphan and remove it. */
static void
check_blob_indexed(struct check *c, const uint8_t *sid, const store_key *k,
                   const store_record *r)
{
	uint8_t kbuf[STORE_ID_SIZE + 1 + STORE_KEY_MAX];
	store_blob_ref ref;
	MDB_val key, v;

	if (blob_ref_decode(r->payload, r->payload_len, &ref) != 0)
		return; /* dump_entry_blob reports it */
	key.mv_size = entry_key_make(kbuf, sid, k->kind, k->name, k->name_len,
	    k->handle);
	key.mv_data = kbuf;
	if (key.mv_size == 0 || !c->t->s->has_blobs ||
	    mdb_get(c->t->txn, c->t->s->blobs, &key, &v) != 0 ||
	    v.mv_size != STORE_BLOB_NAME_SIZE + 8 ||
	    memcmp(v.mv_data, ref.name, STORE_BLOB_NAME_SIZE) != 0)
		check_problem(c, sid, c->ss.name, k, "blob_row",
		    "the entry's blob file is missing from the blob index");
}

/* entry_walk callback: everything about one entry. */
static int
check_entry(const uint8_t *sid, const store_key *k, const uint8_t *val,
            size_t len, void *arg)
{
	struct check *c = arg;
	char why[160];
	store_record r;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (sid != NULL && k->kind != 0) {
		uint8_t kb[ENTRY_KEY_MAX];
		size_t kl = entry_key_make(kb, sid, k->kind, k->name,
		    k->name_len, k->handle);
		if (kl > 0)
			dump_progress_key(kb, kl);
	}
	c->entries++;
	c->bytes += len;
	check_mirror(c);
	if ((c->entries & 0x3fff) == 0)
		dump_out_progress(c->d, "checked entries:", c->entries, c->total,
		    0);
	if (sid == NULL || k->kind == 0) {
		check_problem(c, sid, NULL, NULL, "entry_key",
		    "an entry key of %zu bytes that does not parse "
		    "(id, 'g' name or 'h' 8-byte id)", k->name_len);
		return 0;
	}
	if (!c->have_sid || memcmp(sid, c->sid, STORE_ID_SIZE) != 0)
		check_enter_session(c, sid);
	if (!c->sid_exists) {
		if (++c->orphans <= CHECK_ORPHANS_SHOWN)
			check_problem(c, sid, NULL, k, "orphan_entry",
			    "an entry whose session id has no session record");
		else
			c->problems++;
		return 0;
	}
	if (record_decode(val, len, &r) != 0) {
		if (record_decode_nocheck(val, len, &r) != 0)
			check_problem(c, sid, c->ss.name, k, "record_layout",
			    "%s", dump_entry_layout_why(val, len, why,
			    sizeof why));
		else
			check_problem(c, sid, c->ss.name, k, "digest",
			    "digest mismatch: the record's %zu bytes changed "
			    "after it was written", len);
		return 0;
	}
	check_record_fields(c, k, &r);
	if (r.flags & STORE_FLAG_BLOB) {
		char path[64], bwhy[300];
		store_blob_ref ref;
		const char *bad;
		int missing;

		check_blob_indexed(c, sid, k, &r);
		bad = dump_entry_blob(c->t, &r, path, sizeof path, bwhy,
		    sizeof bwhy, &missing);
		/* a file dropped by a commit after this snapshot began (the
		 * entry rebound or deleted meanwhile) is gone, not damaged */
		if (bad != NULL && missing &&
		    blob_ref_decode(r.payload, r.payload_len, &ref) == 0 &&
		    blob_superseded(c->t, sid, k, ref.name) == 1) {
			c->changed++;
			return 0;
		}
		if (bad != NULL) {
			check_problem(c, sid, c->ss.name, k, "blob", "%s", bad);
			return 0;
		}
		c->bytes += r.payload_len - STORE_BLOB_REF_SIZE;
		c->blobs++;
	}
	check_refs_blob(c, k, &r);
	if (!(r.flags & STORE_FLAG_VOLATILE) &&
	    r.pickler != STORE_PICKLER_NONE)
		check_pickle(c, k, &r);
	return 0;
}

/* blob_walk callback: each row of `blobs` must be an entry's, and name
 * the file its record names. */
static int
check_blob_row(const uint8_t *sid, const store_key *k, const uint8_t *name,
               uint64_t size, void *arg)
{
	struct check *c = arg;
	store_blob_ref ref;
	store_record r;
	const uint8_t *val;
	size_t len;
	int rc;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (sid == NULL || k->kind == 0 || name == NULL) {
		check_problem(c, sid, NULL, NULL, "blob_row",
		    "a row of the blob index that does not parse");
		return 0;
	}
	rc = dump_entry_fetch(c->t, sid, k, &val, &len);
	if (rc == STORE_E_NOTFOUND) {
		check_problem(c, sid, NULL, k, "blob_row",
		    "a blob file is noted for an entry that does not exist");
		return 0;
	}
	if (rc != 0) {
		check_problem(c, sid, NULL, k, "blob_row", "the entry a blob "
		    "file is noted for cannot be read back: %s",
		    store_strerror(rc));
		return 0;
	}
	if (record_decode_nocheck(val, len, &r) != 0)
		return 0; /* the entry walk reports it */
	if (!(r.flags & STORE_FLAG_BLOB) ||
	    blob_ref_decode(r.payload, r.payload_len, &ref) != 0 ||
	    memcmp(ref.name, name, STORE_BLOB_NAME_SIZE) != 0 ||
	    ref.size != size)
		check_problem(c, sid, NULL, k, "blob_row",
		    "the blob index names a file the entry's record does "
		    "not");
	return 0;
}

/* store_check_structure callback: one problem. */
static void
check_structure_problem(const char *problem, void *arg)
{
	struct check *c = arg;

	check_problem(c, NULL, NULL, NULL, "structure", "data.mdb: %s",
	    problem);
}

/* The pages, as a writable open checks them (with no budget): a store
 * pyshelfd refuses to write is never called sound.  Run inside the
 * check's snapshot, whose read transaction keeps a writer beside it from
 * reusing the pages the check reads. */
static void
check_structure(struct check *c)
{
	int rc;

	dump_progress_db("pages");
	/* a first look that only counts, then one that reports: beside a
	 * writer a meta page can be read while it is rewritten (the pages
	 * themselves are kept by this snapshot, when there is one) */
	rc = store_check_structure(c->d->o->db, 1u << 20, NULL, NULL);
	if (rc > 0)
		rc = store_check_structure(c->d->o->db, 1u << 20,
		    check_structure_problem, c);
	if (rc < 0)
		check_problem(c, NULL, NULL, NULL, "structure", "data.mdb "
		    "cannot be read: %s", store_strerror(rc));
}

/* The final row: what was checked and the verdict. */
static void
check_summary(struct check *c, int interrupted, uint64_t ms)
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
		dump_json_u64(d, "problems", c->problems);
		dump_json_bool(d, "sound", c->problems == 0 && !interrupted);
		dump_json_bool(d, "interrupted", interrupted);
		dump_json_u64(d, "elapsed_ms", ms);
		dump_json_row_end(d);
		return;
	}
	if (d->o->quiet && c->problems == 0 && !interrupted)
		return;
	fprintf(d->out, "%s: %" PRIu64 " sessions, %" PRIu64 " entries (%s) "
	    "checked in %.2fs: ", d->s != NULL ? store_path(d->s) : d->o->db, c->sessions, c->entries,
	    dump_out_size(sz, sizeof sz, c->bytes), (double)ms / 1000);
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
	if (dump_prog == NULL || strcmp(dump_prog->db, "open") == 0) {
		/* the child died opening the store, before its own
		 * structural check: run it here (it only preads) */
		check_structure(&c);
		check_problem(&c, NULL, NULL, NULL, "crash", "opening the "
		    "store crashed the reader (%s): a damaged meta or root "
		    "page", what);
	} else
		check_problem(&c, NULL, NULL, NULL, "crash", "reading the %s "
		    "database %s crashed the reader (%s): a damaged page",
		    dump_prog->db, dump_progress_where(where, sizeof where),
		    what);
	check_summary(&c, 0, 0);
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
	check_structure(&c);
	/* a walk that fails is reported and the next one runs: each walk
	 * returns 0 or DUMP_EXIT_INTERRUPTED */
	if ((rc = check_sessions(&c)) == 0 && (rc = check_names(&c)) == 0 &&
	    (rc = check_expiry(&c)) == 0 && (rc = check_refs_index(&c)) == 0) {
		dump_progress_db("entries");
		rc = entry_walk(t, check_entry, &c);
		if (rc == 0 && c.have_sid)
			check_enter_session(&c, c.sid); /* flush orphan count */
		if (rc < 0)
			rc = check_walk_end(&c, "entries", rc);
		if (rc == 0) {
			dump_progress_db("blobs");
			rc = blob_walk(t, check_blob_row, &c);
			if (rc < 0)
				rc = check_walk_end(&c, "blobs", rc);
		}
	}
	dump_out_progress(d, "", 0, 0, 1);
	check_mirror(&c);
	check_summary(&c, rc == DUMP_EXIT_INTERRUPTED, store_now_ms() - t0);
	if (rc != 0)
		return rc;
	return c.problems > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}
