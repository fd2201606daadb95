/*
 * refs.c - the reverse index of persistent references: for an entry (the
 * target), the entries of the same session whose records may refer to it.
 * One MDB_DUPSORT key per target, its entry key; one value per referrer,
 * its kind byte and key.  The backend finds who refers to an entry without
 * reading a record; rows may be stale, and readers check them against the
 * referrer's refs blob.
 */
#include "config.h"

#include <string.h>

#include "store-int.h"

static int refs_row(uint8_t *kbuf, uint8_t *vbuf, const uint8_t *sid,
                    const store_key *target, const store_key *referrer,
                    MDB_val *k, MDB_val *v);
static int refs_key(uint8_t *kbuf, const uint8_t *sid,
                    const store_key *target, MDB_val *k);
static int refs_val_parse(const uint8_t *p, size_t n, store_key *out);

/* The target's entry key, built in kbuf (ENTRY_KEY_MAX bytes), as k.  0,
 * or STORE_E_INVAL for a bad kind or name. */
static int
refs_key(uint8_t *kbuf, const uint8_t *sid, const store_key *target,
         MDB_val *k)
{
	if (target->kind != STORE_KIND_GLOBAL &&
	    target->kind != STORE_KIND_HANDLE)
		return STORE_E_INVAL;
	k->mv_size = entry_key_make(kbuf, sid, target->kind, target->name,
	    target->name_len, target->handle);
	if (k->mv_size == 0)
		return STORE_E_INVAL;
	k->mv_data = kbuf;
	return 0;
}

/* One row: the target's key in kbuf as k, the referrer's kind and key in
 * vbuf (REFS_VAL_MAX bytes) as v.  0, or STORE_E_INVAL for a bad kind or
 * name of either. */
static int
refs_row(uint8_t *kbuf, uint8_t *vbuf, const uint8_t *sid,
         const store_key *target, const store_key *referrer, MDB_val *k,
         MDB_val *v)
{
	int rc;

	if ((rc = refs_key(kbuf, sid, target, k)) != 0)
		return rc;
	vbuf[0] = referrer->kind;
	if (referrer->kind == STORE_KIND_HANDLE) {
		be64_put(vbuf + 1, referrer->handle);
		v->mv_size = 1 + 8;
	} else if (referrer->kind == STORE_KIND_GLOBAL) {
		if (referrer->name_len == 0 ||
		    referrer->name_len > STORE_KEY_MAX)
			return STORE_E_INVAL;
		memcpy(vbuf + 1, referrer->name, referrer->name_len);
		v->mv_size = 1 + referrer->name_len;
	} else
		return STORE_E_INVAL;
	v->mv_data = vbuf;
	return 0;
}

/* Split a row's value into out (name borrowed from p, value_len 0).
 * STORE_E_CORRUPT when it is empty, of an unknown kind, a handle id that
 * is not 8 bytes, or a name that is empty or too long. */
static int
refs_val_parse(const uint8_t *p, size_t n, store_key *out)
{
	memset(out, 0, sizeof *out);
	if (n < 2)
		return STORE_E_CORRUPT;
	out->kind = p[0];
	if (out->kind == STORE_KIND_HANDLE) {
		if (n != 1 + 8)
			return STORE_E_CORRUPT;
		out->handle = be64_get(p + 1);
	} else if (out->kind == STORE_KIND_GLOBAL) {
		if (n > REFS_VAL_MAX)
			return STORE_E_CORRUPT;
		out->name = (const char *)p + 1;
		out->name_len = n - 1;
	} else
		return STORE_E_CORRUPT;
	return 0;
}

/* Put (del 0) or delete (del 1) one row.  Putting a row already there, or
 * deleting one that is not, is 0. */
static int
refs_write(store_txn *t, const uint8_t *sid, const store_key *target,
           const store_key *referrer, int del)
{
	uint8_t kbuf[ENTRY_KEY_MAX], vbuf[REFS_VAL_MAX];
	MDB_val k, v;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	if ((rc = refs_row(kbuf, vbuf, sid, target, referrer, &k, &v)) != 0)
		return rc;
	if (del) {
		rc = mdb_del(t->txn, t->s->refs, &k, &v);
		return rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
	}
	rc = mdb_put(t->txn, t->s->refs, &k, &v, MDB_NODUPDATA);
	return rc == MDB_KEYEXIST ? 0 : store_map_err(rc);
}

/* Note that referrer's record may refer to target; a row already there is
 * left as it is. */
int
refs_put(store_txn *t, const uint8_t *sid, const store_key *target,
         const store_key *referrer)
{
	return refs_write(t, sid, target, referrer, 0);
}

/* Delete one row; a row that is not there is not an error. */
int
refs_del(store_txn *t, const uint8_t *sid, const store_key *target,
         const store_key *referrer)
{
	return refs_write(t, sid, target, referrer, 1);
}

/* Visit the referrers noted for target, in LMDB's order of the values. */
int
refs_list(store_txn *t, const uint8_t *sid, const store_key *target,
          int (*fn)(const store_key *, void *), void *arg)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_cursor *c;
	MDB_val k, v;
	store_key rk;
	int rc, op = MDB_SET;

	if ((rc = refs_key(kbuf, sid, target, &k)) != 0)
		return rc;
	if (!t->s->has_refs)
		return 0; /* a read-only open of an older store: no rows */
	if ((rc = mdb_cursor_open(t->txn, t->s->refs, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT_DUP;
		if (!store_val_ok(t, &v)) {
			rc = STORE_E_CORRUPT;
			goto out;
		}
		if ((rc = refs_val_parse(v.mv_data, v.mv_size, &rk)) != 0)
			goto out;
		if ((rc = fn(&rk, arg)) != 0)
			goto out;
	}
	rc = rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

/* Whether the session has a row, from the first key at or after its id. */
int
refs_any(store_txn *t, const uint8_t *sid, int *any)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*any = 0;
	if (!t->s->has_refs)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->refs, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = (void *)sid;
	k.mv_size = STORE_ID_SIZE;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0)
		*any = k.mv_size >= STORE_ID_SIZE &&
		    memcmp(k.mv_data, sid, STORE_ID_SIZE) == 0;
	mdb_cursor_close(c);
	return (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
}
