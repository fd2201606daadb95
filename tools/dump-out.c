/*
 * dump-out.c - how pyshelf-dump writes: times, sizes and store strings for
 * people (always printable: control characters and bad UTF-8 are escaped, so
 * a hostile name cannot drive the terminal), and the progress line.  The
 * JSON lines writer is in dump-json.c.
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
int
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
