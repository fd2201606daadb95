/*
 * dump-out.c - how pyshelf-dump writes: times, sizes and store strings for
 * people (always printable: control characters and bad UTF-8 are escaped, so
 * a hostile name cannot drive the terminal), the JSON lines writer (one
 * object per row, strings escaped per RFC 8259), and the progress line.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dump.h"

/* ISO 8601 UTC with milliseconds, or "-" for 0. */
char *
dump_out_time(char *buf, size_t cap, uint64_t ms)
{
	time_t sec = (time_t)(ms / 1000);
	struct tm tm;

	if (ms == 0 || gmtime_r(&sec, &tm) == NULL) {
		snprintf(buf, cap, "-");
		return buf;
	}
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
	return buf;
}

/* Bytes as "123 B", "4.5 KiB"... */
char *
dump_out_size(char *buf, size_t cap, uint64_t bytes)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	int u = 0;

	if (bytes < 1024) {
		snprintf(buf, cap, "%" PRIu64 " B", bytes);
		return buf;
	}
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, cap, "%.1f %s", v, units[u]);
	return buf;
}

/* A lease as "30d", "1h30m", "45s"; 0 as "none". */
char *
dump_out_duration(char *buf, size_t cap, uint64_t ms)
{
	uint64_t s = ms / 1000;

	if (ms == 0)
		snprintf(buf, cap, "none");
	else if (s == 0)
		snprintf(buf, cap, "%" PRIu64 "ms", ms);
	else if (s % 86400 == 0)
		snprintf(buf, cap, "%" PRIu64 "d", s / 86400);
	else if (s % 3600 == 0)
		snprintf(buf, cap, "%" PRIu64 "h", s / 3600);
	else if (s >= 3600)
		snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
		    s % 3600 / 60);
	else if (s % 60 == 0)
		snprintf(buf, cap, "%" PRIu64 "m", s / 60);
	else
		snprintf(buf, cap, "%" PRIu64 "s", s);
	return buf;
}

/* Store bytes as printable text (no quotes): valid UTF-8 kept, control
 * characters and invalid bytes as \xNN, truncated with "..." to fit. */
char *
dump_out_text(char *buf, size_t cap, const void *p, size_t n)
{
	const uint8_t *s = p;
	size_t i = 0, o = 0, k;
	uint32_t cp;

	if (cap == 0)
		return buf;
	while (i < n) {
		k = pickledis_utf8_seq(s + i, n - i, &cp);
		if (k == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 &&
		    cp < 0xa0) || cp == '\\') {
			if (o + 5 + 4 > cap)
				break;
			if (k == 1 && cp == '\\')
				o += (size_t)snprintf(buf + o, cap - o, "\\\\");
			else
				o += (size_t)snprintf(buf + o, cap - o, "\\x%02x",
				    s[i]);
			i++;
			continue;
		}
		if (o + k + 4 > cap)
			break;
		memcpy(buf + o, s + i, k);
		o += k;
		i += k;
	}
	if (i < n)
		o += (size_t)snprintf(buf + o, cap - o, "...");
	buf[o] = '\0';
	return buf;
}

/* Columns a UTF-8 string takes (one per code point; good enough for the
 * names pyshelf sees). */
int
dump_out_width(const char *s)
{
	int w = 0;

	if (s == NULL)          /* printed as "?" by dump_out_pad */
		return 1;
	for (; *s != '\0'; s++)
		if (((uint8_t)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* Print s left-aligned in width columns. */
void
dump_out_pad(FILE *f, const char *s, int width)
{
	int w = dump_out_width(s);

	fputs(s != NULL ? s : "?", f);
	while (w++ < width)
		fputc(' ', f);
}

/* Nonzero when a global's name would read as another KEY form ("#7",
 * "h:7", "g:x") and must be given as g:NAME. */
static int
dump_out_ambiguous(const char *name, size_t len)
{
	return (len >= 1 && name[0] == '#') || (len >= 2 &&
	    (name[0] == 'h' || name[0] == 'g') && name[1] == ':');
}

/* A key as the KEY argument spells it: the name (g:NAME when the name
 * looks like another form), or "#ID" for a handle. */
char *
dump_out_key(char *buf, size_t cap, const store_key *k)
{
	if (k->kind == STORE_KIND_HANDLE)
		snprintf(buf, cap, "#%" PRIu64, k->handle);
	else if (k->kind == STORE_KIND_GLOBAL) {
		size_t o = 0;
		if (dump_out_ambiguous(k->name, k->name_len) && cap > 3)
			o = (size_t)snprintf(buf, cap, "g:");
		dump_out_text(buf + o, cap - o, k->name, k->name_len);
	} else {
		char hex[2 * 64 + 1];
		size_t n = k->name_len > 64 ? 64 : k->name_len;
		store_hex((const uint8_t *)k->name, n, hex);
		snprintf(buf, cap, "raw key %s%s", hex,
		    n < k->name_len ? "..." : "");
	}
	return buf;
}

/* Name of a pickler byte. */
const char *
dump_out_pickler(uint8_t pickler)
{
	switch (pickler) {
	case STORE_PICKLER_NONE:
		return "none";
	case STORE_PICKLER_PICKLE:
		return "pickle";
	case STORE_PICKLER_CLOUDPICKLE:
		return "cloudpickle";
	}
	return "unknown";
}

#define DUMP_KNOWN_FLAGS (STORE_FLAG_EXCINFO | STORE_FLAG_VOLATILE | \
    STORE_FLAG_OOB | STORE_FLAG_HIDDEN | STORE_FLAG_BLOB)

/* Record flags as words ("excinfo,volatile"), "-" when none. */
char *
dump_out_flags(char *buf, size_t cap, uint16_t flags)
{
	size_t o = 0;

	buf[0] = '\0';
	if (flags & STORE_FLAG_EXCINFO)
		o += (size_t)snprintf(buf + o, cap - o, "excinfo,");
	if (flags & STORE_FLAG_VOLATILE && o < cap)
		o += (size_t)snprintf(buf + o, cap - o, "volatile,");
	if (flags & STORE_FLAG_OOB && o < cap)
		o += (size_t)snprintf(buf + o, cap - o, "oob,");
	if (flags & STORE_FLAG_HIDDEN && o < cap)
		o += (size_t)snprintf(buf + o, cap - o, "hidden,");
	if (flags & STORE_FLAG_BLOB && o < cap)
		o += (size_t)snprintf(buf + o, cap - o, "blob,");
	if ((flags & ~DUMP_KNOWN_FLAGS) && o < cap)
		o += (size_t)snprintf(buf + o, cap - o, "0x%04x,",
		    flags & ~DUMP_KNOWN_FLAGS);
	if (o == 0)
		snprintf(buf, cap, "-");
	else if (o <= cap)
		buf[o - 1] = '\0';
	return buf;
}

/* The progress line on stderr: only on a terminal, at most 10 times a
 * second; final clears it. */
void
dump_out_progress(struct dump *d, const char *what, uint64_t done,
                  uint64_t total, int final)
{
	static uint64_t last_ms;
	uint64_t now;

	if (!d->progress)
		return;
	if (final) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		return;
	}
	now = store_now_ms();
	if (now - last_ms < 100)
		return;
	last_ms = now;
	if (total > 0)
		fprintf(stderr, "\r\033[Kpyshelf-dump: %s %" PRIu64 " of %"
		    PRIu64 " (%u%%)", what, done, total,
		    (unsigned)(done * 100 / (total > done ? total : done)));
	else
		fprintf(stderr, "\r\033[Kpyshelf-dump: %s %" PRIu64, what, done);
	fflush(stderr);
}

/* --- JSON lines ---------------------------------------------------------- */

/* Write an escaped JSON string; invalid UTF-8 becomes U+FFFD. */
static void
dump_json_escape(FILE *f, const uint8_t *s, size_t n)
{
	size_t i = 0, k;
	uint32_t cp;

	fputc('"', f);
	while (i < n) {
		k = pickledis_utf8_seq(s + i, n - i, &cp);
		if (k == 0) {
			fputs("\\ufffd", f);
			i++;
			continue;
		}
		if (cp == '"' || cp == '\\')
			fprintf(f, "\\%c", (char)cp);
		else if (cp == '\n')
			fputs("\\n", f);
		else if (cp == '\t')
			fputs("\\t", f);
		else if (cp == '\r')
			fputs("\\r", f);
		else if (cp < 0x20 || cp == 0x7f || cp == 0x2028 || cp == 0x2029)
			fprintf(f, "\\u%04x", (unsigned)cp);
		else
			fwrite(s + i, 1, k, f);
		i += k;
	}
	fputc('"', f);
}

/* The separator and key before a value at the current depth. */
static void
dump_json_key(struct dump *d, const char *key)
{
	int *comma = &d->json_comma[d->json_depth];

	if (*comma)
		fputc(',', d->out);
	*comma = 1;
	if (key != NULL) {
		dump_json_escape(d->out, (const uint8_t *)key, strlen(key));
		fputc(':', d->out);
	}
}

/* Open a container ('{' or '[') under key. */
static void
dump_json_open(struct dump *d, const char *key, char c)
{
	if (d->json_depth > 0)
		dump_json_key(d, key);
	fputc(c, d->out);
	if (d->json_depth + 1 < DUMP_JSON_DEPTH)
		d->json_depth++;
	d->json_comma[d->json_depth] = 0;
}

void
dump_json_obj(struct dump *d, const char *key)
{
	dump_json_open(d, key, '{');
}

void
dump_json_arr(struct dump *d, const char *key)
{
	dump_json_open(d, key, '[');
}

/* Close the innermost container with c ('}' or ']'). */
void
dump_json_close(struct dump *d, char c)
{
	fputc(c, d->out);
	if (d->json_depth > 0)
		d->json_depth--;
}

/* Start one row: {"row":"<row>" ... */
void
dump_json_row(struct dump *d, const char *row)
{
	d->json_depth = 0;
	dump_json_obj(d, NULL);
	dump_json_cstr(d, "row", row);
}

/* End the row and its line. */
void
dump_json_row_end(struct dump *d)
{
	while (d->json_depth > 1)
		dump_json_close(d, ']');  /* never happens when balanced */
	dump_json_close(d, '}');
	fputc('\n', d->out);
}

void
dump_json_str(struct dump *d, const char *key, const void *p, size_t n)
{
	dump_json_key(d, key);
	dump_json_escape(d->out, p, n);
}

/* A NUL-terminated string, or null when s is NULL. */
void
dump_json_cstr(struct dump *d, const char *key, const char *s)
{
	if (s == NULL) {
		dump_json_null(d, key);
		return;
	}
	dump_json_str(d, key, s, strlen(s));
}

void
dump_json_u64(struct dump *d, const char *key, uint64_t v)
{
	dump_json_key(d, key);
	fprintf(d->out, "%" PRIu64, v);
}

void
dump_json_bool(struct dump *d, const char *key, int v)
{
	dump_json_key(d, key);
	fputs(v ? "true" : "false", d->out);
}

void
dump_json_null(struct dump *d, const char *key)
{
	dump_json_key(d, key);
	fputs("null", d->out);
}

/* The first row of every --json run: what wrote it and from where. */
void
dump_json_header(struct dump *d, const char *view)
{
	dump_json_row(d, "dump");
	dump_json_u64(d, "dump_format", DUMP_FORMAT);
	dump_json_cstr(d, "view", view);
	dump_json_cstr(d, "path", d->s != NULL ? store_path(d->s) : d->o->db);
	dump_json_u64(d, "store_format", d->format);
	dump_json_u64(d, "time_ms", d->now_ms);
	dump_json_row_end(d);
}

/* The fields naming an entry: kind, key (as the KEY argument spells it),
 * name (globals) and handle (handles). */
void
dump_json_key_fields(struct dump *d, const store_key *k)
{
	char key[32];

	if (k->kind == STORE_KIND_HANDLE) {
		snprintf(key, sizeof key, "#%" PRIu64, k->handle);
		dump_json_cstr(d, "kind", "handle");
		dump_json_cstr(d, "key", key);
		dump_json_null(d, "name");
		dump_json_u64(d, "handle", k->handle);
	} else if (k->kind == STORE_KIND_GLOBAL) {
		char gk[2 + STORE_KEY_MAX];
		size_t n = k->name_len > STORE_KEY_MAX ? STORE_KEY_MAX : k->name_len;
		size_t o = dump_out_ambiguous(k->name, n) ? 2 : 0;
		memcpy(gk, "g:", 2);
		memcpy(gk + o, k->name, n);
		dump_json_cstr(d, "kind", "global");
		dump_json_str(d, "key", gk, o + n);
		dump_json_str(d, "name", k->name, k->name_len);
		dump_json_null(d, "handle");
	} else {
		dump_json_cstr(d, "kind", "invalid");
		dump_json_null(d, "key");
		dump_json_null(d, "name");
		dump_json_null(d, "handle");
	}
}
