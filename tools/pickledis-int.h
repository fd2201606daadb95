/*
 * pickledis-int.h - what the pickle disassembler's files share, and
 * nothing outside them sees: the opcode table's types (pickledis-ops.c),
 * the stack model's items and the context (pickledis.c).
 */
#ifndef PYSHELF_PICKLEDIS_INT_H
#define PYSHELF_PICKLEDIS_INT_H

#include "pickledis.h"

/* How an opcode's argument is encoded in the stream. */
enum pd_argtype {
	A_NONE,
	A_U1, A_U2, A_U4, A_U8,   /* little-endian unsigned */
	A_I4,                     /* little-endian signed 32 bits */
	A_F8,                     /* big-endian IEEE double (BINFLOAT) */
	A_LINE,                   /* text up to '\n' */
	A_LINE2,                  /* two such lines: module, name */
	A_BYTES1, A_BYTES4, A_BYTES8, /* u1/u4/u8 length, then the bytes */
	A_SBYTES4,                /* signed i4 length (BINSTRING) */
	A_LONG1, A_LONG4          /* u1/i4 length, then a little-endian
	                             two's complement integer */
};

/* What kind of value an opcode pushes, for the stack model and display. */
enum pd_push {
	P_ANY,      /* anything the model does not follow */
	P_STR,      /* a str (its bytes are the argument) */
	P_INT,      /* an int (from the argument) */
	P_BYTES,    /* bytes or a protocol-0/1 str: shown as bytes */
	P_SPECIAL   /* handled by the opcode's own code */
};

/* One opcode: name, argument, protocol and generic stack effect. */
struct pd_opinfo {
	const char *name;     /* NULL: not an opcode */
	uint8_t arg;          /* enum pd_argtype */
	uint8_t proto;        /* protocol that introduced it */
	uint8_t markpop;      /* pops everything down to the topmost MARK */
	uint8_t pop;          /* then pops this many objects */
	uint8_t push;         /* then pushes this many */
	uint8_t kind;         /* enum pd_push: what it pushes */
};

/* What the stack model knows of one object. */
enum pd_kind {
	K_UNSET = 0,  /* memo slot never written */
	K_ANY,        /* an object the model does not follow */
	K_STR,        /* a str: s, len */
	K_INT,        /* a non-negative int: u */
	K_PID         /* a ('g', name) or ('h', id) tuple */
};

/* One modelled object (stack slot or memo slot). */
struct pd_item {
	uint8_t kind;         /* enum pd_kind */
	uint8_t pidkind;      /* K_PID: 'g' or 'h' */
	const uint8_t *s;     /* K_STR, K_PID 'g': the text, borrowed */
	size_t len;
	uint64_t u;           /* K_INT, K_PID 'h' */
};

/* A decoded argument. */
struct pd_arg {
	uint64_t u;           /* unsigned value; lengths */
	int64_t i;            /* signed value (I4; LONG1/LONG4 when it fits) */
	int fits;             /* LONG1/LONG4: i holds the value */
	double f;             /* F8 */
	const uint8_t *s;     /* data, or the first line */
	size_t len;
	const uint8_t *s2;    /* the second line (A_LINE2) */
	size_t len2;
};

/* Largest modelled stack and memo (objects); beyond, the run fails or
 * the memo stops being followed. */
#define PD_STACK_MAX ((size_t)1 << 24)
#define PD_MEMO_MAX ((size_t)1 << 22)

struct pickledis {
	struct pd_item *stack;      /* the object stack */
	size_t sp, stack_cap;
	size_t *marks;              /* stack heights at each open MARK */
	size_t nmarks, marks_cap;
	struct pd_item *memo;       /* memo slots by index */
	size_t memo_cap, memo_count;/* allocated slots; slots written */
	size_t memo_hi;             /* highest slot written + 1 (to clear) */
	int memo_lossy;             /* an index was too big to keep */
	struct pickledis_ref *refs; /* unique persistent references */
	size_t refs_cap;
	struct pickledis_name *names; /* unique global names */
	size_t names_cap;
	uint32_t *refset;           /* hash of refs: index + 1, 0 empty */
	size_t refset_cap;
	uint32_t *nameset;          /* hash of names */
	size_t nameset_cap;
	const uint64_t *buffers;    /* out-of-band buffer lengths (caller's) */
	size_t nbuffers;
	int render;                 /* a callback wants text */
	struct pickledis_info info; /* the run's findings */
	char arg[PICKLEDIS_TEXT_MAX];   /* rendered argument */
	char note[PICKLEDIS_TEXT_MAX];  /* rendered note */
	char err[200];              /* the error text */
};

/* pickledis.c */
int pd_fail(pickledis *d, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* pickledis-ops.c */
extern const struct pd_opinfo pd_ops[256];
int pd_read_arg(pickledis *d, const uint8_t *p, size_t n, size_t op,
                uint8_t type, struct pd_arg *a, size_t *next);

/* pickledis-text.c */
void pd_render_line(char *out, size_t cap, const uint8_t *p, size_t n);
void pd_render_arg(pickledis *d, const struct pd_opinfo *oi,
                   const struct pd_arg *a);

#endif
