/*
 * calls.c - the call journal's rows (docs/STORAGE.md 3.9): one record per
 * call a worker persisted, keyed session id . be64 started . call id, so
 * that a session's calls form one range, oldest first.  This file owns
 * the record's bytes: its one encoder and parser (exec/journal.c writes
 * through it, pyshelf-dump reads through it).
 */
#include "config.h"

#include <string.h>

#include "store-int.h"

/* Offsets of the record's fixed part. */
#define CR_VERSION 0
#define CR_STATE 1
#define CR_END 2
#define CR_SUMMARY_LEN 4
#define CR_STARTED 8
#define CR_ENDED 16
#define CR_OUT_BYTES 24
#define CR_OUT_DROPPED 32
#define CR_CHECK 40
#define CR_CHUNKS_LEN 48
#define CR_BODY_LEN 52

/* The record's check value: XXH3-64 of everything but itself. */
static uint64_t
calls_check(const uint8_t *p, size_t n)
{
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, p, CR_CHECK);
	XXH3_64bits_update(&st, p + STORE_CALL_FIXED, n - STORE_CALL_FIXED);
	return XXH3_64bits_digest(&st);
}

size_t
calls_record_size(size_t summary_len, size_t chunks_len, size_t body_len)
{
	return STORE_CALL_FIXED + summary_len + chunks_len + body_len;
}

void
calls_record_encode(uint8_t *dst, const store_call *c)
{
	size_t n = calls_record_size(c->summary_len, c->chunks_len,
	    c->body_len);
	uint8_t *p = dst + STORE_CALL_FIXED;

	dst[CR_VERSION] = 1; /* call record version */
	dst[CR_STATE] = c->state;
	dst[CR_END] = c->end;
	dst[3] = 0;
	be32_put(dst + CR_SUMMARY_LEN, c->summary_len);
	be64_put(dst + CR_STARTED, c->started_ms);
	be64_put(dst + CR_ENDED, c->ended_ms);
	be64_put(dst + CR_OUT_BYTES, c->output_bytes);
	be64_put(dst + CR_OUT_DROPPED, c->output_dropped);
	be32_put(dst + CR_CHUNKS_LEN, c->chunks_len);
	be32_put(dst + CR_BODY_LEN, c->body_len);
	if (c->summary_len > 0)
		memcpy(p, c->summary, c->summary_len);
	p += c->summary_len;
	if (c->chunks_len > 0)
		memcpy(p, c->chunks, c->chunks_len);
	p += c->chunks_len;
	if (c->body_len > 0)
		memcpy(p, c->body, c->body_len);
	be64_put(dst + CR_CHECK, calls_check(dst, n));
}

int
calls_record_decode(const uint8_t *p, size_t n, store_call *out,
                    const char **why)
{
	const char *w = NULL;
	uint64_t s, c, b, len;
	const uint8_t *data;
	size_t off = 0;
	int kind, rc;

	if (n < STORE_CALL_FIXED)
		w = "shorter than the record's fixed part";
	else if (p[CR_VERSION] != 1)
		w = "unknown record version";
	else if (p[CR_STATE] < STORE_CALL_QUEUED ||
	    p[CR_STATE] > STORE_CALL_LOST)
		w = "unknown state";
	else if (p[CR_END] > STORE_CALL_END_ERROR || p[3] != 0)
		w = "unknown end kind";
	if (w != NULL)
		goto bad;
	s = be32_get(p + CR_SUMMARY_LEN);
	c = be32_get(p + CR_CHUNKS_LEN);
	b = be32_get(p + CR_BODY_LEN);
	if (STORE_CALL_FIXED + s + c + b != n) {
		w = "its lengths do not add up to its size";
		goto bad;
	}
	if (be64_get(p + CR_CHECK) != calls_check(p, n)) {
		w = "its check value does not match";
		goto bad;
	}
	out->state = p[CR_STATE];
	out->end = p[CR_END];
	out->started_ms = be64_get(p + CR_STARTED);
	out->ended_ms = be64_get(p + CR_ENDED);
	out->output_bytes = be64_get(p + CR_OUT_BYTES);
	out->output_dropped = be64_get(p + CR_OUT_DROPPED);
	out->summary = (const char *)p + STORE_CALL_FIXED;
	out->summary_len = (uint32_t)s;
	out->chunks = p + STORE_CALL_FIXED + s;
	out->chunks_len = (uint32_t)c;
	out->body = p + STORE_CALL_FIXED + s + c;
	out->body_len = (uint32_t)b;
	while ((rc = calls_chunk_next(out->chunks, c, &off, &kind, &data,
	    &len, &w)) == 1)
		;
	if (rc != 0)
		goto bad;
	return 0;
bad:
	if (why != NULL)
		*why = w;
	return STORE_E_CORRUPT;
}

size_t
calls_chunk_size(int kind, uint64_t len)
{
	return kind == STORE_CHUNK_GAP ? 1 + 8 : 1 + 4 + (size_t)len;
}

size_t
calls_chunk_put(uint8_t *dst, int kind, const void *p, uint64_t len)
{
	dst[0] = (uint8_t)kind;
	if (kind == STORE_CHUNK_GAP) {
		be64_put(dst + 1, len);
		return 9;
	}
	be32_put(dst + 1, (uint32_t)len);
	if (len > 0)
		memcpy(dst + 5, p, len);
	return 5 + (size_t)len;
}

int
calls_chunk_next(const uint8_t *p, size_t n, size_t *off, int *kind,
                 const uint8_t **data, uint64_t *len, const char **why)
{
	size_t o = *off;
	uint32_t l;

	if (o >= n)
		return 0;
	*kind = p[o];
	if (p[o] == STORE_CHUNK_GAP) {
		if (n - o < 9)
			goto bad;
		*data = NULL;
		*len = be64_get(p + o + 1);
		*off = o + 9;
		return 1;
	}
	if (p[o] != STORE_CHUNK_STDOUT && p[o] != STORE_CHUNK_STDERR) {
		if (why != NULL)
			*why = "an output chunk of an unknown kind";
		return STORE_E_CORRUPT;
	}
	if (n - o < 5)
		goto bad;
	l = be32_get(p + o + 1);
	if (l > n - o - 5)
		goto bad;
	*data = p + o + 5;
	*len = l;
	*off = o + 5 + l;
	return 1;
bad:
	if (why != NULL)
		*why = "an output chunk runs past the end";
	return STORE_E_CORRUPT;
}

/* The key of a call into k (STORE_CALL_KEY_SIZE bytes). */
static void
calls_key(uint8_t *k, const uint8_t *sid, uint64_t started_ms,
          const uint8_t *id)
{
	memcpy(k, sid, STORE_ID_SIZE);
	be64_put(k + STORE_ID_SIZE, started_ms);
	memcpy(k + STORE_ID_SIZE + 8, id, STORE_ID_SIZE);
}

int
calls_put(store_txn *t, const store_call *c)
{
	uint8_t kb[STORE_CALL_KEY_SIZE];
	MDB_val k, v;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	if (!t->s->has_calls)
		return STORE_E_READONLY; /* not reached: a writable open has it */
	calls_key(kb, c->sid, c->started_ms, c->id);
	k.mv_data = kb;
	k.mv_size = sizeof kb;
	v.mv_size = calls_record_size(c->summary_len, c->chunks_len,
	    c->body_len);
	if ((rc = mdb_put(t->txn, t->s->calls, &k, &v, MDB_RESERVE)) != 0)
		return store_map_err(rc);
	calls_record_encode(v.mv_data, c);
	return 0;
}

int
calls_del(store_txn *t, const uint8_t *sid, uint64_t started_ms,
          const uint8_t *id)
{
	uint8_t kb[STORE_CALL_KEY_SIZE];
	MDB_val k;
	int rc;

	if (t->readonly)
		return STORE_E_READONLY;
	if (!t->s->has_calls)
		return 0;
	calls_key(kb, sid, started_ms, id);
	k.mv_data = kb;
	k.mv_size = sizeof kb;
	rc = mdb_del(t->txn, t->s->calls, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
}

int
calls_list(store_txn *t, const uint8_t *sid,
           int (*fn)(const store_call *c, int rc, const char *why,
                     void *arg),
           void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_call sc;
	const char *why;
	int rc, crc;

	if (!t->s->has_calls)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->calls, &c)) != 0)
		return store_map_err(rc);
	if (sid != NULL) {
		k.mv_data = (void *)sid;
		k.mv_size = STORE_ID_SIZE;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	} else
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if (sid != NULL && (k.mv_size < STORE_ID_SIZE ||
		    memcmp(k.mv_data, sid, STORE_ID_SIZE) != 0))
			break;
		memset(&sc, 0, sizeof sc);
		why = NULL;
		if (!store_val_ok(t, &k) || !store_val_ok(t, &v)) {
			crc = STORE_E_CORRUPT;
			why = "its key or value lies outside the data file";
		} else if (k.mv_size != STORE_CALL_KEY_SIZE) {
			crc = STORE_E_CORRUPT;
			why = "its key is not 40 bytes";
			if (k.mv_size >= STORE_ID_SIZE)
				memcpy(sc.sid, k.mv_data, STORE_ID_SIZE);
		} else {
			const uint8_t *kp = k.mv_data;

			crc = calls_record_decode(v.mv_data, v.mv_size, &sc,
			    &why);
			memcpy(sc.sid, kp, STORE_ID_SIZE);
			sc.started_ms = be64_get(kp + STORE_ID_SIZE);
			memcpy(sc.id, kp + STORE_ID_SIZE + 8, STORE_ID_SIZE);
			if (crc == 0 && be64_get(kp + STORE_ID_SIZE) !=
			    be64_get((const uint8_t *)v.mv_data + CR_STARTED)) {
				crc = STORE_E_CORRUPT;
				why = "its key's start time is not its record's";
			}
		}
		if ((rc = fn(&sc, crc, why, arg)) != 0)
			goto out;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	rc = rc == MDB_NOTFOUND ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}

const char *
calls_state_name(int state)
{
	switch (state) {
	case STORE_CALL_QUEUED:
		return "queued";
	case STORE_CALL_RUNNING:
		return "running";
	case STORE_CALL_DONE:
		return "done";
	case STORE_CALL_LOST:
		return "lost";
	}
	return "unknown";
}
