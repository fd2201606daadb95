/*
 * pysort.c - the sorts of a checkpoint: a stable LSD radix sort on 64-bit
 * keys, and with it the records' order in LMDB's key order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* Stable LSD radix sort of a[0..n) on k; tmp has room for n.  One pass
 * counts all eight bytes; a byte that is the same everywhere (the high
 * bytes of addresses, the padding of short names) costs no pass. */
void
pysort_radix(struct skey *a, struct skey *tmp, size_t n)
{
	struct skey *src = a, *dst = tmp, *t;
	size_t cnt[8][256], i, sum;
	int d;

	memset(cnt, 0, sizeof cnt);
	for (i = 0; i < n; i++)
		for (d = 0; d < 8; d++)
			cnt[d][(a[i].k >> (8 * d)) & 0xff]++;
	for (d = 0; d < 8; d++) {
		size_t *c = cnt[d];
		if (c[(a[0].k >> (8 * d)) & 0xff] == n)
			continue;   /* one byte value everywhere */
		for (i = 0, sum = 0; i < 256; i++) {
			size_t x = c[i];
			c[i] = sum;
			sum += x;
		}
		for (i = 0; i < n; i++)
			dst[c[(src[i].k >> (8 * d)) & 0xff]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	if (src != a)
		memcpy(a, src, n * sizeof *a);
}

/* Key order of two records' entries, for puts in B-tree order. */
int
pysort_cmp(const store_entry_in *a, const store_entry_in *b)
{
	size_t n;
	int c;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->kind == STORE_KIND_HANDLE)
		return a->handle < b->handle ? -1 : a->handle > b->handle;
	n = a->name_len < b->name_len ? a->name_len : b->name_len;
	if ((c = memcmp(a->name, b->name, n)) != 0)
		return c;
	return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

/*
 * Sorting the records into key order (LMDB's: memcmp, then length) so that
 * the puts walk the B-tree left to right.  qsort's comparisons cost more
 * than the puts they save, so: a radix sort on the key's next 8 bytes
 * (big-endian, zero-padded; passes whose byte is the same everywhere are
 * skipped), then the same on the following 8 bytes within each run that
 * is still tied; short runs by insertion.
 */

static uint64_t
pysort_chunk(const store_entry_in *in, size_t off)
{
	uint64_t v = 0;
	size_t i;

	if (in->kind == STORE_KIND_HANDLE)
		return off == 0 ? in->handle : 0;
	for (i = 0; i < 8; i++)
		v = v << 8 | (off + i < in->name_len ?
		    (uint8_t)in->name[off + i] : 0);
	return v;
}


/* Insertion sort by name length: for names equal up to zero padding. */
static void
pysort_by_len(struct skey *a, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++) {
		struct skey x = a[i];
		for (j = i; j > 0 && a[j - 1].in->name_len > x.in->name_len; j--)
			a[j] = a[j - 1];
		a[j] = x;
	}
}

/* Sort a[0..n) of one kind, all equal in their first off bytes. */
void
pysort_keys(struct skey *a, struct skey *tmp, size_t n, size_t off)
{
	size_t i, j, k;
	int longer;

	if (n <= 16) {
		for (i = 1; i < n; i++) {
			struct skey x = a[i];
			for (j = i; j > 0 && pysort_cmp(a[j - 1].in, x.in) > 0; j--)
				a[j] = a[j - 1];
			a[j] = x;
		}
		return;
	}
	for (i = 0; i < n; i++)
		a[i].k = pysort_chunk(a[i].in, off);
	pysort_radix(a, tmp, n);
	for (i = 0; i < n; i = j) {
		for (j = i + 1, longer = 0; j < n && a[j].k == a[i].k; j++)
			;
		if (j - i < 2)
			continue;
		for (k = i; k < j; k++)
			if (a[k].in->kind == STORE_KIND_GLOBAL &&
			    a[k].in->name_len > off + 8)
				longer = 1;
		if (longer)
			pysort_keys(a + i, tmp, j - i, off + 8);
		else    /* tied up to zero padding: shorter first */
			pysort_by_len(a + i, j - i);
	}
}
