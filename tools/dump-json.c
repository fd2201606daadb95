/*
 * dump-json.c - pyshelf-dump's JSON lines writer (--json): one object per
 * row, strings escaped per RFC 8259 (invalid UTF-8 becomes U+FFFD), and
 * the fields that name an entry.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "dump.h"

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
