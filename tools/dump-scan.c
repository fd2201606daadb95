/*
 * dump-scan.c - pyshelf-dump --salvage OUT on a store whose trees cannot
 * be walked: a damaged LMDB meta page, root or branch page, or a damaged
 * page of the meta database (format marker) or of any other one.  LMDB
 * is never used on the source: store_scan_pages reads data.mdb with
 * pread, from the sound meta page (the older one when the newer is
 * damaged), and hands over every node of every sound leaf page that is
 * not free.  Two passes: the session records first (a record that parses,
 * newest last_seen winning), written into OUT; then the entries of those
 * sessions whose record decodes and whose digest (and blob file) checks,
 * written in batches, a key met twice keeping its newest record.  What
 * cannot be saved is listed ("NOT SAVED ..."), then a summary.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dump.h"

#define SCAN_BATCH 1000
#define SCAN_BATCH_BYTES ((size_t)64 << 20)

/* One entry of a batch: its own copies (the scan's bytes are borrowed). */
struct scan_entry {
	uint8_t sid[STORE_ID_SIZE];
	store_key key;
	char name[STORE_KEY_MAX + 1];
	store_record r;
	uint8_t *rec;             /* the record's bytes (malloc'd) */
	void *map;                /* a blob file's map, or NULL */
	uint64_t map_len;
};

/* A session id without a record, and its entries met. */
struct scan_orphan {
	uint8_t sid[STORE_ID_SIZE];
	uint64_t n;
};

/* One run. */
struct scan {
	struct dump *d;
	store *out;
	int blobfd;               /* the source's blobs/, or -1 */
	store_session *ss;        /* the sessions found */
	size_t nss, capss;
	struct scan_orphan *orph;
	size_t norph, caporph;
	struct scan_entry *v;     /* the batch */
	size_t n, cap, bytes;
	uint64_t entries, saved, lost, calls;
	int rc;                   /* an error that stops the run */
};

static void
dump_scan_problem(const char *problem, void *arg)
{
	struct scan *sc = arg;

	fprintf(sc->d->out, "DAMAGE [structure]: data.mdb: %s\n", problem);
	fflush(sc->d->out);
}

/* The session of id, or NULL. */
static store_session *
dump_scan_session(struct scan *sc, const uint8_t *id)
{
	size_t i;

	for (i = 0; i < sc->nss; i++)
		if (memcmp(sc->ss[i].id, id, STORE_ID_SIZE) == 0)
			return &sc->ss[i];
	return NULL;
}

/* Pass 1: a session record (of the sessions database, or of a page no
 * walk reached that parses as one). */
static int
dump_scan_sessions_cb(const char *db, uint64_t pgno, const uint8_t *k,
                      size_t kl, const uint8_t *v, size_t vl, void *arg)
{
	struct scan *sc = arg;
	store_session ss, *old;

	(void)pgno;
	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (db != NULL && strcmp(db, "sessions") != 0)
		return 0;
	if (kl != STORE_ID_SIZE || session_decode(k, v, vl, &ss) != 0 ||
	    (ss.state != STORE_STATE_LIVE && ss.state != STORE_STATE_DEAD)) {
		if (db != NULL)
			fprintf(sc->d->out, "NOT SAVED a session record that "
			    "does not parse (%zu-byte key)\n", kl);
		sc->lost += db != NULL;
		return 0;
	}
	if ((old = dump_scan_session(sc, ss.id)) != NULL) {
		if (ss.last_seen_ms > old->last_seen_ms)
			*old = ss;
		return 0;
	}
	if (sc->nss == sc->capss) {
		size_t ncap = sc->capss ? sc->capss * 2 : 16;
		store_session *nv = realloc(sc->ss, ncap * sizeof *nv);
		if (nv == NULL) {
			dump_warn("out of memory");
			return sc->rc = DUMP_EXIT_ERROR;
		}
		sc->ss = nv;
		sc->capss = ncap;
	}
	sc->ss[sc->nss++] = ss;
	return 0;
}

/* Write callback: the session records and their names. */
static int
dump_scan_write_sessions(store_txn *t, void *arg)
{
	struct scan *sc = arg;
	size_t i;
	int rc;

	for (i = 0; i < sc->nss; i++)
		if ((rc = dump_salvage_put_session(t, sc->ss[i])) != 0)
			return rc;
	return 0;
}

/* Free a batch's copies. */
static void
dump_scan_batch_free(struct scan *sc)
{
	size_t i;

	for (i = 0; i < sc->n; i++) {
		free(sc->v[i].rec);
		if (sc->v[i].map != NULL)
			munmap(sc->v[i].map, sc->v[i].map_len);
	}
	sc->n = 0;
	sc->bytes = 0;
}

/* Write callback: the batch, an entry already in OUT with a newer record
 * kept (a stale copy read from a page the free list did not name). */
static int
dump_scan_write_entries(store_txn *t, void *arg)
{
	struct scan *sc = arg;
	struct salvage_entry e;
	store_record old;
	size_t i;
	int rc;

	for (i = 0; i < sc->n; i++) {
		struct scan_entry *se = &sc->v[i];
		rc = entry_get_nocheck(t, se->sid, se->key.kind, se->key.name,
		    se->key.name_len, se->key.handle, &old);
		if (rc == 0 && old.time_ms > se->r.time_ms)
			continue;
		e.key = se->key;
		e.r = se->r;
		if ((rc = dump_salvage_put(t, se->sid, &e)) != 0)
			return rc;
	}
	return 0;
}

/* Commit the batch into OUT. */
static int
dump_scan_flush(struct scan *sc)
{
	int rc;

	if (sc->n == 0)
		return 0;
	if ((rc = store_write(sc->out, dump_scan_write_entries, sc)) != 0) {
		dump_warn("writing the salvaged store: %s", store_strerror(rc));
		dump_scan_batch_free(sc);
		return sc->rc = DUMP_EXIT_ERROR;
	}
	sc->saved += sc->n;
	dump_scan_batch_free(sc);
	return 0;
}

/* An entry of a session without a record: counted, listed at the end. */
static void
dump_scan_orphan(struct scan *sc, const uint8_t *sid)
{
	size_t i;

	for (i = 0; i < sc->norph; i++)
		if (memcmp(sc->orph[i].sid, sid, STORE_ID_SIZE) == 0) {
			sc->orph[i].n++;
			return;
		}
	if (sc->norph == sc->caporph) {
		size_t ncap = sc->caporph ? sc->caporph * 2 : 8;
		struct scan_orphan *nv = realloc(sc->orph, ncap * sizeof *nv);
		if (nv == NULL) {
			sc->lost++;
			return;
		}
		sc->orph = nv;
		sc->caporph = ncap;
	}
	memcpy(sc->orph[sc->norph].sid, sid, STORE_ID_SIZE);
	sc->orph[sc->norph++].n = 1;
}

/* Copy one verified entry into the batch. */
static int
dump_scan_keep(struct scan *sc, const uint8_t *sid, const store_key *k,
               const uint8_t *v,
               size_t vl, const store_record *r, void *map,
               uint64_t map_len)
{
	struct scan_entry *se;

	if (sc->n == sc->cap) {
		size_t ncap = sc->cap ? sc->cap * 2 : 64;
		struct scan_entry *nv = realloc(sc->v, ncap * sizeof *nv);
		if (nv == NULL)
			goto nomem;
		sc->v = nv;
		sc->cap = ncap;
	}
	se = &sc->v[sc->n];
	memset(se, 0, sizeof *se);
	if ((se->rec = malloc(vl > 0 ? vl : 1)) == NULL)
		goto nomem;
	memcpy(se->rec, v, vl);
	memcpy(se->sid, sid, STORE_ID_SIZE);
	se->key = *k;
	if (k->kind == STORE_KIND_GLOBAL) {
		memcpy(se->name, k->name, k->name_len);
		se->name[k->name_len] = '\0';
		se->key.name = se->name;
	}
	/* the record's pointers, moved from the scan's bytes to the copy */
	se->r = *r;
	se->r.type_name = r->type_name != NULL ? (const char *)se->rec +
	    ((const uint8_t *)r->type_name - v) : NULL;
	se->r.refs = r->refs != NULL ? se->rec + (r->refs - v) : NULL;
	if (map == NULL)
		se->r.payload = r->payload != NULL ? se->rec +
		    (r->payload - v) : NULL;
	se->map = map;
	se->map_len = map_len;
	sc->n++;
	sc->bytes += r->payload_len;
	if (sc->n >= SCAN_BATCH || sc->bytes >= SCAN_BATCH_BYTES)
		return dump_scan_flush(sc);
	return 0;
nomem:
	if (map != NULL)
		munmap(map, map_len);
	dump_warn("out of memory");
	return sc->rc = DUMP_EXIT_ERROR;
}

/* Write callback: one call. */
static int
dump_scan_write_call(store_txn *t, void *arg)
{
	return calls_put(t, arg);
}

/* A row of the call journal (of the calls database, or of a page no walk
 * reached that parses as one): copied when its session was found.
 * Returns 1 when it was a call's row. */
static int
dump_scan_call(struct scan *sc, const char *db, const uint8_t *k, size_t kl,
               const uint8_t *v, size_t vl)
{
	const char *why = NULL;
	store_session *ss;
	store_call c;
	char what[160], idhex[2 * STORE_ID_SIZE + 1];
	int rc;

	if (kl != 2 * STORE_ID_SIZE + 8 ||
	    calls_record_decode(v, vl, &c, &why) != 0 ||
	    c.started_ms != be64_get(k + STORE_ID_SIZE)) {
		if (db == NULL)
			return 0;
		sc->lost++;
		fprintf(sc->d->out, "NOT SAVED a row of the call journal that "
		    "does not parse (%s)\n", why != NULL ? why :
		    "its key is not a call's");
		return 1;
	}
	memcpy(c.sid, k, STORE_ID_SIZE);
	memcpy(c.id, k + STORE_ID_SIZE + 8, STORE_ID_SIZE);
	if ((ss = dump_scan_session(sc, c.sid)) == NULL) {
		sc->lost++;
		store_hex(c.id, STORE_ID_SIZE, idhex);
		fprintf(sc->d->out, "NOT SAVED journaled call %s: its session's "
		    "record was not found\n", idhex);
		return 1;
	}
	if ((rc = store_write(sc->out, dump_scan_write_call, &c)) != 0) {
		store_hex(c.id, STORE_ID_SIZE, idhex);
		snprintf(what, sizeof what, "journaled call %s: %s", idhex,
		    store_strerror(rc));
		dump_salvage_lost_key(sc->d, ss, NULL, what);
		sc->lost++;
		return 1;
	}
	sc->calls++;
	return 1;
}

/* Pass 2: an entry (of the entries database, or of a page no walk reached
 * whose key and record layout are an entry's). */
static int
dump_scan_entries_cb(const char *db, uint64_t pgno, const uint8_t *k,
                     size_t kl, const uint8_t *v, size_t vl, void *arg)
{
	struct scan *sc = arg;
	store_session *ss;
	store_record r;
	store_key key;
	void *map = NULL;
	uint64_t map_len = 0;
	char why[160];
	int rc;

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if ((db == NULL || strcmp(db, "calls") == 0) &&
	    dump_scan_call(sc, db, k, kl, v, vl) != 0)
		return 0;
	if (db != NULL && strcmp(db, "entries") != 0)
		return 0;
	if (entry_key_parse(k, kl, &key) != 0 || key.name_len > STORE_KEY_MAX ||
	    record_decode_nocheck(v, vl, &r) != 0) {
		if (db == NULL)
			return 0;   /* another database's row */
		sc->lost++;
		fprintf(sc->d->out, "NOT SAVED a row of the entries database "
		    "on page %" PRIu64 " that does not parse\n", pgno);
		return 0;
	}
	sc->entries++;
	if ((ss = dump_scan_session(sc, k)) == NULL) {
		dump_scan_orphan(sc, k);
		return 0;
	}
	rc = record_decode(v, vl, &r);
	if (rc == 0 && (r.flags & STORE_FLAG_BLOB))
		rc = blob_map_at(sc->blobfd, &r, 1, NULL, NULL, &map, &map_len);
	if (rc != 0) {
		if (map != NULL)
			munmap(map, map_len);
		snprintf(why, sizeof why, "it does not read back and verify "
		    "(%s)", store_strerror(rc));
		dump_salvage_lost_key(sc->d, ss, &key, why);
		sc->lost++;
		return 0;
	}
	return dump_scan_keep(sc, k, &key, v, vl, &r, map, map_len);
}

/* The notes of the scan: which meta page, what may be off. */
static void
dump_scan_notes(struct scan *sc, const store_scan_info *in)
{
	FILE *f = sc->d->out;

	if (in->meta_other_bad)
		fprintf(f, "NOTE LMDB meta page %d is damaged: read from meta "
		    "page %d (if the damaged one was the newer, the changes "
		    "of the last commit are not saved)\n", !in->meta_used,
		    in->meta_used);
	if (in->free_bad)
		fprintf(f, "NOTE the free-page list is damaged: an entry "
		    "deleted or replaced before the damage may come back (the "
		    "newest record of a key is kept)\n");
	if (in->bad > 0 || in->lost_values > 0) {
		fprintf(f, "NOT SAVED what was on %" PRIu64 " damaged page%s"
		    "%s", in->bad, in->bad == 1 ? "" : "s", in->lost_values ?
		    "" : "\n");
		if (in->lost_values)
			fprintf(f, " and %" PRIu64 " values whose overflow "
			    "pages are damaged\n", in->lost_values);
		sc->lost += in->bad + in->lost_values;
	}
}

/* Open the source's blobs directory (read only), or -1. */
static int
dump_scan_blobdir(const char *db)
{
	char *p = NULL;
	int fd;

	if (asprintf(&p, "%s/blobs", db) < 0)
		return -1;
	fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(p);
	return fd;
}

/* The two passes into the open OUT store. */
static int
dump_scan_passes(struct scan *sc, store_scan_info *info)
{
	const char *db = sc->d->o->db;
	int rc;

	dump_progress_db("scan");
	rc = store_scan_pages(db, dump_scan_sessions_cb, dump_scan_problem,
	    sc, info);
	if (rc < 0) {
		dump_warn("scanning %s/data.mdb: %s", db, rc == STORE_E_DAMAGED ?
		    "neither LMDB meta page is sound: nothing can be read" :
		    store_strerror(rc));
		return DUMP_EXIT_DAMAGE;
	}
	if (rc != 0 || sc->rc != 0)
		return rc != 0 ? rc : sc->rc;
	dump_scan_notes(sc, info);
	if (sc->nss > 0 && (rc = store_write(sc->out, dump_scan_write_sessions,
	    sc)) != 0) {
		dump_warn("writing the salvaged store: %s", store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	rc = store_scan_pages(db, dump_scan_entries_cb, NULL, sc, NULL);
	if (rc == 0 && sc->rc == 0)
		dump_scan_flush(sc);
	dump_scan_batch_free(sc);
	if (rc < 0) {
		dump_warn("scanning %s/data.mdb: %s", db, store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	return rc != 0 ? rc : sc->rc;
}

/* pyshelf-dump --salvage OUT by a scan of the pages (resume: OUT holds
 * what a walk that crashed had saved). */
int
dump_salvage_scan(struct dump *d, int resume)
{
	struct scan sc;
	store_scan_info info;
	store_options so;
	char *cause = NULL;
	size_t i;
	int rc;

	memset(&sc, 0, sizeof sc);
	sc.d = d;
	if (!resume && (rc = dump_salvage_out_ok(d->o->salvage)) != 0)
		return rc;
	memset(&so, 0, sizeof so);
	so.create = 1;
	so.sync = STORE_SYNC_NEVER;   /* one store_sync at the end */
	if ((rc = store_open(&sc.out, d->o->salvage, &so, &cause)) != 0) {
		dump_warn("--salvage: cannot make the new store: %s", cause !=
		    NULL ? cause : store_strerror(rc));
		free(cause);
		return DUMP_EXIT_ERROR;
	}
	sc.blobfd = dump_scan_blobdir(d->o->db);
	rc = dump_scan_passes(&sc, &info);
	for (i = 0; i < sc.norph; i++) {
		char idhex[2 * STORE_ID_SIZE + 1];
		store_hex(sc.orph[i].sid, STORE_ID_SIZE, idhex);
		fprintf(d->out, "NOT SAVED %" PRIu64 " entries of session id "
		    "%s: its session record was not found\n", sc.orph[i].n,
		    idhex);
		sc.lost += sc.orph[i].n;
	}
	if (rc == 0 && (rc = store_sync(sc.out)) != 0) {
		dump_warn("--salvage: syncing the new store: %s",
		    store_strerror(rc));
		rc = DUMP_EXIT_ERROR;
	}
	store_close(sc.out);
	if (sc.blobfd >= 0)
		close(sc.blobfd);
	free(sc.v);
	free(sc.ss);
	free(sc.orph);
	if (rc != 0)
		return rc;
	fprintf(d->out, "salvaged into %s by a scan of the pages (the store's "
	    "trees are damaged): %zu sessions, %" PRIu64 " of %" PRIu64
	    " entries read", d->o->salvage, sc.nss, sc.saved, sc.entries);
	if (sc.calls > 0)
		fprintf(d->out, ", %" PRIu64 " journaled calls", sc.calls);
	fprintf(d->out, "; %" PRIu64 " not saved%s\n", sc.lost, sc.lost ?
	    " (listed above)" : "");
	return DUMP_EXIT_DAMAGE;
}
