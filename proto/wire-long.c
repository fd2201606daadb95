/*
 * wire-long.c - messages longer than a frame: the LONG head, PART frames,
 * and the assembly of a LONG on the receiving side.
 *
 * The frame limit guards a peer against a frame it never asked for; it is
 * not a limit on the user's data.  A message whose body would pass the
 * peer's limit, or that carries pickle protocol 5 out-of-band buffers, is
 * sent as a LONG (type and body length) and PARTs: first the body, then
 * the buffers' bytes, each from its own memory.  The receiver knows every
 * size before it allocates: LONG_LEN up front, the buffers' lengths from
 * the body's OOB fields; both are checked against its limit first.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wire.h"

/* Put a LONG head into b; see wire.h. */
void
wire_long_head(wire_buf *b, uint16_t type, uint64_t id, uint64_t body_len)
{
	wire_begin(b, WIRE_MSG_LONG, id);
	wire_put_u64(b, WIRE_TAG_LONG_TYPE, type);
	wire_put_u64(b, WIRE_TAG_LONG_LEN, body_len);
}

/* A PART's header; see wire.h. */
void
wire_part_header(uint8_t hdr[WIRE_PART_HEADER_SIZE], uint64_t id, size_t n)
{
	wire_be32_put(hdr, (uint32_t)(n + WIRE_FIELD_HEADER_SIZE));
	wire_be16_put(hdr + 4, WIRE_MSG_PART);
	wire_be16_put(hdr + 6, 0);
	wire_be64_put(hdr + 8, id);
	hdr[WIRE_HEADER_SIZE] = WIRE_TAG_DATA;
	wire_be32_put(hdr + WIRE_HEADER_SIZE + 1, (uint32_t)n);
}

/* PART data size under max_body; see wire.h. */
size_t
wire_part_size(size_t max_body)
{
	size_t n = max_body > WIRE_FIELD_HEADER_SIZE ?
	    max_body - WIRE_FIELD_HEADER_SIZE : 1;

	return n > WIRE_PART_MAX ? WIRE_PART_MAX : n;
}

/* Sum of a message's OOB fields; see wire.h. */
int
wire_oob_total(const wire_msg *m, size_t *nbufs, size_t *total)
{
	size_t i, n = 0, sum = 0;
	uint64_t v;

	for (i = 0; i < m->nfields; i++) {
		if (m->fields[i].tag != WIRE_TAG_OOB)
			continue;
		v = wire_field_u64(&m->fields[i]);
		if (v > SIZE_MAX - sum)
			return WIRE_E_TOO_BIG;
		sum += (size_t)v;
		n++;
	}
	*nbufs = n;
	*total = sum;
	return WIRE_OK;
}

/* Start a LONG; see wire.h. */
int
wire_long_begin(wire_long *l, const wire_msg *head, size_t limit,
                const char **why)
{
	uint64_t type = wire_msg_u64(head, WIRE_TAG_LONG_TYPE, 0),
	    len = wire_msg_u64(head, WIRE_TAG_LONG_LEN, 0);

	memset(l, 0, sizeof *l);
	l->id = head->id;
	l->limit = limit;
	if (type > UINT16_MAX || type == WIRE_MSG_LONG ||
	    type == WIRE_MSG_PART) {
		*why = "LONG_TYPE is not a message a LONG may carry";
		return WIRE_E_SCHEMA;
	}
	l->type = (uint16_t)type;
	/* the made-up header holds the length in 32 bits, as a field's */
	if (len > UINT32_MAX) {
		*why = "LONG_LEN is more than 4 GiB: a body's fields are at "
		    "most 4 GiB (out-of-band buffers go beyond it)";
		return WIRE_E_TOO_BIG;
	}
	if (len > limit) {
		*why = "LONG_LEN is more than this peer takes";
		return WIRE_E_TOO_BIG;
	}
	l->body_len = (size_t)len;
	if ((l->frame = malloc(WIRE_HEADER_SIZE + l->body_len)) == NULL)
		return WIRE_E_NOMEM;
	wire_be32_put(l->frame, (uint32_t)len);
	wire_be16_put(l->frame + 4, l->type);
	wire_be16_put(l->frame + 6, 0);
	wire_be64_put(l->frame + 8, l->id);
	return l->body_len == 0 ? WIRE_OK : WIRE_NEED_MORE;
}

/* Add a PART's data to the body; see wire.h. */
int
wire_long_add(wire_long *l, const uint8_t *p, size_t n, const char **why)
{
	if (n > l->body_len - l->got) {
		*why = "a PART runs past the LONG's LONG_LEN";
		return WIRE_E_SCHEMA;
	}
	if (n > 0)
		memcpy(l->frame + WIRE_HEADER_SIZE + l->got, p, n);
	l->got += n;
	return l->got == l->body_len ? WIRE_OK : WIRE_NEED_MORE;
}

/* Parse the body and note its buffers; see wire.h. */
int
wire_long_parse(wire_long *l, wire_msg *m, const char **why)
{
	size_t used, i, k = 0;
	int rc;

	rc = wire_parse(l->frame, WIRE_HEADER_SIZE + l->body_len,
	    l->body_len, m, &used);
	if (rc != WIRE_OK)
		return rc == WIRE_NEED_MORE ? WIRE_E_MALFORMED : rc;
	if (wire_oob_total(m, &l->nbufs, &l->buf_total) != WIRE_OK ||
	    l->buf_total > l->limit - l->body_len) {
		*why = "the out-of-band buffers are more than this peer takes";
		return WIRE_E_TOO_BIG;
	}
	free(l->buf_len);   /* parsed again: the same lengths */
	l->buf_len = NULL;
	if (l->nbufs == 0)
		return WIRE_OK;
	if ((l->buf_len = calloc(l->nbufs, sizeof *l->buf_len)) == NULL)
		return WIRE_E_NOMEM;
	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].tag == WIRE_TAG_OOB)
			l->buf_len[k++] = wire_field_u64(&m->fields[i]);
	return WIRE_OK;
}

/* Where the next bytes go; see wire.h. */
size_t
wire_long_want(const wire_long *l, size_t *idx, size_t *off)
{
	size_t cur = l->cur, o = l->off;

	while (cur < l->nbufs && o == l->buf_len[cur]) {
		cur++;
		o = 0;
	}
	if (cur >= l->nbufs)
		return 0;
	*idx = cur;
	*off = o;
	return (size_t)l->buf_len[cur] - o;
}

/* Advance past n bytes of buffers; see wire.h. */
void
wire_long_took(wire_long *l, size_t n)
{
	while (l->cur < l->nbufs && l->off == l->buf_len[l->cur]) {
		l->cur++;
		l->off = 0;
	}
	l->off += n;
}

/* Release a wire_long; see wire.h. */
void
wire_long_free(wire_long *l)
{
	free(l->frame);
	free(l->buf_len);
	memset(l, 0, sizeof *l);
}

/* Ask for huge pages under a large receive buffer; see wire.h. */
void
wire_mem_advise(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
	long psz = sysconf(_SC_PAGESIZE);
	uintptr_t a, b;

	if (psz <= 0 || n < WIRE_ADVISE_MIN)
		return;
	a = ((uintptr_t)p + (uintptr_t)psz - 1) & ~((uintptr_t)psz - 1);
	b = ((uintptr_t)p + n) & ~((uintptr_t)psz - 1);
	if (b > a)
		(void)madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
	(void)p;
	(void)n;
#endif
}
