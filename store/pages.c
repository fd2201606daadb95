/*
 * pages.c - a quick structural check of data.mdb, read with pread(2) and
 * never through LMDB or its map.  LMDB trusts its pages: a damaged page
 * header makes it read or write out of bounds (a write transaction copies
 * the page into a heap buffer and adds nodes where the header says there
 * is room).  A writable open runs this first and refuses a store that
 * fails it; pyshelf-dump --check runs it too.
 *
 * What is checked (docs/STORAGE.md, "Open checks"): both meta pages (magic,
 * version, page size), the newer one's last page and the roots of the free
 * and main databases within the file; then, breadth first from those roots
 * and the named databases' roots found in the main database, up to a
 * budget of pages: each page's number matches its offset, its flags are a
 * branch or leaf page's, its lower and upper bounds are in order, every
 * node lies inside the page, and every page number it names (children,
 * overflow pages, sub-databases) is within the file.
 *
 * The layout is LMDB 0.9's (mdb.c: MDB_page, MDB_meta, MDB_db, MDB_node),
 * for 64-bit page numbers on a little-endian machine, the only layout the
 * store is built for.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-int.h"

#define PAGES_MAGIC 0xBEEFC0DEu
#define PAGES_VERSION 1
#define PAGES_HDR 16              /* PAGEHDRSZ */
#define PAGES_NODE 8              /* NODESIZE */
#define PAGES_DB 48               /* sizeof(MDB_db) */
#define PAGES_INVALID UINT64_MAX  /* P_INVALID: an empty database */
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_LEAF2 0x20
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define F_DUPDATA 0x04
#define PAGES_MAXDEPTH 32
#define PAGES_FREEDB 0x80         /* depth tag: a page of the free-page
                                     database */
#define PAGES_MAXDBS 32           /* databases named in problems */
#define PAGES_DB_FREE 0           /* their indexes: the free-page one, */
#define PAGES_DB_MAIN 1           /* the main one, then the named ones */
/* what pages_walk learnt of a page, for the scan (pages.tag) */
#define PAGES_TAG_NONE 0          /* not reached */
#define PAGES_TAG_BAD 0x40        /* + db: reached, and not a sound page */
#define PAGES_TAG_FREE 0xfe       /* listed in the free-page database */
#define PAGES_TAG_OVERFLOW 0xfd   /* part of an overflow run */
#define PAGES_TAG_BRANCH 0xfc     /* a sound branch page */
                                  /* else: a leaf of database tag - 1 */

#define PAGES_SCAN_VALUE_MAX ((size_t)1 << 31)  /* a value read whole */

/* The scan's callback and what it counts. */
struct pages_scan {
	store_scan_fn *fn;
	void *arg;
	store_scan_info *info;
};

/* The walk: the file, its bounds, a queue of pages to visit, the budget. */
struct pages {
	int fd;
	uint64_t psize;
	uint64_t npages;          /* pages the file holds */
	uint64_t last;            /* the meta's last page */
	uint64_t *queue;          /* page numbers */
	unsigned char *depth;     /* their depth */
	unsigned char *qdb;       /* their database (index in dbs) */
	char dbs[PAGES_MAXDBS][20];   /* "free-page", "main", "meta", ... */
	int ndbs;
	int cur;                  /* the database of the page visited */
	unsigned char *tag;       /* per page, PAGES_TAG_* (the scan only) */
	uint64_t ntag;
	uint8_t meta[PAGES_HDR + 136];  /* the meta page used */
	int meta_used;            /* its number, 0 or 1 */
	int free_bad;             /* a page of the free-page database is
	                             damaged: its list is not whole */
	size_t qhead, qtail, qcap;
	size_t budget;            /* pages still to read */
	uint8_t *page;            /* one page's bytes */
	uint64_t *freev;          /* pages the free-page database lists */
	size_t nfree, capfree;
	uint64_t (*ovv)[2];       /* overflow runs: first page, count */
	size_t nov, capov;
	int problems;
	int ioerr;                /* a read failed (errno): STORE_E_IO */
	void (*fn)(const char *, void *);
	void *arg;
};

static void pages_problem(struct pages *pg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pages_visit_page(struct pages *pg, uint64_t pgno,
                             unsigned depth);

/* Count one problem and tell fn. */
static void
pages_problem(struct pages *pg, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	pg->problems++;
	if (pg->fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pg->fn(msg, pg->arg);
}

static uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Read n bytes at off; 0, or -1 (a short file, or an error: then
 * pg->ioerr is set, and the check ends in its STORE_E_* code, not
 * damage). */
static int
pages_read(struct pages *pg, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(pg->fd, (uint8_t *)buf + got, n - got,
		    (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			pg->ioerr = errno != 0 ? errno : EIO;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* Queue page pgno (at depth) to be visited, when it is a page at all. */
static void
pages_push(struct pages *pg, uint64_t pgno, unsigned depth, int db,
           const char *what)
{
	if (pgno == PAGES_INVALID)
		return;
	if (pgno < 2 || pgno > pg->last) {
		pages_problem(pg, "%s names page %llu, outside the store's "
		    "pages 2 to %llu", what, (unsigned long long)pgno,
		    (unsigned long long)pg->last);
		return;
	}
	if ((depth & ~PAGES_FREEDB) > PAGES_MAXDEPTH) {
		pages_problem(pg, "%s: a tree deeper than %d levels", what,
		    PAGES_MAXDEPTH);
		return;
	}
	if (pg->qtail == pg->qcap) {
		size_t ncap = pg->qcap ? pg->qcap * 2 : 64;
		uint64_t *nq;
		unsigned char *nd;

		if (pg->qtail >= pg->budget + pg->qhead)
			return; /* more than the budget will read */
		if ((nq = realloc(pg->queue, ncap * sizeof *nq)) == NULL)
			return;
		pg->queue = nq;
		if ((nd = realloc(pg->depth, ncap)) == NULL)
			return;
		pg->depth = nd;
		if ((nd = realloc(pg->qdb, ncap)) == NULL)
			return;
		pg->qdb = nd;
		pg->qcap = ncap;
	}
	pg->queue[pg->qtail] = pgno;
	pg->qdb[pg->qtail] = (unsigned char)db;
	pg->depth[pg->qtail++] = (unsigned char)depth;
}

/* Note a page the free-page database lists, or an overflow run. */
static void
pages_note_free(struct pages *pg, uint64_t pgno)
{
	if (pg->nfree == pg->capfree) {
		size_t ncap = pg->capfree ? pg->capfree * 2 : 256;
		uint64_t *nv = realloc(pg->freev, ncap * sizeof *nv);
		if (nv == NULL)
			return;
		pg->freev = nv;
		pg->capfree = ncap;
	}
	pg->freev[pg->nfree++] = pgno;
}

static void
pages_note_overflow(struct pages *pg, uint64_t first, uint64_t n)
{
	if (pg->nov == pg->capov) {
		size_t ncap = pg->capov ? pg->capov * 2 : 64;
		uint64_t (*nv)[2] = realloc(pg->ovv, ncap * sizeof *nv);
		if (nv == NULL)
			return;
		pg->ovv = nv;
		pg->capov = ncap;
	}
	pg->ovv[pg->nov][0] = first;
	pg->ovv[pg->nov++][1] = n;
}

/* A free-page list (an IDL: a count, then page numbers) of n bytes. */
static void
pages_idl(struct pages *pg, const uint8_t *p, size_t n, const char *what)
{
	uint64_t count, i;

	if (n < 8 || (count = le64(p)) > n / 8 - 1) {
		pages_problem(pg, "%s: a free-page list of %zu bytes that does "
		    "not hold its count", what, n);
		return;
	}
	for (i = 0; i < count; i++)
		pages_note_free(pg, le64(p + 8 + 8 * i));
}

/* A database record (MDB_db) at p: its root within the file, then
 * queued. */
static void
pages_db(struct pages *pg, const uint8_t *p, unsigned depth, int db,
         const char *what)
{
	uint16_t tdepth = le16(p + 6);
	uint64_t root = le64(p + 40);

	if (root != PAGES_INVALID && (tdepth == 0 || tdepth > PAGES_MAXDEPTH))
		pages_problem(pg, "%s: a tree depth of %u", what, tdepth);
	pages_push(pg, root, depth, db, what);
}

/* The index of the named database whose record is the main database's
 * node with key k (a new one when not yet seen; the main database's own
 * when the table is full). */
static int
pages_db_named(struct pages *pg, const uint8_t *k, size_t n)
{
	char name[17];
	size_t i;
	int j;

	for (i = 0; i < n && i < 16; i++)
		name[i] = k[i] >= 0x20 && k[i] < 0x7f ? (char)k[i] : '?';
	name[i] = '\0';
	for (j = 2; j < pg->ndbs; j++)
		if (strcmp(pg->dbs[j], name) == 0)
			return j;
	if (pg->ndbs == PAGES_MAXDBS)
		return PAGES_DB_MAIN;
	snprintf(pg->dbs[pg->ndbs], sizeof pg->dbs[0], "%s", name);
	return pg->ndbs++;
}

/* The nodes of a branch or leaf page (or of a sub-page inside a node:
 * base is where its offsets count from, size its bytes). */
static void
pages_nodes(struct pages *pg, uint64_t pgno, const uint8_t *base,
            size_t size, unsigned depth, int sub)
{
	uint16_t flags = le16(base + 10), lower = le16(base + 12);
	uint16_t upper = le16(base + 14);
	size_t i, n;
	char what[96];

	snprintf(what, sizeof what, "page %llu (the %s database)%s",
	    (unsigned long long)pgno, pg->dbs[pg->cur], sub ? " (a sub-page)" :
	    "");
	if (lower < PAGES_HDR || lower > upper || upper > size ||
	    (lower & 1)) {
		pages_problem(pg, "%s: free-space bounds %u..%u do not fit a "
		    "page of %zu bytes", what, lower, upper, size);
		return;
	}
	if (flags & P_LEAF2)
		return;   /* fixed-size keys only: no nodes to follow */
	n = (size_t)(lower - PAGES_HDR) / 2;
	if ((flags & P_BRANCH) && n < 2 && pg->cur != PAGES_DB_FREE) {
		/* LMDB asserts on it, but in the free-page database
		 * (mdb_page_search_root) */
		pages_problem(pg, "%s: a branch page of %zu key%s", what, n,
		    n == 1 ? "" : "s");
		return;
	}
	for (i = 0; i < n; i++) {
		size_t off = le16(base + PAGES_HDR + 2 * i), ksize, dsize;
		const uint8_t *node = base + off;
		uint16_t nflags;

		if (off < upper || off + PAGES_NODE > size) {
			pages_problem(pg, "%s: node %zu at offset %zu, outside "
			    "the page's nodes (%u..%zu)", what, i, off, upper,
			    size);
			return;
		}
		nflags = le16(node + 4);
		ksize = le16(node + 6);
		if (flags & P_BRANCH) {
			uint64_t child = (uint64_t)le16(node) |
			    (uint64_t)le16(node + 2) << 16 |
			    (uint64_t)nflags << 32;
			if (off + PAGES_NODE + ksize > size) {
				pages_problem(pg, "%s: node %zu's key runs past "
				    "the page", what, i);
				return;
			}
			pages_push(pg, child, depth + 1, pg->cur, what);
			continue;
		}
		dsize = (size_t)le16(node) | (size_t)le16(node + 2) << 16;
		if (nflags & F_BIGDATA) {
			uint64_t ov;
			uint8_t hdr[PAGES_HDR];

			if (off + PAGES_NODE + ksize + 8 > size) {
				pages_problem(pg, "%s: node %zu runs past the "
				    "page", what, i);
				return;
			}
			ov = le64(node + PAGES_NODE + ksize);
			if (ov < 2 || ov > pg->last) {
				pages_problem(pg, "%s: node %zu's value is on "
				    "page %llu, outside the store", what, i,
				    (unsigned long long)ov);
				continue;
			}
			/* the overflow pages must hold the value and lie
			 * within the file: one read of their header */
			if (pages_read(pg, hdr, sizeof hdr,
			    ov * pg->psize) != 0 || le64(hdr) != ov ||
			    !(le16(hdr + 10) & P_OVERFLOW) ||
			    (uint64_t)le32(hdr + 12) * pg->psize <
			    dsize + PAGES_HDR ||
			    ov + le32(hdr + 12) > pg->last + 1 ||
			    ov + le32(hdr + 12) > pg->npages) {
				pages_problem(pg, "%s: node %zu's value "
				    "(%zu bytes on page %llu) is not a sound "
				    "overflow page", what, i, dsize,
				    (unsigned long long)ov);
				continue;
			}
			pages_note_overflow(pg, ov, le32(hdr + 12));
			if ((depth & PAGES_FREEDB) && dsize <= ((size_t)1 << 26)) {
				uint8_t *idl = malloc(dsize > 0 ? dsize : 1);
				if (idl != NULL && pages_read(pg, idl, dsize,
				    ov * pg->psize + PAGES_HDR) == 0)
					pages_idl(pg, idl, dsize, what);
				free(idl);
			}
			continue;
		}
		if (off + PAGES_NODE + ksize + dsize > size) {
			pages_problem(pg, "%s: node %zu (%zu + %zu bytes) runs "
			    "past the page", what, i, ksize, dsize);
			return;
		}
		if ((depth & PAGES_FREEDB) && !sub) {
			pages_idl(pg, node + PAGES_NODE + ksize, dsize, what);
			continue;
		}
		if (nflags & F_SUBDATA) {
			if (dsize != PAGES_DB) {
				pages_problem(pg, "%s: node %zu: a database "
				    "record of %zu bytes", what, i, dsize);
				continue;
			}
			pages_db(pg, node + PAGES_NODE + ksize,
			    (depth & ~PAGES_FREEDB) + 1, pg->cur == PAGES_DB_MAIN ?
			    pages_db_named(pg, node + PAGES_NODE, ksize) :
			    pg->cur, what);
		} else if ((nflags & F_DUPDATA) && !sub) {
			if (dsize < PAGES_HDR) {
				pages_problem(pg, "%s: node %zu: a sub-page of "
				    "%zu bytes", what, i, dsize);
				continue;
			}
			pages_nodes(pg, pgno, node + PAGES_NODE + ksize, dsize,
			    depth, 1);
		}
	}
}

/* Visit one queued page (of database db): header, then nodes; its tag
 * when the scan asked for tags. */
static void
pages_visit(struct pages *pg, uint64_t pgno, unsigned depth, int db)
{
	int before = pg->problems;

	pg->cur = db;
	pages_visit_page(pg, pgno, depth);
	if (db == PAGES_DB_FREE && pg->problems != before)
		pg->free_bad = 1;
	if (pg->tag != NULL && pgno < pg->ntag)
		pg->tag[pgno] = pg->problems != before ?
		    (unsigned char)(PAGES_TAG_BAD + db) :
		    (le16(pg->page + 10) & P_BRANCH) ? PAGES_TAG_BRANCH :
		    (unsigned char)(db + 1);
}

/* pages_visit's work. */
static void
pages_visit_page(struct pages *pg, uint64_t pgno, unsigned depth)
{
	uint16_t flags;
	char what[96];

	snprintf(what, sizeof what, "page %llu (the %s database)",
	    (unsigned long long)pgno, pg->dbs[pg->cur]);
	if (pages_read(pg, pg->page, pg->psize, pgno * pg->psize) != 0) {
		pages_problem(pg, "%s cannot be read (the file ends before "
		    "it)", what);
		return;
	}
	if (le64(pg->page) != pgno) {
		pages_problem(pg, "%s: its header says page %llu", what,
		    (unsigned long long)le64(pg->page));
		return;
	}
	flags = le16(pg->page + 10) & (uint16_t)~0xc010; /* dirty, loose,
	                                                   keep: in memory */
	if (flags != P_BRANCH && flags != P_LEAF &&
	    flags != (P_LEAF | P_LEAF2)) {
		pages_problem(pg, "%s: flags 0x%04x are not a branch or leaf "
		    "page's", what, le16(pg->page + 10));
		return;
	}
	pages_nodes(pg, pgno, pg->page, pg->psize, depth, 0);
}

static int
pages_cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Is page p in one of the sorted overflow runs? */
static int
pages_in_overflow(const struct pages *pg, uint64_t p)
{
	size_t lo = 0, hi = pg->nov;

	while (lo < hi) {          /* the last run starting at or before p */
		size_t mid = (lo + hi) / 2;
		if (pg->ovv[mid][0] <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && p < pg->ovv[lo - 1][0] + pg->ovv[lo - 1][1];
}

/*
 * Every page in use is used once, and none of them is listed as free: a
 * page referenced twice, or listed free while in use, is given out again
 * by the next write (LMDB then asserts, or overwrites live data).  Over
 * the pages the walk reached (all of them in a store within the budget).
 */
static void
pages_accounting(struct pages *pg)
{
	uint64_t *used;
	size_t n = pg->qtail, i;

	if (pg->nov > 1)
		qsort(pg->ovv, pg->nov, sizeof pg->ovv[0], pages_cmp64);
	for (i = 1; i < pg->nov; i++)
		if (pg->ovv[i][0] < pg->ovv[i - 1][0] + pg->ovv[i - 1][1]) {
			pages_problem(pg, "overflow pages %llu and %llu "
			    "overlap", (unsigned long long)pg->ovv[i - 1][0],
			    (unsigned long long)pg->ovv[i][0]);
			break;
		}
	if ((used = malloc((n > 0 ? n : 1) * sizeof *used)) == NULL)
		return;
	if (n > 0) {   /* the queue is NULL when no page was reached */
		memcpy(used, pg->queue, n * sizeof *used);
		qsort(used, n, sizeof *used, pages_cmp64);
	}
	for (i = 0; i < n; i++) {
		if (i > 0 && used[i] == used[i - 1]) {
			pages_problem(pg, "page %llu is in the tree twice",
			    (unsigned long long)used[i]);
			break;
		}
		if (pages_in_overflow(pg, used[i])) {
			pages_problem(pg, "page %llu is both a tree page and an "
			    "overflow page", (unsigned long long)used[i]);
			break;
		}
	}
	if (pg->nfree > 1)
		qsort(pg->freev, pg->nfree, sizeof *pg->freev, pages_cmp64);
	for (i = 0; i < pg->nfree; i++) {
		uint64_t f = pg->freev[i];
		if (f < 2 || f > pg->last) {
			pages_problem(pg, "the free-page list names page %llu, "
			    "outside the store's pages 2 to %llu",
			    (unsigned long long)f,
			    (unsigned long long)pg->last);
			break;
		}
		if (i > 0 && f == pg->freev[i - 1]) {
			pages_problem(pg, "the free-page list names page %llu "
			    "twice", (unsigned long long)f);
			break;
		}
		if (bsearch(&f, used, n, sizeof *used, pages_cmp64) != NULL ||
		    pages_in_overflow(pg, f)) {
			pages_problem(pg, "page %llu is in use and listed as "
			    "free", (unsigned long long)f);
			break;
		}
	}
	free(used);
}

/* The newer sound meta page of the two; -1 when neither is. */
static int
pages_meta(struct pages *pg, const uint8_t m[2][PAGES_HDR + 136],
           uint64_t fsize)
{
	int best = -1, i;

	for (i = 0; i < 2; i++) {
		const uint8_t *meta = m[i] + PAGES_HDR;
		uint32_t psize = le32(meta + 24);    /* mm_psize */

		if (le32(meta) != PAGES_MAGIC) {
			pages_problem(pg, "meta page %d: not an LMDB meta "
			    "page (magic 0x%08x)", i, le32(meta));
			continue;
		}
		if (le32(meta + 4) != PAGES_VERSION) {
			pages_problem(pg, "meta page %d: data version %u, not "
			    "%d", i, le32(meta + 4), PAGES_VERSION);
			continue;
		}
		if (psize < 512 || psize > 65536 || (psize & (psize - 1))) {
			pages_problem(pg, "meta page %d: a page size of %u",
			    i, psize);
			continue;
		}
		if (le64(m[i]) != (uint64_t)i || !(le16(m[i] + 10) & 0x08)) {
			pages_problem(pg, "meta page %d: its header is not a "
			    "meta page's", i);
			continue;
		}
		if (best < 0 || le64(meta + 128) > le64(m[best] + PAGES_HDR +
		    128))
			best = i;
	}
	if (best < 0)
		return -1;
	pg->psize = le32(m[best] + PAGES_HDR + 24);
	pg->npages = fsize / pg->psize;
	pg->last = le64(m[best] + PAGES_HDR + 120);
	/*
	 * The file may end before the last page: LMDB writes a page only
	 * when a commit holds it dirty, and a page allocated and freed in
	 * the same transaction (a loose page) goes to the free list never
	 * written.  So only the pages in use must lie within the file; the
	 * walk reads each (pages_visit) and checks each overflow run.  Only a
	 * file without its first data page is too short for any store.
	 */
	if (pg->last < 1 || pg->npages < 2) {
		pages_problem(pg, "meta page %d: the last page is %llu, the "
		    "file holds %llu pages (truncated?)", best,
		    (unsigned long long)pg->last,
		    (unsigned long long)pg->npages);
		return -1;
	}
	return best;
}

/*
 * Open data.mdb at path and read its meta pages: the newer sound one's
 * index (0 or 1) in *best, the page size and last page in pg.  Returns 0;
 * 1 when no meta page is sound (reported); a STORE_E_* code.
 */
static int
pages_open(struct pages *pg, const char *path, int *best)
{
	uint8_t m[2][PAGES_HDR + 136];
	struct stat st;
	char *data = NULL;

	snprintf(pg->dbs[PAGES_DB_FREE], sizeof pg->dbs[0], "free-page");
	snprintf(pg->dbs[PAGES_DB_MAIN], sizeof pg->dbs[0], "main");
	pg->ndbs = 2;
	pg->fd = -1;
	if (asprintf(&data, "%s/data.mdb", path) < 0)
		return STORE_E_NOMEM;
	pg->fd = open(data, O_RDONLY | O_CLOEXEC);
	free(data);
	if (pg->fd < 0)
		return errno == ENOENT ? STORE_E_NOTSTORE : store_map_err(errno);
	if (fstat(pg->fd, &st) != 0)
		return store_map_err(errno);
	/* meta page 1 is at the page size, which meta page 0 gives; when
	 * page 0 is damaged, try the usual sizes */
	if (pages_read(pg, m[0], sizeof m[0], 0) != 0) {
		pages_problem(pg, "the data file is %lld bytes, too short for "
		    "its meta pages", (long long)st.st_size);
		return 1;
	}
	{
		uint32_t ps = le32(m[0] + PAGES_HDR + 24);
		if (le32(m[0] + PAGES_HDR) != PAGES_MAGIC || ps < 512 ||
		    ps > 65536 || (ps & (ps - 1)))
			ps = (uint32_t)sysconf(_SC_PAGESIZE);
		if (pages_read(pg, m[1], sizeof m[1], ps) != 0)
			memset(m[1], 0, sizeof m[1]);
	}
	if ((*best = pages_meta(pg, (const uint8_t (*)[PAGES_HDR + 136])m,
	    (uint64_t)st.st_size)) < 0) {
		if (pg->problems == 0)
			pages_problem(pg, "no sound meta page");
		return 1;
	}
	memcpy(pg->meta, m[*best], sizeof pg->meta);
	if ((pg->page = malloc(pg->psize)) == NULL)
		return STORE_E_NOMEM;
	return 0;
}

/* Walk the trees of the meta page read (pg->meta), breadth first, up to
 * the budget; then the accounting of the pages reached. */
static void
pages_walk(struct pages *pg)
{
	/* pages past the file's end are fine only when free: a page in use
	 * there would be a SIGBUS in LMDB's map, so every page in use is
	 * read, whatever the budget (a walk of the trees, not the values) */
	if (pg->last >= pg->npages)
		pg->budget = SIZE_MAX / 2;
	pages_db(pg, pg->meta + PAGES_HDR + 24, PAGES_FREEDB, PAGES_DB_FREE,
	    "the free-page database");
	pages_db(pg, pg->meta + PAGES_HDR + 72, 0, PAGES_DB_MAIN,
	    "the main database");
	while (pg->qhead < pg->qtail && pg->budget > 0) {
		pg->budget--;
		pages_visit(pg, pg->queue[pg->qhead], pg->depth[pg->qhead],
		    pg->qdb[pg->qhead]);
		pg->qhead++;
	}
	pages_accounting(pg);
}

/* Free what pages_open and pages_walk took. */
static void
pages_close(struct pages *pg)
{
	free(pg->page);
	free(pg->freev);
	free(pg->ovv);
	free(pg->queue);
	free(pg->depth);
	free(pg->qdb);
	free(pg->tag);
	if (pg->fd >= 0)
		close(pg->fd);
}

/* Check the data file at path (store.h). */
int
store_check_structure(const char *path, size_t budget,
                      void (*fn)(const char *problem, void *arg), void *arg)
{
	struct pages pg;
	int best, rc;

	memset(&pg, 0, sizeof pg);
	pg.fn = fn;
	pg.arg = arg;
	pg.budget = budget;
	if ((rc = pages_open(&pg, path, &best)) == 0) {
		pages_walk(&pg);
		rc = pg.problems;
	} else if (rc == 1)
		rc = pg.problems;
	if (pg.ioerr != 0 && rc >= 0)
		rc = store_map_err(pg.ioerr); /* ENOSPC, EIO, ENOMEM... */
	pages_close(&pg);
	return rc;
}

/* Tag the pages the free-page database lists and the overflow runs,
 * but a page the walk reached in a tree (a damaged free list that names
 * a page in use must not hide it). */
static void
pages_scan_tags(struct pages *pg)
{
	size_t i;
	uint64_t j, p;

	for (i = 0; i < pg->nov; i++)
		for (j = 0; j < pg->ovv[i][1] && pg->ovv[i][0] + j < pg->ntag;
		    j++) {
			p = pg->ovv[i][0] + j;
			if (pg->tag[p] == PAGES_TAG_NONE)
				pg->tag[p] = PAGES_TAG_OVERFLOW;
		}
	for (i = 0; i < pg->nfree; i++) {
		p = pg->freev[i];
		if (p < pg->ntag && pg->tag[p] == PAGES_TAG_NONE)
			pg->tag[p] = PAGES_TAG_FREE;
	}
}

/* A value on overflow pages from ov: read whole into a new buffer
 * (*out, freed by the caller), or NULL when the run is not sound. */
static uint8_t *
pages_scan_overflow(struct pages *pg, uint64_t ov, size_t dsize)
{
	uint8_t hdr[PAGES_HDR], *v;
	uint64_t count;

	if (ov < 2 || ov >= pg->npages || ov > pg->last ||
	    dsize > PAGES_SCAN_VALUE_MAX)
		return NULL;
	if (pages_read(pg, hdr, sizeof hdr, ov * pg->psize) != 0 ||
	    le64(hdr) != ov || !(le16(hdr + 10) & P_OVERFLOW))
		return NULL;
	count = le32(hdr + 12);
	if (count * pg->psize < dsize + PAGES_HDR || ov + count > pg->npages)
		return NULL;
	if ((v = malloc(dsize > 0 ? dsize : 1)) == NULL)
		return NULL;
	if (pages_read(pg, v, dsize, ov * pg->psize + PAGES_HDR) != 0) {
		free(v);
		return NULL;
	}
	return v;
}

/* The nodes of the leaf page in pg->page to fn, up to the first that
 * is not sound (then *bad is set); fn's nonzero return. */
static int
pages_scan_leaf(struct pages *pg, uint64_t pgno, const char *db,
                struct pages_scan *sc, int *bad)
{
	const uint8_t *base = pg->page;
	uint16_t lower = le16(base + 12), upper = le16(base + 14);
	size_t i, n, size = pg->psize;
	int rc;

	*bad = 1;
	if (lower < PAGES_HDR || lower > upper || upper > size || (lower & 1))
		return 0;
	n = (size_t)(lower - PAGES_HDR) / 2;
	for (i = 0; i < n; i++) {
		size_t off = le16(base + PAGES_HDR + 2 * i), ksize, dsize;
		const uint8_t *node = base + off;
		uint16_t nflags;
		uint8_t *big;

		if (off < upper || off + PAGES_NODE > size)
			return 0;
		nflags = le16(node + 4);
		ksize = le16(node + 6);
		dsize = (size_t)le16(node) | (size_t)le16(node + 2) << 16;
		if (off + PAGES_NODE + ksize > size)
			return 0;
		if (nflags & (F_SUBDATA | F_DUPDATA))
			continue;
		if (nflags & F_BIGDATA) {
			if (off + PAGES_NODE + ksize + 8 > size)
				return 0;
			big = pages_scan_overflow(pg, le64(node + PAGES_NODE +
			    ksize), dsize);
			if (big == NULL) {
				sc->info->lost_values++;
				continue;
			}
			rc = sc->fn(db, pgno, node + PAGES_NODE, ksize, big,
			    dsize, sc->arg);
			free(big);
		} else {
			if (off + PAGES_NODE + ksize + dsize > size)
				return 0;
			rc = sc->fn(db, pgno, node + PAGES_NODE, ksize,
			    node + PAGES_NODE + ksize, dsize, sc->arg);
		}
		if (rc != 0)
			return rc;
	}
	*bad = 0;
	return 0;
}

/* One page of the linear pass. */
static int
pages_scan_one(struct pages *pg, uint64_t p, struct pages_scan *sc)
{
	unsigned char tag = pg->tag[p];
	uint16_t flags;
	int rc, bad;

	if (tag >= PAGES_TAG_BAD && tag < PAGES_TAG_BAD + PAGES_MAXDBS) {
		/* reported by the walk; what it held is lost, unless it is
		 * rebuilt (free lists, the named databases' records, meta) */
		int db = tag - PAGES_TAG_BAD;
		if (db != PAGES_DB_FREE && db != PAGES_DB_MAIN &&
		    strcmp(pg->dbs[db], "meta") != 0)
			sc->info->bad++;
		return 0;
	}
	if (tag == PAGES_TAG_FREE || tag == PAGES_TAG_OVERFLOW ||
	    tag == PAGES_TAG_BRANCH)
		return 0;
	if (tag == PAGES_DB_FREE + 1 || tag == PAGES_DB_MAIN + 1)
		return 0;   /* free lists; the named databases' records */
	sc->info->pages++;
	if (pages_read(pg, pg->page, pg->psize, p * pg->psize) != 0)
		return 0;
	if (le64(pg->page) != p)
		return 0;   /* never written, or not a page */
	flags = le16(pg->page + 10) & (uint16_t)~0xc010;
	if (flags == P_OVERFLOW) {
		uint64_t j, count = le32(pg->page + 12);
		for (j = 1; j < count && p + j < pg->ntag; j++)
			if (pg->tag[p + j] == PAGES_TAG_NONE)
				pg->tag[p + j] = PAGES_TAG_OVERFLOW;
		return 0;
	}
	if (flags != P_LEAF) {
		if (flags != P_BRANCH && flags != (P_LEAF | P_LEAF2))
			sc->info->bad++;
		return 0;
	}
	if (tag == PAGES_TAG_NONE)
		sc->info->orphans++;
	sc->info->leaves++;
	rc = pages_scan_leaf(pg, p, tag == PAGES_TAG_NONE ? NULL :
	    pg->dbs[tag - 1], sc, &bad);
	if (bad)
		sc->info->bad++;
	return rc;
}

/* Salvage's scan of data.mdb (store.h). */
int
store_scan_pages(const char *path, store_scan_fn *fn,
                 void (*problem)(const char *problem, void *arg), void *arg,
                 store_scan_info *info)
{
	struct pages_scan sc;
	struct pages pg;
	store_scan_info dummy;
	uint64_t p, end;
	int best, rc;

	if (info == NULL)
		info = &dummy;
	memset(info, 0, sizeof *info);
	memset(&pg, 0, sizeof pg);
	pg.fn = problem;
	pg.arg = arg;
	pg.budget = SIZE_MAX / 2;
	sc.fn = fn;
	sc.arg = arg;
	sc.info = info;
	if ((rc = pages_open(&pg, path, &best)) != 0) {
		if (rc == 1)   /* no sound meta page: nothing to go by */
			rc = STORE_E_DAMAGED;
		goto out;
	}
	info->meta_used = best;
	info->meta_other_bad = pg.problems > 0;
	pg.ntag = pg.last + 1 < pg.npages ? pg.last + 1 : pg.npages;
	if ((pg.tag = calloc(pg.ntag > 0 ? pg.ntag : 1, 1)) == NULL) {
		rc = STORE_E_NOMEM;
		goto out;
	}
	pages_walk(&pg);
	info->problems = pg.problems;
	info->free_bad = pg.free_bad;
	pages_scan_tags(&pg);
	end = pg.ntag;
	for (p = 2; p < end && rc == 0; p++)
		rc = pages_scan_one(&pg, p, &sc);
out:
	if (pg.ioerr != 0 && rc >= 0)
		rc = store_map_err(pg.ioerr);
	if (rc == 0)
		info->problems = pg.problems;
	pages_close(&pg);
	return rc;
}

/* The meta pages as LMDB will read them (store.h). */
int
store_check_meta_pages(const char *path, char *why, size_t cap)
{
	uint8_t m[PAGES_HDR + 136];
	struct pages pg;
	uint32_t ps0 = 0, ps;
	char *data = NULL;
	int i, rc = 0;

	memset(&pg, 0, sizeof pg);
	if (asprintf(&data, "%s/data.mdb", path) < 0)
		return STORE_E_NOMEM;
	pg.fd = open(data, O_RDONLY | O_CLOEXEC);
	free(data);
	if (pg.fd < 0)
		return 0;   /* the open says why */
	for (i = 0; i < 2 && rc == 0; i++) {
		/* page 1 is where page 0's size says, as LMDB reads it */
		if (pages_read(&pg, m, sizeof m, i == 0 ? 0 : ps0) != 0)
			break;
		if (!(le16(m + 10) & 0x08) || le32(m + PAGES_HDR) !=
		    PAGES_MAGIC || le32(m + PAGES_HDR + 4) != PAGES_VERSION)
			break;  /* LMDB refuses it itself (MDB_INVALID) */
		ps = le32(m + PAGES_HDR + 24);
		if (i == 0)
			ps0 = ps;
		if (ps < 512 || ps > 65536 || (ps & (ps - 1)) || ps != ps0) {
			snprintf(why, cap, "meta page %d: a page size of %u%s",
			    i, ps, ps != ps0 ? ", not meta page 0's" : "");
			rc = 1;
		}
	}
	close(pg.fd);
	return rc;
}
