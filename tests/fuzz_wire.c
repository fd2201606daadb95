/*
 * fuzz_wire.c - libFuzzer target for the wire codec (proto/wire.c).
 *
 * The input is a stream of frames.  Each frame that parses is checked
 * against its schema, read through every accessor, encoded again with
 * wire_begin/put/end and compared byte for byte with the input (the
 * encoding is canonical: one frame has one encoding), then parsed again
 * and compared field by field.  Built by `make fuzz`, run by `make
 * fuzz-run` (proto/Makefile.inc).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void fuzz_accessors(const wire_msg *);
static void fuzz_reencode(const wire_msg *, const uint8_t *, size_t);

/* Stop the fuzzer with a crash that it reports and minimises. */
#define FUZZ_ASSERT(x) do { if (!(x)) abort(); } while (0)

/* Read every field through every accessor; sanitizers watch the reads. */
static void
fuzz_accessors(const wire_msg *m)
{
	const wire_field *f, *first;
	const char *why = NULL, *name;
	volatile uint64_t sink = 0;
	size_t i;
	char *s;
	int rc;

	rc = wire_msg_check(m, &why);
	FUZZ_ASSERT(rc == WIRE_OK || rc == WIRE_E_SCHEMA ||
	    rc == WIRE_E_UNKNOWN);
	FUZZ_ASSERT((rc == WIRE_OK) == (why == NULL));
	FUZZ_ASSERT((rc == WIRE_E_UNKNOWN) == (wire_msg_name(m->type) == NULL));
	for (i = 0; i < m->nfields; i++) {
		f = &m->fields[i];
		first = wire_msg_find(m, f->tag);
		FUZZ_ASSERT(first != NULL && first <= f && first->tag == f->tag);
		sink += wire_field_u64(f);
		sink += wire_msg_u64(m, f->tag, 0);
		if ((name = wire_tag_name(f->tag)) != NULL)
			sink += (uint64_t)strlen(name);
		s = wire_field_strdup(f);
		if (s != NULL) {
			FUZZ_ASSERT(strlen(s) == f->len);
			FUZZ_ASSERT(f->len == 0 || memcmp(s, f->data, f->len) == 0);
			free(s);
		} else
			FUZZ_ASSERT(memchr(f->data, 0, f->len) != NULL);
		if (rc == WIRE_OK && f->len == 8)
			sink += (uint64_t)strlen(wire_errcode_name(
			    wire_field_u64(f)));
	}
	(void)sink;
}

/* Encode m again: the bytes must be those it was parsed from, and they
 * must parse back to the same message. */
static void
fuzz_reencode(const wire_msg *m, const uint8_t *orig, size_t n)
{
	wire_buf b;
	wire_msg m2;
	size_t i, used = 0;

	wire_buf_init(&b);
	wire_msg_init(&m2);
	wire_begin(&b, m->type, m->id);
	for (i = 0; i < m->nfields; i++)
		wire_put_bytes(&b, m->fields[i].tag, m->fields[i].data,
		    m->fields[i].len);
	FUZZ_ASSERT(wire_end(&b) == WIRE_OK);
	FUZZ_ASSERT(b.len == n && memcmp(b.data, orig, n) == 0);

	FUZZ_ASSERT(wire_parse(b.data, b.len, WIRE_DEFAULT_MAX_FRAME, &m2,
	    &used) == WIRE_OK);
	FUZZ_ASSERT(used == n && m2.type == m->type && m2.id == m->id);
	FUZZ_ASSERT(m2.flags == 0 && m2.nfields == m->nfields);
	for (i = 0; i < m->nfields; i++) {
		FUZZ_ASSERT(m2.fields[i].tag == m->fields[i].tag);
		FUZZ_ASSERT(m2.fields[i].len == m->fields[i].len);
		FUZZ_ASSERT(m->fields[i].len == 0 || memcmp(m2.fields[i].data,
		    m->fields[i].data, m->fields[i].len) == 0);
	}
	FUZZ_ASSERT(wire_msg_check(&m2, NULL) == wire_msg_check(m, NULL));
	wire_msg_free(&m2);
	wire_buf_free(&b);
}

/* Parse frames from the input until it ends or a frame is bad. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, used, fl;
	wire_msg m;
	int rc, prc;

	wire_msg_init(&m);
	while (off < size) {
		used = 0;
		prc = wire_peek(data + off, size - off, WIRE_DEFAULT_MAX_FRAME,
		    &fl);
		rc = wire_parse(data + off, size - off, WIRE_DEFAULT_MAX_FRAME,
		    &m, &used);
		FUZZ_ASSERT(rc == WIRE_OK || rc == WIRE_NEED_MORE ||
		    rc == WIRE_E_MALFORMED || rc == WIRE_E_TOO_BIG);
		if (prc != WIRE_OK)
			FUZZ_ASSERT(rc == prc);
		if (rc != WIRE_OK) {
			FUZZ_ASSERT(m.nfields == 0);
			break;
		}
		FUZZ_ASSERT(prc == WIRE_OK && used == fl);
		FUZZ_ASSERT(used >= WIRE_HEADER_SIZE && used <= size - off);
		FUZZ_ASSERT(m.nfields <= m.cap && m.cap <= WIRE_MAX_FIELDS);
		fuzz_accessors(&m);
		fuzz_reencode(&m, data + off, used);
		off += used;
	}
	wire_msg_free(&m);
	return 0;
}
