/*
 * dump-salvage.c - pyshelf-dump --salvage OUT: copy what is intact of a
 * damaged store into a new store at OUT, made with the store library (the
 * same format): every session whose record parses, with its record, and
 * every entry of it that reads back and verifies (entry_get: layout,
 * digest, and a blob record's file), with its refs rows; a blob payload
 * goes to a new blob file as any write does; then the session's journaled
 * calls whose records parse (one write transaction per session).  What cannot be saved is
 * listed, one line each ("NOT SAVED ..."), then a summary.
 *
 * The source is read in one snapshot (in the child process main() runs
 * the views in: a crash on a damaged page ends the run, and OUT keeps
 * what was committed before it); OUT is written a batch at a time, each
 * batch one write transaction, pointing into the source's snapshot
 * instead of copying payloads.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

#include "dump.h"

/* Entries per write transaction into OUT, and bytes. */
#define SALVAGE_BATCH 1000
#define SALVAGE_BATCH_BYTES ((size_t)64 << 20)

/* One run. */
struct salvage {
	struct dump *d;
	store_txn *t;             /* the source snapshot */
	store *out;               /* the new store */
	const store_session *ss;  /* the session being copied */
	int session_written;      /* its record is in OUT */
	struct salvage_entry *v;  /* the batch */
	size_t n, cap, bytes;
	uint64_t sessions, sessions_saved, entries, entries_saved, lost;
	uint64_t calls_saved;
	int rc;                   /* an error that stops the run */
};

/* List one thing not saved: of session ss, entry k (may be NULL). */
void
dump_salvage_lost_key(struct dump *d, const store_session *ss,
                      const store_key *k, const char *why)
{
	char kb[STORE_KEY_MAX * 4 + 16], nb[STORE_NAME_MAX * 4 + 8];
	char idhex[2 * STORE_ID_SIZE + 1];

	store_hex(ss->id, STORE_ID_SIZE, idhex);
	fprintf(d->out, "NOT SAVED session %s (id %s)", dump_out_text(nb,
	    sizeof nb, ss->name, strlen(ss->name)), idhex);
	if (k != NULL)
		fprintf(d->out, ", %s %s", k->kind == STORE_KIND_HANDLE ?
		    "handle" : "global", dump_out_key(kb, sizeof kb, k));
	fprintf(d->out, ": %s\n", why);
	fflush(d->out);
}

static void
dump_salvage_lost(struct salvage *sv, const store_session *ss,
                  const store_key *k, const char *why)
{
	sv->lost++;
	dump_salvage_lost_key(sv->d, ss, k, why);
}

/* Write one entry and its refs rows into OUT. */
int
dump_salvage_put(store_txn *t, const uint8_t *sid,
                 const struct salvage_entry *e)
{
	char type[65536 + 1];
	const store_record *r = &e->r;
	struct iovec iov;
	store_entry_in in;
	const char *why;
	store_key target;
	size_t off = 0, tl = r->type_len < 65536 ? r->type_len : 65536;
	int rc;

	memcpy(type, r->type_name, tl);
	type[tl] = '\0';
	memset(&in, 0, sizeof in);
	in.kind = e->key.kind;
	in.name = e->key.name;
	in.name_len = e->key.name_len;
	in.handle = e->key.handle;
	in.pickler = r->pickler;
	in.flags = r->flags & (uint16_t)~STORE_FLAG_BLOB;
	in.type_name = type;
	in.refs = r->refs;
	in.refs_len = r->refs_len;
	iov.iov_base = (void *)r->payload;
	iov.iov_len = r->payload_len;
	in.iov = &iov;
	in.iovcnt = 1;
	if ((rc = entry_put(t, sid, &in, r->time_ms)) != 0)
		return rc;
	while (refs_blob_next(r->refs, r->refs_len, &off, &target,
	    &why) == 1) {
		if ((rc = refs_put(t, sid, &target, &e->key)) != 0)
			return rc;
	}
	return 0;
}


/* Write session ss into the new store with no worker serving it, and, a
 * live one with a name, its name's key (salvage and the page scan). */
int
dump_salvage_put_session(store_txn *t, store_session ss)
{
	MDB_val k, v;
	int rc;

	ss.pid = 0;   /* no worker serves it in the new store */
	if ((rc = session_put(t, &ss)) != 0)
		return rc;
	if (ss.state == STORE_STATE_LIVE && ss.name[0] != '\0') {
		k.mv_data = ss.name;
		k.mv_size = strlen(ss.name);
		v.mv_data = ss.id;
		v.mv_size = STORE_ID_SIZE;
		if ((rc = mdb_put(t->txn, t->s->names, &k, &v, 0)) != 0)
			return store_map_err(rc);
	}
	return 0;
}
/* Write callback: the session record (first batch) and the batch. */
static int
dump_salvage_write(store_txn *t, void *arg)
{
	struct salvage *sv = arg;
	size_t i;
	int rc;

	if (!sv->session_written &&
	    (rc = dump_salvage_put_session(t, *sv->ss)) != 0)
		return rc;
	for (i = 0; i < sv->n; i++)
		if ((rc = dump_salvage_put(t, sv->ss->id, &sv->v[i])) != 0)
			return rc;
	return 0;
}

/* Commit the batch (and the session record) into OUT. */
static int
dump_salvage_flush(struct salvage *sv)
{
	int rc;

	if (sv->n == 0 && sv->session_written)
		return 0;
	if ((rc = store_write(sv->out, dump_salvage_write, sv)) != 0) {
		dump_warn("writing the salvaged store: %s", store_strerror(rc));
		return sv->rc = DUMP_EXIT_ERROR;
	}
	sv->session_written = 1;
	sv->entries_saved += sv->n;
	sv->n = 0;
	sv->bytes = 0;
	return 0;
}

/* entry_list callback: read one entry back; keep it when it verifies. */
static int
dump_salvage_entry(const store_key *k, void *arg)
{
	struct salvage *sv = arg;
	uint8_t kb[ENTRY_KEY_MAX];
	store_record r;
	size_t kl;
	char why[200];
	int rc;

	if (dump_interrupted)
		return sv->rc = DUMP_EXIT_INTERRUPTED;
	sv->entries++;
	if ((kl = entry_key_make(kb, sv->ss->id, k->kind, k->name, k->name_len,
	    k->handle)) > 0)
		dump_progress_key(kb, kl);
	rc = entry_get(sv->t, sv->ss->id, k->kind, k->name, k->name_len,
	    k->handle, &r);
	if (rc != 0) {
		snprintf(why, sizeof why, "it does not read back and verify "
		    "(%s)", store_strerror(rc));
		dump_salvage_lost(sv, sv->ss, k, why);
		return 0;
	}
	if (sv->n == sv->cap) {
		size_t ncap = sv->cap ? sv->cap * 2 : 64;
		struct salvage_entry *nv = realloc(sv->v, ncap * sizeof *nv);
		if (nv == NULL) {
			dump_warn("out of memory");
			return sv->rc = DUMP_EXIT_ERROR;
		}
		sv->v = nv;
		sv->cap = ncap;
	}
	sv->v[sv->n].key = *k;
	sv->v[sv->n].r = r;
	sv->n++;
	sv->bytes += r.payload_len;
	if (sv->n >= SALVAGE_BATCH || sv->bytes >= SALVAGE_BATCH_BYTES)
		return dump_salvage_flush(sv);
	return 0;
}


/* A session's calls that parse, borrowed from the source snapshot. */
struct salvage_calls {
	struct salvage *sv;
	store_call *v;
	size_t n, cap;
	int nomem;
};

/* calls_list callback: keep the calls that parse, list the others. */
static int
dump_salvage_call(const store_call *c, int rc, const char *why, void *arg)
{
	struct salvage_calls *sc = arg;
	char idhex[2 * STORE_ID_SIZE + 1], what[160];
	store_call *nv;

	if (rc != 0) {
		store_hex(c->id, STORE_ID_SIZE, idhex);
		snprintf(what, sizeof what, "journaled call %s: %s", idhex,
		    why != NULL ? why : "it does not parse");
		dump_salvage_lost(sc->sv, sc->sv->ss, NULL, what);
		return 0;
	}
	if (sc->n == sc->cap) {
		size_t ncap = sc->cap ? sc->cap * 2 : 16;
		if ((nv = realloc(sc->v, ncap * sizeof *nv)) == NULL) {
			sc->nomem = 1;
			return DUMP_EXIT_ERROR;
		}
		sc->v = nv;
		sc->cap = ncap;
	}
	sc->v[sc->n++] = *c;
	return 0;
}

/* Write callback: the calls collected. */
static int
dump_salvage_write_calls(store_txn *t, void *arg)
{
	struct salvage_calls *sc = arg;
	size_t i;
	int rc;

	for (i = 0; i < sc->n; i++)
		if ((rc = calls_put(t, &sc->v[i])) != 0)
			return rc;
	return 0;
}

/* Copy the journaled calls of the session just saved. */
static void
dump_salvage_calls(struct salvage *sv)
{
	struct salvage_calls sc = {sv, NULL, 0, 0, 0};
	char why[120];
	int rc;

	rc = calls_list(sv->t, sv->ss->id, dump_salvage_call, &sc);
	if (rc != 0) {
		snprintf(why, sizeof why, "its journaled calls after the %zu "
		    "read: %s", sc.n, sc.nomem ? "out of memory" :
		    store_strerror(rc));
		dump_salvage_lost(sv, sv->ss, NULL, why);
	}
	if (sc.n > 0) {
		if ((rc = store_write(sv->out, dump_salvage_write_calls,
		    &sc)) != 0) {
			dump_warn("writing the salvaged store: %s",
			    store_strerror(rc));
			sv->rc = DUMP_EXIT_ERROR;
		} else
			sv->calls_saved += sc.n;
	}
	free(sc.v);
}

/* session_list callback: keep a copy of each session record. */
struct salvage_sessions {
	store_session *v;
	size_t n, cap;
};

static int
dump_salvage_collect(const store_session *ss, void *arg)
{
	struct salvage_sessions *l = arg;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 16;
		store_session *nv = realloc(l->v, ncap * sizeof *nv);
		if (nv == NULL)
			return DUMP_EXIT_ERROR;
		l->v = nv;
		l->cap = ncap;
	}
	l->v[l->n++] = *ss;
	return 0;
}

/* OUT must be new: missing, or an empty directory. */
int
dump_salvage_out_ok(const char *out)
{
	struct dirent *de;
	DIR *dir;
	int empty = 1;

	if ((dir = opendir(out)) == NULL) {
		if (errno == ENOENT)
			return 0;
		dump_warn("--salvage %s: %s", out, strerror(errno));
		return DUMP_EXIT_ERROR;
	}
	while ((de = readdir(dir)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			empty = 0;
	closedir(dir);
	if (!empty) {
		dump_warn("--salvage %s: the directory is not empty (salvage "
		    "makes a new store: give a new directory)", out);
		return DUMP_EXIT_ERROR;
	}
	return 0;
}

/* pyshelf-dump --salvage OUT. */
int
dump_salvage_run(struct dump *d, store_txn *t)
{
	struct salvage_sessions l = {NULL, 0, 0};
	struct salvage sv;
	store_options so;
	char *cause = NULL;
	uint64_t total = 0, unparsed = 0;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_stat st;
	size_t i;
	int rc, op = MDB_FIRST;

	memset(&sv, 0, sizeof sv);
	sv.d = d;
	sv.t = t;
	if ((rc = dump_salvage_out_ok(d->o->salvage)) != 0)
		return rc;
	memset(&so, 0, sizeof so);
	so.create = 1;
	so.sync = STORE_SYNC_NEVER;   /* one store_sync at the end */
	if ((rc = store_open(&sv.out, d->o->salvage, &so, &cause)) != 0) {
		dump_warn("--salvage: cannot make the new store: %s", cause !=
		    NULL ? cause : store_strerror(rc));
		free(cause);
		return DUMP_EXIT_ERROR;
	}
	/* session records that do not parse: session_list passes them by */
	dump_progress_db("sessions");
	if (mdb_cursor_open(t->txn, t->s->sessions, &cur) == 0) {
		while (mdb_cursor_get(cur, &k, &v, op) == 0) {
			store_session ss;
			op = MDB_NEXT;
			total++;
			if (!store_val_ok(t, &k) || k.mv_size != STORE_ID_SIZE ||
			    session_get_by_id(t, k.mv_data, &ss) != 0) {
				unparsed++;
				fprintf(d->out, "NOT SAVED a session record that "
				    "does not parse (%zu-byte key)\n", k.mv_size);
			}
		}
		mdb_cursor_close(cur);
	}
	rc = session_list(t, dump_salvage_collect, &l);
	if (rc != 0)
		fprintf(d->out, "NOT SAVED sessions after the %zu%s: the "
		    "sessions database cannot be read on (%s)\n", l.n,
		    l.n == 1 ? "st" : "th", rc < 0 ? store_strerror(rc) :
		    "out of memory");
	sv.lost += unparsed + (rc != 0);
	dump_progress_db("entries");
	for (i = 0; i < l.n && sv.rc == 0; i++) {
		sv.ss = &l.v[i];
		sv.session_written = 0;
		sv.sessions++;
		rc = entry_list(t, sv.ss->id, 0, dump_salvage_entry, &sv);
		if (rc < 0) {
			char why[120];
			snprintf(why, sizeof why, "its entries after the %" PRIu64
			    " read so far: the walk stopped (%s)", sv.entries,
			    store_strerror(rc));
			dump_salvage_lost(&sv, sv.ss, NULL, why);
		}
		if (sv.rc == 0 && dump_salvage_flush(&sv) == 0) {
			sv.sessions_saved++;
			dump_salvage_calls(&sv);
		}
	}
	/* entries no session walk reached: of sessions without a readable
	 * record, or past a damaged page (a count in a transaction of its
	 * own: LMDB fails a transaction at a damaged page) */
	{
		MDB_txn *st_txn;
		if (sv.rc == 0 && mdb_txn_begin(t->s->env, NULL, MDB_RDONLY,
		    &st_txn) == 0) {
			if (mdb_stat(st_txn, t->s->entries, &st) == 0 &&
			    st.ms_entries > sv.entries) {
				fprintf(d->out, "NOT SAVED %" PRIu64 " entries "
				    "that no session's walk reached (of "
				    "sessions without a readable record, or "
				    "past a damaged page)\n",
				    (uint64_t)st.ms_entries - sv.entries);
				sv.lost += st.ms_entries - sv.entries;
			}
			mdb_txn_abort(st_txn);
		}
	}
	free(sv.v);
	free(l.v);
	if (sv.rc == 0 && (rc = store_sync(sv.out)) != 0) {
		dump_warn("--salvage: syncing the new store: %s",
		    store_strerror(rc));
		sv.rc = DUMP_EXIT_ERROR;
	}
	store_close(sv.out);
	if (sv.rc != 0)
		return sv.rc;
	fprintf(d->out, "salvaged into %s: %" PRIu64 " of %" PRIu64
	    " sessions, %" PRIu64 " of %" PRIu64 " entries read", d->o->salvage,
	    sv.sessions_saved, total, sv.entries_saved, sv.entries);
	if (sv.calls_saved > 0)
		fprintf(d->out, ", %" PRIu64 " journaled calls", sv.calls_saved);
	fprintf(d->out, "; %" PRIu64 " not saved%s\n", sv.lost, sv.lost ?
	    " (listed above)" : "");
	return sv.lost > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}
