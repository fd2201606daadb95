/*
 * pickledis-ops.c - the pickle disassembler's opcode table for protocols 0
 * to 5 (names and stack effects after Lib/pickletools.py) and the decoding
 * of each opcode's argument, every length checked against the input.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickledis.h"
#include "pickledis-int.h"

#define OP(c, n, a, pr, mk, po, pu, k) \
	[c] = {n, a, pr, mk, po, pu, k}
const struct pd_opinfo pd_ops[256] = {
	OP('(', "MARK", A_NONE, 0, 0, 0, 0, P_SPECIAL),
	OP('.', "STOP", A_NONE, 0, 0, 1, 0, P_SPECIAL),
	OP('0', "POP", A_NONE, 0, 0, 0, 0, P_SPECIAL),
	OP('1', "POP_MARK", A_NONE, 1, 1, 0, 0, P_ANY),
	OP('2', "DUP", A_NONE, 0, 0, 0, 0, P_SPECIAL),
	OP('F', "FLOAT", A_LINE, 0, 0, 0, 1, P_ANY),
	OP('I', "INT", A_LINE, 0, 0, 0, 1, P_INT),
	OP('J', "BININT", A_I4, 1, 0, 0, 1, P_INT),
	OP('K', "BININT1", A_U1, 1, 0, 0, 1, P_INT),
	OP('L', "LONG", A_LINE, 0, 0, 0, 1, P_INT),
	OP('M', "BININT2", A_U2, 1, 0, 0, 1, P_INT),
	OP('N', "NONE", A_NONE, 0, 0, 0, 1, P_ANY),
	OP('P', "PERSID", A_LINE, 0, 0, 0, 1, P_SPECIAL),
	OP('Q', "BINPERSID", A_NONE, 1, 0, 1, 1, P_SPECIAL),
	OP('R', "REDUCE", A_NONE, 0, 0, 2, 1, P_ANY),
	OP('S', "STRING", A_LINE, 0, 0, 0, 1, P_ANY),
	OP('T', "BINSTRING", A_SBYTES4, 1, 0, 0, 1, P_BYTES),
	OP('U', "SHORT_BINSTRING", A_BYTES1, 1, 0, 0, 1, P_BYTES),
	OP('V', "UNICODE", A_LINE, 0, 0, 0, 1, P_STR),
	OP('X', "BINUNICODE", A_BYTES4, 1, 0, 0, 1, P_STR),
	OP('a', "APPEND", A_NONE, 0, 0, 2, 1, P_ANY),
	OP('b', "BUILD", A_NONE, 0, 0, 2, 1, P_ANY),
	OP('c', "GLOBAL", A_LINE2, 0, 0, 0, 1, P_SPECIAL),
	OP('d', "DICT", A_NONE, 0, 1, 0, 1, P_ANY),
	OP('}', "EMPTY_DICT", A_NONE, 1, 0, 0, 1, P_ANY),
	OP('e', "APPENDS", A_NONE, 1, 1, 1, 1, P_ANY),
	OP('g', "GET", A_LINE, 0, 0, 0, 0, P_SPECIAL),
	OP('h', "BINGET", A_U1, 1, 0, 0, 0, P_SPECIAL),
	OP('i', "INST", A_LINE2, 0, 1, 0, 1, P_SPECIAL),
	OP('j', "LONG_BINGET", A_U4, 1, 0, 0, 0, P_SPECIAL),
	OP('l', "LIST", A_NONE, 0, 1, 0, 1, P_ANY),
	OP(']', "EMPTY_LIST", A_NONE, 1, 0, 0, 1, P_ANY),
	OP('o', "OBJ", A_NONE, 1, 1, 0, 1, P_SPECIAL),
	OP('p', "PUT", A_LINE, 0, 0, 0, 0, P_SPECIAL),
	OP('q', "BINPUT", A_U1, 1, 0, 0, 0, P_SPECIAL),
	OP('r', "LONG_BINPUT", A_U4, 1, 0, 0, 0, P_SPECIAL),
	OP('s', "SETITEM", A_NONE, 0, 0, 3, 1, P_ANY),
	OP('t', "TUPLE", A_NONE, 0, 1, 0, 1, P_SPECIAL),
	OP(')', "EMPTY_TUPLE", A_NONE, 1, 0, 0, 1, P_ANY),
	OP('u', "SETITEMS", A_NONE, 1, 1, 1, 1, P_ANY),
	OP('G', "BINFLOAT", A_F8, 1, 0, 0, 1, P_ANY),
	OP(0x80, "PROTO", A_U1, 2, 0, 0, 0, P_SPECIAL),
	OP(0x81, "NEWOBJ", A_NONE, 2, 0, 2, 1, P_ANY),
	OP(0x82, "EXT1", A_U1, 2, 0, 0, 1, P_ANY),
	OP(0x83, "EXT2", A_U2, 2, 0, 0, 1, P_ANY),
	OP(0x84, "EXT4", A_I4, 2, 0, 0, 1, P_ANY),
	OP(0x85, "TUPLE1", A_NONE, 2, 0, 1, 1, P_ANY),
	OP(0x86, "TUPLE2", A_NONE, 2, 0, 2, 1, P_SPECIAL),
	OP(0x87, "TUPLE3", A_NONE, 2, 0, 3, 1, P_ANY),
	OP(0x88, "NEWTRUE", A_NONE, 2, 0, 0, 1, P_ANY),
	OP(0x89, "NEWFALSE", A_NONE, 2, 0, 0, 1, P_ANY),
	OP(0x8a, "LONG1", A_LONG1, 2, 0, 0, 1, P_INT),
	OP(0x8b, "LONG4", A_LONG4, 2, 0, 0, 1, P_INT),
	OP('B', "BINBYTES", A_BYTES4, 3, 0, 0, 1, P_BYTES),
	OP('C', "SHORT_BINBYTES", A_BYTES1, 3, 0, 0, 1, P_BYTES),
	OP(0x8c, "SHORT_BINUNICODE", A_BYTES1, 4, 0, 0, 1, P_STR),
	OP(0x8d, "BINUNICODE8", A_BYTES8, 4, 0, 0, 1, P_STR),
	OP(0x8e, "BINBYTES8", A_BYTES8, 4, 0, 0, 1, P_BYTES),
	OP(0x8f, "EMPTY_SET", A_NONE, 4, 0, 0, 1, P_ANY),
	OP(0x90, "ADDITEMS", A_NONE, 4, 1, 1, 1, P_ANY),
	OP(0x91, "FROZENSET", A_NONE, 4, 1, 0, 1, P_ANY),
	OP(0x92, "NEWOBJ_EX", A_NONE, 4, 0, 3, 1, P_ANY),
	OP(0x93, "STACK_GLOBAL", A_NONE, 4, 0, 2, 1, P_SPECIAL),
	OP(0x94, "MEMOIZE", A_NONE, 4, 0, 0, 0, P_SPECIAL),
	OP(0x95, "FRAME", A_U8, 4, 0, 0, 0, P_SPECIAL),
	OP(0x96, "BYTEARRAY8", A_BYTES8, 5, 0, 0, 1, P_BYTES),
	OP(0x97, "NEXT_BUFFER", A_NONE, 5, 0, 0, 1, P_SPECIAL),
	OP(0x98, "READONLY_BUFFER", A_NONE, 5, 0, 1, 1, P_ANY),
};
#undef OP

/* Little-endian unsigned of k bytes. */
static uint64_t
pd_le(const uint8_t *p, size_t k)
{
	uint64_t v = 0;

	while (k-- > 0)
		v = v << 8 | p[k];
	return v;
}

/* A counted byte string after the opcode at op: length of lk bytes, then
 * the data. */
static int
pd_read_counted(pickledis *d, const uint8_t *p, size_t n, size_t op,
                size_t lk, int is_signed, struct pd_arg *a, size_t *next)
{
	size_t pos = op + 1;
	uint64_t len;

	if (n - pos < lk)
		return pd_fail(d, op, "truncated length field");
	len = pd_le(p + pos, lk);
	if (is_signed && (len & 0x80000000u))
		return pd_fail(d, op, "negative length %lld",
		    (long long)(int32_t)(uint32_t)len);
	pos += lk;
	if (len > n - pos)
		return pd_fail(d, op, "length %llu runs past the end "
		    "(%zu bytes left)", (unsigned long long)len, n - pos);
	a->u = len;
	a->s = p + pos;
	a->len = (size_t)len;
	*next = pos + (size_t)len;
	return 0;
}

/* A text line at pos (of the opcode at op); the '\n' is consumed, not
 * included. */
static int
pd_read_line(pickledis *d, const uint8_t *p, size_t n, size_t op, size_t pos,
             const uint8_t **s, size_t *len, size_t *next)
{
	const uint8_t *nl = memchr(p + pos, '\n', n - pos);

	if (nl == NULL)
		return pd_fail(d, op, "line argument without its newline");
	*s = p + pos;
	*len = (size_t)(nl - (p + pos));
	*next = pos + *len + 1;
	return 0;
}

/* Sign-extended value of a little-endian integer of len <= 8 bytes. */
static int64_t
pd_le_signed(const uint8_t *p, size_t len)
{
	uint64_t v = pd_le(p, len);

	if (len > 0 && len < 8 && (p[len - 1] & 0x80))
		v |= ~(uint64_t)0 << (8 * len);
	return (int64_t)v;
}

/* Decode the argument of the opcode at op (of type) into a; *next is the
 * next opcode. */
int
pd_read_arg(pickledis *d, const uint8_t *p, size_t n, size_t op,
            uint8_t type, struct pd_arg *a, size_t *next)
{
	size_t pos = op + 1;
	static const uint8_t fixed[] = {[A_U1] = 1, [A_U2] = 2, [A_U4] = 4,
	    [A_U8] = 8, [A_I4] = 4, [A_F8] = 8};
	size_t k;
	int rc;

	memset(a, 0, sizeof *a);
	*next = pos;
	switch (type) {
	case A_NONE:
		return 0;
	case A_U1: case A_U2: case A_U4: case A_U8: case A_I4: case A_F8:
		k = fixed[type];
		if (n - pos < k)
			return pd_fail(d, op, "truncated %zu-byte argument", k);
		a->u = pd_le(p + pos, k);
		a->i = type == A_I4 ? (int64_t)(int32_t)(uint32_t)a->u :
		    (int64_t)a->u;
		if (type == A_F8) {
			uint64_t be = 0;
			size_t j;
			for (j = 0; j < 8; j++)
				be = be << 8 | p[pos + j];
			memcpy(&a->f, &be, sizeof a->f);
		}
		*next = pos + k;
		return 0;
	case A_LINE:
		return pd_read_line(d, p, n, op, pos, &a->s, &a->len, next);
	case A_LINE2:
		if ((rc = pd_read_line(d, p, n, op, pos, &a->s, &a->len,
		    next)) != 0)
			return rc;
		return pd_read_line(d, p, n, op, *next, &a->s2, &a->len2, next);
	case A_BYTES1:
		return pd_read_counted(d, p, n, op, 1, 0, a, next);
	case A_BYTES4:
		return pd_read_counted(d, p, n, op, 4, 0, a, next);
	case A_BYTES8:
		return pd_read_counted(d, p, n, op, 8, 0, a, next);
	case A_SBYTES4:
		return pd_read_counted(d, p, n, op, 4, 1, a, next);
	case A_LONG1: case A_LONG4:
		rc = pd_read_counted(d, p, n, op, type == A_LONG1 ? 1 : 4,
		    1, a, next);
		if (rc == 0 && a->len <= 8) {
			a->fits = 1;
			a->i = pd_le_signed(a->s, a->len);
		}
		return rc;
	}
	return pd_fail(d, op, "bad argument type");
}
