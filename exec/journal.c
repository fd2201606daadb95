/*
 * journal.c - the call journal of one session (journal.h): calls by id in
 * a hash table, and in a list oldest first, which the bounds drop from;
 * each call's output as a list of chunks (a gap chunk where older ones
 * were dropped), its final frame's body, and whether the store holds it
 * as it is (the `calls` database, store/calls.c, which owns the bytes).
 *
 * One recursive mutex guards everything; persisting builds the records
 * under it and writes them without it (tickets keep persists in order),
 * so the reader thread's CALLS never waits on the disk, unless the
 * caller of a persist holds the lock itself.
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"

#define JOURNAL_BUCKETS 4096 /* a power of two; ids are random */
#define JOURNAL_CHUNK_MIN 4096 /* a new chunk's room: small writes share */

/* A piece of a call's output: stream 1 or 2 with bytes, or a gap
 * (stream 0) standing for n bytes dropped. */
struct jchunk {
	struct jchunk *next;
	int stream;
	size_t n;                    /* bytes (a gap: bytes dropped) */
	size_t off;                  /* where they start in data */
	size_t cap;                  /* room in data */
	uint8_t data[];
};

/* One call. */
struct jcall {
	struct jcall *prev, *next;   /* the list, oldest first */
	struct jcall *hnext;         /* its hash bucket */
	uint8_t id[16];
	char summary[JOURNAL_SUMMARY_MAX + 1];
	int state;                   /* JOURNAL_* */
	int end;                     /* STORE_CALL_END_* */
	uint64_t started_ms, ended_ms;
	uint64_t out_bytes, out_dropped;
	struct jchunk *head, *tail;
	uint64_t kept;               /* output bytes in data chunks */
	uint8_t *body;               /* the final frame's fields */
	size_t body_len;
	int stored;                  /* the store may hold a row of it */
	int dirty;                   /* the row (if any) is not as this */
	int want;                    /* ended detached: persist it now */
	uint64_t seq;                /* unique in this journal (a freed
	                                call's address may be reused) */
	uint64_t ver;                /* bumped by every change */
};

/* A row to delete at the next persist. */
struct jdrop {
	uint64_t seq;                /* increasing: which persists wrote it */
	uint64_t started_ms;
	uint8_t id[16];
};

struct journal {
	pthread_mutex_t lock;        /* recursive: everything below */
	/* Persists write in the order they took their snapshots (tickets
	 * handed out under lock), so that an older snapshot never lands
	 * after a newer one.  A persist waits for its turn holding no lock
	 * of the journal's but the caller's: the one whose turn it is needs
	 * none until it has written and passed the turn on, so a caller
	 * that holds the journal's lock while it persists (journal_end
	 * with detached) cannot deadlock with another persist. */
	pthread_mutex_t turn_lock;
	pthread_cond_t turn_cv;
	uint64_t ticket_next;        /* the next snapshot's ticket */
	uint64_t ticket_turn;        /* the ticket whose write may run */
	uint64_t drop_seq;           /* the last drop's seq */
	store *st;
	uint8_t sid[16];
	journal_limits lim;
	struct jcall *first, *last;
	size_t n;                    /* calls listed */
	uint64_t bytes;              /* kept output + bodies, all calls */
	struct jcall *hash[JOURNAL_BUCKETS];
	struct jdrop *drops;
	size_t ndrops, capdrops;
	size_t skipped;              /* damaged records journal_load met */
	uint64_t expire_ms;          /* no ended call expires before this
	                                (0: look now): journal_bound's pass
	                                over every call runs only then */
	uint64_t next_seq;           /* the next call's seq */
};

static uint64_t
journal_now(journal *j)
{
	return j->lim.clock != NULL ? j->lim.clock() : store_now_ms();
}

static size_t
journal_bucket(const uint8_t *id)
{
	uint64_t h, lo;

	/* both halves: a client's ids may share their first 8 bytes (the
	 * Python client's are a per-process prefix and a counter) */
	memcpy(&h, id, sizeof h);
	memcpy(&lo, id + 8, sizeof lo);
	h ^= lo * 0x9e3779b97f4a7c15ull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (size_t)(h & (JOURNAL_BUCKETS - 1));
}

static struct jcall *
journal_get(journal *j, const uint8_t *id)
{
	struct jcall *c;

	for (c = j->hash[journal_bucket(id)]; c != NULL; c = c->hnext)
		if (memcmp(c->id, id, 16) == 0)
			return c;
	return NULL;
}

void
journal_lock(journal *j)
{
	pthread_mutex_lock(&j->lock);
}

void
journal_unlock(journal *j)
{
	pthread_mutex_unlock(&j->lock);
}

const char *
journal_state_name(int state)
{
	return calls_state_name(state);
}

journal *
journal_new(store *st, const uint8_t session_id[16], const journal_limits *lim)
{
	pthread_mutexattr_t ma;
	journal *j;

	if ((j = calloc(1, sizeof *j)) == NULL)
		return NULL;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&j->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_mutex_init(&j->turn_lock, NULL);
	pthread_cond_init(&j->turn_cv, NULL);
	j->st = st;
	memcpy(j->sid, session_id, 16);
	if (lim != NULL)
		j->lim = *lim;
	if (j->lim.max_calls == 0)
		j->lim.max_calls = JOURNAL_MAX_CALLS_DEFAULT;
	if (j->lim.max_bytes == 0)
		j->lim.max_bytes = JOURNAL_MAX_BYTES_DEFAULT;
	if (j->lim.max_call_output == 0)
		j->lim.max_call_output = JOURNAL_MAX_CALL_OUTPUT_DEFAULT;
	if (j->lim.keep_ms == 0)
		j->lim.keep_ms = JOURNAL_KEEP_MS_DEFAULT;
	return j;
}

static void
journal_call_free(struct jcall *c)
{
	struct jchunk *k, *next;

	for (k = c->head; k != NULL; k = next) {
		next = k->next;
		free(k);
	}
	free(c->body);
	free(c);
}

void
journal_free(journal *j)
{
	struct jcall *c, *next;

	if (j == NULL)
		return;
	for (c = j->first; c != NULL; c = next) {
		next = c->next;
		journal_call_free(c);
	}
	free(j->drops);
	pthread_mutex_destroy(&j->lock);
	pthread_mutex_destroy(&j->turn_lock);
	pthread_cond_destroy(&j->turn_cv);
	free(j);
}

/* Add c at the end of the list and into its bucket. */
static void
journal_link(journal *j, struct jcall *c)
{
	size_t b = journal_bucket(c->id);

	c->prev = j->last;
	c->next = NULL;
	if (j->last != NULL)
		j->last->next = c;
	else
		j->first = c;
	j->last = c;
	c->hnext = j->hash[b];
	j->hash[b] = c;
	c->seq = ++j->next_seq;
	j->n++;
	j->bytes += c->kept + c->body_len;
}

/* Drop c: out of the list and its bucket, its row to delete, freed. */
static void
journal_drop(journal *j, struct jcall *c)
{
	struct jcall **pp = &j->hash[journal_bucket(c->id)];
	struct jdrop *d;

	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		j->first = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		j->last = c->prev;
	j->n--;
	j->bytes -= c->kept + c->body_len;
	if (c->stored && j->st != NULL) {
		if (j->ndrops == j->capdrops) {
			size_t cap = j->capdrops ? 2 * j->capdrops : 16;

			d = realloc(j->drops, cap * sizeof *d);
			if (d != NULL) {
				j->drops = d;
				j->capdrops = cap;
			}
		}
		/* without memory the row stays until the session's purge */
		if (j->ndrops < j->capdrops) {
			d = &j->drops[j->ndrops++];
			d->seq = ++j->drop_seq;
			d->started_ms = c->started_ms;
			memcpy(d->id, c->id, 16);
		}
	}
	journal_call_free(c);
}

static int
journal_ended(const struct jcall *c)
{
	return c->state == JOURNAL_DONE || c->state == JOURNAL_LOST;
}

/* When ended call c expires (its ended_ms plus keep_ms, saturated). */
static uint64_t
journal_expiry(const journal *j, const struct jcall *c)
{
	uint64_t due = c->ended_ms + j->lim.keep_ms;

	return due < c->ended_ms ? UINT64_MAX : due;
}

/* Call c just ended (c->ended_ms set): journal_bound's time pass is due
 * when it expires, if not sooner. */
static void
journal_note_end(journal *j, const struct jcall *c)
{
	uint64_t due = journal_expiry(j, c);

	if (due < j->expire_ms)
		j->expire_ms = due;
}

/* Keep the bounds: drop the oldest ended calls while there are too many
 * calls or bytes.  Queued and running calls stay, whatever the bounds
 * say. */
static void
journal_bound_size(journal *j)
{
	struct jcall *c, *next;

	for (c = j->first; c != NULL &&
	    (j->n > j->lim.max_calls || j->bytes > j->lim.max_bytes);
	    c = next) {
		next = c->next;
		if (journal_ended(c))
			journal_drop(j, c);
	}
}

/* The bounds, the time one too (a pass over every call: not on the path
 * of each chunk of output, where only the sizes can change). */
static void
journal_bound(journal *j)
{
	uint64_t now = journal_now(j), due, next_due = UINT64_MAX;
	struct jcall *c, *next;

	/* the pass is O(calls), and this runs at every call's begin and
	 * end: only when some call may have expired since the last one */
	if (now >= j->expire_ms) {
		for (c = j->first; c != NULL; c = next) {
			next = c->next;
			if (!journal_ended(c))
				continue;
			if (c->ended_ms <= now &&
			    now - c->ended_ms >= j->lim.keep_ms) {
				journal_drop(j, c);
				continue;
			}
			if ((due = journal_expiry(j, c)) < next_due)
				next_due = due;
		}
		j->expire_ms = next_due;
	}
	journal_bound_size(j);
}

/* Length of the UTF-8 sequence at p[0..n), or 0 when it is not one. */
static size_t
journal_utf8_len(const uint8_t *p, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* The summary of code: its first line with anything but blanks, without
 * the blanks around it, cut at JOURNAL_SUMMARY_MAX bytes on a character
 * boundary; a byte that is not UTF-8 becomes '?', a control one ' '. */
static void
journal_summary(char *out, const char *code, size_t n)
{
	const uint8_t *p = (const uint8_t *)code, *end = p + n, *eol;
	size_t o = 0, l;

	out[0] = '\0';
	if (code == NULL)
		return;
	for (;;) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' ||
		    *p == '\f' || *p == '\v'))
			p++;
		if (p >= end)
			return;
		if (*p != '\n')
			break;
		p++;
	}
	if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
		eol = end;
	while (eol > p && (eol[-1] == ' ' || eol[-1] == '\t' ||
	    eol[-1] == '\r'))
		eol--;
	while (p < eol) {
		l = journal_utf8_len(p, (size_t)(eol - p));
		if (l == 0 || (l == 1 && *p < 0x20) || *p == 0x7f) {
			if (o + 1 > JOURNAL_SUMMARY_MAX)
				break;
			out[o++] = l == 0 ? '?' : ' ';
			p++;
			continue;
		}
		if (o + l > JOURNAL_SUMMARY_MAX)
			break;
		memcpy(out + o, p, l);
		o += l;
		p += l;
	}
	out[o] = '\0';
}

int
journal_begin(journal *j, const uint8_t id[16], const char *code,
              size_t code_len)
{
	struct jcall *c;
	int rc = -1;

	journal_lock(j);
	if (journal_get(j, id) != NULL)
		goto out;
	if ((c = calloc(1, sizeof *c)) == NULL)
		goto out;
	memcpy(c->id, id, 16);
	journal_summary(c->summary, code, code_len);
	c->state = JOURNAL_QUEUED;
	c->started_ms = journal_now(j);
	c->dirty = 1;
	journal_link(j, c);
	journal_bound(j);
	rc = 0;
out:
	journal_unlock(j);
	return rc;
}

void
journal_set_state(journal *j, const uint8_t id[16], int state)
{
	struct jcall *c;

	journal_lock(j);
	if ((c = journal_get(j, id)) != NULL && !journal_ended(c) &&
	    (state == JOURNAL_RUNNING || state == JOURNAL_LOST)) {
		c->state = state;
		if (state == JOURNAL_LOST) {
			c->ended_ms = journal_now(j);
			journal_note_end(j, c);
		}
		c->dirty = 1;
		c->ver++;
	}
	journal_unlock(j);
}

/* The gap chunk at c's head, made when there is none; NULL without
 * memory. */
static struct jchunk *
journal_gap(struct jcall *c)
{
	struct jchunk *g;

	if (c->head != NULL && c->head->stream == 0)
		return c->head;
	if ((g = malloc(sizeof *g)) == NULL)
		return NULL;
	g->stream = 0;
	g->n = 0;
	g->off = 0;
	g->cap = 0;
	g->next = c->head;
	c->head = g;
	if (c->tail == NULL)
		c->tail = g;
	return g;
}

/* Drop the oldest bytes of c's output until it fits max, counting them
 * in the gap chunk at its head (dropping is oldest first, so there is
 * never a gap anywhere else). */
static void
journal_trim(journal *j, struct jcall *c, uint64_t max)
{
	struct jchunk *g, *k;
	size_t d;

	while (c->kept > max) {
		if ((g = journal_gap(c)) == NULL)
			return; /* no memory: over by one write until the next */
		if ((k = g->next) == NULL)
			return;
		d = k->n;
		if (c->kept - d < max)
			d = (size_t)(c->kept - max);
		g->n += d;
		c->kept -= d;
		j->bytes -= d;
		c->out_dropped += d;
		if (d < k->n) {
			k->off += d;
			k->n -= d;
			continue;
		}
		g->next = k->next;
		if (c->tail == k)
			c->tail = g;
		free(k);
	}
}

void
journal_output(journal *j, const uint8_t id[16], int stream, const void *p,
               size_t n)
{
	struct jcall *c;
	struct jchunk *k, *g;
	const uint8_t *b = p;
	uint64_t max = j->lim.max_call_output;
	size_t cap;

	if (n == 0 || (stream != JOURNAL_STDOUT && stream != JOURNAL_STDERR))
		return;
	journal_lock(j);
	if ((c = journal_get(j, id)) == NULL || journal_ended(c))
		goto out;
	c->out_bytes += n;
	c->dirty = 1;
	c->ver++;
	if (n > max) {
		/* more than a call keeps at once: only its end stays, and
		 * everything before it goes, in order */
		journal_trim(j, c, 0);
		if ((g = journal_gap(c)) != NULL) {
			g->n += n - (size_t)max;
			c->out_dropped += n - (size_t)max;
			b += n - (size_t)max;
			n = (size_t)max;
		}
	}
	k = c->tail;
	if (k != NULL && k->stream == stream && k->cap - k->off - k->n >= n) {
		memcpy(k->data + k->off + k->n, b, n);
		k->n += n;
	} else {
		cap = n < JOURNAL_CHUNK_MIN ? JOURNAL_CHUNK_MIN : n;
		if ((k = malloc(sizeof *k + cap)) == NULL) {
			/* no memory: counted as dropped, where it was */
			if ((g = journal_gap(c)) != NULL && g == c->tail) {
				g->n += n;
				c->out_dropped += n;
			}
			goto out;
		}
		k->next = NULL;
		k->stream = stream;
		k->n = n;
		k->off = 0;
		k->cap = cap;
		memcpy(k->data, b, n);
		if (c->tail != NULL)
			c->tail->next = k;
		else
			c->head = k;
		c->tail = k;
	}
	c->kept += n;
	j->bytes += n;
	journal_trim(j, c, max);
	journal_bound_size(j);
out:
	journal_unlock(j);
}

/* Persist what is dirty: every call (all set), or the calls that ended
 * detached. */
static int journal_persist_some(journal *j, int all, char **cause);

/* End c with body (kind STORE_CALL_END_*), state. */
static void
journal_end_as(journal *j, const uint8_t id[16], int state, int end,
               const uint8_t *body, size_t n, int detached)
{
	struct jcall *c;
	uint8_t *copy = NULL;
	int persist = 0, have = 1;

	if (n > 0 && (body == NULL || (copy = malloc(n)) == NULL)) {
		n = 0; /* no memory: the call ends without its body */
		have = 0;
	}
	if (copy != NULL)
		memcpy(copy, body, n);
	journal_lock(j);
	if ((c = journal_get(j, id)) == NULL || journal_ended(c)) {
		/* LOST by set_state first, then its ERROR: take the body */
		if (c == NULL || c->end != STORE_CALL_END_NONE ||
		    state != JOURNAL_LOST) {
			free(copy);
			goto out;
		}
	}
	c->state = state;
	/* a lost call without its ERROR body has none (the replay says
	 * so: JOURNAL_END_ERROR, nothing) */
	c->end = have && !(state == JOURNAL_LOST && n == 0) ? end :
	    STORE_CALL_END_NONE;
	if (c->ended_ms == 0)
		c->ended_ms = journal_now(j);
	journal_note_end(j, c);
	j->bytes -= c->body_len;
	free(c->body);
	c->body = copy;
	c->body_len = n;
	j->bytes += n;
	c->dirty = 1;
	c->ver++;
	persist = detached;
	c->want = detached;
	journal_bound(j);
out:
	journal_unlock(j);
	if (persist)
		journal_persist_some(j, 0, NULL);
}

void
journal_end(journal *j, const uint8_t id[16], const uint8_t *result_body,
            size_t n, int detached)
{
	journal_end_as(j, id, JOURNAL_DONE, STORE_CALL_END_RESULT, result_body,
	    n, detached);
}

void
journal_end_error(journal *j, const uint8_t id[16], const uint8_t *error_body,
                  size_t n, int lost, int detached)
{
	journal_end_as(j, id, lost ? JOURNAL_LOST : JOURNAL_DONE,
	    STORE_CALL_END_ERROR, error_body, n, detached);
}

static void
journal_info(const struct jcall *c, journal_call_info *out)
{
	memcpy(out->id, c->id, 16);
	memcpy(out->summary, c->summary, sizeof out->summary);
	out->state = c->state;
	out->started_ms = c->started_ms;
	out->ended_ms = c->ended_ms;
	out->output_bytes = c->out_bytes;
	out->output_dropped = c->out_dropped;
	out->end_error = journal_ended(c) && c->end != STORE_CALL_END_RESULT;
}

int
journal_find(journal *j, const uint8_t id[16], journal_call_info *out)
{
	struct jcall *c;
	int found = 0;

	journal_lock(j);
	if ((c = journal_get(j, id)) != NULL) {
		found = 1;
		if (out != NULL)
			journal_info(c, out);
	}
	journal_unlock(j);
	return found;
}

size_t
journal_count(journal *j)
{
	size_t n;

	journal_lock(j);
	n = j->n;
	journal_unlock(j);
	return n;
}

size_t
journal_load_skipped(journal *j)
{
	size_t n;

	journal_lock(j);
	n = j->skipped;
	journal_unlock(j);
	return n;
}

int
journal_replay(journal *j, const uint8_t id[16],
               int (*fn)(void *ctx, int stream, const uint8_t *p, size_t n),
               void *ctx)
{
	char gap[96];
	struct jcall *c;
	struct jchunk *k;
	int rc = -1, len;

	journal_lock(j);
	if ((c = journal_get(j, id)) == NULL)
		goto out;
	for (k = c->head; k != NULL; k = k->next) {
		if (k->stream == 0) {
			len = snprintf(gap, sizeof gap, JOURNAL_GAP_FMT,
			    (unsigned long long)k->n);
			rc = fn(ctx, JOURNAL_STDERR, (const uint8_t *)gap,
			    (size_t)len);
		} else
			rc = fn(ctx, k->stream, k->data + k->off, k->n);
		if (rc != 0)
			goto out;
	}
	if (!journal_ended(c))
		rc = fn(ctx, JOURNAL_JOIN, NULL, 0);
	else if (c->end == STORE_CALL_END_RESULT)
		rc = fn(ctx, JOURNAL_END_RESULT, c->body, c->body_len);
	else
		rc = fn(ctx, JOURNAL_END_ERROR, c->body, c->body_len);
out:
	journal_unlock(j);
	return rc;
}

/* A growing string. */
struct jbuf {
	char *p;
	size_t n, cap;
	int failed;
};

static void
jbuf_add(struct jbuf *b, const char *s, size_t n)
{
	char *p;
	size_t cap;

	if (b->failed)
		return;
	if (b->cap - b->n < n + 1) {
		cap = b->cap ? b->cap : 256;
		while (cap - b->n < n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void
jbuf_printf(struct jbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		jbuf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n :
		    sizeof tmp - 1);
}

/* s as a JSON string (the summary: UTF-8, no control bytes but those
 * escaped here all the same). */
static void
jbuf_json_str(struct jbuf *b, const char *s)
{
	char esc[8];

	jbuf_add(b, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = *s;
			jbuf_add(b, esc, 2);
		} else if ((unsigned char)*s < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)*s);
			jbuf_add(b, esc, 6);
		} else
			jbuf_add(b, s, 1);
	}
	jbuf_add(b, "\"", 1);
}

char *
journal_list_json(journal *j)
{
	struct jbuf b = {NULL, 0, 0, 0};
	struct jcall *c;
	char hex[33];

	journal_lock(j);
	journal_bound(j);
	jbuf_add(&b, "[", 1);
	for (c = j->first; c != NULL; c = c->next) {
		store_hex(c->id, 16, hex);
		jbuf_printf(&b, "%s{\"id\": \"%s\", \"summary\": ",
		    c == j->first ? "" : ", ", hex);
		jbuf_json_str(&b, c->summary);
		jbuf_printf(&b, ", \"state\": \"%s\", \"started\": %llu, "
		    "\"ended\": ", journal_state_name(c->state),
		    (unsigned long long)c->started_ms);
		if (journal_ended(c))
			jbuf_printf(&b, "%llu", (unsigned long long)c->ended_ms);
		else
			jbuf_add(&b, "null", 4);
		jbuf_printf(&b, ", \"output_bytes\": %llu, "
		    "\"output_dropped\": %llu}",
		    (unsigned long long)c->out_bytes,
		    (unsigned long long)c->out_dropped);
	}
	jbuf_add(&b, "]", 1);
	journal_unlock(j);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* --- persistence --------------------------------------------------------- */

/* One record to write: the encoded parts, owned. */
struct jrec {
	store_call sc;               /* sid, id, times, state, lengths */
	uint8_t *chunks;             /* owned */
	uint8_t *body;               /* owned */
	struct jcall *c;             /* the call, to mark clean after */
	uint64_t seq, ver;           /* which call, at which version */
};

/* What one persist writes. */
struct jpersist {
	journal *j;
	struct jrec *recs;
	size_t nrecs;
	struct jdrop *drops;
	size_t ndrops;
};

/* c's record, as the store keeps it (chunks encoded). */
static int
journal_encode(journal *j, struct jcall *c, struct jrec *r)
{
	struct jchunk *k;
	size_t len = 0, o = 0;

	memset(r, 0, sizeof *r);
	for (k = c->head; k != NULL; k = k->next)
		len += calls_chunk_size(k->stream == 0 ? STORE_CHUNK_GAP :
		    k->stream, k->n);
	if (len > UINT32_MAX || c->body_len > UINT32_MAX)
		return -1;
	if (len > 0 && (r->chunks = malloc(len)) == NULL)
		return -1;
	for (k = c->head; k != NULL; k = k->next)
		o += calls_chunk_put(r->chunks + o, k->stream == 0 ?
		    STORE_CHUNK_GAP : k->stream, k->stream == 0 ? NULL :
		    k->data + k->off, k->n);
	if (c->body_len > 0) {
		if ((r->body = malloc(c->body_len)) == NULL) {
			free(r->chunks);
			return -1;
		}
		memcpy(r->body, c->body, c->body_len);
	}
	memcpy(r->sc.sid, j->sid, 16);
	memcpy(r->sc.id, c->id, 16);
	r->sc.state = (uint8_t)c->state;
	r->sc.end = (uint8_t)c->end;
	r->sc.started_ms = c->started_ms;
	r->sc.ended_ms = c->ended_ms;
	r->sc.output_bytes = c->out_bytes;
	r->sc.output_dropped = c->out_dropped;
	r->sc.summary = c->summary;  /* copied below: c may go */
	r->sc.summary_len = (uint32_t)strlen(c->summary);
	r->sc.chunks = r->chunks;
	r->sc.chunks_len = (uint32_t)len;
	r->sc.body = r->body;
	r->sc.body_len = (uint32_t)c->body_len;
	r->c = c;
	r->seq = c->seq;
	r->ver = c->ver;
	return 0;
}

/* The write transaction of a persist. */
static int
journal_persist_txn(store_txn *t, void *arg)
{
	struct jpersist *jp = arg;
	size_t i;
	int rc;

	for (i = 0; i < jp->ndrops; i++)
		if ((rc = calls_del(t, jp->j->sid, jp->drops[i].started_ms,
		    jp->drops[i].id)) != 0)
			return rc;
	for (i = 0; i < jp->nrecs; i++)
		if ((rc = calls_put(t, &jp->recs[i].sc)) != 0)
			return rc;
	return 0;
}

static int
journal_persist_some(journal *j, int all, char **cause)
{
	struct jpersist jp = {j, NULL, 0, NULL, 0};
	char (*summaries)[JOURNAL_SUMMARY_MAX + 1] = NULL;
	uint64_t ticket, upto = 0;
	struct jcall *c;
	size_t i, n = 0;
	int rc = 0;

	if (cause != NULL)
		*cause = NULL;
	if (j->st == NULL)
		return 0;
	/* the snapshot, under the journal's lock */
	journal_lock(j);
	journal_bound(j);
	ticket = j->ticket_next++;
	for (c = j->first; c != NULL; c = c->next)
		if (c->dirty && (all || c->want))
			n++;
	if ((n > 0 && ((jp.recs = calloc(n, sizeof *jp.recs)) == NULL ||
	    (summaries = calloc(n, sizeof *summaries)) == NULL)) ||
	    (j->ndrops > 0 &&
	    (jp.drops = malloc(j->ndrops * sizeof *jp.drops)) == NULL)) {
		rc = STORE_E_NOMEM;
		n = 0;
	}
	for (c = j->first; c != NULL && jp.nrecs < n; c = c->next) {
		if (!c->dirty || !(all || c->want))
			continue;
		if (journal_encode(j, c, &jp.recs[jp.nrecs]) != 0)
			continue; /* no memory: its turn comes again */
		memcpy(summaries[jp.nrecs], c->summary, sizeof c->summary);
		jp.recs[jp.nrecs].sc.summary = summaries[jp.nrecs];
		/* from now on a drop of c must delete its row */
		c->stored = 1;
		jp.nrecs++;
	}
	if (rc == 0 && j->ndrops > 0) {
		memcpy(jp.drops, j->drops, j->ndrops * sizeof *jp.drops);
		jp.ndrops = j->ndrops;
		upto = j->drops[j->ndrops - 1].seq;
	}
	journal_unlock(j);

	/* the write, in ticket order (a failed snapshot passes its turn) */
	pthread_mutex_lock(&j->turn_lock);
	while (j->ticket_turn != ticket)
		pthread_cond_wait(&j->turn_cv, &j->turn_lock);
	pthread_mutex_unlock(&j->turn_lock);
	if (rc == 0 && (jp.nrecs > 0 || jp.ndrops > 0))
		rc = store_write_cause(j->st, journal_persist_txn, &jp, cause);
	pthread_mutex_lock(&j->turn_lock);
	j->ticket_turn++;
	pthread_cond_broadcast(&j->turn_cv);
	pthread_mutex_unlock(&j->turn_lock);

	if (rc == 0) {
		journal_lock(j);
		/* the drops written: every one up to upto (a later persist
		 * may have removed some already) */
		for (i = 0; i < j->ndrops && j->drops[i].seq <= upto; i++)
			;
		if (i < j->ndrops)   /* drops may be NULL when there are none */
			memmove(j->drops, j->drops + i,
			    (j->ndrops - i) * sizeof *j->drops);
		j->ndrops -= i;
		for (i = 0; i < jp.nrecs; i++) {
			/* a call dropped meanwhile is not looked at (by
			 * seq: its memory may hold another call now) */
			for (c = j->first; c != NULL; c = c->next)
				if (c == jp.recs[i].c && c->seq == jp.recs[i].seq)
					break;
			if (c != NULL && c->ver == jp.recs[i].ver) {
				c->dirty = 0;
				c->want = 0;
			}
		}
		journal_unlock(j);
	}
	for (i = 0; i < jp.nrecs; i++) {
		free(jp.recs[i].chunks);
		free(jp.recs[i].body);
	}
	free(jp.recs);
	free(jp.drops);
	free(summaries);
	if (rc != 0 && cause != NULL && *cause == NULL) {
		char buf[256];

		snprintf(buf, sizeof buf, "persisting the call journal: %s",
		    store_strerror(rc));
		*cause = strdup(buf);
	}
	return rc;
}

int
journal_persist(journal *j, char **cause)
{
	return journal_persist_some(j, 1, cause);
}

/* --- loading ------------------------------------------------------------- */

/* A call read back, before it joins the journal. */
struct jload {
	journal *j;
	uint64_t now;
	struct jcall **calls;
	size_t n, cap;
	int nomem;
};

/* Copy one record out of the map (no store operations here). */
static int
journal_load_one(const store_call *sc, int crc, const char *why, void *arg)
{
	struct jload *jl = arg;
	journal *j = jl->j;
	struct jchunk *k;
	struct jcall *c, **v;
	const uint8_t *data;
	uint64_t len, gap = 0;
	size_t off = 0, sl;
	int kind;

	(void)why;
	if (crc != 0) {
		j->skipped++;
		return 0;
	}
	if (jl->n == jl->cap) {
		size_t cap = jl->cap ? 2 * jl->cap : 64;

		if ((v = realloc(jl->calls, cap * sizeof *v)) == NULL)
			goto nomem;
		jl->calls = v;
		jl->cap = cap;
	}
	if ((c = calloc(1, sizeof *c)) == NULL)
		goto nomem;
	memcpy(c->id, sc->id, 16);
	sl = sc->summary_len > JOURNAL_SUMMARY_MAX ? JOURNAL_SUMMARY_MAX :
	    sc->summary_len;
	journal_summary(c->summary, sc->summary, sl);
	c->state = sc->state;
	c->end = sc->end;
	c->started_ms = sc->started_ms;
	c->ended_ms = sc->ended_ms;
	c->out_bytes = sc->output_bytes;
	c->out_dropped = sc->output_dropped;
	c->stored = 1;
	if (!journal_ended(c)) {
		/* persisted while queued or running: its worker is gone */
		c->state = JOURNAL_LOST;
		c->end = STORE_CALL_END_NONE;
		c->dirty = 1;
	}
	if (c->ended_ms == 0)
		c->ended_ms = jl->now;
	/* the journal keeps one gap, at the head (it drops the oldest
	 * output only): gaps elsewhere in a record, which it never writes,
	 * are added to that one */
	while (calls_chunk_next(sc->chunks, sc->chunks_len, &off, &kind,
	    &data, &len, NULL) == 1) {
		if (kind == STORE_CHUNK_GAP) {
			gap += len;
			continue;
		}
		if (len == 0)
			continue;
		if ((k = malloc(sizeof *k + (size_t)len)) == NULL) {
			journal_call_free(c);
			goto nomem;
		}
		k->next = NULL;
		k->stream = kind;
		k->n = (size_t)len;
		k->off = 0;
		k->cap = (size_t)len;
		memcpy(k->data, data, (size_t)len);
		c->kept += len;
		if (c->tail != NULL)
			c->tail->next = k;
		else
			c->head = k;
		c->tail = k;
	}
	if (gap > 0) {
		if ((k = journal_gap(c)) == NULL) {
			journal_call_free(c);
			goto nomem;
		}
		k->n = (size_t)gap;
	}
	if (c->end != STORE_CALL_END_NONE && sc->body_len > 0) {
		if ((c->body = malloc(sc->body_len)) == NULL) {
			journal_call_free(c);
			goto nomem;
		}
		memcpy(c->body, sc->body, sc->body_len);
		c->body_len = sc->body_len;
	}
	jl->calls[jl->n++] = c;
	return 0;
nomem:
	jl->nomem = 1;
	return STORE_E_NOMEM;
}

static int
journal_load_txn(store_txn *t, void *arg)
{
	struct jload *jl = arg;

	return calls_list(t, jl->j->sid, journal_load_one, jl);
}

int
journal_load(journal *j, char **cause)
{
	struct jload jl = {j, 0, NULL, 0, 0, 0};
	size_t i;
	int rc;

	if (cause != NULL)
		*cause = NULL;
	if (j->st == NULL)
		return 0;
	jl.now = journal_now(j);
	journal_lock(j);
	rc = store_read(j->st, journal_load_txn, &jl);
	for (i = 0; i < jl.n; i++) {
		if (rc != 0 || journal_get(j, jl.calls[i]->id) != NULL) {
			/* a second row of one id: keep the first */
			journal_call_free(jl.calls[i]);
			continue;
		}
		journal_link(j, jl.calls[i]);
		/* kept under other bounds, maybe */
		journal_trim(j, jl.calls[i], j->lim.max_call_output);
	}
	if (rc == 0) {
		j->expire_ms = 0;  /* the loaded calls are not in it yet */
		journal_bound(j); /* expired ones go, their rows later */
	}
	journal_unlock(j);
	free(jl.calls);
	if (rc != 0 && cause != NULL) {
		char buf[256];

		snprintf(buf, sizeof buf, "reading the call journal: %s",
		    store_strerror(rc));
		*cause = strdup(buf);
	}
	return rc;
}
