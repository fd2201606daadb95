/*
 * pickledis-text.c - the pickle disassembler's rendering for people: UTF-8
 * sequences, Python-style reprs of strings and bytes, and each opcode's
 * argument as text.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickledis.h"
#include "pickledis-int.h"

size_t
pickledis_utf8_seq(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint32_t c;
	size_t len, i;

	if (n == 0)
		return 0;
	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		c = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		c = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		c = p[0] & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return len;
}

/* Append the escape of one byte or character; returns bytes written, 0
 * when it does not fit in room. */
static size_t
pd_repr_one(char *o, size_t room, const uint8_t *p, size_t n, int text,
            uint8_t quote, size_t *used)
{
	uint32_t cp;
	size_t k;
	int w;

	*used = 1;
	if (p[0] == '\\' || p[0] == quote)
		w = snprintf(o, room, "\\%c", p[0]);
	else if (p[0] == '\n')
		w = snprintf(o, room, "\\n");
	else if (p[0] == '\r')
		w = snprintf(o, room, "\\r");
	else if (p[0] == '\t')
		w = snprintf(o, room, "\\t");
	else if (p[0] >= 0x20 && p[0] < 0x7f)
		w = snprintf(o, room, "%c", p[0]);
	else if (text && (k = pickledis_utf8_seq(p, n, &cp)) > 1) {
		*used = k;
		if (cp < 0xa0 || cp == 0x2028 || cp == 0x2029)
			w = snprintf(o, room, "\\u%04x", (unsigned)cp);
		else if (k + 1 > room)
			return 0;
		else {
			memcpy(o, p, k);
			o[k] = '\0';
			w = (int)k;
		}
	} else
		w = snprintf(o, room, "\\x%02x", p[0]);
	return w < 0 || (size_t)w >= room ? 0 : (size_t)w;
}

char *
pickledis_repr(char *out, size_t cap, const uint8_t *p, size_t n, int text,
               size_t max)
{
	/* room kept back for the closing quote and the "... (N bytes)" */
	const size_t tail = 40;
	size_t o = 0, i = 0, used, w;

	if (cap == 0)
		return out;
	out[0] = '\0';
	if (cap <= tail + 4)
		return out;
	if (!text)
		out[o++] = 'b';
	out[o++] = '\'';
	while (i < n && i < max) {
		w = pd_repr_one(out + o, cap - tail - o, p + i, n - i, text,
		    '\'', &used);
		if (w == 0)
			break;
		o += w;
		i += used;
	}
	if (i < n)
		snprintf(out + o, cap - o, "'... (%zu bytes)", n);
	else
		snprintf(out + o, cap - o, "'");
	return out;
}

/* Render a text line (a number or a name) as printable text, no quotes. */
void
pd_render_line(char *out, size_t cap, const uint8_t *p, size_t n)
{
	char tmp[PICKLEDIS_TEXT_MAX];
	size_t len;

	pickledis_repr(tmp, sizeof tmp, p, n, 1, 200);
	len = strlen(tmp);
	/* drop the quotes pickledis_repr put around it */
	if (len >= 2 && tmp[len - 1] == '\'')
		tmp[len - 1] = '\0';
	snprintf(out, cap, "%s", tmp + 1);
}

/* Shortest %g that reads back as the same double (Python's repr). */
static void
pd_render_float(char *out, size_t cap, double f)
{
	int prec;

	for (prec = 1; prec <= 17; prec++) {
		snprintf(out, cap, "%.*g", prec, f);
		if (strtod(out, NULL) == f)
			break;
	}
	if (strpbrk(out, ".eni") == NULL && strlen(out) + 3 < cap)
		strcat(out, ".0");
}

/* Decimal of a little-endian two's complement integer of n bytes (up to
 * 128; longer ones are shown by size). */
static void
pd_render_long(char *out, size_t cap, const uint8_t *p, size_t n)
{
	uint8_t mag[128];
	char dig[320];
	size_t i, nd = 0, len = n;
	int neg = n > 0 && (p[n - 1] & 0x80), carry = 1;

	if (n == 0) {
		snprintf(out, cap, "0");
		return;
	}
	if (n > sizeof mag) {
		snprintf(out, cap, "<%s%zu-byte int>", neg ? "negative " : "", n);
		return;
	}
	for (i = 0; i < n; i++) {  /* big-endian magnitude */
		uint8_t b = p[n - 1 - i];
		mag[i] = neg ? (uint8_t)~b : b;
	}
	for (i = n; neg && i-- > 0 && carry;) {
		carry = mag[i] == 0xff;
		mag[i]++;
	}
	while (len > 0) {  /* repeated division by 10 */
		unsigned rem = 0;
		size_t start = n - len, j;
		for (j = start; j < n; j++) {
			unsigned cur = rem << 8 | mag[j];
			mag[j] = (uint8_t)(cur / 10);
			rem = cur % 10;
		}
		dig[nd++] = (char)('0' + rem);
		while (len > 0 && mag[n - len] == 0)
			len--;
	}
	if (nd == 0)
		dig[nd++] = '0';
	i = 0;
	if (neg && cap > 1)
		out[i++] = '-';
	while (nd > 0 && i + 1 < cap)
		out[i++] = dig[--nd];
	out[i] = '\0';
}

/* Render an opcode's argument into d->arg. */
void
pd_render_arg(pickledis *d, const struct pd_opinfo *oi, const struct pd_arg *a)
{
	char *o = d->arg;
	size_t cap = sizeof d->arg;

	switch (oi->arg) {
	case A_NONE:
		o[0] = '\0';
		break;
	case A_U1: case A_U2: case A_U4: case A_U8:
		snprintf(o, cap, "%llu", (unsigned long long)a->u);
		break;
	case A_I4:
		snprintf(o, cap, "%lld", (long long)a->i);
		break;
	case A_F8:
		pd_render_float(o, cap, a->f);
		break;
	case A_LINE:
		if (oi->kind == P_STR || oi->name[0] == 'P')
			pickledis_repr(o, cap, a->s, a->len, 1, 200);
		else
			pd_render_line(o, cap, a->s, a->len);
		break;
	case A_LINE2: {
		char m[PICKLEDIS_TEXT_MAX / 2], nm[PICKLEDIS_TEXT_MAX / 2];
		pd_render_line(m, sizeof m, a->s, a->len);
		pd_render_line(nm, sizeof nm, a->s2, a->len2);
		snprintf(o, cap, "%s %s", m, nm);
		break;
	}
	case A_LONG1: case A_LONG4:
		pd_render_long(o, cap, a->s, a->len);
		break;
	default: /* the byte strings */
		pickledis_repr(o, cap, a->s, a->len, oi->kind == P_STR, 200);
		break;
	}
}
