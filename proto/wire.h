/*
 * wire.h - the pyshelf wire codec: frames, fields and message schemas.
 *
 * One codec shared by the backend (exec/) and the client library
 * (client/).  docs/PROTOCOL.md describes the same bytes for people writing
 * a client in another language; keep the two in step.
 *
 * A frame is a fixed 16-byte header followed by a body of fields.  Every
 * integer is big-endian; nothing native ever crosses the wire.
 *
 *   offset size  what
 *   0      4     body length N (bytes after the header)
 *   4      2     message type (WIRE_MSG_*)
 *   6      2     flags (must be 0)
 *   8      8     request id: set by the client, echoed by every reply
 *   16     N     fields, back to back
 *
 * A field is   u8 tag (WIRE_TAG_*) | u32 length L | L bytes.
 * Integer fields (WIRE_TAG_* marked "u64") are exactly 8 bytes.
 * Strings are UTF-8 and carry no terminating NUL on the wire.
 * A tag may repeat only where the schema says so; order is kept.
 *
 * Caveats, once: parsed messages borrow the bytes they were parsed from;
 * nothing here is thread-safe on one object, but different objects may be
 * used from different threads.
 */
#ifndef PYSHELF_WIRE_H
#define PYSHELF_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Bump whenever a byte of the layout below changes (tests/check_wire.c
 * holds golden frames that fail when the layout moves without it). */
#define WIRE_PROTOCOL_VERSION 3

#define WIRE_HEADER_SIZE 16
#define WIRE_FIELD_HEADER_SIZE 5
/* Default and hard limits on the body length. */
#define WIRE_DEFAULT_MAX_FRAME (64u * 1024 * 1024)
#define WIRE_PREAUTH_MAX_FRAME (64u * 1024)
#define WIRE_MAX_FIELDS 1000000

/* Message types, numbered in ranges. */
enum wire_msg_type {
	/* 0x00xx: handshake and session */
	WIRE_MSG_HELLO = 0x0001,     /* c->s: VERSION, [NAME] */
	WIRE_MSG_WELCOME = 0x0002,   /* s->c: VERSION, NAME, PID, MAX_FRAME,
	                                [SESSION_ID, SESSION, CREATED, NONCE] */
	WIRE_MSG_AUTH = 0x0003,      /* c->s: MAC */
	WIRE_MSG_ATTACH = 0x0010,    /* c->s: SESSION, [TOKEN], [CREATE],
	                                [MODE], [LEASE_MS] (server mode) */
	WIRE_MSG_ATTACHED = 0x0011,  /* s->c: SESSION_ID, SESSION, CREATED,
	                                [TOKEN], [PID], [MAX_FRAME],
	                                [LEASE_MS], [EXPIRES_MS], [ENDED_MS],
	                                [REASON], [MESSAGE], [SIGNAL] */
	WIRE_MSG_PIPES = 0x0012,     /* c->s, server mode, once attached: no
	                                fields -> OK carrying (SCM_RIGHTS) two
	                                pipes' ends; the connection goes on
	                                over them (PROTOCOL.md 7.1) */

	/* 0x01xx: running code */
	WIRE_MSG_EXEC = 0x0100,      /* c->s: CODE, [FUNC], ARG_HANDLE|ARG_PICKLE*,
	                                [WANT_VALUE], [TIMEOUT_MS], [CALL_ID] */
	WIRE_MSG_RESULT = 0x0101,    /* s->c: KIND, [HANDLE, TYPE_NAME],
	                                [EXC_TYPE, MESSAGE], [VALUE], [VOLATILE],
	                                [CALL_ID] */
	WIRE_MSG_OUTPUT = 0x0102,    /* s->c: STREAM, DATA */
	WIRE_MSG_INTERRUPT = 0x0103, /* c->s: [HARD]; no reply */
	WIRE_MSG_RELEASE = 0x0104,   /* c->s: HANDLE*; no reply */
	WIRE_MSG_CALLS = 0x0105,     /* c->s -> LISTING with DATA (JSON) */
	WIRE_MSG_CALL_RESULT = 0x0106, /* c->s: CALL_ID, [WAIT] -> OUTPUT*,
	                                then RESULT (or ERROR) */

	/* 0x011x: the workspace as a mapping */
	WIRE_MSG_GET = 0x0110,       /* c->s: KEY, [WANT_VALUE] -> RESULT */
	WIRE_MSG_SET = 0x0111,       /* c->s: KEY, VALUE -> OK */
	WIRE_MSG_DEL = 0x0112,       /* c->s: KEY -> OK */
	WIRE_MSG_KEYS = 0x0113,      /* c->s: no fields -> LISTING of KEY* */
	WIRE_MSG_HANDLES = 0x0114,   /* c->s -> LISTING of (HANDLE, TYPE_NAME,
	                                [EXC_TYPE, MESSAGE])*: the two more
	                                for an exception's handle */
	WIRE_MSG_LOST = 0x0115,      /* c->s -> LISTING of (KEY, TYPE_NAME,
	                                MESSAGE)* */

	/* 0x013x: messages longer than a frame (wire-long.c) */
	WIRE_MSG_LONG = 0x0130,      /* either way: LONG_TYPE, LONG_LEN: the
	                                message of that type and id follows in
	                                PART frames: its body of LONG_LEN
	                                bytes, then the bytes of the out-of-band
	                                buffers its OOB fields declare */
	WIRE_MSG_PART = 0x0131,      /* either way: DATA: the next bytes of the
	                                LONG of the same id */

	/* 0x012x: session control */
	WIRE_MSG_SYNC = 0x0120,      /* c->s -> OK */
	WIRE_MSG_DETACH = 0x0121,    /* c->s -> OK, then the server closes */
	WIRE_MSG_CLOSE = 0x0122,     /* c->s -> OK; the session is ended */
	WIRE_MSG_STATS = 0x0123,     /* c->s -> LISTING with DATA (JSON) */
	WIRE_MSG_PING = 0x0124,      /* c->s -> PONG */
	WIRE_MSG_PONG = 0x0125,      /* s->c */

	/* 0x020x: sessions as a resource (leases, ending one) */
	WIRE_MSG_END_SESSION = 0x0201, /* c->supervisor, after HELLO instead
	                                of ATTACH: SESSION -> OK [ENDED_MS,
	                                REASON] from the session's worker,
	                                or ERROR NO_SESSION / SESSION_DEAD */
	WIRE_MSG_SET_LEASE = 0x0202, /* c->s: LEASE_MS (0 = forever) -> OK
	                                LEASE_MS [EXPIRES_MS] */

	/* 0x01Fx: generic replies */
	WIRE_MSG_OK = 0x01F0,        /* s->c: no fields; after SET_LEASE and
	                                END_SESSION, the fields they say */
	WIRE_MSG_LISTING = 0x01F1,   /* s->c: repeated fields per request */

	/* 0x02xx: admin requests a client sends a server's supervisor
	 * after HELLO, instead of ATTACH; the supervisor answers them
	 * itself, then takes another request (ATTACH or admin) */
	WIRE_MSG_SESSIONS = 0x0200,  /* c->s -> LISTING with DATA (JSON: the
	                                sessions that have a worker) */

	/* 0x0Exx: the control channel between a server's supervisor and
	 * its workers (SOCK_SEQPACKET, one frame per packet); never valid
	 * on a client's connection */
	WIRE_MSG_CTL_CONN = 0x0E01,  /* s->w, a client's fd attached: DATA
	                                (its ATTACH frame), [PID], [SIGNAL],
	                                [MESSAGE] (how the last worker died) */
	WIRE_MSG_CTL_READY = 0x0E02, /* w->s: PID, SESSION_ID, SESSION */
	WIRE_MSG_CTL_STATE = 0x0E03, /* w->s: DATA (JSON) */
	WIRE_MSG_CTL_IDLE = 0x0E04,  /* w->s: may I exit? */
	WIRE_MSG_CTL_IDLE_OK = 0x0E05, /* s->w: yes; no more connections */
	WIRE_MSG_CTL_ENDED = 0x0E10, /* w->s: the session ended (lease run
	                                out, END_SESSION): sweep it soon */
	WIRE_MSG_CTL_QUERY = 0x0E20, /* s->w: QUERY; answered at once by a
	                                CTL_STATE whose JSON has "query" and
	                                the running call even with clients */
	WIRE_MSG_CTL_STOP = 0x0E30,  /* s->w: the server is stopping: stop
	                                the running call (a hard interrupt
	                                after --hard-grace), serve no more
	                                requests, checkpoint and exit */

	/* 0x7Fxx: errors */
	WIRE_MSG_ERROR = 0x7F00      /* s->c: ERRCODE, MESSAGE, [PID],
	                                [ENDED_MS], [REASON], [SIGNAL] */
};

/* Field tags.  "u64" fields are 8 bytes big-endian. */
enum wire_tag {
	WIRE_TAG_VERSION = 1,     /* u64 protocol version */
	WIRE_TAG_NAME = 2,        /* str: peer program name */
	WIRE_TAG_SESSION_ID = 3,  /* 16 bytes */
	WIRE_TAG_TOKEN = 4,       /* 32 bytes: resume token */
	WIRE_TAG_CREATE = 5,      /* u64 0/1: create when missing */
	WIRE_TAG_CODE = 6,        /* str: Python source */
	WIRE_TAG_FUNC = 7,        /* str: function to call after running CODE */
	WIRE_TAG_ARG_HANDLE = 8,  /* u64, repeated: argument by handle */
	WIRE_TAG_ARG_PICKLE = 9,  /* bytes, repeated: argument by pickle */
	WIRE_TAG_WANT_VALUE = 10, /* u64 0/1, or WIRE_WANT_* */
	WIRE_TAG_TIMEOUT_MS = 11, /* u64, 0 = none */
	WIRE_TAG_KIND = 12,       /* u64 WIRE_KIND_* */
	WIRE_TAG_HANDLE = 13,     /* u64 handle id (repeats in RELEASE/LISTING) */
	WIRE_TAG_TYPE_NAME = 14,  /* str */
	WIRE_TAG_EXC_TYPE = 15,   /* str: exception class name */
	WIRE_TAG_MESSAGE = 16,    /* str: human-readable text */
	WIRE_TAG_VALUE = 17,      /* bytes: a pickle */
	WIRE_TAG_STREAM = 18,     /* u64: 1 stdout, 2 stderr */
	WIRE_TAG_DATA = 19,       /* bytes */
	WIRE_TAG_ERRCODE = 20,    /* u64 WIRE_ERR_* */
	WIRE_TAG_KEY = 21,        /* str: global name (repeats in LISTING) */
	WIRE_TAG_VOLATILE = 22,   /* str: why the result could not be persisted */
	WIRE_TAG_PID = 23,        /* u64 */
	WIRE_TAG_MAX_FRAME = 24,  /* u64 */
	WIRE_TAG_SESSION = 25,    /* str: session name */
	WIRE_TAG_CREATED = 26,    /* u64 0/1: the session was just created */
	WIRE_TAG_NONCE = 27,      /* 32 bytes: auth challenge */
	WIRE_TAG_MAC = 28,        /* 32 bytes: HMAC-SHA256(key, nonce) */
	WIRE_TAG_LEASE_MS = 29,   /* u64: the session's lease, 0 = forever */
	WIRE_TAG_EXPIRES_MS = 30, /* u64: when the lease runs out (ms since
	                             the epoch) if no client attaches again */
	WIRE_TAG_ENDED_MS = 31,   /* u64: when an earlier session ended */
	WIRE_TAG_REASON = 32,     /* str: why it ended: "expired", "closed",
	                             "replaced", "ended" */
	WIRE_TAG_CALL_ID = 33,    /* 16 bytes: a call's id, chosen by the
	                             client (128 random bits) */
	WIRE_TAG_MODE = 34,       /* str: ATTACH's flag: "c", "w" or "n" */
	WIRE_TAG_HARD = 35,       /* u64 0/1: INTERRUPT restarts the worker */
	WIRE_TAG_WAIT = 36,       /* u64 0/1: CALL_RESULT waits while it runs */
	WIRE_TAG_SIGNAL = 37,     /* u64: the signal that killed a worker */
	WIRE_TAG_LONG_TYPE = 38,  /* u64: the message type a LONG carries */
	WIRE_TAG_LONG_LEN = 39,   /* u64: the body length a LONG carries */
	WIRE_TAG_OOB = 40,        /* u64, repeated, after a VALUE or
	                             ARG_PICKLE: the length of one out-of-band
	                             buffer of that pickle (protocol 5), whose
	                             bytes follow the body in PARTs; only in a
	                             message carried by a LONG */
	WIRE_TAG_OOB_OK = 41,     /* u64 0/1: in EXEC, GET, CALL_RESULT: the
	                             client takes a value's out-of-band buffers
	                             (OOB) in the RESULT */
	WIRE_TAG_QUERY = 48,      /* u64: CTL_QUERY's number, echoed in the
	                             CTL_STATE that answers it */
	WIRE_TAG_MAX_ = 63        /* tags are < 64 */
};

/* Result kinds in RESULT.KIND. */
enum wire_kind {
	WIRE_KIND_DIRECT = 1,   /* DirectValue: VALUE holds the pickle */
	WIRE_KIND_WRAPPED = 2,  /* Wrapped: HANDLE, TYPE_NAME */
	WIRE_KIND_EXCINFO = 3,  /* WrappedExcinfo: HANDLE, TYPE_NAME, EXC_TYPE,
	                           MESSAGE */
	WIRE_KIND_TEXT = 4      /* asked for by WANT_VALUE 2 or 3: VALUE holds
	                           UTF-8 text (repr or JSON), TYPE_NAME */
};

/* WANT_VALUE: 0 a handle, 1 the pickle, or plain text. */
enum {
	WIRE_WANT_REPR = 2,     /* repr() of the value */
	WIRE_WANT_JSON = 3      /* json.dumps() of JSON data, else a handle */
};

/* Error codes carried in ERROR.ERRCODE. */
enum wire_errcode {
	WIRE_ERR_MALFORMED = 1,      /* the frame could not be parsed */
	WIRE_ERR_TOO_BIG = 2,        /* body longer than the maximum */
	WIRE_ERR_UNKNOWN_TYPE = 3,   /* message type not known */
	WIRE_ERR_VERSION = 4,        /* no common protocol version */
	WIRE_ERR_AUTH = 5,           /* authentication failed or required */
	WIRE_ERR_NO_SESSION = 6,     /* session missing or not attached */
	WIRE_ERR_SESSION_DEAD = 7,   /* the session has ended */
	WIRE_ERR_UNKNOWN_HANDLE = 8, /* a handle id that is not live */
	WIRE_ERR_UNPICKLE = 9,       /* an argument or value cannot be unpickled */
	WIRE_ERR_PICKLE = 10,        /* a value asked for cannot be pickled */
	WIRE_ERR_NOT_FOUND = 11,     /* no such global */
	WIRE_ERR_STORE = 12,         /* the store failed (full disk or map...) */
	WIRE_ERR_VOLATILE = 13,      /* the entry was not persisted and is gone */
	WIRE_ERR_INTERNAL = 14,      /* a bug; the message says where */
	WIRE_ERR_BAD_REQUEST = 15,   /* well-formed but meaningless request */
	WIRE_ERR_SESSION_BUSY = 16,  /* another process serves the session */
	WIRE_ERR_USAGE = 17,         /* pyshelfd refused an option */
	WIRE_ERR_READ_ONLY = 18,     /* the request would change a read-only
	                                session */
	WIRE_ERR_UNKNOWN_CALL = 19,  /* a call id the session does not know */
	WIRE_ERR_WORKER_DIED = 20,   /* the session's worker died (SIGNAL) */
	WIRE_ERR_WORKER_RESTARTED = 21 /* the worker was killed and restarted
	                                from its last checkpoint (a hard
	                                interrupt) */
};

/* Codec return values: 0 complete, WIRE_NEED_MORE, or a negative error. */
#define WIRE_OK 0
#define WIRE_NEED_MORE 1
#define WIRE_E_MALFORMED (-1)  /* bytes do not form a frame */
#define WIRE_E_TOO_BIG (-2)    /* body length above the limit */
#define WIRE_E_NOMEM (-3)      /* allocation failed */
#define WIRE_E_SCHEMA (-4)     /* frame parsed but breaks its schema */
#define WIRE_E_UNKNOWN (-5)    /* unknown message type */
#define WIRE_E_IO (-6)         /* read/write failed; errno says why */
#define WIRE_E_EOF (-7)        /* peer closed the connection */
#define WIRE_E_TIMEOUT (-8)    /* no frame in the time given */
#define WIRE_E_TRUNCATED (-9)  /* peer closed the connection in the middle
                                  of a frame: a dead peer, as EOF is */

/* A field of a parsed message.  data borrows from the parsed buffer. */
typedef struct wire_field {
	uint8_t tag;          /* WIRE_TAG_* */
	uint32_t len;         /* length of data */
	const uint8_t *data;  /* borrowed; valid while the buffer lives */
} wire_field;

/* A parsed message. */
typedef struct wire_msg {
	uint16_t type;        /* WIRE_MSG_* */
	uint16_t flags;       /* 0 */
	uint64_t id;          /* request id */
	size_t nfields;       /* number of fields in fields[] */
	size_t cap;           /* allocated slots in fields[] */
	wire_field *fields;   /* owned by the message; free with wire_msg_free */
} wire_msg;

/* A growable output buffer holding zero or more encoded frames. */
typedef struct wire_buf {
	uint8_t *data;        /* owned; free with wire_buf_free */
	size_t len;           /* bytes used */
	size_t cap;           /* bytes allocated */
	size_t start;         /* offset of the frame being built */
	int err;              /* first error hit while building, sticky */
} wire_buf;

/* wire.c */

/* Return a static English message for a WIRE_E_* code. */
const char *wire_strerror(int rc);
/* Return a static name for a message type ("EXEC") or NULL if unknown. */
const char *wire_msg_name(uint16_t type);
/* Return a static name for a WIRE_ERR_* code ("UNKNOWN_HANDLE"), or "?"
 * for a code this version does not know. */
const char *wire_errcode_name(uint64_t code);
/* Return a static name for a field tag ("CODE") or NULL if unknown. */
const char *wire_tag_name(uint8_t tag);
/* The WIRE_ERR_* to send in an ERROR for a codec result: MALFORMED,
 * TOO_BIG, UNKNOWN_TYPE, BAD_REQUEST for WIRE_E_SCHEMA, else INTERNAL.
 * After MALFORMED or TOO_BIG the stream is out of step: close it.  EOF
 * and TRUNCATED have no one left to answer. */
uint64_t wire_errcode_for(int rc);

/* Initialise an empty buffer (no allocation). */
void wire_buf_init(wire_buf *b);
/* Release a buffer's memory and reinitialise it. */
void wire_buf_free(wire_buf *b);
/* Drop contents (and any frame being built) but keep the allocation. */
void wire_buf_reset(wire_buf *b);
/*
 * Start a frame at the end of b.  Fields go in with wire_put_*, and
 * wire_end() fills in the length.  Errors are sticky in b->err and are
 * returned by wire_end(), so callers may check once.  A field whose data
 * exceeds a u32, or that would take the body past a u32, is
 * WIRE_E_TOO_BIG; calls out of order (a put or end without begin, a begin
 * without end) and wire_put_str(NULL) are caller bugs, WIRE_E_MALFORMED.
 * Tags are not checked here (any u8 encodes); wire_msg_check() checks them.
 */
void wire_begin(wire_buf *b, uint16_t type, uint64_t id);
void wire_put_bytes(wire_buf *b, uint8_t tag, const void *p, size_t n);
void wire_put_str(wire_buf *b, uint8_t tag, const char *s);
void wire_put_u64(wire_buf *b, uint8_t tag, uint64_t v);
/* Reserve n bytes of field data and return where to write them (NULL on
 * error); lets a caller fill a large value without a second copy.  The
 * pointer is valid until the next call that adds to b. */
uint8_t *wire_put_reserve(wire_buf *b, uint8_t tag, size_t n);
/* Finish the frame.  Returns WIRE_OK or WIRE_E_NOMEM/WIRE_E_TOO_BIG (or
 * WIRE_E_MALFORMED for a caller bug).  On error the unfinished frame is
 * removed from b (earlier frames stay) and b->err is cleared, so the same
 * buffer can go on with the next frame, e.g. an ERROR instead. */
int wire_end(wire_buf *b);

/*
 * Inspect the first bytes of a stream.  Returns WIRE_NEED_MORE when fewer
 * than WIRE_HEADER_SIZE bytes are there, WIRE_E_TOO_BIG when the body
 * length exceeds max_body, WIRE_E_MALFORMED when the flags are not 0,
 * else WIRE_OK with *frame_len set to the whole frame's length.  Never
 * allocates: call it before reading or allocating a body.
 */
int wire_peek(const uint8_t *p, size_t n, size_t max_body, size_t *frame_len);

/*
 * Parse one frame from p[0..n).  Returns WIRE_NEED_MORE when the frame is
 * not all there, WIRE_OK with *m filled and *used set to the frame length,
 * or a negative error: those of wire_peek(), WIRE_E_MALFORMED when a
 * field runs past the body, WIRE_E_TOO_BIG for more than WIRE_MAX_FIELDS
 * fields, WIRE_E_NOMEM.  m must have been initialised with wire_msg_init();
 * its fields array is reused between calls and holds no fields after a
 * result other than WIRE_OK.  Fields borrow from p.  Every length is
 * checked before anything is allocated.
 * The schema is NOT checked here; see wire_msg_check().
 */
int wire_parse(const uint8_t *p, size_t n, size_t max_body, wire_msg *m,
               size_t *used);
void wire_msg_init(wire_msg *m);
void wire_msg_free(wire_msg *m);

/*
 * Check a parsed message against its type's schema: known type, required
 * fields present, no unknown or wrongly repeated tags, u64 fields of 8
 * bytes, fixed-size fields (SESSION_ID 16, TOKEN/NONCE/MAC 32) of their
 * size, no NUL in string fields.  Returns WIRE_OK, WIRE_E_UNKNOWN or
 * WIRE_E_SCHEMA; *why (may be NULL) gets a static sentence.
 */
int wire_msg_check(const wire_msg *m, const char **why);

/* First field with tag, or NULL. */
const wire_field *wire_msg_find(const wire_msg *m, uint8_t tag);
/* Value of the first u64 field with tag, or dflt when absent (or, in an
 * unchecked message, not 8 bytes long). */
uint64_t wire_msg_u64(const wire_msg *m, uint8_t tag, uint64_t dflt);
/* Decode an 8-byte field (0 when it is not 8 bytes long). */
uint64_t wire_field_u64(const wire_field *f);
/* Copy a field into a fresh NUL-terminated string (caller frees), or NULL
 * on allocation failure or an embedded NUL. */
char *wire_field_strdup(const wire_field *f);

/* Big-endian helpers, used by the store's key layout as well. */
void wire_be64_put(uint8_t *p, uint64_t v);
uint64_t wire_be64_get(const uint8_t *p);
void wire_be32_put(uint8_t *p, uint32_t v);
uint32_t wire_be32_get(const uint8_t *p);
void wire_be16_put(uint8_t *p, uint16_t v);
uint16_t wire_be16_get(const uint8_t *p);

/* wire-long.c: messages longer than a frame.
 *
 * A sender whose message body exceeds the peer's frame limit, or whose
 * message has out-of-band buffers (OOB fields), sends a LONG head frame
 * (wire_long_head) and then PART frames: the body's bytes, then each
 * buffer's bytes in the order of the OOB fields, each buffer starting a
 * new PART.  The receiver assembles them with a wire_long. */

/* The largest PART body a sender makes, whatever the peer accepts. */
#define WIRE_PART_MAX (8u * 1024 * 1024)
/* Bytes in front of a PART's data: the frame header and DATA's field
 * header. */
#define WIRE_PART_HEADER_SIZE (WIRE_HEADER_SIZE + WIRE_FIELD_HEADER_SIZE)

/* A LONG message being assembled. */
typedef struct wire_long {
	uint64_t id;          /* the request id of the LONG and its PARTs */
	uint16_t type;        /* the carried message type */
	uint8_t *frame;       /* owned: a frame header (made up) + the body */
	size_t body_len;      /* LONG_LEN */
	size_t got;           /* body bytes received so far */
	size_t limit;         /* largest body plus buffers accepted */
	size_t nbufs;         /* out-of-band buffers the body declares */
	uint64_t *buf_len;    /* owned: their lengths */
	size_t buf_total;     /* their sum */
	size_t cur, off;      /* the buffer being filled, bytes in it */
} wire_long;

/* Put a LONG head frame into b carrying a message of type and id with a
 * body of body_len bytes.  Errors are sticky in b, as wire_put_*'s. */
void wire_long_head(wire_buf *b, uint16_t type, uint64_t id,
                    uint64_t body_len);
/* Fill hdr with the header of a PART frame of id carrying n data bytes
 * (n <= UINT32_MAX - WIRE_FIELD_HEADER_SIZE); the n bytes follow it. */
void wire_part_header(uint8_t hdr[WIRE_PART_HEADER_SIZE], uint64_t id,
                      size_t n);
/* The PART data size to use under a peer's frame limit max_body. */
size_t wire_part_size(size_t max_body);
/* Sum of the OOB fields of a message (what follows its body); sets
 * *nbufs.  WIRE_E_TOO_BIG when the sum overflows. */
int wire_oob_total(const wire_msg *m, size_t *nbufs, size_t *total);
/*
 * Start assembling the LONG head (a checked LONG message) into l: checks
 * the carried type (not LONG or PART) and LONG_LEN against limit (the
 * most bytes, body and buffers, the receiver takes), then allocates the
 * body.  Returns WIRE_OK, WIRE_E_SCHEMA or WIRE_E_TOO_BIG with a static
 * sentence in *why, or WIRE_E_NOMEM.  l needs no init; free with
 * wire_long_free() whatever this returns.
 */
int wire_long_begin(wire_long *l, const wire_msg *head, size_t limit,
                    const char **why);
/*
 * Add a PART's DATA to the body.  Returns WIRE_NEED_MORE, WIRE_OK when
 * the body is complete (then parse it with wire_long_parse), or
 * WIRE_E_SCHEMA when the PART runs past LONG_LEN (*why).
 */
int wire_long_add(wire_long *l, const uint8_t *p, size_t n,
                  const char **why);
/*
 * Parse the complete body into m (fields borrow l->frame) and note the
 * buffers its OOB fields declare.  Returns WIRE_OK, WIRE_E_MALFORMED,
 * WIRE_E_TOO_BIG (the buffers exceed the limit; *why) or WIRE_E_NOMEM.
 * The caller then checks m (wire_msg_check) and takes the buffers' bytes
 * with wire_long_buf().
 */
int wire_long_parse(wire_long *l, wire_msg *m, const char **why);
/*
 * Where the next bytes of a PART go once the body is complete: the
 * buffer index *idx and offset *off, and how many bytes fit there.  0
 * when every buffer is full.  Advance with wire_long_took().
 */
size_t wire_long_want(const wire_long *l, size_t *idx, size_t *off);
void wire_long_took(wire_long *l, size_t n);
/* Release what l holds. */
void wire_long_free(wire_long *l);
/* Buffers at least this large get wire_mem_advise(). */
#define WIRE_ADVISE_MIN (4u * 1024 * 1024)
/* Before a large buffer (n >= WIRE_ADVISE_MIN) is filled by reads: ask
 * the kernel for transparent huge pages under it (madvise), so that
 * filling a fresh gigabyte takes hundreds of page faults, not hundreds
 * of thousands.  Only advice: failures are ignored. */
void wire_mem_advise(void *p, size_t n);

/* wire-pipe.c: a pipe's buffer, small while idle, grown for a long
 * transfer (the header comment of wire-pipe.c says why). */

/* A transfer of at least this many bytes grows the pipe it goes through. */
#define WIRE_PIPE_LONG (256u * 1024)
/* The size it grows to (Linux's default /proc/sys/fs/pipe-max-size). */
#define WIRE_PIPE_BIG (1 << 20)
/* The size between long transfers: the kernel's default for a new pipe. */
#define WIRE_PIPE_IDLE (64 * 1024)
/* Writer: about to write n bytes (a frame, or a LONG's PARTs) to fd.
 * When n >= WIRE_PIPE_LONG and fd is a pipe smaller than WIRE_PIPE_BIG,
 * ask for WIRE_PIPE_BIG; a refusal (the user's pipe pages are used up) is
 * ignored.  Does nothing for a socket.  Keeps errno. */
void wire_pipe_grow(int fd, uint64_t n);
/* Reader: a whole long transfer has been read from fd; set the pipe back
 * to WIRE_PIPE_IDLE when it is larger.  0 (done, nothing to do, or not a
 * pipe), or -1 when the pipe holds more than WIRE_PIPE_IDLE (EBUSY: the
 * next transfer has begun): try again at the next message boundary.
 * Keeps errno. */
int wire_pipe_shrink(int fd);
/* Reader: at a message boundary, with *got the bytes read from fd since
 * the pipe was last settled: at WIRE_PIPE_LONG or more, wire_pipe_shrink,
 * and *got back to 0 unless it said to try again.  Keeps errno. */
void wire_pipe_settle(int fd, size_t *got);

/* conn.c: blocking frame I/O on a file descriptor. */

/* A connection: a file descriptor pair with a read buffer. */
typedef struct wire_conn {
	int rfd;              /* read side */
	int wfd;              /* write side (same as rfd for sockets) */
	size_t max_body;      /* body limit for incoming frames */
	uint8_t *rbuf;        /* owned read buffer */
	size_t rlen;          /* bytes buffered */
	size_t rpos;          /* start of unconsumed bytes */
	size_t rcap;          /* allocated */
	unsigned spin_us;     /* busy-poll this long before blocking (0 = off) */
	int ready;            /* the caller saw rfd readable: the next read()
	                         goes without a poll() first (once) */
	int take_fds;         /* read with recvmsg() and keep the descriptors
	                         that come (SCM_RIGHTS) in fds[] */
	int fds[2];           /* those descriptors (close-on-exec), -1 none;
	                         the caller takes them (and closes them) */
	int nfds;             /* how many; more than two are closed */
	size_t pipe_got;      /* bytes read since the pipe was last settled
	                         (wire_pipe_settle: the caller's, at the end
	                         of each message) */
} wire_conn;

/* Set up a connection over fds (not taken over: close them yourself). */
void wire_conn_init(wire_conn *c, int rfd, int wfd, size_t max_body);
void wire_conn_free(wire_conn *c);
/*
 * Read the next complete frame into m (fields borrow c's buffer until the
 * next wire_conn_read).  timeout_ms < 0 waits forever.  Returns WIRE_OK,
 * WIRE_E_EOF, WIRE_E_TRUNCATED, WIRE_E_TIMEOUT, WIRE_E_IO (errno set),
 * WIRE_E_TOO_BIG, WIRE_E_MALFORMED or WIRE_E_NOMEM.  EOF at a frame
 * boundary is WIRE_E_EOF; EOF in the middle of a frame (header or body)
 * is WIRE_E_TRUNCATED: the peer closed the connection, most likely
 * because it died while writing, and callers treat it as they treat
 * WIRE_E_EOF, not as a protocol error.  WIRE_E_MALFORMED is kept for
 * bytes that do not form a frame.  After an error other than TIMEOUT
 * the stream is out of step: close it.  With c->spin_us set, polls
 * without blocking for up to that long before a blocking poll(), trading
 * CPU for latency.  A caller that waits for rfd itself (poll() said
 * readable) sets c->ready: then the first read() of this call is not
 * preceded by a poll().
 */
int wire_conn_read(wire_conn *c, wire_msg *m, int timeout_ms);
/* Nonzero when wire_conn_read() would return at once without reading:
 * a complete frame is buffered, or the buffered header is already bad. */
int wire_conn_pending(const wire_conn *c);
/*
 * Read the next frame's DATA straight into dst, with no copy beyond the
 * read itself, when that frame is a PART of id (a LONG's) with at most
 * room data bytes: WIRE_OK with *n the bytes read.  WIRE_NEED_MORE when
 * the next frame is anything else: nothing was consumed, and
 * wire_conn_read() reads it.  Blocks until the PART is in (EINTR is
 * retried); else as wire_conn_read() (EOF inside the PART, or after part
 * of the next frame's header, is WIRE_E_TRUNCATED).
 */
int wire_conn_read_part(wire_conn *c, uint64_t id, uint8_t *dst, size_t room,
                        size_t *n);
/* Write all of p[0..n), retrying on EINTR/short writes.  WIRE_OK or
 * WIRE_E_IO. */
int wire_write_all(int fd, const void *p, size_t n);
/* The most descriptors one message passes (SCM_RIGHTS), either way. */
#define WIRE_MAX_PASS_FDS 4
/*
 * One sendmsg() of p[0..n) on a Unix socket with fds[0..nfds) (nfds at
 * most WIRE_MAX_PASS_FDS) passed on its first byte; flags are
 * sendmsg()'s, MSG_NOSIGNAL added.  What sendmsg() returns: the rest of
 * a short write goes without them (wire_write_all).
 */
ssize_t wire_send_fds(int sock, const void *p, size_t n, const int *fds,
    int nfds, int flags);
/*
 * One recvmsg() into p[0..n) on a Unix socket (MSG_CMSG_CLOEXEC added to
 * flags).  The descriptors that came are appended to fds while *nfds is
 * below max, and the rest closed: a peer cannot make us hold descriptors
 * we did not ask for.  What recvmsg() returns.
 */
ssize_t wire_recv_fds(int sock, void *p, size_t n, int *fds, int max,
    int *nfds, int flags);

#endif
