/*
 * wire.c - encoding, parsing and schema checks of pyshelf frames.
 *
 * Building: a wire_buf holds any number of frames back to back; the frame
 * being built starts at b->start, and its body length is written by
 * wire_end() once all fields are in.  Errors while building are sticky so
 * a caller checks only the result of wire_end().
 *
 * Parsing: wire_peek() reads the fixed header without allocating, and
 * wire_parse() walks the fields twice, first to check every length and
 * count them, then, with the fields array grown to fit, to record them.
 * Nothing is allocated before every length in the frame has been checked.
 *
 * Schemas: one static table entry per message type with bitmasks of
 * required, allowed and repeatable tags, and one table of per-tag kinds
 * (u64, string, fixed-size bytes) shared by all messages.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* No frame is being built in a wire_buf. */
#define WIRE_NO_FRAME SIZE_MAX
/* First allocation of a wire_buf and of a message's fields array. */
#define WIRE_BUF_MIN 256
#define WIRE_FIELDS_MIN 16

/* How the bytes of a field are checked by wire_msg_check(). */
enum wire_tag_kind {
	TK_BYTES = 0,  /* anything, any length */
	TK_U64,        /* exactly 8 bytes, big-endian */
	TK_STR,        /* UTF-8 without NUL */
	TK_FIXED16,    /* exactly 16 bytes */
	TK_FIXED32     /* exactly 32 bytes */
};

/* One tag: its name and how its bytes are checked. */
struct wire_tag_info {
	const char *name;         /* "VERSION"; NULL for an unassigned tag */
	enum wire_tag_kind kind;  /* TK_* */
};

/* One message type: its name and which tags it may carry. */
struct wire_schema {
	uint16_t type;            /* WIRE_MSG_* */
	const char *name;         /* "HELLO" */
	uint64_t required;        /* bit t: tag t must be present */
	uint64_t allowed;         /* bit t: tag t may be present */
	uint64_t repeatable;      /* bit t: tag t may appear more than once */
};

static int wire_buf_grow(wire_buf *, size_t);
static uint8_t *wire_put_field(wire_buf *, uint8_t, size_t);
static int wire_parse_count(const uint8_t *, size_t, size_t *);
static int wire_msg_reserve(wire_msg *, size_t);
static const struct wire_schema *wire_schema_find(uint16_t);
static int wire_field_check(const wire_field *, const char **);

#define T(t) ((uint64_t)1 << (t))

static const struct wire_tag_info wire_tags[64] = {
	[WIRE_TAG_VERSION] = { "VERSION", TK_U64 },
	[WIRE_TAG_NAME] = { "NAME", TK_STR },
	[WIRE_TAG_SESSION_ID] = { "SESSION_ID", TK_FIXED16 },
	[WIRE_TAG_TOKEN] = { "TOKEN", TK_FIXED32 },
	[WIRE_TAG_CREATE] = { "CREATE", TK_U64 },
	[WIRE_TAG_CODE] = { "CODE", TK_STR },
	[WIRE_TAG_FUNC] = { "FUNC", TK_STR },
	[WIRE_TAG_ARG_HANDLE] = { "ARG_HANDLE", TK_U64 },
	[WIRE_TAG_ARG_PICKLE] = { "ARG_PICKLE", TK_BYTES },
	[WIRE_TAG_WANT_VALUE] = { "WANT_VALUE", TK_U64 },
	[WIRE_TAG_TIMEOUT_MS] = { "TIMEOUT_MS", TK_U64 },
	[WIRE_TAG_KIND] = { "KIND", TK_U64 },
	[WIRE_TAG_HANDLE] = { "HANDLE", TK_U64 },
	[WIRE_TAG_TYPE_NAME] = { "TYPE_NAME", TK_STR },
	[WIRE_TAG_EXC_TYPE] = { "EXC_TYPE", TK_STR },
	[WIRE_TAG_MESSAGE] = { "MESSAGE", TK_STR },
	[WIRE_TAG_VALUE] = { "VALUE", TK_BYTES },
	[WIRE_TAG_STREAM] = { "STREAM", TK_U64 },
	[WIRE_TAG_DATA] = { "DATA", TK_BYTES },
	[WIRE_TAG_ERRCODE] = { "ERRCODE", TK_U64 },
	[WIRE_TAG_KEY] = { "KEY", TK_STR },
	[WIRE_TAG_VOLATILE] = { "VOLATILE", TK_STR },
	[WIRE_TAG_PID] = { "PID", TK_U64 },
	[WIRE_TAG_MAX_FRAME] = { "MAX_FRAME", TK_U64 },
	[WIRE_TAG_SESSION] = { "SESSION", TK_STR },
	[WIRE_TAG_CREATED] = { "CREATED", TK_U64 },
	[WIRE_TAG_NONCE] = { "NONCE", TK_FIXED32 },
	[WIRE_TAG_MAC] = { "MAC", TK_FIXED32 },
	[WIRE_TAG_LEASE_MS] = { "LEASE_MS", TK_U64 },
	[WIRE_TAG_EXPIRES_MS] = { "EXPIRES_MS", TK_U64 },
	[WIRE_TAG_ENDED_MS] = { "ENDED_MS", TK_U64 },
	[WIRE_TAG_REASON] = { "REASON", TK_STR },
	[WIRE_TAG_CALL_ID] = { "CALL_ID", TK_FIXED16 },
	[WIRE_TAG_MODE] = { "MODE", TK_STR },
	[WIRE_TAG_HARD] = { "HARD", TK_U64 },
	[WIRE_TAG_WAIT] = { "WAIT", TK_U64 },
	[WIRE_TAG_SIGNAL] = { "SIGNAL", TK_U64 },
	[WIRE_TAG_LONG_TYPE] = { "LONG_TYPE", TK_U64 },
	[WIRE_TAG_LONG_LEN] = { "LONG_LEN", TK_U64 },
	[WIRE_TAG_OOB] = { "OOB", TK_U64 },
	[WIRE_TAG_OOB_OK] = { "OOB_OK", TK_U64 },
	[WIRE_TAG_QUERY] = { "QUERY", TK_U64 },
};

/* The messages of wire.h, field for field: required, allowed, repeatable. */
static const struct wire_schema wire_schemas[] = {
	{ WIRE_MSG_HELLO, "HELLO", T(WIRE_TAG_VERSION),
	  T(WIRE_TAG_VERSION) | T(WIRE_TAG_NAME), 0 },
	/* Only VERSION is required so that a client can always tell which
	 * version answered; the server sends NAME, PID and MAX_FRAME too. */
	{ WIRE_MSG_WELCOME, "WELCOME", T(WIRE_TAG_VERSION),
	  T(WIRE_TAG_VERSION) | T(WIRE_TAG_NAME) | T(WIRE_TAG_PID) |
	  T(WIRE_TAG_MAX_FRAME) | T(WIRE_TAG_SESSION_ID) |
	  T(WIRE_TAG_SESSION) | T(WIRE_TAG_CREATED) | T(WIRE_TAG_NONCE) |
	  T(WIRE_TAG_LEASE_MS) | T(WIRE_TAG_EXPIRES_MS) | T(WIRE_TAG_ENDED_MS) |
	  T(WIRE_TAG_REASON) | T(WIRE_TAG_MESSAGE), 0 },
	{ WIRE_MSG_AUTH, "AUTH", T(WIRE_TAG_MAC), T(WIRE_TAG_MAC), 0 },
	{ WIRE_MSG_ATTACH, "ATTACH", T(WIRE_TAG_SESSION),
	  T(WIRE_TAG_SESSION) | T(WIRE_TAG_TOKEN) | T(WIRE_TAG_CREATE) |
	  T(WIRE_TAG_MODE) | T(WIRE_TAG_LEASE_MS), 0 },
	{ WIRE_MSG_ATTACHED, "ATTACHED",
	  T(WIRE_TAG_SESSION_ID) | T(WIRE_TAG_SESSION) | T(WIRE_TAG_CREATED),
	  T(WIRE_TAG_SESSION_ID) | T(WIRE_TAG_SESSION) | T(WIRE_TAG_CREATED) |
	  T(WIRE_TAG_TOKEN) | T(WIRE_TAG_PID) | T(WIRE_TAG_MAX_FRAME) |
	  T(WIRE_TAG_LEASE_MS) | T(WIRE_TAG_EXPIRES_MS) | T(WIRE_TAG_ENDED_MS) |
	  T(WIRE_TAG_REASON) | T(WIRE_TAG_MESSAGE) | T(WIRE_TAG_SIGNAL), 0 },
	{ WIRE_MSG_PIPES, "PIPES", 0, 0, 0 },
	{ WIRE_MSG_EXEC, "EXEC", T(WIRE_TAG_CODE),
	  T(WIRE_TAG_CODE) | T(WIRE_TAG_FUNC) | T(WIRE_TAG_ARG_HANDLE) |
	  T(WIRE_TAG_ARG_PICKLE) | T(WIRE_TAG_WANT_VALUE) |
	  T(WIRE_TAG_TIMEOUT_MS) | T(WIRE_TAG_CALL_ID) | T(WIRE_TAG_OOB) |
	  T(WIRE_TAG_OOB_OK),
	  T(WIRE_TAG_ARG_HANDLE) | T(WIRE_TAG_ARG_PICKLE) | T(WIRE_TAG_OOB) },
	{ WIRE_MSG_RESULT, "RESULT", T(WIRE_TAG_KIND),
	  T(WIRE_TAG_KIND) | T(WIRE_TAG_HANDLE) | T(WIRE_TAG_TYPE_NAME) |
	  T(WIRE_TAG_EXC_TYPE) | T(WIRE_TAG_MESSAGE) | T(WIRE_TAG_VALUE) |
	  T(WIRE_TAG_VOLATILE) | T(WIRE_TAG_CALL_ID) | T(WIRE_TAG_OOB),
	  T(WIRE_TAG_OOB) },
	{ WIRE_MSG_OUTPUT, "OUTPUT", T(WIRE_TAG_STREAM) | T(WIRE_TAG_DATA),
	  T(WIRE_TAG_STREAM) | T(WIRE_TAG_DATA), 0 },
	{ WIRE_MSG_INTERRUPT, "INTERRUPT", 0, T(WIRE_TAG_HARD), 0 },
	{ WIRE_MSG_RELEASE, "RELEASE", 0, T(WIRE_TAG_HANDLE),
	  T(WIRE_TAG_HANDLE) },
	{ WIRE_MSG_CALLS, "CALLS", 0, 0, 0 },
	{ WIRE_MSG_CALL_RESULT, "CALL_RESULT", T(WIRE_TAG_CALL_ID),
	  T(WIRE_TAG_CALL_ID) | T(WIRE_TAG_WAIT) | T(WIRE_TAG_OOB_OK), 0 },
	{ WIRE_MSG_GET, "GET", T(WIRE_TAG_KEY),
	  T(WIRE_TAG_KEY) | T(WIRE_TAG_WANT_VALUE) | T(WIRE_TAG_OOB_OK), 0 },
	{ WIRE_MSG_SET, "SET", T(WIRE_TAG_KEY) | T(WIRE_TAG_VALUE),
	  T(WIRE_TAG_KEY) | T(WIRE_TAG_VALUE) | T(WIRE_TAG_OOB),
	  T(WIRE_TAG_OOB) },
	{ WIRE_MSG_DEL, "DEL", T(WIRE_TAG_KEY), T(WIRE_TAG_KEY), 0 },
	{ WIRE_MSG_KEYS, "KEYS", 0, 0, 0 },
	{ WIRE_MSG_HANDLES, "HANDLES", 0, 0, 0 },
	{ WIRE_MSG_LOST, "LOST", 0, 0, 0 },
	{ WIRE_MSG_LONG, "LONG", T(WIRE_TAG_LONG_TYPE) | T(WIRE_TAG_LONG_LEN),
	  T(WIRE_TAG_LONG_TYPE) | T(WIRE_TAG_LONG_LEN), 0 },
	{ WIRE_MSG_PART, "PART", T(WIRE_TAG_DATA), T(WIRE_TAG_DATA), 0 },
	{ WIRE_MSG_SYNC, "SYNC", 0, 0, 0 },
	{ WIRE_MSG_DETACH, "DETACH", 0, 0, 0 },
	{ WIRE_MSG_CLOSE, "CLOSE", 0, 0, 0 },
	{ WIRE_MSG_STATS, "STATS", 0, 0, 0 },
	{ WIRE_MSG_PING, "PING", 0, 0, 0 },
	{ WIRE_MSG_PONG, "PONG", 0, 0, 0 },
	{ WIRE_MSG_END_SESSION, "END_SESSION", T(WIRE_TAG_SESSION),
	  T(WIRE_TAG_SESSION), 0 },
	{ WIRE_MSG_SET_LEASE, "SET_LEASE", T(WIRE_TAG_LEASE_MS),
	  T(WIRE_TAG_LEASE_MS), 0 },
	{ WIRE_MSG_OK, "OK", 0, T(WIRE_TAG_LEASE_MS) | T(WIRE_TAG_EXPIRES_MS) |
	  T(WIRE_TAG_ENDED_MS) | T(WIRE_TAG_REASON), 0 },
	{ WIRE_MSG_SESSIONS, "SESSIONS", 0, 0, 0 },
	{ WIRE_MSG_LISTING, "LISTING", 0,
	  T(WIRE_TAG_KEY) | T(WIRE_TAG_HANDLE) | T(WIRE_TAG_TYPE_NAME) |
	  T(WIRE_TAG_EXC_TYPE) | T(WIRE_TAG_MESSAGE) | T(WIRE_TAG_DATA),
	  T(WIRE_TAG_KEY) | T(WIRE_TAG_HANDLE) | T(WIRE_TAG_TYPE_NAME) |
	  T(WIRE_TAG_EXC_TYPE) | T(WIRE_TAG_MESSAGE) | T(WIRE_TAG_DATA) },
	{ WIRE_MSG_ERROR, "ERROR", T(WIRE_TAG_ERRCODE) | T(WIRE_TAG_MESSAGE),
	  T(WIRE_TAG_ERRCODE) | T(WIRE_TAG_MESSAGE) | T(WIRE_TAG_PID) |
	  T(WIRE_TAG_ENDED_MS) | T(WIRE_TAG_REASON) | T(WIRE_TAG_SIGNAL), 0 },
	{ WIRE_MSG_CTL_CONN, "CTL_CONN", T(WIRE_TAG_DATA),
	  T(WIRE_TAG_DATA) | T(WIRE_TAG_PID) | T(WIRE_TAG_SIGNAL) |
	  T(WIRE_TAG_MESSAGE), 0 },
	{ WIRE_MSG_CTL_READY, "CTL_READY",
	  T(WIRE_TAG_PID) | T(WIRE_TAG_SESSION_ID) | T(WIRE_TAG_SESSION),
	  T(WIRE_TAG_PID) | T(WIRE_TAG_SESSION_ID) | T(WIRE_TAG_SESSION), 0 },
	{ WIRE_MSG_CTL_STATE, "CTL_STATE", T(WIRE_TAG_DATA), T(WIRE_TAG_DATA),
	  0 },
	{ WIRE_MSG_CTL_IDLE, "CTL_IDLE", 0, 0, 0 },
	{ WIRE_MSG_CTL_IDLE_OK, "CTL_IDLE_OK", 0, 0, 0 },
	{ WIRE_MSG_CTL_ENDED, "CTL_ENDED", 0, 0, 0 },
	{ WIRE_MSG_CTL_QUERY, "CTL_QUERY", T(WIRE_TAG_QUERY), T(WIRE_TAG_QUERY),
	  0 },
	{ WIRE_MSG_CTL_STOP, "CTL_STOP", 0, 0, 0 },
};

/* Names of WIRE_ERR_*, indexed by code. */
static const char *const wire_errcode_names[] = {
	[WIRE_ERR_MALFORMED] = "MALFORMED",
	[WIRE_ERR_TOO_BIG] = "TOO_BIG",
	[WIRE_ERR_UNKNOWN_TYPE] = "UNKNOWN_TYPE",
	[WIRE_ERR_VERSION] = "VERSION",
	[WIRE_ERR_AUTH] = "AUTH",
	[WIRE_ERR_NO_SESSION] = "NO_SESSION",
	[WIRE_ERR_SESSION_DEAD] = "SESSION_DEAD",
	[WIRE_ERR_UNKNOWN_HANDLE] = "UNKNOWN_HANDLE",
	[WIRE_ERR_UNPICKLE] = "UNPICKLE",
	[WIRE_ERR_PICKLE] = "PICKLE",
	[WIRE_ERR_NOT_FOUND] = "NOT_FOUND",
	[WIRE_ERR_STORE] = "STORE",
	[WIRE_ERR_VOLATILE] = "VOLATILE",
	[WIRE_ERR_INTERNAL] = "INTERNAL",
	[WIRE_ERR_BAD_REQUEST] = "BAD_REQUEST",
	[WIRE_ERR_SESSION_BUSY] = "SESSION_BUSY",
	[WIRE_ERR_USAGE] = "USAGE",
	[WIRE_ERR_READ_ONLY] = "READ_ONLY",
	[WIRE_ERR_UNKNOWN_CALL] = "UNKNOWN_CALL",
	[WIRE_ERR_WORKER_DIED] = "WORKER_DIED",
	[WIRE_ERR_WORKER_RESTARTED] = "WORKER_RESTARTED",
};

/* Return a static English message for a WIRE_* result code. */
const char *
wire_strerror(int rc)
{
	switch (rc) {
	case WIRE_OK:
		return "success";
	case WIRE_NEED_MORE:
		return "frame incomplete, more bytes needed";
	case WIRE_E_MALFORMED:
		return "malformed frame";
	case WIRE_E_TOO_BIG:
		return "frame larger than the limit";
	case WIRE_E_NOMEM:
		return "out of memory";
	case WIRE_E_SCHEMA:
		return "message breaks its schema";
	case WIRE_E_UNKNOWN:
		return "unknown message type";
	case WIRE_E_IO:
		return "read or write failed";
	case WIRE_E_EOF:
		return "peer closed the connection";
	case WIRE_E_TIMEOUT:
		return "timed out waiting for a frame";
	case WIRE_E_TRUNCATED:
		return "peer closed the connection in the middle of a frame";
	}
	return "unknown wire error";
}

/* Return the schema of a message type, or NULL when the type is unknown. */
static const struct wire_schema *
wire_schema_find(uint16_t type)
{
	size_t i;

	for (i = 0; i < sizeof wire_schemas / sizeof wire_schemas[0]; i++) {
		if (wire_schemas[i].type == type)
			return &wire_schemas[i];
	}
	return NULL;
}

/* Return a static name for a message type ("EXEC") or NULL if unknown. */
const char *
wire_msg_name(uint16_t type)
{
	const struct wire_schema *s = wire_schema_find(type);

	return s != NULL ? s->name : NULL;
}

/* Return a static name for a field tag ("CODE") or NULL if unknown. */
const char *
wire_tag_name(uint8_t tag)
{
	return tag < 64 ? wire_tags[tag].name : NULL;
}

/* Return a static name for a WIRE_ERR_* code, or "?" when unknown. */
const char *
wire_errcode_name(uint64_t code)
{
	const size_t n = sizeof wire_errcode_names / sizeof wire_errcode_names[0];

	if (code >= n || wire_errcode_names[code] == NULL)
		return "?";
	return wire_errcode_names[code];
}

/* The WIRE_ERR_* that answers a codec result; see wire.h. */
uint64_t
wire_errcode_for(int rc)
{
	switch (rc) {
	case WIRE_E_MALFORMED:
		return WIRE_ERR_MALFORMED;
	case WIRE_E_TOO_BIG:
		return WIRE_ERR_TOO_BIG;
	case WIRE_E_UNKNOWN:
		return WIRE_ERR_UNKNOWN_TYPE;
	case WIRE_E_SCHEMA:
		return WIRE_ERR_BAD_REQUEST;
	}
	return WIRE_ERR_INTERNAL;
}

/* Big-endian stores and loads, one byte at a time: no alignment needs. */
void
wire_be64_put(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* Load a big-endian u64. */
uint64_t
wire_be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Store a big-endian u32. */
void
wire_be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Load a big-endian u32. */
uint32_t
wire_be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Store a big-endian u16. */
void
wire_be16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Load a big-endian u16. */
uint16_t
wire_be16_get(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

/* Initialise an empty buffer (no allocation). */
void
wire_buf_init(wire_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->start = WIRE_NO_FRAME;
	b->err = 0;
}

/* Release a buffer's memory and reinitialise it. */
void
wire_buf_free(wire_buf *b)
{
	free(b->data);
	wire_buf_init(b);
}

/* Drop contents, any frame being built and its error; keep the memory. */
void
wire_buf_reset(wire_buf *b)
{
	b->len = 0;
	b->start = WIRE_NO_FRAME;
	b->err = 0;
}

/*
 * Make room for n more bytes, doubling the allocation.  Returns WIRE_OK or
 * WIRE_E_NOMEM; on failure b is unchanged.
 */
static int
wire_buf_grow(wire_buf *b, size_t n)
{
	size_t want, cap;
	uint8_t *p;

	if (n > SIZE_MAX - b->len)
		return WIRE_E_NOMEM;
	want = b->len + n;
	if (want <= b->cap)
		return WIRE_OK;
	cap = b->cap > 0 ? b->cap : WIRE_BUF_MIN;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	p = realloc(b->data, cap);
	if (p == NULL)
		return WIRE_E_NOMEM;
	b->data = p;
	b->cap = cap;
	return WIRE_OK;
}

/* Start a frame at the end of b: a header with a body length of 0 for now. */
void
wire_begin(wire_buf *b, uint16_t type, uint64_t id)
{
	uint8_t *h;

	if (b->err != 0)
		return;
	if (b->start != WIRE_NO_FRAME) {
		b->err = WIRE_E_MALFORMED; /* caller bug: no wire_end() */
		return;
	}
	if ((b->err = wire_buf_grow(b, WIRE_HEADER_SIZE)) != WIRE_OK)
		return;
	b->start = b->len;
	h = b->data + b->len;
	wire_be32_put(h, 0);
	wire_be16_put(h + 4, type);
	wire_be16_put(h + 6, 0);
	wire_be64_put(h + 8, id);
	b->len += WIRE_HEADER_SIZE;
}

/*
 * Append a field header for n bytes of data and return where the data
 * goes, or NULL with b->err set.  The body must stay within a u32.
 */
static uint8_t *
wire_put_field(wire_buf *b, uint8_t tag, size_t n)
{
	size_t body;
	uint8_t *p;

	if (b->err != 0)
		return NULL;
	if (b->start == WIRE_NO_FRAME) {
		b->err = WIRE_E_MALFORMED; /* caller bug: no wire_begin() */
		return NULL;
	}
	body = b->len - b->start - WIRE_HEADER_SIZE;
	if ((uint64_t)n > UINT32_MAX - WIRE_FIELD_HEADER_SIZE ||
	    (uint64_t)body > UINT32_MAX - WIRE_FIELD_HEADER_SIZE - (uint64_t)n) {
		b->err = WIRE_E_TOO_BIG;
		return NULL;
	}
	if ((b->err = wire_buf_grow(b, WIRE_FIELD_HEADER_SIZE + n)) != WIRE_OK)
		return NULL;
	p = b->data + b->len;
	p[0] = tag;
	wire_be32_put(p + 1, (uint32_t)n);
	b->len += WIRE_FIELD_HEADER_SIZE + n;
	return p + WIRE_FIELD_HEADER_SIZE;
}

/* Append a field holding a copy of p[0..n). */
void
wire_put_bytes(wire_buf *b, uint8_t tag, const void *p, size_t n)
{
	uint8_t *dst = wire_put_field(b, tag, n);

	if (dst != NULL && n > 0)
		memcpy(dst, p, n);
}

/* Append a string field, without its NUL.  A NULL s is a caller bug. */
void
wire_put_str(wire_buf *b, uint8_t tag, const char *s)
{
	if (s == NULL) {
		if (b->err == 0)
			b->err = WIRE_E_MALFORMED;
		return;
	}
	wire_put_bytes(b, tag, s, strlen(s));
}

/* Append an 8-byte big-endian integer field. */
void
wire_put_u64(wire_buf *b, uint8_t tag, uint64_t v)
{
	uint8_t *dst = wire_put_field(b, tag, 8);

	if (dst != NULL)
		wire_be64_put(dst, v);
}

/* Append a field of n bytes left for the caller to fill. */
uint8_t *
wire_put_reserve(wire_buf *b, uint8_t tag, size_t n)
{
	return wire_put_field(b, tag, n);
}

/*
 * Finish the frame: write its body length.  On a sticky error the partial
 * frame is dropped (earlier frames stay) and the error is returned and
 * cleared, so the next frame can be built in the same buffer.
 */
int
wire_end(wire_buf *b)
{
	int rc = b->err;

	if (rc == WIRE_OK && b->start == WIRE_NO_FRAME)
		rc = WIRE_E_MALFORMED; /* caller bug: no wire_begin() */
	if (rc != WIRE_OK) {
		if (b->start != WIRE_NO_FRAME)
			b->len = b->start;
		b->start = WIRE_NO_FRAME;
		b->err = 0;
		return rc;
	}
	wire_be32_put(b->data + b->start,
	    (uint32_t)(b->len - b->start - WIRE_HEADER_SIZE));
	b->start = WIRE_NO_FRAME;
	return WIRE_OK;
}

/* Inspect a frame header; see wire.h.  Never allocates. */
int
wire_peek(const uint8_t *p, size_t n, size_t max_body, size_t *frame_len)
{
	uint32_t body;

	if (n < WIRE_HEADER_SIZE)
		return WIRE_NEED_MORE;
	body = wire_be32_get(p);
	if (body > max_body)
		return WIRE_E_TOO_BIG;
	if (wire_be16_get(p + 6) != 0)
		return WIRE_E_MALFORMED;
	*frame_len = (size_t)WIRE_HEADER_SIZE + body;
	return WIRE_OK;
}

/*
 * Walk the fields of body p[0..n) checking each length against what is
 * left, and count them.  Returns WIRE_OK, WIRE_E_MALFORMED or
 * WIRE_E_TOO_BIG (more than WIRE_MAX_FIELDS).
 */
static int
wire_parse_count(const uint8_t *p, size_t n, size_t *count)
{
	size_t pos = 0, k = 0;
	uint32_t len;

	while (pos < n) {
		if (n - pos < WIRE_FIELD_HEADER_SIZE)
			return WIRE_E_MALFORMED;
		len = wire_be32_get(p + pos + 1);
		pos += WIRE_FIELD_HEADER_SIZE;
		if (len > n - pos)
			return WIRE_E_MALFORMED;
		pos += len;
		if (++k > WIRE_MAX_FIELDS)
			return WIRE_E_TOO_BIG;
	}
	*count = k;
	return WIRE_OK;
}

/*
 * Make room for n fields in m, growing geometrically up to
 * WIRE_MAX_FIELDS.  Returns WIRE_OK or WIRE_E_NOMEM (m unchanged).
 */
static int
wire_msg_reserve(wire_msg *m, size_t n)
{
	size_t cap;
	wire_field *f;

	if (n <= m->cap)
		return WIRE_OK;
	cap = m->cap > 0 ? m->cap : WIRE_FIELDS_MIN;
	while (cap < n)
		cap *= 2;
	if (cap > WIRE_MAX_FIELDS)
		cap = WIRE_MAX_FIELDS; /* n <= WIRE_MAX_FIELDS: still fits */
	f = realloc(m->fields, cap * sizeof *f);
	if (f == NULL)
		return WIRE_E_NOMEM;
	m->fields = f;
	m->cap = cap;
	return WIRE_OK;
}

/* Parse one frame; see wire.h.  On any result but WIRE_OK, m is empty. */
int
wire_parse(const uint8_t *p, size_t n, size_t max_body, wire_msg *m,
    size_t *used)
{
	size_t frame_len, body_len, count, pos, i;
	const uint8_t *body;
	int rc;

	m->nfields = 0;
	if ((rc = wire_peek(p, n, max_body, &frame_len)) != WIRE_OK)
		return rc;
	if (n < frame_len)
		return WIRE_NEED_MORE;
	body = p + WIRE_HEADER_SIZE;
	body_len = frame_len - WIRE_HEADER_SIZE;
	if ((rc = wire_parse_count(body, body_len, &count)) != WIRE_OK)
		return rc;
	if ((rc = wire_msg_reserve(m, count)) != WIRE_OK)
		return rc;

	/* Every length was checked above; this pass only records. */
	for (i = 0, pos = 0; i < count; i++) {
		m->fields[i].tag = body[pos];
		m->fields[i].len = wire_be32_get(body + pos + 1);
		m->fields[i].data = body + pos + WIRE_FIELD_HEADER_SIZE;
		pos += WIRE_FIELD_HEADER_SIZE + m->fields[i].len;
	}
	m->type = wire_be16_get(p + 4);
	m->flags = 0;
	m->id = wire_be64_get(p + 8);
	m->nfields = count;
	*used = frame_len;
	return WIRE_OK;
}

/* Initialise an empty message (no allocation). */
void
wire_msg_init(wire_msg *m)
{
	m->type = 0;
	m->flags = 0;
	m->id = 0;
	m->nfields = 0;
	m->cap = 0;
	m->fields = NULL;
}

/* Free a message's fields array and reinitialise it. */
void
wire_msg_free(wire_msg *m)
{
	free(m->fields);
	wire_msg_init(m);
}

/* Check one field's bytes against its tag's kind. */
static int
wire_field_check(const wire_field *f, const char **why)
{
	switch (wire_tags[f->tag].kind) {
	case TK_U64:
		if (f->len != 8) {
			*why = "integer field is not 8 bytes";
			return WIRE_E_SCHEMA;
		}
		break;
	case TK_FIXED16:
		if (f->len != 16) {
			*why = "16-byte field has the wrong length";
			return WIRE_E_SCHEMA;
		}
		break;
	case TK_FIXED32:
		if (f->len != 32) {
			*why = "32-byte field has the wrong length";
			return WIRE_E_SCHEMA;
		}
		break;
	case TK_STR:
		if (f->len > 0 && memchr(f->data, '\0', f->len) != NULL) {
			*why = "string field contains a NUL byte";
			return WIRE_E_SCHEMA;
		}
		break;
	case TK_BYTES:
		break;
	}
	return WIRE_OK;
}

/* Check a parsed message against its type's schema; see wire.h. */
int
wire_msg_check(const wire_msg *m, const char **why)
{
	const struct wire_schema *s;
	const char *dummy;
	uint64_t seen = 0, bit;
	size_t i;
	int rc;

	if (why == NULL)
		why = &dummy;
	*why = NULL;
	if ((s = wire_schema_find(m->type)) == NULL) {
		*why = "unknown message type";
		return WIRE_E_UNKNOWN;
	}
	if (m->flags != 0) {
		*why = "flags are not 0";
		return WIRE_E_SCHEMA;
	}
	for (i = 0; i < m->nfields; i++) {
		const wire_field *f = &m->fields[i];

		bit = f->tag < 64 ? T(f->tag) : 0;
		if ((s->allowed & bit) == 0) {
			*why = "field not allowed in this message";
			return WIRE_E_SCHEMA;
		}
		if ((seen & bit) != 0 && (s->repeatable & bit) == 0) {
			*why = "field repeated where it may appear once";
			return WIRE_E_SCHEMA;
		}
		seen |= bit;
		if ((rc = wire_field_check(f, why)) != WIRE_OK)
			return rc;
	}
	if ((seen & s->required) != s->required) {
		*why = "required field missing";
		return WIRE_E_SCHEMA;
	}
	return WIRE_OK;
}

/* First field with tag, or NULL. */
const wire_field *
wire_msg_find(const wire_msg *m, uint8_t tag)
{
	size_t i;

	for (i = 0; i < m->nfields; i++) {
		if (m->fields[i].tag == tag)
			return &m->fields[i];
	}
	return NULL;
}

/* Value of the first field with tag, or dflt when absent or not 8 bytes. */
uint64_t
wire_msg_u64(const wire_msg *m, uint8_t tag, uint64_t dflt)
{
	const wire_field *f = wire_msg_find(m, tag);

	if (f == NULL || f->len != 8)
		return dflt;
	return wire_be64_get(f->data);
}

/* Decode an 8-byte field; 0 when the field is not 8 bytes long. */
uint64_t
wire_field_u64(const wire_field *f)
{
	if (f->len != 8)
		return 0;
	return wire_be64_get(f->data);
}

/* Copy a field into a fresh NUL-terminated string (caller frees). */
char *
wire_field_strdup(const wire_field *f)
{
	char *s;

	if (f->len > 0 && memchr(f->data, '\0', f->len) != NULL)
		return NULL;
	if ((s = malloc((size_t)f->len + 1)) == NULL)
		return NULL;
	if (f->len > 0)
		memcpy(s, f->data, f->len);
	s[f->len] = '\0';
	return s;
}
