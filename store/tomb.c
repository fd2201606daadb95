/*
 * tomb.c - tombstones: what is left of an ended session once it is purged
 * (docs/STORAGE.md 3.8), by name then time of ending.  session_end writes
 * them; the sweep drops them after STORE_TOMB_KEEP_MS.
 */
#include "config.h"

#include <string.h>

#include "store-int.h"

static int tomb_decode(const MDB_val *k, const MDB_val *v, store_tomb *out);

/* The tombstone key of (name, ended, id) into k; returns its size. */
size_t
tomb_key(uint8_t *k, const char *name, uint64_t ended_ms, const uint8_t *id)
{
	size_t n = strlen(name);

	memcpy(k, name, n);
	k[n] = 0;
	be64_put(k + n + 1, ended_ms);
	memcpy(k + n + 9, id, STORE_ID_SIZE);
	return n + 9 + STORE_ID_SIZE;
}

/* Decode a tombstone; STORE_E_CORRUPT on a bad layout. */
static int
tomb_decode(const MDB_val *k, const MDB_val *v, store_tomb *out)
{
	const uint8_t *p = k->mv_data, *z, *r = v->mv_data;
	size_t n;

	if (k->mv_size < 1 + 9 + STORE_ID_SIZE || k->mv_size > TOMB_KEY_MAX ||
	    v->mv_size != TOMB_REC_SIZE || r[0] != 1)
		return STORE_E_CORRUPT;
	n = k->mv_size - 9 - STORE_ID_SIZE;
	if ((z = memchr(p, 0, k->mv_size)) == NULL || (size_t)(z - p) != n)
		return STORE_E_CORRUPT;
	memset(out, 0, sizeof *out);
	memcpy(out->name, p, n);
	out->ended_ms = be64_get(p + n + 1);
	memcpy(out->id, p + n + 9, STORE_ID_SIZE);
	out->why = r[1];
	out->created_ms = be64_get(r + 8);
	out->last_seen_ms = be64_get(r + 16);
	out->lease_ms = be64_get(r + 24);
	out->entries = be64_get(r + 32);
	out->bytes = be64_get(r + 40);
	return 0;
}

/* Text for a STORE_END_* reason. */
const char *
tomb_why_name(int why)
{
	switch (why) {
	case STORE_END_EXPIRED:
		return "expired";
	case STORE_END_CLOSED:
		return "closed";
	case STORE_END_REPLACED:
		return "replaced";
	case STORE_END_ENDED:
		return "ended";
	}
	return "unknown";
}

/* The newest tombstone of name: the last key with prefix name . 0. */
int
tomb_last(store_txn *t, const char *name, store_tomb *out)
{
	uint8_t kb[TOMB_KEY_MAX];
	size_t n = strlen(name);
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	if (n == 0 || n > STORE_NAME_MAX)
		return STORE_E_INVAL;
	if (!t->s->has_tombs)
		return STORE_E_NOTFOUND;
	/* the key just past every key of name: name . 1 */
	memcpy(kb, name, n);
	kb[n] = 1;
	if ((rc = mdb_cursor_open(t->txn, t->s->tombs, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = kb;
	k.mv_size = n + 1;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	while (rc == 0) {
		if (k.mv_size <= n || memcmp(k.mv_data, name, n) != 0 ||
		    ((const uint8_t *)k.mv_data)[n] != 0) {
			rc = MDB_NOTFOUND;
			break;
		}
		if (tomb_decode(&k, &v, out) == 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV); /* skip a bad one */
	}
	mdb_cursor_close(c);
	return store_map_err(rc);
}

/* Visit every tombstone. */
int
tomb_list(store_txn *t, int (*fn)(const store_tomb *, void *), void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_tomb tb;
	int rc, op = MDB_FIRST;

	if (!t->s->has_tombs)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->tombs, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (tomb_decode(&k, &v, &tb) != 0)
			continue;
		if ((rc = fn(&tb, arg)) != 0)
			goto out;
	}
	rc = rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

/* Drop old and malformed tombstones.  One pass over the database: there
 * is one tombstone per ended session of the last STORE_TOMB_KEEP_MS. */
int
tomb_sweep(store_txn *t, uint64_t before_ms, size_t *dropped)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_tomb tb;
	size_t n = 0;
	int rc;

	if (dropped != NULL)
		*dropped = 0;
	if (t->readonly)
		return STORE_E_READONLY;
	if (!t->s->has_tombs)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->tombs, &c)) != 0)
		return store_map_err(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if (tomb_decode(&k, &v, &tb) != 0 || tb.ended_ms < before_ms) {
			if ((rc = mdb_cursor_del(c, 0)) != 0)
				break;
			n++;
		}
		/* after a delete, MDB_NEXT lands on the item that followed */
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (dropped != NULL)
		*dropped = n;
	return rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
}
