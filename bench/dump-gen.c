/*
 * dump-gen.c - build a big, valid store for the pyshelf-dump --check
 * benchmark (bench/dump-check.sh), fast: through the store API
 * (session_create, entry_put), in batches of 10,000 entries per write
 * transaction, without fsync.  Each session gets globals "v00000000"...;
 * most hold the pickle of a short str, every tenth the pickle of a list
 * holding a persistent reference to the global before it (and lists it in
 * its refs blob), as the backend writes them, so that --check does all of
 * its work: digests, pickles, and references to resolve.
 *
 *     dump-gen DIR ENTRIES [SESSIONS]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define BATCH 10000

/* What one batch writes. */
struct gen {
	uint8_t sid[STORE_ID_SIZE];  /* the session */
	uint64_t first, count;       /* entry numbers of this batch */
	char session[32];            /* its name (for session_create) */
	int create;                  /* create the session first */
};

/* Little-endian u64 (pickle FRAME). */
static void
le64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* pickle.dumps("value-<i>", protocol=5), as the stdlib pickler writes it. */
static size_t
gen_str_pickle(uint8_t *p, uint64_t i)
{
	char s[40];
	int n = snprintf(s, sizeof s, "value-%08llu", (unsigned long long)i);
	size_t o = 0;

	p[o++] = 0x80;  /* PROTO 5 */
	p[o++] = 5;
	p[o++] = 0x95;  /* FRAME */
	le64(p + o, (uint64_t)n + 4);
	o += 8;
	p[o++] = 0x8c;  /* SHORT_BINUNICODE */
	p[o++] = (uint8_t)n;
	memcpy(p + o, s, (size_t)n);
	o += (size_t)n;
	p[o++] = 0x94;  /* MEMOIZE */
	p[o++] = '.';
	return o;
}

/* The pickle of [<ref global name>, i] with persistent id ('g', name). */
static size_t
gen_ref_pickle(uint8_t *p, const char *name, uint32_t i)
{
	size_t n = strlen(name), o = 0, body;

	p[o++] = 0x80;
	p[o++] = 5;
	p[o++] = 0x95;
	o += 8;         /* frame length, filled below */
	body = o;
	p[o++] = ']';   /* EMPTY_LIST */
	p[o++] = 0x94;
	p[o++] = '(';   /* MARK */
	p[o++] = 0x8c;  /* SHORT_BINUNICODE 'g' */
	p[o++] = 1;
	p[o++] = 'g';
	p[o++] = 0x94;
	p[o++] = 0x8c;  /* SHORT_BINUNICODE name */
	p[o++] = (uint8_t)n;
	memcpy(p + o, name, n);
	o += n;
	p[o++] = 0x94;
	p[o++] = 0x86;  /* TUPLE2 */
	p[o++] = 0x94;
	p[o++] = 'Q';   /* BINPERSID */
	p[o++] = 'J';   /* BININT */
	p[o++] = (uint8_t)i;
	p[o++] = (uint8_t)(i >> 8);
	p[o++] = (uint8_t)(i >> 16);
	p[o++] = (uint8_t)((i >> 24) & 0x7f);
	p[o++] = 'e';   /* APPENDS */
	p[o++] = '.';
	le64(p + 3, o - body);
	return o;
}

/* One write transaction: create the session (first batch), put entries. */
static int
gen_batch(store_txn *t, void *arg)
{
	struct gen *g = arg;
	store_session ss;
	uint8_t pk[128], refs[3 + 24];
	char name[24], prev[24];
	store_entry_in in;
	struct iovec iov;
	uint64_t i;
	int rc;

	if (g->create) {
		if ((rc = session_create(t, g->session, NULL, 0, store_now_ms(),
		    &ss)) != 0)
			return rc;
		memcpy(g->sid, ss.id, STORE_ID_SIZE);
	}
	for (i = g->first; i < g->first + g->count; i++) {
		memset(&in, 0, sizeof in);
		snprintf(name, sizeof name, "v%08llu", (unsigned long long)i);
		in.kind = STORE_KIND_GLOBAL;
		in.name = name;
		in.name_len = strlen(name);
		in.pickler = STORE_PICKLER_PICKLE;
		iov.iov_base = pk;
		in.iov = &iov;
		in.iovcnt = 1;
		if (i % 10 == 9) {
			snprintf(prev, sizeof prev, "v%08llu",
			    (unsigned long long)(i - 1));
			iov.iov_len = gen_ref_pickle(pk, prev, (uint32_t)i);
			refs[0] = 'g';
			refs[1] = 0;
			refs[2] = (uint8_t)strlen(prev);
			memcpy(refs + 3, prev, strlen(prev));
			in.refs = refs;
			in.refs_len = (uint32_t)(3 + strlen(prev));
			in.type_name = "list";
		} else {
			iov.iov_len = gen_str_pickle(pk, i);
			in.type_name = "str";
		}
		if ((rc = entry_put(t, g->sid, &in, store_now_ms())) != 0)
			return rc;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	store_options so;
	struct gen g;
	store *s;
	char *cause = NULL;
	uint64_t total, nsess = 10, per, done, k;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: dump-gen DIR ENTRIES [SESSIONS]\n");
		return 2;
	}
	total = strtoull(argv[2], NULL, 10);
	if (argc > 3)
		nsess = strtoull(argv[3], NULL, 10);
	if (nsess == 0 || total < nsess) {
		fprintf(stderr, "dump-gen: need ENTRIES >= SESSIONS >= 1\n");
		return 2;
	}
	memset(&so, 0, sizeof so);
	so.create = 1;
	so.sync = STORE_SYNC_NEVER;
	if ((rc = store_open(&s, argv[1], &so, &cause)) != 0) {
		fprintf(stderr, "dump-gen: %s\n", cause ? cause :
		    store_strerror(rc));
		free(cause);
		return 1;
	}
	per = total / nsess;
	for (k = 0; k < nsess; k++) {
		uint64_t n = k == nsess - 1 ? total - per * (nsess - 1) : per;
		memset(&g, 0, sizeof g);
		snprintf(g.session, sizeof g.session, "bench%02llu",
		    (unsigned long long)k);
		for (done = 0; done < n; done += g.count) {
			g.create = done == 0;
			g.first = done;
			g.count = n - done < BATCH ? n - done : BATCH;
			if ((rc = store_write(s, gen_batch, &g)) != 0) {
				fprintf(stderr, "dump-gen: %s\n",
				    store_strerror(rc));
				store_close(s);
				return 1;
			}
		}
	}
	rc = store_sync(s);
	store_close(s);
	return rc == 0 ? 0 : 1;
}
