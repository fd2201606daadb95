/*
 * dump-check-entry.c - pyshelf-dump --check, the entries: each entry's key
 * parses and its session exists, its record decodes and its digest
 * matches, its blob file is indexed and whole, its refs blob parses and
 * each reference names an entry of the same session, its pickle is well
 * formed (pickledis) and its persistent ids are the refs blob's,
 * out-of-band tables add up, volatile reasons are UTF-8; and each row of
 * the blob index is an entry's.
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "dump-check.h"

/* Follow the walk into another session's range. */
void
dump_check_entry_enter_session(struct check *c, const uint8_t *sid)
{
	char idhex[2 * STORE_ID_SIZE + 1];

	if (c->have_sid && c->orphans > CHECK_ORPHANS_SHOWN) {
		store_hex(c->sid, STORE_ID_SIZE, idhex);
		dump_check_problem(c, c->sid, NULL, NULL, "orphan_entry",
		    "and %" PRIu64 " more entries of this session id, which "
		    "has no session record", c->orphans - CHECK_ORPHANS_SHOWN);
		c->problems -= 1; /* counted one by one below */
	}
	memcpy(c->sid, sid, STORE_ID_SIZE);
	c->have_sid = 1;
	c->orphans = 0;
	c->sid_exists = session_get_by_id(c->t, sid, &c->ss) == 0;
	if (!c->sid_exists) {
		/* an unparsable record is reported by dump_check_sessions */
		MDB_val k = {STORE_ID_SIZE, (void *)sid}, v;
		c->sid_exists = mdb_get(c->t->txn, c->t->s->sessions, &k, &v) == 0;
		snprintf(c->ss.name, sizeof c->ss.name, "?");
	}
}

/* Whether a key names an entry of the current session. */
static int
dump_check_entry_resolves(struct check *c, const store_key *k)
{
	const uint8_t *v;
	size_t len;

	return dump_entry_fetch(c->t, c->sid, k, &v, &len) == 0;
}

/* The refs blob: parses, and each reference resolves. */
static void
dump_check_entry_refs_blob(struct check *c, const store_key *k,
                           const store_record *r)
{
	char kb[STORE_KEY_MAX * 4 + 16];
	store_key rk;
	const char *why = NULL;
	size_t off = 0;
	int rc;

	while ((rc = refs_blob_next(r->refs, r->refs_len, &off, &rk,
	    &why)) == 1) {
		if (!dump_check_entry_resolves(c, &rk))
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "dangling_ref", "persistent reference to %s %s "
			    "does not resolve (no such entry in this session)",
			    rk.kind == STORE_KIND_GLOBAL ? "global" : "handle",
			    dump_out_key(kb, sizeof kb, &rk));
	}
	if (rc < 0)
		dump_check_problem(c, c->sid, c->ss.name, k, "refs_blob",
		    "refs blob malformed at byte %zu: %s", off, why);
}

/* Whether the refs blob lists the pickle's reference pr. */
static int
dump_check_entry_blob_has(const store_record *r, const struct pickledis_ref *pr)
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
dump_check_entry_pickle_refs(struct check *c, const store_key *k,
                             const store_record *r,
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
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "pickle_refs", "persistent id at pickle offset %zu "
			    "is not an entry key ('g', name) or ('h', id)",
			    pr->pos);
			continue;
		}
		memset(&rk, 0, sizeof rk);
		rk.kind = pr->kind;
		rk.name = (const char *)pr->name;
		rk.name_len = pr->name_len;
		rk.handle = pr->handle;
		if (in->nrefs <= CHECK_CROSS_MAX && nblob <= CHECK_CROSS_MAX &&
		    !dump_check_entry_blob_has(r, pr)) {
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "pickle_refs", "the pickle refers to %s %s, which "
			    "its refs blob does not list", pr->kind == 'g' ?
			    "global" : "handle", dump_out_key(kb, sizeof kb,
			    &rk));
			if (!dump_check_entry_resolves(c, &rk))
				dump_check_problem(c, c->sid, c->ss.name, k,
				    "dangling_ref", "persistent reference to "
				    "%s does not resolve", dump_out_key(kb,
				    sizeof kb, &rk));
		}
	}
	if (nblob != in->nrefs && in->nrefs <= CHECK_CROSS_MAX &&
	    nblob <= CHECK_CROSS_MAX)
		dump_check_problem(c, c->sid, c->ss.name, k, "pickle_refs",
		    "the refs blob lists %zu references, the pickle uses %zu",
		    nblob, in->nrefs);
}

/* The payload of a pickled record: OOB table, pickle, references. */
static void
dump_check_entry_pickle(struct check *c, const store_key *k,
                        const store_record *r)
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
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "oob_table", "%s", why);
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
		dump_check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "out of memory disassembling the pickle");
	else if (rc != 0)
		dump_check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "malformed pickle at offset %zu: %s", in->error_pos,
		    in->error);
	else if (in->trailing > 0)
		dump_check_problem(c, c->sid, c->ss.name, k, "pickle",
		    "%zu bytes after the pickle's STOP", in->trailing);
	else if (in->nbuffers != nbuf)
		dump_check_problem(c, c->sid, c->ss.name, k, "oob_table",
		    "the pickle takes %zu out-of-band buffers, the record "
		    "holds %zu", in->nbuffers, nbuf);
	if (rc == 0)
		dump_check_entry_pickle_refs(c, k, r, in);
}

/* Bytes p[0..n) are valid UTF-8. */
static int
dump_check_entry_utf8(const uint8_t *p, size_t n)
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
dump_check_entry_record_fields(struct check *c, const store_key *k,
                               const store_record *r)
{
	if (r->pickler > STORE_PICKLER_CLOUDPICKLE)
		dump_check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "unknown pickler %u", r->pickler);
	if (r->flags & ~(STORE_FLAG_EXCINFO | STORE_FLAG_VOLATILE |
	    STORE_FLAG_OOB | STORE_FLAG_HIDDEN | STORE_FLAG_BLOB))
		dump_check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "unknown flags 0x%04x", r->flags);
	if (!dump_check_entry_utf8((const uint8_t *)r->type_name, r->type_len))
		dump_check_problem(c, c->sid, c->ss.name, k, "record_field",
		    "the type name is not UTF-8");
	if (r->flags & STORE_FLAG_VOLATILE) {
		if (!dump_check_entry_utf8(r->payload, r->payload_len))
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "record_field", "the volatile entry's reason is "
			    "not UTF-8");
		if (r->refs_len != 0 || r->flags & STORE_FLAG_OOB)
			dump_check_problem(c, c->sid, c->ss.name, k,
			    "record_field", "a volatile entry with references "
			    "or out-of-band buffers");
	}
}

/* A blob record's file must be in the blob index, or a writable open
 * would take it for an orphan and remove it. */
static void
dump_check_entry_blob_indexed(struct check *c, const uint8_t *sid,
                              const store_key *k, const store_record *r)
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
		dump_check_problem(c, sid, c->ss.name, k, "blob_row",
		    "the entry's blob file is missing from the blob index");
}

/* entry_walk callback: everything about one entry. */
int
dump_check_entry(const uint8_t *sid, const store_key *k, const uint8_t *val,
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
	dump_check_mirror(c);
	if ((c->entries & 0x3fff) == 0)
		dump_out_progress(c->d, "checked entries:", c->entries, c->total,
		    0);
	if (sid == NULL || k->kind == 0) {
		dump_check_problem(c, sid, NULL, NULL, "entry_key",
		    "an entry key of %zu bytes that does not parse "
		    "(id, 'g' name or 'h' 8-byte id)", k->name_len);
		return 0;
	}
	if (!c->have_sid || memcmp(sid, c->sid, STORE_ID_SIZE) != 0)
		dump_check_entry_enter_session(c, sid);
	if (!c->sid_exists) {
		if (++c->orphans <= CHECK_ORPHANS_SHOWN)
			dump_check_problem(c, sid, NULL, k, "orphan_entry",
			    "an entry whose session id has no session record");
		else
			c->problems++;
		return 0;
	}
	if (record_decode(val, len, &r) != 0) {
		if (record_decode_nocheck(val, len, &r) != 0)
			dump_check_problem(c, sid, c->ss.name, k,
			    "record_layout", "%s", dump_entry_layout_why(val,
			    len, why, sizeof why));
		else
			dump_check_problem(c, sid, c->ss.name, k, "digest",
			    "digest mismatch: the record's %zu bytes changed "
			    "after it was written", len);
		return 0;
	}
	dump_check_entry_record_fields(c, k, &r);
	if (r.flags & STORE_FLAG_BLOB) {
		char path[64], bwhy[300];
		store_blob_ref ref;
		const char *bad;
		int missing;

		dump_check_entry_blob_indexed(c, sid, k, &r);
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
			dump_check_problem(c, sid, c->ss.name, k, "blob", "%s",
			    bad);
			return 0;
		}
		c->bytes += r.payload_len - STORE_BLOB_REF_SIZE;
		c->blobs++;
	}
	dump_check_entry_refs_blob(c, k, &r);
	if (!(r.flags & STORE_FLAG_VOLATILE) &&
	    r.pickler != STORE_PICKLER_NONE)
		dump_check_entry_pickle(c, k, &r);
	return 0;
}

/* blob_walk callback: each row of `blobs` must be an entry's, and name
 * the file its record names. */
int
dump_check_entry_blob_row(const uint8_t *sid, const store_key *k,
                          const uint8_t *name, uint64_t size, void *arg)
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
		dump_check_problem(c, sid, NULL, NULL, "blob_row",
		    "a row of the blob index that does not parse");
		return 0;
	}
	rc = dump_entry_fetch(c->t, sid, k, &val, &len);
	if (rc == STORE_E_NOTFOUND) {
		dump_check_problem(c, sid, NULL, k, "blob_row",
		    "a blob file is noted for an entry that does not exist");
		return 0;
	}
	if (rc != 0) {
		dump_check_problem(c, sid, NULL, k, "blob_row", "the entry a "
		    "blob file is noted for cannot be read back: %s",
		    store_strerror(rc));
		return 0;
	}
	if (record_decode_nocheck(val, len, &r) != 0)
		return 0; /* the entry walk reports it */
	if (!(r.flags & STORE_FLAG_BLOB) ||
	    blob_ref_decode(r.payload, r.payload_len, &ref) != 0 ||
	    memcmp(ref.name, name, STORE_BLOB_NAME_SIZE) != 0 ||
	    ref.size != size)
		dump_check_problem(c, sid, NULL, k, "blob_row",
		    "the blob index names a file the entry's record does "
		    "not");
	return 0;
}
