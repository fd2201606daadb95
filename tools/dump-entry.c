/*
 * dump-entry.c - one entry of a session (pyshelf-dump SESSION KEY): its
 * record header, its persistent references and whether they resolve, and a
 * disassembly of its pickle that runs nothing.  Also the record pieces the
 * other views share: fetching an entry's bytes, reading the refs blob and
 * the out-of-band buffer table, and parsing the KEY argument.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dump.h"

static int dump_entry_disassemble(struct dump *d, const store_record *r);

/* Get an entry's raw bytes (borrowed from the snapshot).  0,
 * STORE_E_NOTFOUND, STORE_E_INVAL or another store error. */
int
dump_entry_fetch(store_txn *t, const uint8_t *sid, const store_key *k,
                 const uint8_t **val, size_t *len)
{
	MDB_val mv;
	int rc;

	if ((rc = entry_value(t, sid, k->kind, k->name, k->name_len,
	    k->handle, &mv)) != 0)
		return rc;
	*val = mv.mv_data;
	*len = mv.mv_size;
	return 0;
}

/* Parse the KEY argument: "#ID" or "h:ID" is a handle, "g:NAME" or any
 * other text a global.  The name is copied into namebuf. */
int
dump_entry_parse_key(const char *arg, store_key *k, char *namebuf,
                     size_t cap)
{
	const char *num = NULL;
	char *end;
	size_t len;

	memset(k, 0, sizeof *k);
	if (arg[0] == '#')
		num = arg + 1;
	else if (strncmp(arg, "h:", 2) == 0)
		num = arg + 2;
	if (num != NULL) {
		if (*num < '0' || *num > '9')
			return -1;
		errno = 0;
		k->handle = strtoull(num, &end, 10);
		if (errno != 0 || *end != '\0')
			return -1;
		k->kind = STORE_KIND_HANDLE;
		return 0;
	}
	if (strncmp(arg, "g:", 2) == 0)
		arg += 2;
	len = strlen(arg);
	if (len == 0 || len > STORE_KEY_MAX || len >= cap)
		return -1;
	memcpy(namebuf, arg, len + 1);
	k->kind = STORE_KIND_GLOBAL;
	k->name = namebuf;
	k->name_len = len;
	return 0;
}

/* Split an OOB payload: u32 count, u64 pickle length, the buffer lengths
 * (all big-endian), the pickle, the buffers.  *why says what is wrong. */
int
dump_entry_oob_split(const uint8_t *p, size_t n, struct dump_oob *oob,
                     const char **why)
{
	uint64_t cnt, off, rest, i;

	memset(oob, 0, sizeof *oob);
	if (n < 12) {
		*why = "out-of-band table shorter than its 12-byte header";
		return -1;
	}
	cnt = be32_get(p);
	if (cnt > (n - 12) / 8) {
		*why = "out-of-band buffer count runs past the payload";
		return -1;
	}
	off = 12 + 8 * cnt;
	oob->pickle_len = (size_t)be64_get(p + 4);
	if (oob->pickle_len > n - off) {
		*why = "out-of-band pickle length runs past the payload";
		return -1;
	}
	if (cnt > 0 && (oob->lengths = malloc(cnt * 8)) == NULL) {
		*why = "out of memory";
		return -1;
	}
	rest = n - off - oob->pickle_len;
	for (i = 0; i < cnt; i++) {
		oob->lengths[i] = be64_get(p + 12 + 8 * i);
		if (oob->lengths[i] > rest) {
			*why = "out-of-band buffer lengths run past the payload";
			dump_entry_oob_free(oob);
			return -1;
		}
		rest -= oob->lengths[i];
	}
	if (rest != 0) {
		*why = "bytes after the last out-of-band buffer";
		dump_entry_oob_free(oob);
		return -1;
	}
	oob->nbuffers = (uint32_t)cnt;
	oob->pickle = p + off;
	oob->table_len = (size_t)off;
	return 0;
}

void
dump_entry_oob_free(struct dump_oob *oob)
{
	free(oob->lengths);
	oob->lengths = NULL;
}

/* Why a record's layout does not decode. */
const char *
dump_entry_layout_why(const uint8_t *p, size_t n, char *buf, size_t cap)
{
	if (n < RECORD_FIXED)
		snprintf(buf, cap, "record of %zu bytes is shorter than its "
		    "%d-byte header", n, RECORD_FIXED);
	else if (p[0] != 1)
		snprintf(buf, cap, "record version %u (this pyshelf-dump reads "
		    "version 1)", p[0]);
	else
		snprintf(buf, cap, "type name (%" PRIu32 " bytes) and refs (%"
		    PRIu32 " bytes) run past the record's %zu bytes",
		    be32_get(p + 4), be32_get(p + 32), n);
	return buf;
}

/* Print the refs blob, each with whether it resolves (text). */
static int
dump_entry_text_refs(struct dump *d, store_txn *t, const uint8_t *sid,
                     const store_record *r)
{
	store_key rk;
	size_t off = 0;
	const char *why = NULL;
	const uint8_t *v;
	char kb[STORE_KEY_MAX + 16];
	size_t vl;
	int rc, n = 0, bad = 0;

	fprintf(d->out, "refs      ");
	while ((rc = refs_blob_next(r->refs, r->refs_len, &off, &rk,
	    &why)) == 1) {
		rc = dump_entry_fetch(t, sid, &rk, &v, &vl);
		fprintf(d->out, "%s%s %s%s", n++ ? ", " : "",
		    rk.kind == STORE_KIND_GLOBAL ? "global" : "handle",
		    dump_out_key(kb, sizeof kb, &rk),
		    rc == 0 ? "" : " (MISSING: no such entry)");
		bad += rc != 0;
	}
	if (n == 0 && rc == 0)
		fprintf(d->out, "none");
	if (rc < 0) {
		fprintf(d->out, "%s(malformed: %s)", n ? " " : "", why);
		bad++;
	}
	fputc('\n', d->out);
	return bad;
}

/* The refs blob as a JSON array (under "refs"), with "resolves". */
static int
dump_entry_json_refs_resolved(struct dump *d, store_txn *t,
                              const uint8_t *sid, const store_record *r)
{
	store_key rk;
	size_t off = 0, vl;
	const char *why = NULL;
	const uint8_t *v;
	int rc, bad = 0;

	dump_json_arr(d, "refs");
	while ((rc = refs_blob_next(r->refs, r->refs_len, &off, &rk,
	    &why)) == 1) {
		dump_json_obj(d, NULL);
		dump_json_key_fields(d, &rk);
		rc = dump_entry_fetch(t, sid, &rk, &v, &vl);
		dump_json_bool(d, "resolves", rc == 0);
		dump_json_close(d, '}');
		bad += rc != 0;
	}
	dump_json_close(d, ']');
	if (rc < 0) {
		dump_json_cstr(d, "refs_error", why);
		bad++;
	} else
		dump_json_null(d, "refs_error");
	return bad;
}

/* The header as text. */
static void
dump_entry_text_header(struct dump *d, const store_session *ss,
                       const store_key *k, const store_record *r,
                       size_t len, const char *problem)
{
	char idhex[2 * STORE_ID_SIZE + 1], b1[64], b2[STORE_KEY_MAX * 4 + 16];
	char dg[2 * STORE_DIGEST_SIZE + 1];

	store_hex(ss->id, STORE_ID_SIZE, idhex);
	fprintf(d->out, "session   %s (id %s, %s)\n",
	    dump_out_text(b2, sizeof b2, ss->name, strlen(ss->name)), idhex,
	    ss->state == STORE_STATE_LIVE ? "live" : "dead");
	fprintf(d->out, "entry     %s %s\n", k->kind == STORE_KIND_GLOBAL ?
	    "global" : "handle", dump_out_key(b2, sizeof b2, k));
	fprintf(d->out, "type      %s\n",
	    dump_out_text(b2, sizeof b2, r->type_name, r->type_len));
	fprintf(d->out, "pickler   %s\n", dump_out_pickler(r->pickler));
	fprintf(d->out, "flags     %s\n", dump_out_flags(b1, sizeof b1,
	    r->flags));
	fprintf(d->out, "written   %s\n", dump_out_time(b1, sizeof b1,
	    r->time_ms));
	fprintf(d->out, "size      %zu bytes (header %d, type name %" PRIu32
	    ", refs %" PRIu32 ", payload %zu)\n", len, RECORD_FIXED,
	    r->type_len, r->refs_len, r->payload_len);
	if (d->blob != NULL)
		fprintf(d->out, "blob      %s (the payload's file)\n", d->blob);
	store_hex(r->digest, STORE_DIGEST_SIZE, dg);
	fprintf(d->out, "digest    %s (%s)\n", dg, problem == NULL ? "ok" :
	    "MISMATCH: the record is damaged");
}

/* The header as a JSON row "entry" (refs added by the caller). */
static void
dump_entry_json_header(struct dump *d, const store_session *ss,
                       const store_key *k, const store_record *r,
                       size_t len, const char *problem)
{
	char idhex[2 * STORE_ID_SIZE + 1], dg[2 * STORE_DIGEST_SIZE + 1];

	store_hex(ss->id, STORE_ID_SIZE, idhex);
	store_hex(r->digest, STORE_DIGEST_SIZE, dg);
	dump_json_row(d, "entry");
	dump_json_cstr(d, "session", ss->name);
	dump_json_cstr(d, "session_id", idhex);
	dump_json_key_fields(d, k);
	dump_json_str(d, "type", r->type_name, r->type_len);
	dump_json_u64(d, "size", len);
	dump_json_u64(d, "payload_size", r->payload_len);
	dump_json_u64(d, "time_ms", r->time_ms);
	dump_json_cstr(d, "pickler", dump_out_pickler(r->pickler));
	dump_json_u64(d, "flags", r->flags);
	dump_json_bool(d, "volatile", r->flags & STORE_FLAG_VOLATILE);
	if (r->flags & STORE_FLAG_VOLATILE)
		dump_json_str(d, "reason", r->payload, r->payload_len);
	else
		dump_json_null(d, "reason");
	dump_json_bool(d, "excinfo", r->flags & STORE_FLAG_EXCINFO);
	dump_json_bool(d, "oob", r->flags & STORE_FLAG_OOB);
	dump_json_bool(d, "hidden", r->flags & STORE_FLAG_HIDDEN);
	dump_json_cstr(d, "blob", d->blob);
	dump_json_cstr(d, "digest", dg);
	dump_json_bool(d, "digest_ok", problem == NULL);
	dump_json_cstr(d, "problem", problem);
}

/* A record whose layout does not decode: say so, with its first bytes. */
static int
dump_entry_undecodable(struct dump *d, const store_session *ss,
                       const store_key *k, const uint8_t *val, size_t len)
{
	char why[160], hex[2 * 48 + 1], kb[STORE_KEY_MAX * 4 + 16];
	char idhex[2 * STORE_ID_SIZE + 1];

	d->damaged++;
	dump_entry_layout_why(val, len, why, sizeof why);
	store_hex(val, len < 48 ? len : 48, hex);
	store_hex(ss->id, STORE_ID_SIZE, idhex);
	if (d->o->json) {
		dump_json_row(d, "entry");
		dump_json_cstr(d, "session", ss->name);
		dump_json_cstr(d, "session_id", idhex);
		dump_json_key_fields(d, k);
		dump_json_u64(d, "size", len);
		dump_json_cstr(d, "problem", why);
		dump_json_cstr(d, "head_hex", hex);
		dump_json_row_end(d);
	} else {
		fprintf(d->out, "session   %s (id %s)\nentry     %s\n",
		    ss->name, idhex, dump_out_key(kb, sizeof kb, k));
		fprintf(d->out, "DAMAGED   %s\nfirst bytes %s%s\n", why, hex,
		    len > 48 ? "..." : "");
	}
	dump_warn("session %s, %s: damaged record: %s", ss->name,
	    dump_out_key(kb, sizeof kb, k), why);
	return DUMP_EXIT_DAMAGE;
}

/* Keep a copy of the payload for --unpickle (run after the snapshot). */
static void
dump_entry_keep_payload(struct dump *d, const store_record *r,
                        const char *problem)
{
	if (!d->o->unpickle)
		return;
	if (problem != NULL) {
		dump_warn("not unpickling a damaged record");
		return;
	}
	if (r->flags & STORE_FLAG_VOLATILE || r->pickler ==
	    STORE_PICKLER_NONE) {
		dump_warn("nothing to unpickle: the entry holds no pickle");
		return;
	}
	if ((d->payload = malloc(r->payload_len ? r->payload_len : 1)) == NULL) {
		dump_warn("out of memory copying the payload");
		return;
	}
	memcpy(d->payload, r->payload, r->payload_len);
	d->payload_len = r->payload_len;
	d->payload_flags = r->flags;
	d->want_unpickle = 1;
}

/* Resolve a blob record, naming what is wrong with its file. */
const char *
dump_entry_blob(store_txn *t, store_record *r, char *path, size_t pathcap,
                char *why, size_t whycap, int *missing)
{
	char hex[2 * STORE_BLOB_NAME_SIZE + 1];
	store_blob_ref ref;
	enum blob_why bw;
	uint64_t fsize;
	int rc;

	snprintf(path, pathcap, "?");
	if (missing != NULL)
		*missing = 0;
	if (blob_ref_decode(r->payload, r->payload_len, &ref) != 0) {
		snprintf(why, whycap, "a blob record whose reference is %zu "
		    "bytes, not %d", r->payload_len, STORE_BLOB_REF_SIZE);
		return why;
	}
	store_hex(ref.name, STORE_BLOB_NAME_SIZE, hex);
	snprintf(path, pathcap, "blobs/%s", hex);
	/* one open, then the descriptor: a file a newer commit unlinks
	 * between two steps would otherwise be taken for a damaged one */
	rc = blob_resolve(t, r, 1, &bw, &fsize);
	if (rc == 0)
		return NULL;
	switch (bw) {
	case BLOB_WHY_MISSING:
		if (missing != NULL)
			*missing = 1;
		snprintf(why, whycap, "its blob file %s: %s", path,
		    strerror(ENOENT));
		break;
	case BLOB_WHY_SIZE:
		snprintf(why, whycap, "its blob file %s is %" PRIu64 " bytes, "
		    "not %" PRIu64 " (damaged)", path, fsize, ref.size);
		break;
	case BLOB_WHY_DIGEST:
		snprintf(why, whycap, "its blob file %s does not match its "
		    "digest: the file changed after it was written (damaged)",
		    path);
		break;
	default:
		snprintf(why, whycap, "reading its blob file %s: %s", path,
		    rc == STORE_E_IO ? strerror(errno) : store_strerror(rc));
		break;
	}
	return why;
}

/* pyshelf-dump SESSION KEY. */
int
dump_entry_show(struct dump *d, store_txn *t, const store_session *ss,
                const char *keyarg)
{
	char namebuf[STORE_KEY_MAX + 1], kb[STORE_KEY_MAX * 4 + 16];
	char blobpath[64], blobwhy[300];
	const char *problem = NULL, *blobproblem = NULL;
	const uint8_t *val;
	store_record r;
	store_key k;
	size_t len;
	int rc, bad;

	if (dump_entry_parse_key(keyarg, &k, namebuf, sizeof namebuf) != 0) {
		dump_warn("bad KEY '%s': give a global's name, or #ID (or h:ID) "
		    "for a handle", keyarg);
		return DUMP_EXIT_ERROR;
	}
	if ((rc = dump_entry_fetch(t, ss->id, &k, &val, &len)) != 0) {
		if (rc == STORE_E_NOTFOUND)
			dump_warn("session %s has no %s %s", ss->name,
			    k.kind == STORE_KIND_GLOBAL ? "global" : "handle",
			    dump_out_key(kb, sizeof kb, &k));
		else
			dump_warn("reading %s: %s", keyarg, store_strerror(rc));
		return DUMP_EXIT_ERROR;
	}
	if (record_decode(val, len, &r) != 0) {
		if (record_decode_nocheck(val, len, &r) != 0)
			return dump_entry_undecodable(d, ss, &k, val, len);
		problem = "digest mismatch: the record changed after it was "
		    "written (damaged)";
		d->damaged++;
		dump_warn("session %s, %s: %s", ss->name,
		    dump_out_key(kb, sizeof kb, &k), problem);
	} else if (r.flags & STORE_FLAG_BLOB) {
		d->blob = blobpath;
		if ((blobproblem = dump_entry_blob(t, &r, blobpath,
		    sizeof blobpath, blobwhy, sizeof blobwhy, NULL)) != NULL) {
			problem = blobproblem;
			d->damaged++;
			dump_warn("session %s, %s: %s", ss->name,
			    dump_out_key(kb, sizeof kb, &k), problem);
		}
	}
	if (d->o->json) {
		dump_entry_json_header(d, ss, &k, &r, len, problem);
		bad = dump_entry_json_refs_resolved(d, t, ss->id, &r);
		dump_json_row_end(d);
	} else {
		dump_entry_text_header(d, ss, &k, &r, len, problem);
		bad = dump_entry_text_refs(d, t, ss->id, &r);
	}
	if (bad > 0) {
		d->damaged++;
		dump_warn("session %s, %s: %d reference%s do not resolve",
		    ss->name, dump_out_key(kb, sizeof kb, &k), bad,
		    bad == 1 ? "" : "s");
	}
	if (blobproblem != NULL) /* no payload to show */
		return DUMP_EXIT_DAMAGE;
	if ((rc = dump_entry_disassemble(d, &r)) != 0)
		return rc;
	dump_entry_keep_payload(d, &r, problem);
	return d->damaged > 0 ? DUMP_EXIT_DAMAGE : DUMP_EXIT_OK;
}

/* --- the disassembly ------------------------------------------------------ */

/* One opcode, as a text line or a JSON row "op". */
static int
dump_entry_op(const struct pickledis_op *op, void *arg)
{
	struct dump *d = arg;
	char code[8];

	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	if (d->o->json) {
		dump_json_row(d, "op");
		dump_json_u64(d, "pos", op->pos);
		dump_json_u64(d, "code", op->code);
		dump_json_cstr(d, "op", op->name);
		dump_json_u64(d, "depth", op->depth);
		dump_json_cstr(d, "arg", op->arg[0] ? op->arg : NULL);
		dump_json_cstr(d, "note", op->note[0] ? op->note : NULL);
		dump_json_row_end(d);
		return 0;
	}
	if (op->code >= 0x20 && op->code < 0x7f)
		snprintf(code, sizeof code, "%c", op->code);
	else
		snprintf(code, sizeof code, "\\x%02x", op->code);
	fprintf(d->out, "%8zu: %-4s %*s%-*s", op->pos, code,
	    (int)(op->depth > 16 ? 32 : 2 * op->depth), "",
	    op->arg[0] || op->note[0] ? 16 : 0, op->name);
	if (op->arg[0])
		fprintf(d->out, " %s", op->arg);
	if (op->note[0])
		fprintf(d->out, "    # %s", op->note);
	fputc('\n', d->out);
	return 0;
}

/* The findings after the opcodes: text. */
static void
dump_entry_text_summary(struct dump *d, const struct pickledis_info *in,
                        int rc)
{
	char a[200], b[200];
	size_t i;

	fprintf(d->out, "\npickle    protocol %d, %zu opcodes, %zu bytes%s\n",
	    in->protocol, in->nops, in->size, rc == 0 ? ", well formed" : "");
	if (in->error != NULL)
		fprintf(d->out, "MALFORMED at offset %zu: %s\n", in->error_pos,
		    in->error);
	if (in->trailing > 0)
		fprintf(d->out, "trailing  %zu bytes after STOP\n", in->trailing);
	fprintf(d->out, "loads     ");
	for (i = 0; i < in->nnames; i++)
		fprintf(d->out, "%s%s.%s", i ? ", " : "",
		    dump_out_text(a, sizeof a, in->names[i].module,
		    in->names[i].module_len), dump_out_text(b, sizeof b,
		    in->names[i].name, in->names[i].name_len));
	fprintf(d->out, "%s\nrefers    ", in->nnames ? "" : "nothing by name");
	for (i = 0; i < in->nrefs; i++) {
		const struct pickledis_ref *r = &in->refs[i];
		if (r->kind == 'h')
			fprintf(d->out, "%shandle #%" PRIu64, i ? ", " : "",
			    r->handle);
		else
			fprintf(d->out, "%s%s %s", i ? ", " : "", r->kind == 'g' ?
			    "global" : "pid", pickledis_repr(a, sizeof a,
			    r->name, r->name_len, 1, 100));
		if (r->count > 1)
			fprintf(d->out, " (%zu times)", r->count);
	}
	fprintf(d->out, "%s\n", in->nrefs ? "" : "no other entry");
	if (in->nbuffers > 0)
		fprintf(d->out, "buffers   %zu out-of-band\n", in->nbuffers);
}

/* The findings after the opcodes: a JSON row "pickle". */
static void
dump_entry_json_summary(struct dump *d, const struct pickledis_info *in,
                        int rc)
{
	size_t i;

	dump_json_row(d, "pickle");
	dump_json_u64(d, "protocol", (uint64_t)in->protocol);
	dump_json_u64(d, "ops", in->nops);
	dump_json_u64(d, "size", in->size);
	dump_json_u64(d, "trailing", in->trailing);
	dump_json_u64(d, "buffers", in->nbuffers);
	dump_json_bool(d, "well_formed", rc == 0);
	dump_json_cstr(d, "error", in->error);
	if (in->error != NULL)
		dump_json_u64(d, "error_pos", in->error_pos);
	else
		dump_json_null(d, "error_pos");
	dump_json_arr(d, "names");
	for (i = 0; i < in->nnames; i++) {
		dump_json_obj(d, NULL);
		dump_json_str(d, "module", in->names[i].module,
		    in->names[i].module_len);
		dump_json_str(d, "name", in->names[i].name,
		    in->names[i].name_len);
		dump_json_close(d, '}');
	}
	dump_json_close(d, ']');
	dump_json_arr(d, "refs");
	for (i = 0; i < in->nrefs; i++) {
		const struct pickledis_ref *r = &in->refs[i];
		store_key k = {r->kind, (const char *)r->name, r->name_len,
		    r->handle, 0};
		dump_json_obj(d, NULL);
		dump_json_key_fields(d, &k);
		if (r->kind == 0)
			dump_json_str(d, "pid", r->name != NULL ? r->name :
			    (const uint8_t *)"", r->name_len);
		dump_json_u64(d, "count", r->count);
		dump_json_close(d, '}');
	}
	dump_json_close(d, ']');
	dump_json_row_end(d);
}

/* The payload: a volatile entry's reason, raw bytes, or the pickle's
 * opcodes and findings. */
static int
dump_entry_disassemble(struct dump *d, const store_record *r)
{
	struct dump_oob oob;
	const uint8_t *pk = r->payload;
	size_t pklen = r->payload_len;
	const char *why = NULL;
	char buf[1200];
	int rc;

	memset(&oob, 0, sizeof oob);
	if (r->flags & STORE_FLAG_VOLATILE) {
		if (!d->o->json)
			fprintf(d->out, "volatile  not persisted: %s\n",
			    dump_out_text(buf, sizeof buf, r->payload,
			    r->payload_len));
		return 0;
	}
	if (r->pickler == STORE_PICKLER_NONE) {
		if (d->o->json) {
			dump_json_row(d, "raw");
			dump_json_str(d, "text", r->payload, r->payload_len);
			dump_json_row_end(d);
		} else
			fprintf(d->out, "payload   %s\n", pickledis_repr(buf,
			    sizeof buf, r->payload, r->payload_len, 0, 1000));
		return 0;
	}
	if (r->flags & STORE_FLAG_OOB) {
		if (dump_entry_oob_split(r->payload, r->payload_len, &oob,
		    &why) != 0) {
			d->damaged++;
			dump_warn("the payload's %s", why);
			if (!d->o->json)
				fprintf(d->out, "oob       MALFORMED: %s\n", why);
			return DUMP_EXIT_DAMAGE;
		}
		pk = oob.pickle;
		pklen = oob.pickle_len;
		if (!d->o->json) {
			uint32_t i;
			fprintf(d->out, "oob       %" PRIu32 " buffer%s:",
			    oob.nbuffers, oob.nbuffers == 1 ? "" : "s");
			for (i = 0; i < oob.nbuffers; i++)
				fprintf(d->out, "%s %" PRIu64 " B", i ? "," : "",
				    oob.lengths[i]);
			fprintf(d->out, " (pickle %zu B)\n", pklen);
		}
	}
	if (!d->o->json)
		fprintf(d->out, "\ndisassembly (nothing was run):\n");
	rc = pickledis_run(d->pd, pk, pklen, oob.lengths, r->flags &
	    STORE_FLAG_OOB ? oob.nbuffers : (size_t)0, dump_entry_op, d);
	dump_entry_oob_free(&oob);
	if (rc > 0)
		return rc;  /* interrupted */
	if (rc == PICKLEDIS_E_NOMEM) {
		dump_warn("out of memory disassembling");
		return DUMP_EXIT_ERROR;
	}
	if (d->o->json)
		dump_entry_json_summary(d, pickledis_info(d->pd), rc);
	else
		dump_entry_text_summary(d, pickledis_info(d->pd), rc);
	if (rc != 0 || pickledis_info(d->pd)->trailing > 0)
		d->damaged++;
	return 0;
}
