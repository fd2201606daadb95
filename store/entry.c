/*
 * entry.c - a session's entries: globals ('g', keyed by name) and handles
 * ('h', keyed by big-endian id), under the session id so that one session's
 * keys form one contiguous range.
 */
#include "config.h"

#include <string.h>

#include "store-int.h"

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

/* The key of in (built in kbuf) and the size of its record: k and v for
 * an MDB_RESERVE put.  0, or STORE_E_INVAL for a bad kind, name or type
 * name. */
static int
entry_prepare(uint8_t *kbuf, const uint8_t *sid, const store_entry_in *in,
              MDB_val *k, MDB_val *v)
{
	size_t payload = 0, tlen;
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
	for (i = 0; i < in->iovcnt; i++)
		payload += in->iov[i].iov_len;
	v->mv_size = record_size(tlen, in->refs_len, payload);
	v->mv_data = NULL;
	return 0;
}

/* Insert or replace one entry, writing the record straight into the map. */
int
entry_put(store_txn *t, const uint8_t *sid, const store_entry_in *in,
          uint64_t now_ms)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_val k, v;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	if ((rc = entry_prepare(kbuf, sid, in, &k, &v)) != 0)
		return rc;
	/* MDB_RESERVE: LMDB gives us the space; we encode in place, so a
	 * large payload is copied once, from its buffers into the map. */
	if ((rc = mdb_put(t->txn, t->s->entries, &k, &v, MDB_RESERVE)) != 0)
		return store_map_err(rc);
	record_encode(v.mv_data, in, now_ms);
	return 0;
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
	size_t i, last_len = 0;
	int have_last = 0, rc;
	MDB_cursor *c;
	MDB_val k, v;

	if (t->readonly)
		return STORE_E_READONLY;
	if (n == 0)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->entries, &c)) != 0)
		return store_map_err(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
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
		if ((rc = entry_prepare(kbuf, sid, in, &k, &v)) != 0)
			goto out;
		if (!have_last ||
		    entry_keycmp(kbuf, k.mv_size, last, last_len) > 0) {
			flags |= MDB_APPEND;
			memcpy(last, kbuf, k.mv_size);
			last_len = k.mv_size;
			have_last = 1;
		}
		if ((rc = mdb_cursor_put(c, &k, &v, flags)) != 0) {
			rc = store_map_err(rc);
			goto out;
		}
		record_encode(v.mv_data, in, now_ms);
	}
	rc = 0;
out:
	mdb_cursor_close(c);
	return rc;
}

/* One entry's value, borrowed from the map, in v: 0, STORE_E_NOTFOUND,
 * STORE_E_INVAL for a bad name, or another STORE_E_* code. */
static int
entry_value(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
            size_t name_len, uint64_t handle, MDB_val *v)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_val k;

	k.mv_size = entry_key_make(kbuf, sid, kind, name, name_len, handle);
	if (k.mv_size == 0)
		return STORE_E_INVAL;
	k.mv_data = kbuf;
	return store_map_err(mdb_get(t->txn, t->s->entries, &k, v));
}

/* Fetch one entry and decode it, its digest checked or not. */
static int
entry_fetch(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
            size_t name_len, uint64_t handle, store_record *out, int check)
{
	MDB_val v;
	int rc;

	if ((rc = entry_value(t, sid, kind, name, name_len, handle, &v)) != 0)
		return rc;
	return check ? record_decode(v.mv_data, v.mv_size, out) :
	    record_decode_nocheck(v.mv_data, v.mv_size, out);
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
		*flags = (uint16_t)(p[2] << 8 | p[3]);
	}
	return 1;
}

/* Delete one entry. */
int
entry_del(store_txn *t, const uint8_t *sid, uint8_t kind, const char *name,
          size_t name_len, uint64_t handle)
{
	uint8_t kbuf[ENTRY_KEY_MAX];
	MDB_val k;

	if (t->readonly)
		return STORE_E_READONLY;
	k.mv_size = entry_key_make(kbuf, sid, kind, name, name_len, handle);
	if (k.mv_size == 0)
		return STORE_E_INVAL;
	k.mv_data = kbuf;
	return store_map_err(mdb_del(t->txn, t->s->entries, &k, NULL));
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
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		if (entry_key_parse(k.mv_data, k.mv_size, &sk) != 0)
			continue; /* --check reports malformed keys */
		sk.value_len = v.mv_size;
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
		if (entry_key_parse(k.mv_data, k.mv_size, &sk) != 0) {
			sk.kind = 0;
			sk.name = (const char *)k.mv_data;
			sk.name_len = k.mv_size;
			sk.handle = 0;
		}
		sk.value_len = v.mv_size;
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
