/*
 * pickledis.h - a pickle disassembler that never runs anything: it walks the
 * opcodes of protocols 0 to 5, checks every length against the input, keeps
 * a model of the unpickler's stack (enough to name the classes and
 * functions that GLOBAL, INST and STACK_GLOBAL load and to read the
 * persistent ids of BINPERSID), and reports the first malformation with its
 * offset.  pyshelf-dump uses it to show an entry and to verify it; any
 * bytes at all may be given to it.
 *
 * Nothing here allocates per opcode: a pickledis context keeps its stack,
 * memo and result arrays between runs, so that checking a million records
 * reuses the same memory.
 */
#ifndef PYSHELF_PICKLEDIS_H
#define PYSHELF_PICKLEDIS_H

#include <stddef.h>
#include <stdint.h>

/* Return values of pickledis_run() besides 0 and the callback's own. */
#define PICKLEDIS_E_MALFORMED (-1) /* not a well-formed pickle: see info */
#define PICKLEDIS_E_NOMEM     (-2) /* an allocation failed */

/* Highest pickle protocol understood. */
#define PICKLEDIS_PROTOCOL_MAX 5

/* Size of the rendered argument and note texts (truncated to fit). */
#define PICKLEDIS_TEXT_MAX 320

/* A persistent reference (BINPERSID or PERSID) found in the pickle. */
struct pickledis_ref {
	size_t pos;             /* offset of its first occurrence */
	size_t count;           /* how many times the pickle refers to it */
	uint8_t kind;           /* 'g' global, 'h' handle, 0: another pid */
	const uint8_t *name;    /* 'g': the name; 0: the pid's text
	                           (PERSID) or NULL; borrowed from the input */
	size_t name_len;
	uint64_t handle;        /* 'h': the handle id */
};

/* A class or function the pickle loads by name. */
struct pickledis_name {
	size_t pos;             /* offset of its first occurrence */
	const uint8_t *module;  /* borrowed from the input */
	size_t module_len;
	const uint8_t *name;    /* qualified name, borrowed */
	size_t name_len;
};

/* One opcode as handed to the caller. */
struct pickledis_op {
	size_t pos;             /* offset of the opcode byte */
	uint8_t code;           /* the opcode byte */
	const char *name;       /* its name, e.g. "SHORT_BINUNICODE" */
	int proto;              /* protocol that introduced it */
	size_t depth;           /* MARKs open before it (for indenting) */
	const char *arg;        /* rendered argument, "" when none */
	const char *note;       /* what it loads or refers to, "" if nothing */
};

/* What a run found; valid until the next run or pickledis_free(), and
 * borrowing from the input bytes. */
struct pickledis_info {
	int protocol;           /* PROTO's argument, else the highest protocol
	                           of the opcodes seen */
	size_t nops;            /* opcodes read */
	size_t size;            /* bytes up to and including STOP */
	size_t trailing;        /* bytes after STOP (the unpickler ignores
	                           them; a stored entry has none) */
	size_t nbuffers;        /* NEXT_BUFFER opcodes */
	const struct pickledis_ref *refs;   /* unique, in order of first use */
	size_t nrefs;
	const struct pickledis_name *names; /* unique, in order of first use */
	size_t nnames;
	const char *error;      /* NULL when well formed, else what is wrong */
	size_t error_pos;       /* offset of the opcode at fault */
};

typedef struct pickledis pickledis;

/* A new context, or NULL when out of memory.  Free with pickledis_free. */
pickledis *pickledis_new(void);
void pickledis_free(pickledis *d);

/*
 * Disassemble p[0..n).  fn, when not NULL, is called for each opcode in
 * order, with the argument and note rendered as printable UTF-8 text (the
 * op and its strings are valid only during the call); returning nonzero
 * stops the run with that value.  With fn NULL nothing is rendered: the run
 * only validates and collects the info, which is the fast path of --check.
 *
 * buffers/nbuffers: the lengths of the record's out-of-band buffers, to
 * check NEXT_BUFFER against and show their sizes; pass NULL and
 * (size_t)-1 when unknown.
 *
 * Returns 0 when the pickle is well formed, PICKLEDIS_E_MALFORMED when not
 * (pickledis_info()->error and error_pos say what and where; the opcodes
 * before it were still handed to fn), PICKLEDIS_E_NOMEM, or fn's value.
 */
int pickledis_run(pickledis *d, const uint8_t *p, size_t n,
                  const uint64_t *buffers, size_t nbuffers,
                  int (*fn)(const struct pickledis_op *, void *), void *arg);

/* The last run's findings (borrowed from d and from the input). */
const struct pickledis_info *pickledis_info(const pickledis *d);

/*
 * Render bytes as a Python-like literal into out (cap bytes, always
 * NUL-terminated): text=1 gives 'str' (valid UTF-8 kept, the rest
 * escaped), text=0 gives b'bytes'.  At most max input bytes are shown, then
 * "..." and the full length.  Returns out.
 */
char *pickledis_repr(char *out, size_t cap, const uint8_t *p, size_t n,
                     int text, size_t max);

/*
 * Length of the valid UTF-8 sequence at p[0..n) (1 to 4), its code point
 * in *cp; 0 when p does not start a valid one (overlong forms, surrogates
 * and values past U+10FFFF are invalid).
 */
size_t pickledis_utf8_seq(const uint8_t *p, size_t n, uint32_t *cp);

#endif
