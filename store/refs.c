/*
 * refs.c - persistent references, both ways round: the refs blob a record
 * carries (the entries its pickle refers to; this file is the blob's one
 * encoder and parser), and the reverse index of it (for an entry, the
 * target, the entries of the same session whose records may refer to it).
 * The index has one MDB_DUPSORT key per target, its entry key, and one
 * value per referrer, its kind byte and key.  The backend finds who refers
 * to an entry without reading a record; rows may be stale, and readers
 * check them against the referrer's refs blob.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "store-int.h"

static int refs_row(uint8_t *kbuf, uint8_t *vbuf, const uint8_t *sid,
                    const store_key *target, const store_key *referrer,
                    MDB_val *k, MDB_val *v);
static int refs_key(uint8_t *kbuf, const uint8_t *sid,
                    const store_key *target, MDB_val *k);
static int refs_val_parse(const uint8_t *p, size_t n, store_key *out);
static int refs_utf8_ok(const uint8_t *p, size_t n);

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

/* --- the refs blob --------------------------------------------------- */

/* 1 when p[0..n) is UTF-8 as Python's strict codec takes it: no overlong
 * form, no surrogate, nothing past U+10FFFF (the same rules as the admin
 * tool's pickle reader). */
static int
refs_utf8_ok(const uint8_t *p, size_t n)
{
	size_t i = 0, len, j;
	uint32_t c;

	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf) {
			len = 2;
			c = p[i] & 0x1f;
		} else if (p[i] >= 0xe0 && p[i] <= 0xef) {
			len = 3;
			c = p[i] & 0x0f;
		} else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
			len = 4;
			c = p[i] & 0x07;
		} else
			return 0;
		if (n - i < len)
			return 0;
		for (j = 1; j < len; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return 0;
			c = c << 6 | (p[i + j] & 0x3f);
		}
		if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
		    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
			return 0;
		i += len;
	}
	return 1;
}

/* Append one reference; the key limit is checked here, so the u16 length
 * can never wrap (STORE_KEY_MAX is far below 65535). */
int
refs_blob_add(store_refs_buf *b, const store_key *ref)
{
	const uint8_t *key;
	uint8_t hb[8];
	size_t klen;

	if (ref->kind == STORE_KIND_HANDLE) {
		be64_put(hb, ref->handle);
		key = hb;
		klen = 8;
	} else if (ref->kind == STORE_KIND_GLOBAL) {
		if (ref->name_len == 0 || ref->name_len > STORE_KEY_MAX ||
		    !refs_utf8_ok((const uint8_t *)ref->name, ref->name_len))
			return STORE_E_KEY;
		key = (const uint8_t *)ref->name;
		klen = ref->name_len;
	} else
		return STORE_E_INVAL;
	if (b->cap - b->len < 3 + klen) {
		size_t cap = (b->len + 3 + klen) * 2;
		uint8_t *p = realloc(b->p, cap);

		if (p == NULL)
			return STORE_E_NOMEM;
		b->p = p;
		b->cap = cap;
	}
	b->p[b->len] = ref->kind;
	be16_put(b->p + b->len + 1, (uint16_t)klen);
	memcpy(b->p + b->len + 3, key, klen);
	b->len += 3 + klen;
	return 0;
}

void
refs_blob_free(store_refs_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* Read the reference at *off.  The checks run in this order, and each
 * says its own sentence: the admin tool prints them. */
int
refs_blob_next(const uint8_t *p, size_t n, size_t *off, store_key *ref,
               const char **why)
{
	size_t o = *off, len;

	memset(ref, 0, sizeof *ref);
	if (o >= n)
		return 0;
	if (n - o < 3) {
		*why = "refs blob ends inside a reference's header";
		return STORE_E_CORRUPT;
	}
	ref->kind = p[o];
	len = be16_get(p + o + 1);
	if (len > n - o - 3) {
		*why = "a reference's key runs past the refs blob";
		return STORE_E_CORRUPT;
	}
	if (ref->kind == STORE_KIND_HANDLE) {
		if (len != 8) {
			*why = "a handle reference whose id is not 8 bytes";
			return STORE_E_CORRUPT;
		}
		ref->handle = be64_get(p + o + 3);
	} else if (ref->kind == STORE_KIND_GLOBAL) {
		if (len == 0 || len > STORE_KEY_MAX) {
			*why = "a global reference with an empty or too long name";
			return STORE_E_CORRUPT;
		}
		if (!refs_utf8_ok(p + o + 3, len)) {
			*why = "a global reference whose name is not UTF-8";
			return STORE_E_CORRUPT;
		}
		ref->name = (const char *)p + o + 3;
		ref->name_len = len;
	} else {
		*why = "a reference of unknown kind (not 'g' or 'h')";
		return STORE_E_CORRUPT;
	}
	*off = o + 3 + len;
	return 1;
}
