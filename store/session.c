/*
 * session.c - the session table: records by id, the name index, the
 * expiry index the sweeper reads from its expired end, and the batched,
 * resumable purge of a dead session's entries, refs rows and calls rows.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store-int.h"

/* Encode a session record (version 2, with its counts) into buf
 * (SESSION_REC_FIXED + name bytes). */
static size_t
session_encode(const store_session *ss, uint8_t *buf)
{
	size_t nlen = strlen(ss->name);

	buf[0] = 2; /* session record version */
	buf[1] = ss->state;
	be16_put(buf + 2, (uint16_t)nlen);
	be32_put(buf + 4, 0);
	be64_put(buf + 8, ss->created_ms);
	be64_put(buf + 16, ss->last_seen_ms);
	be64_put(buf + 24, ss->lease_ms);
	be64_put(buf + 32, ss->next_handle);
	be64_put(buf + 40, ss->pid);
	memcpy(buf + 48, ss->token_hash, 32);
	be64_put(buf + 80, ss->entries);
	be64_put(buf + 88, ss->bytes);
	memcpy(buf + SESSION_REC_FIXED, ss->name, nlen);
	return SESSION_REC_FIXED + nlen;
}

/* Decode a session record of version 2, or of version 1 (no counts:
 * counts_known 0); STORE_E_CORRUPT on a bad layout. */
int
session_decode(const uint8_t *id, const uint8_t *p, size_t n,
               store_session *ss)
{
	size_t nlen, fixed;

	if (n < SESSION_REC_FIXED_V1 || (p[0] != 1 && p[0] != 2))
		return STORE_E_CORRUPT;
	fixed = p[0] == 1 ? SESSION_REC_FIXED_V1 : SESSION_REC_FIXED;
	nlen = be16_get(p + 2);
	if (nlen > STORE_NAME_MAX || n != fixed + nlen)
		return STORE_E_CORRUPT;
	memset(ss, 0, sizeof *ss);
	memcpy(ss->id, id, STORE_ID_SIZE);
	ss->state = p[1];
	ss->created_ms = be64_get(p + 8);
	ss->last_seen_ms = be64_get(p + 16);
	ss->lease_ms = be64_get(p + 24);
	ss->next_handle = be64_get(p + 32);
	ss->pid = be64_get(p + 40);
	memcpy(ss->token_hash, p + 48, 32);
	if (p[0] == 2) {
		ss->entries = be64_get(p + 80);
		ss->bytes = be64_get(p + 88);
		ss->counts_known = 1;
	}
	memcpy(ss->name, p + fixed, nlen);
	ss->name[nlen] = '\0';
	return 0;
}

/* The expiry-index key of a session: 0 for dead ones (swept first),
 * nothing (returns 0) for a live session without a lease. */
int
session_expiry_key(const store_session *ss, uint8_t *k)
{
	uint64_t when;

	if (ss->state == STORE_STATE_DEAD)
		when = 0;
	else if (ss->lease_ms == 0)
		return 0;
	else if (ss->lease_ms > UINT64_MAX - ss->last_seen_ms)
		when = UINT64_MAX; /* a huge lease must not wrap to the past */
	else
		when = ss->last_seen_ms + ss->lease_ms;
	be64_put(k, when);
	memcpy(k + 8, ss->id, STORE_ID_SIZE);
	return 1;
}

/* Create a live session with a fresh id. */
int
session_create(store_txn *t, const char *name, const uint8_t *token,
               uint64_t lease_ms, uint64_t now_ms, store_session *out)
{
	uint8_t id[STORE_ID_SIZE];
	int rc;

	if ((rc = store_random(id, STORE_ID_SIZE)) != 0)
		return rc;
	return session_create_id(t, name, id, token, lease_ms, now_ms, out);
}

/* Create a live session with the given id. */
int
session_create_id(store_txn *t, const char *name, const uint8_t *id,
                  const uint8_t *token, uint64_t lease_ms, uint64_t now_ms,
                  store_session *out)
{
	size_t nlen = strlen(name);
	MDB_val k, v;
	int rc;

	if (nlen == 0 || nlen > STORE_NAME_MAX)
		return STORE_E_INVAL;
	k.mv_data = (void *)name;
	k.mv_size = nlen;
	rc = mdb_get(t->txn, t->s->names, &k, &v);
	if (rc == 0)
		return STORE_E_EXISTS;
	if (rc != MDB_NOTFOUND)
		return store_map_err(rc);
	k.mv_data = (void *)id;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_get(t->txn, t->s->sessions, &k, &v);
	if (rc == 0)
		return STORE_E_EXISTS; /* ids are never reused */
	if (rc != MDB_NOTFOUND)
		return store_map_err(rc);
	k.mv_data = (void *)name;
	k.mv_size = nlen;
	memset(out, 0, sizeof *out);
	memcpy(out->id, id, STORE_ID_SIZE);
	memcpy(out->name, name, nlen);
	if (token != NULL)
		store_sha256(token, STORE_TOKEN_SIZE, out->token_hash);
	out->state = STORE_STATE_LIVE;
	out->created_ms = out->last_seen_ms = now_ms;
	out->lease_ms = lease_ms;
	out->next_handle = 1;
	v.mv_data = out->id;
	v.mv_size = STORE_ID_SIZE;
	if ((rc = mdb_put(t->txn, t->s->names, &k, &v, MDB_NOOVERWRITE)) != 0)
		return store_map_err(rc);
	if ((rc = session_put(t, out)) != 0)
		return rc;
	/* with the counts session_put gave it */
	return session_get_by_id(t, id, out);
}

/* Look up by id. */
int
session_get_by_id(store_txn *t, const uint8_t *id, store_session *out)
{
	MDB_val k, v;
	int rc;

	k.mv_data = (void *)id;
	k.mv_size = STORE_ID_SIZE;
	if ((rc = mdb_get(t->txn, t->s->sessions, &k, &v)) != 0)
		return store_map_err(rc);
	return session_decode(id, v.mv_data, v.mv_size, out);
}

/* Look up a live session by name. */
int
session_get_by_name(store_txn *t, const char *name, store_session *out)
{
	MDB_val k, v;
	uint8_t id[STORE_ID_SIZE];
	int rc;

	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	if (k.mv_size == 0 || k.mv_size > STORE_NAME_MAX)
		return STORE_E_INVAL;
	if ((rc = mdb_get(t->txn, t->s->names, &k, &v)) != 0)
		return store_map_err(rc);
	if (v.mv_size != STORE_ID_SIZE)
		return STORE_E_CORRUPT;
	memcpy(id, v.mv_data, STORE_ID_SIZE);
	return session_get_by_id(t, id, out);
}

/* The pending count change of sid in t, or NULL. */
static struct session_delta *
session_delta_find(store_txn *t, const uint8_t *sid)
{
	size_t i;

	for (i = 0; i < t->ndeltas; i++)
		if (memcmp(t->deltas[i].id, sid, STORE_ID_SIZE) == 0)
			return &t->deltas[i];
	return NULL;
}

/* Note a change of sid's counts (store-int.h).  A transaction touches one
 * session, or a few: a linear table. */
int
session_delta_note(store_txn *t, const uint8_t *sid, int64_t dentries,
                   int64_t dbytes)
{
	struct session_delta *d = session_delta_find(t, sid), *nv;

	if (d == NULL) {
		if (t->ndeltas == t->capdeltas) {
			size_t cap = t->capdeltas ? 2 * t->capdeltas : 4;
			nv = realloc(t->deltas, cap * sizeof *nv);
			if (nv == NULL)
				return STORE_E_NOMEM;
			t->deltas = nv;
			t->capdeltas = cap;
		}
		d = &t->deltas[t->ndeltas++];
		memcpy(d->id, sid, STORE_ID_SIZE);
		d->entries = d->bytes = 0;
	}
	d->entries += dentries;
	d->bytes += dbytes;
	return 0;
}

/* Write ss as it is (its counts included); move its expiry key if it
 * changed from old's (had_old: old was read). */
static int
session_write(store_txn *t, const store_session *ss, const store_session *old,
              int had_old)
{
	uint8_t buf[SESSION_REC_FIXED + STORE_NAME_MAX], ok[EXPIRY_KEY_SIZE],
	    nk[EXPIRY_KEY_SIZE];
	int has_old_key = had_old && session_expiry_key(old, ok), has_new, rc;
	MDB_val k, v, e;

	has_new = session_expiry_key(ss, nk);
	if (has_old_key && (!has_new || memcmp(ok, nk, sizeof ok) != 0)) {
		k.mv_data = ok;
		k.mv_size = sizeof ok;
		rc = mdb_del(t->txn, t->s->expiry, &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return store_map_err(rc);
	}
	if (has_new) {
		k.mv_data = nk;
		k.mv_size = sizeof nk;
		e.mv_data = NULL;
		e.mv_size = 0;
		if ((rc = mdb_put(t->txn, t->s->expiry, &k, &e, 0)) != 0)
			return store_map_err(rc);
	}
	k.mv_data = (void *)ss->id;
	k.mv_size = STORE_ID_SIZE;
	v.mv_data = buf;
	v.mv_size = session_encode(ss, buf);
	return store_map_err(mdb_put(t->txn, t->s->sessions, &k, &v, 0));
}

/* Count sid's entries whole into ss (a record without counts, or a new
 * one): exact as of now, in this transaction, so the changes noted
 * before are in it and are forgotten. */
static int
session_recount(store_txn *t, store_session *ss)
{
	struct session_delta *d;
	int rc;

	if ((rc = session_count(t, ss->id, &ss->entries, &ss->bytes)) != 0)
		return rc;
	ss->counts_known = 1;
	if ((d = session_delta_find(t, ss->id)) != NULL)
		d->entries = d->bytes = 0;
	return 0;
}

/* Write a session record; move its expiry key if it changed.  The counts
 * are the stored record's, not the caller's. */
int
session_put(store_txn *t, const store_session *ss)
{
	struct session_delta *d;
	store_session old, nw;
	int had_old = 0, rc;

	if (t->readonly)
		return STORE_E_READONLY;
	rc = session_get_by_id(t, ss->id, &old);
	if (rc == 0)
		had_old = 1;
	else if (rc != STORE_E_NOTFOUND && rc != STORE_E_CORRUPT)
		return rc;
	nw = *ss;
	d = session_delta_find(t, ss->id);
	if (had_old && old.counts_known && (d == NULL ||
	    ((d->entries >= 0 || (uint64_t)-d->entries <= old.entries) &&
	    (d->bytes >= 0 || (uint64_t)-d->bytes <= old.bytes)))) {
		/* the changes noted so far go in with this write: the usual
		 * checkpoint (entries, then the record) writes the record
		 * once, and session_precommit has nothing left to do */
		nw.entries = old.entries + (uint64_t)(d != NULL ? d->entries : 0);
		nw.bytes = old.bytes + (uint64_t)(d != NULL ? d->bytes : 0);
		nw.counts_known = 1;
		if (d != NULL)
			d->entries = d->bytes = 0;
	} else if ((rc = session_recount(t, &nw)) != 0)
		return rc;
	return session_write(t, &nw, &old, had_old);
}

/* Add the transaction's count changes to the records (store-int.h).  A
 * session whose record is gone (purged) or damaged is skipped; one whose
 * counts would go below zero (a record its counts do not describe) is
 * counted whole. */
int
session_precommit(store_txn *t)
{
	struct session_delta *d;
	store_session ss;
	size_t i;
	int rc;

	for (i = 0; i < t->ndeltas; i++) {
		d = &t->deltas[i];
		if (d->entries == 0 && d->bytes == 0)
			continue;
		rc = session_get_by_id(t, d->id, &ss);
		if (rc == STORE_E_NOTFOUND || rc == STORE_E_CORRUPT)
			continue;
		if (rc != 0)
			return rc;
		if (!ss.counts_known ||
		    (d->entries < 0 && (uint64_t)-d->entries > ss.entries) ||
		    (d->bytes < 0 && (uint64_t)-d->bytes > ss.bytes)) {
			if ((rc = session_recount(t, &ss)) != 0)
				return rc;
		} else {
			ss.entries += (uint64_t)d->entries;
			ss.bytes += (uint64_t)d->bytes;
		}
		d->entries = d->bytes = 0;
		if ((rc = session_write(t, &ss, &ss, 1)) != 0)
			return rc;
	}
	return 0;
}

/* Give every record of version 1 its counts (store-int.h). */
int
session_counts_migrate(store_txn *t)
{
	uint8_t (*ids)[STORE_ID_SIZE] = NULL, (*nv)[STORE_ID_SIZE];
	size_t n = 0, cap = 0, i;
	store_session ss;
	MDB_cursor *c;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(t->txn, t->s->sessions, &c)) != 0)
		return store_map_err(rc);
	/* the ids first: the puts would move a cursor walking the table */
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != STORE_ID_SIZE || v.mv_size < 1 ||
		    ((const uint8_t *)v.mv_data)[0] != 1)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			if ((nv = realloc(ids, cap * sizeof *ids)) == NULL) {
				rc = STORE_E_NOMEM;
				goto out;
			}
			ids = nv;
		}
		memcpy(ids[n++], k.mv_data, STORE_ID_SIZE);
	}
	if (rc != MDB_NOTFOUND) {
		rc = store_map_err(rc);
		goto out;
	}
	rc = 0;
	for (i = 0; i < n && rc == 0; i++) {
		rc = session_get_by_id(t, ids[i], &ss);
		if (rc == STORE_E_CORRUPT) {
			rc = 0; /* --check reports it */
			continue;
		}
		if (rc == 0)
			rc = session_put(t, &ss);
	}
out:
	mdb_cursor_close(c);
	free(ids);
	return rc;
}

/* Compare a presented token with the stored hash. */
int
session_token_ok(const store_session *ss, const uint8_t *token)
{
	uint8_t h[32];
	unsigned diff = 0;
	int i;

	store_sha256(token, STORE_TOKEN_SIZE, h);
	for (i = 0; i < 32; i++)
		diff |= h[i] ^ ss->token_hash[i];
	return diff == 0;
}

/* Visit every session. */
int
session_list(store_txn *t, int (*fn)(const store_session *, void *),
             void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_session ss;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(t->txn, t->s->sessions, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != STORE_ID_SIZE ||
		    session_decode(k.mv_data, v.mv_data, v.mv_size, &ss) != 0)
			continue; /* --check reports it */
		if ((rc = fn(&ss, arg)) != 0)
			goto out;
	}
	rc = rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

/* Visit the expired end of the expiry index. */
int
session_expired(store_txn *t, uint64_t now_ms,
                int (*fn)(const uint8_t *, uint64_t, void *), void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t when;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(t->txn, t->s->expiry, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != EXPIRY_KEY_SIZE)
			continue;
		when = be64_get(k.mv_data);
		if (when > now_ms)
			break;
		if ((rc = fn((const uint8_t *)k.mv_data + 8, when, arg)) != 0)
			goto out;
	}
	rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

/* Mark dead and free the name. */
int
session_kill(store_txn *t, const uint8_t *id)
{
	store_session ss;
	MDB_val k, v;
	int rc;

	if ((rc = session_get_by_id(t, id, &ss)) != 0)
		return rc;
	k.mv_data = ss.name;
	k.mv_size = strlen(ss.name);
	rc = mdb_get(t->txn, t->s->names, &k, &v);
	if (rc == 0 && v.mv_size == STORE_ID_SIZE &&
	    memcmp(v.mv_data, id, STORE_ID_SIZE) == 0) {
		if ((rc = mdb_del(t->txn, t->s->names, &k, NULL)) != 0)
			return store_map_err(rc);
	}
	ss.state = STORE_STATE_DEAD;
	ss.pid = 0;
	return session_put(t, &ss);
}

/* Argument of one purge batch. */
struct purge_arg {
	const uint8_t *id;  /* the session */
	size_t batch;       /* most deletions per transaction */
	uint64_t batch_ms;  /* most time per transaction (0: no bound) */
	uint64_t until;     /* monotonic ns this transaction stops at */
	size_t done;        /* deleted by this batch: entries and refs rows */
	size_t entries;     /* entries among them */
	int timed_out;      /* this batch stopped at its time bound */
};

/* Monotonic nanoseconds. */
static uint64_t
session_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Has the batch run for its time?  Looked at every 32 deletions (a
 * clock read costs about what a deletion does).  Ends the batch: it
 * counts as full, so the caller goes on with the next. */
static int
session_purge_late(struct purge_arg *pa)
{
	if (pa->batch_ms == 0 || (pa->done & 31) != 0 || pa->done == 0 ||
	    session_mono_ns() < pa->until)
		return 0;
	pa->timed_out = 1;
	return 1;
}

/*
 * Delete refs rows of the session until pa->done reaches pa->batch, a
 * whole key (a target and all its referrers) when its rows fit in what is
 * left of the batch, else one row.  Each row counts as one deletion.
 */
static int
session_purge_refs(store_txn *t, struct purge_arg *pa)
{
	MDB_cursor *c;
	MDB_val k, v;
	size_t n;
	int rc = 0;

	if ((rc = mdb_cursor_open(t->txn, t->s->refs, &c)) != 0)
		return store_map_err(rc);
	while (pa->done < pa->batch && !pa->timed_out) {
		/* the session's first row left is always the next to go */
		k.mv_data = (void *)pa->id;
		k.mv_size = STORE_ID_SIZE;
		if ((rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)) != 0)
			break;
		if (k.mv_size < STORE_ID_SIZE ||
		    memcmp(k.mv_data, pa->id, STORE_ID_SIZE) != 0)
			break;
		if ((rc = mdb_cursor_count(c, &n)) != 0)
			break;
		if (n <= pa->batch - pa->done)
			rc = mdb_cursor_del(c, MDB_NODUPDATA);
		else {
			n = 1;
			rc = mdb_cursor_del(c, 0);
		}
		if (rc != 0)
			break;
		pa->done += n;
		if (session_purge_late(pa))
			break;
	}
	mdb_cursor_close(c);
	return (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
}

/*
 * Delete the session's rows in calls (the journal's) until pa->done
 * reaches pa->batch, each row one deletion.
 */
static int
session_purge_calls(store_txn *t, struct purge_arg *pa)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	if (!t->s->has_calls || pa->done >= pa->batch || pa->timed_out)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->calls, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = (void *)pa->id;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && pa->done < pa->batch) {
		if (k.mv_size < STORE_ID_SIZE ||
		    memcmp(k.mv_data, pa->id, STORE_ID_SIZE) != 0)
			break;
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
		pa->done++;
		if (session_purge_late(pa))
			break;
		/* after a delete, MDB_NEXT lands on the item that followed */
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
}

/* Delete up to pa->batch entries of the session, then, with what is left
 * of the batch, its refs rows, then its calls rows. */
static int
session_purge_batch(store_txn *t, void *arg)
{
	struct purge_arg *pa = arg;
	uint8_t kbuf[ENTRY_KEY_MAX];
	uint64_t bytes = 0;
	MDB_cursor *c;
	MDB_val k, v;
	int rc, blobs = blob_any(t);

	pa->done = 0;
	pa->entries = 0;
	pa->timed_out = 0;
	pa->until = session_mono_ns() + pa->batch_ms * 1000000u;
	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = (void *)pa->id;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && pa->done < pa->batch) {
		if (k.mv_size < STORE_ID_SIZE ||
		    memcmp(k.mv_data, pa->id, STORE_ID_SIZE) != 0)
			break;
		bytes += store_val_ok(t, &v) ? entry_value_len(&v) : 0;
		/* an entry and its blob file's row go in the same commit;
		 * the file after it */
		if (blobs && k.mv_size <= sizeof kbuf) {
			memcpy(kbuf, k.mv_data, k.mv_size);
			k.mv_data = kbuf;
			if ((rc = blob_drop(t, &k)) != 0) {
				mdb_cursor_close(c);
				return rc;
			}
		}
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
		pa->done++;
		if (session_purge_late(pa))
			break;
		/* after a delete, MDB_NEXT lands on the item that followed */
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_map_err(rc);
	pa->entries = pa->done;
	if (pa->done > 0 && (rc = session_delta_note(t, pa->id,
	    -(int64_t)pa->done, -(int64_t)bytes)) != 0)
		return rc;
	if ((rc = session_purge_refs(t, pa)) != 0)
		return rc;
	return session_purge_calls(t, pa);
}

/* Remove the session record, its name and expiry keys. */
static int
session_purge_record(store_txn *t, void *arg)
{
	struct purge_arg *pa = arg;
	store_session ss;
	uint8_t ek[EXPIRY_KEY_SIZE];
	MDB_val k, v;
	int rc;

	if ((rc = session_get_by_id(t, pa->id, &ss)) == STORE_E_NOTFOUND)
		return 0;
	if (rc == 0) {
		if (session_expiry_key(&ss, ek)) {
			k.mv_data = ek;
			k.mv_size = sizeof ek;
			mdb_del(t->txn, t->s->expiry, &k, NULL);
		}
		k.mv_data = ss.name;
		k.mv_size = strlen(ss.name);
		if (mdb_get(t->txn, t->s->names, &k, &v) == 0 &&
		    v.mv_size == STORE_ID_SIZE &&
		    memcmp(v.mv_data, pa->id, STORE_ID_SIZE) == 0)
			mdb_del(t->txn, t->s->names, &k, NULL);
	}
	k.mv_data = (void *)pa->id;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_del(t->txn, t->s->sessions, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
}

/* One transaction of a purge: a batch, or the record once nothing is
 * left. */
int
session_purge_step(store *s, const uint8_t *id, size_t batch,
                   uint64_t batch_ms, size_t *deleted, int *finished)
{
	struct purge_arg pa;
	int rc;

	memset(&pa, 0, sizeof pa);
	pa.id = id;
	pa.batch = batch == 0 ? 1000 : batch;
	pa.batch_ms = batch_ms;
	*finished = 0;
	if (deleted != NULL)
		*deleted = 0;
	if ((rc = store_write(s, session_purge_batch, &pa)) != 0)
		return rc;
	if (deleted != NULL)
		*deleted = pa.entries;
	if (pa.done == pa.batch || pa.timed_out)
		return 0;
	/* a batch not full: nothing was left past it, the record goes */
	if ((rc = store_write(s, session_purge_record, &pa)) == 0)
		*finished = 1;
	return rc;
}

/* Delete a dead session's entries and refs rows in batches, then its
 * record. */
int
session_purge(store *s, const uint8_t *id, size_t batch, size_t *deleted)
{
	size_t total = 0, n;
	int rc, finished = 0;

	do {
		rc = session_purge_step(s, id, batch, 0, &n, &finished);
		total += n;
	} while (rc == 0 && !finished);
	if (deleted != NULL)
		*deleted = total;
	return rc;
}

/* Count a session's entries and bytes. */
int
session_count(store_txn *t, const uint8_t *id, uint64_t *nentries,
              uint64_t *nbytes)
{
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t n = 0, b = 0;
	int rc;

	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = (void *)id;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= STORE_ID_SIZE &&
	    memcmp(k.mv_data, id, STORE_ID_SIZE) == 0) {
		n++;
		b += entry_value_len(&v);
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (nentries != NULL)
		*nentries = n;
	if (nbytes != NULL)
		*nbytes = b;
	return (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
}

/* --- ending a session ----------------------------------------------------- */

/* Count, write the tombstone, kill. */
int
session_end(store_txn *t, const uint8_t *id, int why, uint64_t now_ms,
            store_tomb *out)
{
	uint8_t kb[TOMB_KEY_MAX], rec[TOMB_REC_SIZE];
	store_session ss;
	store_tomb tb;
	MDB_val k, v;
	int rc;

	if (why < STORE_END_EXPIRED || why > STORE_END_ENDED)
		return STORE_E_INVAL;
	if (t->readonly)
		return STORE_E_READONLY;
	if ((rc = session_get_by_id(t, id, &ss)) != 0)
		return rc;
	if (ss.state != STORE_STATE_LIVE)
		return STORE_E_DEAD;
	memset(&tb, 0, sizeof tb);
	memcpy(tb.name, ss.name, sizeof tb.name);
	memcpy(tb.id, id, STORE_ID_SIZE);
	tb.why = (uint8_t)why;
	tb.ended_ms = now_ms;
	tb.created_ms = ss.created_ms;
	tb.last_seen_ms = ss.last_seen_ms;
	tb.lease_ms = ss.lease_ms;
	if ((rc = session_count(t, id, &tb.entries, &tb.bytes)) != 0)
		return rc;
	if (t->s->has_tombs) {
		memset(rec, 0, sizeof rec);
		rec[0] = 1; /* tombstone record version */
		rec[1] = tb.why;
		be64_put(rec + 8, tb.created_ms);
		be64_put(rec + 16, tb.last_seen_ms);
		be64_put(rec + 24, tb.lease_ms);
		be64_put(rec + 32, tb.entries);
		be64_put(rec + 40, tb.bytes);
		k.mv_data = kb;
		k.mv_size = tomb_key(kb, ss.name, now_ms, id);
		v.mv_data = rec;
		v.mv_size = sizeof rec;
		if ((rc = mdb_put(t->txn, t->s->tombs, &k, &v, 0)) != 0)
			return store_map_err(rc);
	}
	if ((rc = session_kill(t, id)) != 0)
		return rc;
	if (out != NULL)
		*out = tb;
	return 0;
}

/* --- session locks ----------------------------------------------------------- */

/* Path of the lock file of id (and, with dir, of its directory). */
static char *
session_lock_path(store *s, const uint8_t *id)
{
	char hex[2 * STORE_ID_SIZE + 1], *p = NULL;

	store_hex(id, STORE_ID_SIZE, hex);
	if (asprintf(&p, "%s/locks/%s", store_path(s), hex) < 0)
		return NULL;
	return p;
}

/* Our pid namespace ("pid:[4026531836]"), or "" when unknown. */
static void
session_pidns(char *buf, size_t n)
{
	ssize_t got = readlink("/proc/self/ns/pid", buf, n - 1);

	buf[got > 0 ? got : 0] = '\0';
}

/* The pid a lock file names, when its writer shares our pid namespace;
 * else 0. */
static long
session_lock_holder(int fd)
{
	char buf[160], ns[128], theirs[128];
	long pid = 0;
	ssize_t got = pread(fd, buf, sizeof buf - 1, 0);

	if (got <= 0)
		return 0;
	buf[got] = '\0';
	session_pidns(ns, sizeof ns);
	if (sscanf(buf, "%ld %127s", &pid, theirs) != 2 || ns[0] == '\0' ||
	    strcmp(ns, theirs) != 0 || pid <= 0)
		return 0;
	return pid;
}

/* Open (creating it and locks/) the lock file of id. */
static int
session_lock_open(store *s, const uint8_t *id, int create)
{
	char *path = session_lock_path(s, id), *slash;
	int fd;

	if (path == NULL) {
		errno = ENOMEM;
		return -1;
	}
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0 && errno == ENOENT && create) {
		slash = strrchr(path, '/');
		*slash = '\0';
		if (mkdir(path, 0700) == 0 || errno == EEXIST) {
			*slash = '/';
			fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		}
	}
	free(path);
	return fd;
}

/* Take the lock. */
int
session_lock(store *s, const uint8_t *id, int shared, int *fd, long *holder)
{
	struct flock fl;
	char buf[160], ns[128];
	int lfd, n;

	*fd = -1;
	if (holder != NULL)
		*holder = 0;
	lfd = session_lock_open(s, id, 1);
	if (lfd < 0 && shared && (errno == EROFS || errno == EACCES)) {
		/* a reader on a read-only file system: a read lock needs no
		 * write access (the holder's pid is then not written) */
		char *path = session_lock_path(s, id);
		lfd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		free(path);
	}
	if (lfd < 0)
		return errno == ENOMEM ? STORE_E_NOMEM : STORE_E_IO;
	memset(&fl, 0, sizeof fl);
	fl.l_type = shared ? F_RDLCK : F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(lfd, F_OFD_SETLK, &fl) != 0) {
		int e = errno;
		if (e == EAGAIN || e == EACCES) {
			if (holder != NULL)
				*holder = session_lock_holder(lfd);
			close(lfd);
			return STORE_E_BUSY;
		}
		close(lfd);
		errno = e;
		return STORE_E_IO;
	}
	/* who holds it, for the next one that finds it taken */
	session_pidns(ns, sizeof ns);
	n = snprintf(buf, sizeof buf, "%ld %s\n", (long)getpid(),
	    ns[0] != '\0' ? ns : "-");
	if (ftruncate(lfd, 0) != 0 || pwrite(lfd, buf, (size_t)n, 0) != n) {
		/* only the holder's pid is lost: the lock holds */
	}
	*fd = lfd;
	return 0;
}

/* Is the lock held? */
int
session_locked(store *s, const uint8_t *id, long *holder)
{
	struct flock fl;
	int lfd;

	if (holder != NULL)
		*holder = 0;
	if ((lfd = session_lock_open(s, id, 0)) < 0)
		return errno == ENOENT ? 0 : STORE_E_IO;
	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(lfd, F_OFD_GETLK, &fl) != 0) {
		close(lfd);
		return STORE_E_IO;
	}
	if (fl.l_type != F_UNLCK && holder != NULL)
		*holder = session_lock_holder(lfd);
	close(lfd);
	return fl.l_type != F_UNLCK;
}

/* Release. */
void
session_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Remove an ended session's lock file. */
int
session_lock_remove(store *s, const uint8_t *id)
{
	char *path = session_lock_path(s, id);
	int rc = 0;

	if (path == NULL)
		return STORE_E_NOMEM;
	if (unlink(path) != 0 && errno != ENOENT)
		rc = STORE_E_IO;
	free(path);
	return rc;
}
