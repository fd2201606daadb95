/*
 * entry.c - a session's entries: globals ('g', keyed by name) and handles
 * ('h', keyed by big-endian id), under the session id so that one session's
 * keys form one contiguous range.
 */
#include "config.h"

#include <string.h>

#include "store-int.h"

/* Does a payload of this size go to a blob file? */
static int
entry_is_blob(const store *s, size_t payload)
{
	return payload >= s->opt.blob_min && s->has_blobs && s->blobfd >= 0;
}

/* The size of an entry's value as listed: the record's, with a blob
 * record's reference counted as the file it names. */
size_t
entry_value_len(const MDB_val *v)
{
	const uint8_t *p = v->mv_data;

	if (v->mv_size >= RECORD_FIXED + STORE_BLOB_REF_SIZE &&
	    (p[3] & STORE_FLAG_BLOB))
		return v->mv_size - STORE_BLOB_REF_SIZE +
		    be64_get(p + v->mv_size - STORE_BLOB_REF_SIZE +
		    STORE_BLOB_NAME_SIZE);
	return v->mv_size;
}

/* Build an entry key into k (ENTRY_KEY_MAX bytes); returns its length,
 * 0 when the name is too long. */
size_t
entry_key_make(uint8_t *k, const uint8_t *sid, uint8_t kind,
               const char *name, size_t name_len, uint64_t handle)
{
	memcpy(k, sid, STORE_ID_SIZE);
	k[STORE_ID_SIZE] = kind;
	if (kind == STORE_KIND_HANDLE) {
		be64_put(k + STORE_ID_SIZE + 1, handle);
		return STORE_ID_SIZE + 1 + 8;
	}
	if (name_len == 0 || name_len > STORE_KEY_MAX)
		return 0;
	memcpy(k + STORE_ID_SIZE + 1, name, name_len);
	return STORE_ID_SIZE + 1 + name_len;
}

/* Split an entry key (after the session id) into out. */
int
entry_key_parse(const uint8_t *k, size_t n, store_key *out)
{
	if (n < STORE_ID_SIZE + 2)
		return STORE_E_CORRUPT;
	out->kind = k[STORE_ID_SIZE];
	out->name = NULL;
	out->name_len = 0;
	out->handle = 0;
	if (out->kind == STORE_KIND_HANDLE) {
		if (n != STORE_ID_SIZE + 1 + 8)
			return STORE_E_CORRUPT;
		out->handle = be64_get(k + STORE_ID_SIZE + 1);
	} else if (out->kind == STORE_KIND_GLOBAL) {
		out->name = (const char *)k + STORE_ID_SIZE + 1;
		out->name_len = n - STORE_ID_SIZE - 1;
	} else
		return STORE_E_CORRUPT;
	return 0;
}

/* Split a key as entry_key_parse does; one that does not parse comes back
 * as kind 0 with its raw bytes as the name (for walks that report it). */
void
entry_key_parse_any(const uint8_t *k, size_t n, store_key *out)
{
	if (entry_key_parse(k, n, out) != 0) {
		out->kind = 0;
		out->name = (const char *)k;
		out->name_len = n;
		out->handle = 0;
	}
}

/* The key of in (built in kbuf), the size of its payload and of its
 * record: k and v for an MDB_RESERVE put.  A payload of blob_min bytes or
 * more goes to a blob file, and the record holds its reference.  0, or
 * STORE_E_INVAL for a bad kind, name or type name. */
static int
entry_prepare(store *s, uint8_t *kbuf, const uint8_t *sid,
              const store_entry_in *in, MDB_val *k, MDB_val *v,
              size_t *payload)
{
	size_t tlen;
	int i;

	k->mv_size = entry_key_make(kbuf, sid, in->kind, in->name,
	    in->name_len, in->handle);
	if (k->mv_size == 0 || (in->kind != STORE_KIND_GLOBAL &&
	    in->kind != STORE_KIND_HANDLE))
		return STORE_E_INVAL;
	k->mv_data = kbuf;
	tlen = in->type_name != NULL ? strlen(in->type_name) : 0;
	if (tlen > 65535)
		return STORE_E_INVAL;
	*payload = 0;
	for (i = 0; i < in->iovcnt; i++)
		*payload += in->iov[i].iov_len;
	if (entry_is_blob(s, *payload))
		v->mv_size = record_size(tlen, in->refs_len,
		    STORE_BLOB_REF_SIZE);
	else
		v->mv_size = record_size(tlen, in->refs_len, *payload);
	v->mv_data = NULL;
	return 0;
}

/*
 * The stored size (entry_value_len) of the record at k before a put, in
 * *len, and 1 when there is one (through cursor c when not NULL, which it
 * leaves there), 0 when not.  MDB_APPEND puts (flags) have none.
 */
static int
entry_old_len(store_txn *t, MDB_cursor *c, const MDB_val *k,
              unsigned flags, uint64_t *len)
{
	MDB_val ok = *k, ov;
	int rc;

	*len = 0;
	if (flags & MDB_APPEND)
		return 0;
	rc = c != NULL ? mdb_cursor_get(c, &ok, &ov, MDB_SET_KEY) :
	    mdb_get(t->txn, t->s->entries, &ok, &ov);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_map_err(rc);
	if (!store_val_ok(t, &ov))
		return STORE_E_CORRUPT;
	*len = entry_value_len(&ov);
	return 1;
}

/*
 * Put one prepared record: through cursor c when not NULL (with flags),
 * else with mdb_put.  A blob payload is written to its file first, and the
 * record gets the reference and STORE_FLAG_BLOB.  The session's counts
 * get the change (session_delta_note).
 */
static int
entry_put_one(store_txn *t, MDB_cursor *c, MDB_val *k, MDB_val *v,
              const uint8_t *sid, const store_entry_in *in, size_t payload,
              unsigned flags, uint64_t now_ms)
{
	uint8_t ref[STORE_BLOB_REF_SIZE];
	struct iovec iov;
	store_entry_in bin;
	uint64_t oldlen, newlen = v->mv_size;
	int had, rc;

	if ((had = entry_old_len(t, c, k, flags, &oldlen)) < 0)
		return had;
	if (entry_is_blob(t->s, payload)) {
		if ((rc = blob_write(t, k, in, payload, ref)) != 0)
			return rc;
		bin = *in;
		bin.flags |= STORE_FLAG_BLOB;
		iov.iov_base = ref;
		iov.iov_len = sizeof ref;
		bin.iov = &iov;
		bin.iovcnt = 1;
		bin.payload_digest = NULL; /* blob_write set it */
		in = &bin;
		newlen = v->mv_size - STORE_BLOB_REF_SIZE + payload;
	}
	rc = c != NULL ? mdb_cursor_put(c, k, v, flags) :
	    mdb_put(t->txn, t->s->entries, k, v, flags);
	if (rc != 0)
		return store_map_err(rc);
	record_encode(v->mv_data, in, now_ms);
	return session_delta_note(t, sid, had ? 0 : 1,
	    (int64_t)newlen - (int64_t)oldlen);
}

/* Insert or replace one entry, writing the record straight into the map
 * (MDB_RESERVE: LMDB gives us the space and we encode in place, so a
 * payload is copied once, from its buffers into the map or its file). */
int
entry_put(store_txn *t, const uint8_t *sid, const store_entry_in *in,
          uint64_t now_ms)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_val k, v;
	size_t payload;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	if ((rc = entry_prepare(t->s, kbuf, sid, in, &k, &v, &payload)) != 0)
		return rc;
	if (blob_any(t) && (rc = blob_drop(t, &k)) != 0)
		return rc;
	return entry_put_one(t, NULL, &k, &v, sid, in, payload, MDB_RESERVE,
	    now_ms);
}

/* LMDB's default key order (mdb_cmp_memn): bytes, then length. */
static int
entry_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/*
 * For keys put in order, finds those that already have a blob file, with a
 * seek in `blobs` only when a key reaches the next row there: a batch costs
 * one seek per row it passes, not one lookup per key.  A key not greater
 * than the one before seeks again, so any order is correct, and so is a
 * key given twice (its first put may have made its row).
 */
struct blob_scan {
	MDB_cursor *c;                 /* on blobs; NULL without it */
	int known;                     /* next is the first row > prev */
	uint8_t next[ENTRY_KEY_MAX];
	size_t nlen;                   /* 0: no row past prev */
	uint8_t prev[ENTRY_KEY_MAX];
	size_t plen;
};

/* Drop k's old blob file, if it has one (blob_scan). */
static int
entry_blob_scan(store_txn *t, struct blob_scan *bs, const MDB_val *k)
{
	MDB_val rk, rv;
	int rc;

	if (bs->c == NULL)
		return 0;
	if (bs->known &&
	    entry_keycmp(k->mv_data, k->mv_size, bs->prev, bs->plen) > 0 &&
	    (bs->nlen == 0 ||
	    entry_keycmp(k->mv_data, k->mv_size, bs->next, bs->nlen) < 0))
		goto done;
	rk = *k;
	rc = mdb_cursor_get(bs->c, &rk, &rv, MDB_SET_RANGE);
	bs->known = 1;
	if (rc == MDB_NOTFOUND)
		bs->nlen = 0;
	else if (rc != 0)
		return store_map_err(rc);
	else if (!store_val_ok(t, &rk))
		return STORE_E_CORRUPT;
	else if (rk.mv_size == k->mv_size &&
	    memcmp(rk.mv_data, k->mv_data, k->mv_size) == 0) {
		if ((rc = blob_drop(t, k)) != 0)
			return rc;
		bs->known = 0;      /* the next key seeks again */
	} else if (rk.mv_size > sizeof bs->next)
		return STORE_E_CORRUPT;
	else {
		memcpy(bs->next, rk.mv_data, rk.mv_size);
		bs->nlen = rk.mv_size;
	}
done:
	memcpy(bs->prev, k->mv_data, k->mv_size);
	bs->plen = k->mv_size;
	return 0;
}

/*
 * Write n entries with one cursor.  Given in key order, the ones past the
 * last key of the store are appended (MDB_APPEND: no search from the root,
 * pages filled before they split): the whole checkpoint of a new session,
 * or of the session whose keys sort last.  Any order is accepted; keys not
 * past the last are put as entry_put does.
 */
int
entry_put_sorted(store_txn *t, const uint8_t *sid,
                 const store_entry_in *const *ins, size_t n, uint64_t now_ms)
{
	uint8_t kbuf[ENTRY_KEY_MAX], last[ENTRY_KEY_MAX];
	struct blob_scan bs;
	size_t i, last_len = 0, payload;
	int have_last = 0, rc;
	MDB_cursor *c;
	MDB_val k, v;

	if (t->readonly)
		return STORE_E_READONLY;
	if (n == 0)
		return 0;
	bs.c = NULL;
	bs.known = 0;
	if (t->s->has_blobs &&
	    (rc = mdb_cursor_open(t->txn, t->s->blobs, &bs.c)) != 0)
		return store_map_err(rc);
	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0) {
		if (bs.c != NULL)
			mdb_cursor_close(bs.c);
		return store_map_err(rc);
	}
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && !store_val_ok(t, &k)) {
		rc = STORE_E_CORRUPT;
		goto out;
	}
	if (rc == 0 && k.mv_size <= sizeof last) {
		memcpy(last, k.mv_data, k.mv_size);
		last_len = k.mv_size;
		have_last = 1;
	} else if (rc == 0) {
		rc = STORE_E_CORRUPT;   /* no key of ours is that long */
		goto out;
	} else if (rc != MDB_NOTFOUND) {
		rc = store_map_err(rc);
		goto out;
	}
	for (i = 0; i < n; i++) {
		const store_entry_in *in = ins[i];
		unsigned flags = MDB_RESERVE;

		rc = entry_prepare(t->s, kbuf, sid, in, &k, &v, &payload);
		if (rc != 0 || (rc = entry_blob_scan(t, &bs, &k)) != 0)
			goto out;
		if (!have_last ||
		    entry_keycmp(kbuf, k.mv_size, last, last_len) > 0) {
			flags |= MDB_APPEND;
			memcpy(last, kbuf, k.mv_size);
			last_len = k.mv_size;
			have_last = 1;
		}
		if ((rc = entry_put_one(t, c, &k, &v, sid, in, payload, flags,
		    now_ms)) != 0)
			goto out;
	}
	rc = 0;
out:
	mdb_cursor_close(c);
	if (bs.c != NULL)
		mdb_cursor_close(bs.c);
	return rc;
}

/* One entry's value, borrowed from the map, in v: 0, STORE_E_NOTFOUND,
 * STORE_E_INVAL for a bad name, or another STORE_E_* code. */
int
entry_value(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
            size_t name_len, uint64_t handle, MDB_val *v)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_val k;
	int rc;

	k.mv_size = entry_key_make(kbuf, sid, kind, name, name_len, handle);
	if (k.mv_size == 0)
		return STORE_E_INVAL;
	k.mv_data = kbuf;
	if ((rc = mdb_get(t->txn, t->s->entries, &k, v)) != 0)
		return store_map_err(rc);
	/* a damaged page can give a length past the end of the file: every
	 * reader of the value (record_decode's digest) would then fault */
	return store_val_ok(t, v) ? 0 : STORE_E_CORRUPT;
}

/* Fetch one entry and decode it, its digest checked or not.  Checked, a
 * blob record's file is mapped and verified; unchecked, it is not read. */
static int
entry_fetch(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
            size_t name_len, uint64_t handle, store_record *out, int check)
{
	store_blob_ref ref;
	MDB_val v;
	int rc;

	if ((rc = entry_value(t, sid, kind, name, name_len, handle, &v)) != 0)
		return rc;
	if (check) {
		if ((rc = record_decode(v.mv_data, v.mv_size, out)) != 0)
			return rc;
		return entry_resolve(t, out, 1);
	}
	if ((rc = record_decode_nocheck(v.mv_data, v.mv_size, out)) != 0)
		return rc;
	if (out->flags & STORE_FLAG_BLOB) {
		if (blob_ref_decode(out->payload, out->payload_len, &ref) != 0)
			return STORE_E_CORRUPT;
		out->payload = NULL;
		out->payload_len = ref.size;
		out->flags &= (uint16_t)~STORE_FLAG_BLOB;
	}
	return 0;
}

/* Fetch and verify one entry. */
int
entry_get(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
          size_t name_len, uint64_t handle, store_record *out)
{
	return entry_fetch(t, sid, kind, name, name_len, handle, out, 1);
}

/* Fetch one entry's layout, its digest unchecked. */
int
entry_get_nocheck(store_txn *t, const uint8_t *sid, uint8_t kind,
                  const char *name, size_t name_len, uint64_t handle,
                  store_record *out)
{
	return entry_fetch(t, sid, kind, name, name_len, handle, out, 0);
}

/* Resolve a decoded record (store.h). */
int
entry_resolve(store_txn *t, store_record *r, int check)
{
	return blob_resolve(t, r, check, NULL, NULL);
}

/* Is there such an entry?  1, 0, or a negative STORE_E_* code.  flags (may
 * be NULL) gets its record's flags, unchecked: the header is read, not the
 * rest of the value (STORE_E_CORRUPT when shorter than a header). */
int
entry_exists(store_txn *t, const uint8_t *sid, uint8_t kind,
             const char *name, size_t name_len, uint64_t handle,
             uint16_t *flags)
{
	MDB_val v;
	int rc;

	rc = entry_value(t, sid, kind, name, name_len, handle, &v);
	if (rc == STORE_E_NOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (flags != NULL) {
		const uint8_t *p = v.mv_data;
		if (v.mv_size < RECORD_FIXED)
			return STORE_E_CORRUPT;
		*flags = (uint16_t)(p[2] << 8 | p[3]) &
		    (uint16_t)~STORE_FLAG_BLOB;
	}
	return 1;
}

/* Delete one entry. */
int
entry_del(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
          size_t name_len, uint64_t handle)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	uint64_t oldlen;
	MDB_val k;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	k.mv_size = entry_key_make(kbuf, sid, kind, name, name_len, handle);
	if (k.mv_size == 0)
		return STORE_E_INVAL;
	k.mv_data = kbuf;
	if ((rc = entry_old_len(t, NULL, &k, 0, &oldlen)) == 0)
		return STORE_E_NOTFOUND;
	if (rc < 0)
		return rc;
	if ((rc = store_map_err(mdb_del(t->txn, t->s->entries, &k,
	    NULL))) != 0)
		return rc;
	if ((rc = session_delta_note(t, sid, -1, -(int64_t)oldlen)) != 0)
		return rc;
	k.mv_data = kbuf;
	return blob_any(t) ? blob_drop(t, &k) : 0;
}

/* List keys of a session; values are not touched (only their sizes). */
int
entry_list(store_txn *t, const uint8_t *sid, uint8_t kind,
           int (*fn)(const store_key *, void *), void *arg)
{
	uint8_t prefix[STORE_ID_SIZE + 1];
	size_t plen = kind != 0 ? sizeof prefix : STORE_ID_SIZE;
	MDB_cursor *c;
	MDB_val k, v;
	store_key sk;
	int rc, op = MDB_SET_RANGE;

	memcpy(prefix, sid, STORE_ID_SIZE);
	prefix[STORE_ID_SIZE] = kind;
	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0)
		return store_map_err(rc);
	k.mv_data = prefix;
	k.mv_size = plen;
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (!store_val_ok(t, &k) || !store_val_ok(t, &v)) {
			rc = STORE_E_CORRUPT;
			goto out;
		}
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		if (entry_key_parse(k.mv_data, k.mv_size, &sk) != 0)
			continue; /* --check reports malformed keys */
		sk.value_len = entry_value_len(&v);
		if ((rc = fn(&sk, arg)) != 0)
			goto out;
	}
	rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

/* Visit every entry of every session. */
int
entry_walk(store_txn *t,
           int (*fn)(const uint8_t *sid, const store_key *, const uint8_t *,
                     size_t, void *),
           void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_key sk;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (!store_val_ok(t, &k) || !store_val_ok(t, &v)) {
			rc = STORE_E_CORRUPT;
			goto out;
		}
		entry_key_parse_any(k.mv_data, k.mv_size, &sk);
		sk.value_len = entry_value_len(&v);
		rc = fn(k.mv_size >= STORE_ID_SIZE ? k.mv_data : NULL, &sk,
		    v.mv_data, v.mv_size, arg);
		if (rc != 0)
			goto out;
	}
	rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}
