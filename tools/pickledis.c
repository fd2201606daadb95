/*
 * pickledis.c - the pickle disassembler (see pickledis.h): an opcode table
 * for protocols 0 to 5, argument decoding with every length checked against
 * the input, a model of the unpickler's stack and memo that knows strings,
 * small ints and ('g'|'h', key) tuples (all it needs to name globals and
 * read persistent ids), and rendering for people.  It follows
 * Lib/pickletools.py for names and stack effects and Modules/_pickle.c for
 * what the real unpickler accepts; it executes nothing.  This file holds
 * the context, the result sets, the stack model and the run; the opcode
 * table and argument decoding are in pickledis-ops.c, the rendering in
 * pickledis-text.c.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickledis.h"
#include "pickledis-int.h"

static int pd_step(pickledis *d, uint8_t code, const struct pd_arg *a,
                   size_t pos, size_t n);

/* New context with empty arrays (grown on first use). */
pickledis *
pickledis_new(void)
{
	return calloc(1, sizeof(pickledis));
}

void
pickledis_free(pickledis *d)
{
	if (d == NULL)
		return;
	free(d->stack);
	free(d->marks);
	free(d->memo);
	free(d->refs);
	free(d->names);
	free(d->refset);
	free(d->nameset);
	free(d);
}

const struct pickledis_info *
pickledis_info(const pickledis *d)
{
	return &d->info;
}

/* Record the first malformation (text in d->err) and return the error. */
int
pd_fail(pickledis *d, size_t pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, sizeof d->err, fmt, ap);
	va_end(ap);
	d->info.error = d->err;
	d->info.error_pos = pos;
	return PICKLEDIS_E_MALFORMED;
}

/* Grow *arr (of *cap elements of size sz) to hold at least want. */
static int
pd_grow(void *arr, size_t *cap, size_t want, size_t sz)
{
	void **pp = arr, *np;
	size_t ncap = *cap < 16 ? 16 : *cap;

	if (want <= *cap)
		return 0;
	while (ncap < want)
		ncap *= 2;
	if ((np = realloc(*pp, ncap * sz)) == NULL)
		return PICKLEDIS_E_NOMEM;
	*pp = np;
	*cap = ncap;
	return 0;
}

/* --- the result sets ---------------------------------------------------------- */

/* FNV-1a over two byte strings and a kind byte. */
static uint64_t
pd_hash(uint8_t kind, const uint8_t *a, size_t alen, const uint8_t *b,
        size_t blen)
{
	uint64_t h = 1469598103934665603ull ^ kind;
	size_t i;

	for (i = 0; i < alen; i++)
		h = (h ^ a[i]) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (i = 0; i < blen; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

/* Rebuild a hash set of size cap over count items, hashed by hfn. */
static int
pd_set_rehash(uint32_t **set, size_t *cap, size_t count,
              uint64_t (*hfn)(const pickledis *, size_t), const pickledis *d)
{
	size_t ncap = *cap == 0 ? 64 : *cap * 2, i, j;
	uint32_t *ns = calloc(ncap, sizeof *ns);

	if (ns == NULL)
		return PICKLEDIS_E_NOMEM;
	for (i = 0; i < count; i++) {
		for (j = hfn(d, i) & (ncap - 1); ns[j] != 0; j = (j + 1) & (ncap - 1))
			;
		ns[j] = (uint32_t)(i + 1);
	}
	free(*set);
	*set = ns;
	*cap = ncap;
	return 0;
}

static uint64_t
pd_ref_hash(const pickledis *d, size_t i)
{
	const struct pickledis_ref *r = &d->refs[i];
	uint8_t hb[8];

	if (r->kind == 'h') {
		memcpy(hb, &r->handle, 8);
		return pd_hash('h', hb, 8, NULL, 0);
	}
	return pd_hash(r->kind, r->name, r->name_len, NULL, 0);
}

static uint64_t
pd_name_hash(const pickledis *d, size_t i)
{
	const struct pickledis_name *m = &d->names[i];

	return pd_hash(0, m->module, m->module_len, m->name, m->name_len);
}

/* Count one persistent reference, adding it when new. */
static int
pd_add_ref(pickledis *d, const struct pickledis_ref *r)
{
	struct pickledis_info *in = &d->info;
	size_t j, i;
	int rc;

	if ((in->nrefs + 1) * 2 > d->refset_cap &&
	    (rc = pd_set_rehash(&d->refset, &d->refset_cap, in->nrefs,
	    pd_ref_hash, d)) != 0)
		return rc;
	if ((rc = pd_grow(&d->refs, &d->refs_cap, in->nrefs + 1,
	    sizeof *d->refs)) != 0)
		return rc;
	d->refs[in->nrefs] = *r;
	j = pd_ref_hash(d, in->nrefs) & (d->refset_cap - 1);
	for (; d->refset[j] != 0; j = (j + 1) & (d->refset_cap - 1)) {
		struct pickledis_ref *o = &d->refs[d->refset[j] - 1];
		if (o->kind == r->kind && (r->kind == 'h' ?
		    o->handle == r->handle : (o->name_len == r->name_len &&
		    (r->name_len == 0 || memcmp(o->name, r->name,
		    r->name_len) == 0)))) {
			o->count++;
			return 0;
		}
	}
	i = in->nrefs++;
	d->refs[i].count = 1;
	d->refset[j] = (uint32_t)(i + 1);
	in->refs = d->refs;
	return 0;
}

/* Remember one global name, when new. */
static int
pd_add_name(pickledis *d, const struct pickledis_name *m)
{
	struct pickledis_info *in = &d->info;
	size_t j;
	int rc;

	if ((in->nnames + 1) * 2 > d->nameset_cap &&
	    (rc = pd_set_rehash(&d->nameset, &d->nameset_cap, in->nnames,
	    pd_name_hash, d)) != 0)
		return rc;
	if ((rc = pd_grow(&d->names, &d->names_cap, in->nnames + 1,
	    sizeof *d->names)) != 0)
		return rc;
	d->names[in->nnames] = *m;
	j = pd_name_hash(d, in->nnames) & (d->nameset_cap - 1);
	for (; d->nameset[j] != 0; j = (j + 1) & (d->nameset_cap - 1)) {
		struct pickledis_name *o = &d->names[d->nameset[j] - 1];
		if (o->module_len == m->module_len &&
		    o->name_len == m->name_len &&
		    memcmp(o->module, m->module, m->module_len) == 0 &&
		    memcmp(o->name, m->name, m->name_len) == 0)
			return 0;
	}
	d->nameset[j] = (uint32_t)(in->nnames + 1);
	in->nnames++;
	in->names = d->names;
	return 0;
}

/* --- the stack model ------------------------------------------------------- */

/* Topmost MARK's stack height (0 without one). */
static size_t
pd_fence(const pickledis *d)
{
	return d->nmarks > 0 ? d->marks[d->nmarks - 1] : 0;
}

/* Push one modelled object. */
static int
pd_push(pickledis *d, size_t pos, const struct pd_item *it)
{
	if (d->sp >= PD_STACK_MAX)
		return pd_fail(d, pos, "stack deeper than %zu objects",
		    PD_STACK_MAX);
	if (pd_grow(&d->stack, &d->stack_cap, d->sp + 1, sizeof *d->stack))
		return PICKLEDIS_E_NOMEM;
	d->stack[d->sp++] = *it;
	return 0;
}

/* The pid an object stands for when it is ('g', str) or ('h', int). */
static void
pd_make_pid(const struct pd_item *a, const struct pd_item *b,
            struct pd_item *out)
{
	memset(out, 0, sizeof *out);
	out->kind = K_ANY;
	if (a->kind != K_STR || a->len != 1)
		return;
	if (a->s[0] == 'g' && b->kind == K_STR) {
		out->kind = K_PID;
		out->pidkind = 'g';
		out->s = b->s;
		out->len = b->len;
	} else if (a->s[0] == 'h' && b->kind == K_INT) {
		out->kind = K_PID;
		out->pidkind = 'h';
		out->u = b->u;
	}
}

/* Write slot idx of the memo (a copy of the top of the stack). */
static int
pd_memo_put(pickledis *d, size_t pos, uint64_t idx, size_t n)
{
	if (d->sp <= pd_fence(d))
		return pd_fail(d, pos, "memo write with an empty stack");
	if (idx >= PD_MEMO_MAX || idx > n) {
		d->memo_lossy = 1;  /* not a real pickler's index: not kept */
		return 0;
	}
	if (idx >= d->memo_cap) {
		size_t old = d->memo_cap;
		if (pd_grow(&d->memo, &d->memo_cap, (size_t)idx + 1,
		    sizeof *d->memo))
			return PICKLEDIS_E_NOMEM;
		memset(d->memo + old, 0, (d->memo_cap - old) * sizeof *d->memo);
	}
	if (d->memo[idx].kind == K_UNSET)
		d->memo_count++;
	if (idx >= d->memo_hi)
		d->memo_hi = (size_t)idx + 1;
	d->memo[idx] = d->stack[d->sp - 1];
	return 0;
}

/* Push memo slot idx. */
static int
pd_memo_get(pickledis *d, size_t pos, uint64_t idx)
{
	struct pd_item any = {K_ANY, 0, NULL, 0, 0};

	if (idx < d->memo_cap && d->memo[idx].kind != K_UNSET)
		return pd_push(d, pos, &d->memo[idx]);
	if (d->memo_lossy)
		return pd_push(d, pos, &any);
	return pd_fail(d, pos, "memo slot %llu read before it was written",
	    (unsigned long long)idx);
}

/* Parse a decimal text line (INT, LONG, GET, PUT) into *v; -1 if it is
 * not a plain non-negative number. */
static int
pd_decimal(const uint8_t *s, size_t len, uint64_t *v)
{
	size_t i;

	*v = 0;
	if (len > 0 && s[len - 1] == 'L')  /* protocol 0 LONG: "123L" */
		len--;
	if (len == 0 || len > 19)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (uint64_t)(s[i] - '0');
	}
	return 0;
}

/* Name a global (GLOBAL, INST, STACK_GLOBAL) in the note and the info. */
static int
pd_global(pickledis *d, size_t pos, const uint8_t *mod, size_t mlen,
          const uint8_t *name, size_t nlen)
{
	struct pickledis_name m = {pos, mod, mlen, name, nlen};

	if (d->render) {
		char a[PICKLEDIS_TEXT_MAX / 2 - 10], b[PICKLEDIS_TEXT_MAX / 2 - 10];
		pd_render_line(a, sizeof a, mod, mlen);
		pd_render_line(b, sizeof b, name, nlen);
		snprintf(d->note, sizeof d->note, "loads %s.%s", a, b);
	}
	return pd_add_name(d, &m);
}

/* Record a persistent reference read from a modelled pid (or PERSID's
 * text when text != NULL). */
static int
pd_persid(pickledis *d, size_t pos, const struct pd_item *pid,
          const uint8_t *text, size_t tlen)
{
	struct pickledis_ref r;

	memset(&r, 0, sizeof r);
	r.pos = pos;
	if (pid != NULL && pid->kind == K_PID) {
		r.kind = pid->pidkind;
		r.name = pid->s;
		r.name_len = pid->len;
		r.handle = pid->u;
	} else {
		r.name = text;
		r.name_len = tlen;
	}
	if (d->render) {
		char t[PICKLEDIS_TEXT_MAX - 40];
		if (r.kind == 'g')
			snprintf(d->note, sizeof d->note, "ref global %s",
			    pickledis_repr(t, sizeof t, r.name, r.name_len, 1,
			    200));
		else if (r.kind == 'h')
			snprintf(d->note, sizeof d->note, "ref handle %llu",
			    (unsigned long long)r.handle);
		else if (text != NULL)
			snprintf(d->note, sizeof d->note, "ref %s (not an "
			    "entry key)", pickledis_repr(t, sizeof t, text,
			    tlen, 1, 200));
		else
			snprintf(d->note, sizeof d->note, "ref (pid not "
			    "known statically)");
	}
	return pd_add_ref(d, &r);
}

/* The model of the few opcodes with effects of their own, run after the
 * generic pops (the popped objects are still at d->stack[d->sp...]). */
static int
pd_special(pickledis *d, uint8_t code, const struct pd_arg *a, size_t pos,
           size_t n, struct pd_item *res)
{
	struct pd_item *top = d->stack + d->sp; /* first popped object */
	uint64_t v;

	switch (code) {
	case 'P':
		return pd_persid(d, pos, NULL, a->s, a->len);
	case 'Q':
		return pd_persid(d, pos, top, NULL, 0);
	case 'c':
	case 'i':
		return pd_global(d, pos, a->s, a->len, a->s2, a->len2);
	case 0x93:
		if (top[0].kind == K_STR && top[1].kind == K_STR)
			return pd_global(d, pos, top[0].s, top[0].len,
			    top[1].s, top[1].len);
		if (top[0].kind != K_ANY || top[1].kind != K_ANY)
			return pd_fail(d, pos, "STACK_GLOBAL needs two str");
		if (d->render)
			snprintf(d->note, sizeof d->note,
			    "loads a global not known statically");
		return 0;
	case 0x86:
		pd_make_pid(&top[0], &top[1], res);
		return 0;
	case 0x97:
		if (d->nbuffers != (size_t)-1 && d->info.nbuffers >= d->nbuffers)
			return pd_fail(d, pos, "NEXT_BUFFER #%zu but the record "
			    "has %zu out-of-band buffers", d->info.nbuffers,
			    d->nbuffers);
		if (d->render) {
			if (d->buffers != NULL)
				snprintf(d->note, sizeof d->note, "out-of-band "
				    "buffer #%zu (%llu bytes)", d->info.nbuffers,
				    (unsigned long long)
				    d->buffers[d->info.nbuffers]);
			else
				snprintf(d->note, sizeof d->note, "out-of-band "
				    "buffer #%zu", d->info.nbuffers);
		}
		d->info.nbuffers++;
		return 0;
	case 'I':
		if (a->len == 2 && a->s[0] == '0' && (a->s[1] == '0' ||
		    a->s[1] == '1')) {
			if (d->render)
				snprintf(d->note, sizeof d->note, "%s",
				    a->s[1] == '1' ? "True" : "False");
			return 0;
		}
		if (pd_decimal(a->s, a->len, &v) == 0) {
			res->kind = K_INT;
			res->u = v;
		}
		return 0;
	}
	return 0;
}

/* What a str, int or bytes opcode pushes. */
static void
pd_value(uint8_t code, const struct pd_opinfo *oi, const struct pd_arg *a,
         struct pd_item *res)
{
	uint64_t v;

	if (oi->kind == P_STR) {
		/* UNICODE's raw-unicode-escape text is only followed when it
		 * has no escapes */
		if (code == 'V' && memchr(a->s, '\\', a->len) != NULL)
			return;
		res->kind = K_STR;
		res->s = a->s;
		res->len = a->len;
	} else if (oi->kind == P_INT) {
		if (code == 'K' || code == 'M' || (code == 'J' && a->i >= 0)) {
			res->kind = K_INT;
			res->u = a->u;
		} else if ((code == 0x8a || code == 0x8b) && a->fits &&
		    a->i >= 0) {
			res->kind = K_INT;
			res->u = (uint64_t)a->i;
		} else if (code == 'L' && pd_decimal(a->s, a->len, &v) == 0) {
			res->kind = K_INT;
			res->u = v;
		}
	}
}

/* The opcodes that only touch the memo, the marks or the top. */
static int
pd_step_simple(pickledis *d, uint8_t code, const struct pd_arg *a,
               size_t pos, size_t n)
{
	uint64_t idx = a->u;

	switch (code) {
	case '(':
		if (pd_grow(&d->marks, &d->marks_cap, d->nmarks + 1,
		    sizeof *d->marks))
			return PICKLEDIS_E_NOMEM;
		d->marks[d->nmarks++] = d->sp;
		return 0;
	case '0':
		if (d->sp > pd_fence(d))
			d->sp--;
		else if (d->nmarks > 0)
			d->nmarks--;  /* what _pickle.c does with POP at a MARK */
		else
			return pd_fail(d, pos, "POP with an empty stack");
		return 0;
	case '2':
		if (d->sp <= pd_fence(d))
			return pd_fail(d, pos, "DUP with an empty stack");
		return pd_push(d, pos, &d->stack[d->sp - 1]);
	case 'g':
	case 'p':
		if (pd_decimal(a->s, a->len, &idx) != 0)
			return pd_fail(d, pos, "bad memo index in %s",
			    code == 'g' ? "GET" : "PUT");
		/* FALLTHROUGH */
	case 'h': case 'j': case 'q': case 'r':
		if (code == 'g' || code == 'h' || code == 'j')
			return pd_memo_get(d, pos, idx);
		return pd_memo_put(d, pos, idx, n);
	case 0x94:
		return pd_memo_put(d, pos, d->memo_count, n);
	case 0x80:
		if (a->u > PICKLEDIS_PROTOCOL_MAX)
			return pd_fail(d, pos, "unsupported pickle protocol %llu",
			    (unsigned long long)a->u);
		d->info.protocol = (int)a->u;
		return 0;
	case 0x95:
		return 0;  /* FRAME: checked against the input by the caller */
	}
	return 1; /* not a simple opcode */
}

/* Apply one opcode's effect to the model. */
static int
pd_step(pickledis *d, uint8_t code, const struct pd_arg *a, size_t pos,
        size_t n)
{
	const struct pd_opinfo *oi = &pd_ops[code];
	struct pd_item res = {K_ANY, 0, NULL, 0, 0};
	size_t fence;
	int rc;

	if ((rc = pd_step_simple(d, code, a, pos, n)) != 1)
		return rc;
	if (oi->markpop) {
		if (d->nmarks == 0)
			return pd_fail(d, pos, "%s without a MARK", oi->name);
		fence = d->marks[d->nmarks - 1];
		if (code == 'o' && d->sp - fence < 1)
			return pd_fail(d, pos, "OBJ without a class");
		if (code == 't' && d->sp - fence == 2)
			pd_make_pid(&d->stack[fence], &d->stack[fence + 1], &res);
		d->sp = fence;
		d->nmarks--;
	}
	if (oi->pop > 0) {
		if (d->sp - pd_fence(d) < oi->pop)
			return pd_fail(d, pos, "stack underflow: %s needs %u "
			    "object%s", oi->name, oi->pop, oi->pop > 1 ? "s" : "");
		d->sp -= oi->pop;
	}
	if (oi->kind == P_SPECIAL) {
		if ((rc = pd_special(d, code, a, pos, n, &res)) != 0)
			return rc;
	} else
		pd_value(code, oi, a, &res);
	if (oi->push > 0)
		return pd_push(d, pos, &res);
	return 0;
}

/* Start a run: empty stack, marks, memo and findings. */
static void
pd_reset(pickledis *d, const uint64_t *buffers, size_t nbuffers, int render)
{
	d->sp = 0;
	d->nmarks = 0;
	/* clear only what the last run used: after one huge pickle, the
	 * next million small ones must not each pay for its arrays */
	if (d->memo_hi > 0)
		memset(d->memo, 0, d->memo_hi * sizeof *d->memo);
	d->memo_hi = 0;
	d->memo_count = 0;
	d->memo_lossy = 0;
	d->buffers = buffers;
	d->nbuffers = nbuffers;
	d->render = render;
	if (d->info.nrefs > 0 && d->refset_cap > 4096) {
		free(d->refset);  /* rebuilt small on the next add */
		d->refset = NULL;
		d->refset_cap = 0;
	} else if (d->info.nrefs > 0)
		memset(d->refset, 0, d->refset_cap * sizeof *d->refset);
	if (d->info.nnames > 0 && d->nameset_cap > 4096) {
		free(d->nameset);
		d->nameset = NULL;
		d->nameset_cap = 0;
	} else if (d->info.nnames > 0)
		memset(d->nameset, 0, d->nameset_cap * sizeof *d->nameset);
	memset(&d->info, 0, sizeof d->info);
	d->info.refs = d->refs;
	d->info.names = d->names;
	d->arg[0] = d->note[0] = '\0';
}

/* Hand one opcode to the caller's callback. */
static int
pd_emit(pickledis *d, const struct pd_opinfo *oi, uint8_t code, size_t pos,
        size_t depth, const struct pd_arg *a,
        int (*fn)(const struct pickledis_op *, void *), void *arg)
{
	struct pickledis_op op;

	pd_render_arg(d, oi, a);
	op.pos = pos;
	op.code = code;
	op.name = oi->name;
	op.proto = oi->proto;
	op.depth = depth;
	op.arg = d->arg;
	op.note = d->note;
	return fn(&op, arg);
}

int
pickledis_run(pickledis *d, const uint8_t *p, size_t n,
              const uint64_t *buffers, size_t nbuffers,
              int (*fn)(const struct pickledis_op *, void *), void *arg)
{
	const struct pd_opinfo *oi;
	struct pd_arg a;
	size_t pos = 0, next, depth;
	int rc, maxproto = 0, cb;

	pd_reset(d, buffers, nbuffers, fn != NULL);
	while (pos < n) {
		uint8_t code = p[pos];
		oi = &pd_ops[code];
		if (oi->name == NULL)
			return pd_fail(d, pos, "unknown opcode 0x%02x", code);
		if ((rc = pd_read_arg(d, p, n, pos, oi->arg, &a, &next)) != 0)
			return rc;
		if (code == 0x95 && a.u > n - next)
			return pd_fail(d, pos, "FRAME of %llu bytes runs past "
			    "the end (%zu bytes left)", (unsigned long long)a.u,
			    n - next);
		if (oi->proto > maxproto)
			maxproto = oi->proto;
		if (d->info.protocol < maxproto && code != 0x80)
			d->info.protocol = maxproto;
		depth = d->nmarks;
		d->note[0] = '\0';
		rc = pd_step(d, code, &a, pos, n);
		if (rc == PICKLEDIS_E_NOMEM)
			return rc;
		d->info.nops++;
		if (fn != NULL && (cb = pd_emit(d, oi, code, pos, depth, &a, fn,
		    arg)) != 0)
			return cb;
		if (rc != 0)
			return rc;
		if (code == '.') {
			d->info.size = next;
			d->info.trailing = n - next;
			if (d->sp != 0 || d->nmarks != 0)
				return pd_fail(d, pos, "STOP leaves %zu object%s "
				    "and %zu MARK%s on the stack", d->sp,
				    d->sp == 1 ? "" : "s", d->nmarks,
				    d->nmarks == 1 ? "" : "s");
			return 0;
		}
		pos = next;
	}
	if (n == 0)
		return pd_fail(d, 0, "empty pickle");
	return pd_fail(d, n, "no STOP opcode: the pickle ends early "
	    "(truncated?)");
}
