/*
 * dump-compact.c - pyshelf-dump --compact: give the pages that ended
 * sessions freed back to the file system (store_compact, store/compact.c)
 * and say what it gave: data.mdb's bytes before and after, and the blob
 * files, which stay as they are.  It runs in the child process the views
 * run in (a crash on a damaged page is reported, not suffered), with the
 * store not opened by this program: store_compact needs it closed
 * everywhere.
 */
#include "config.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dump.h"

/* The files in DIR/blobs and their bytes (0, 0 when there is none). */
static void
dump_compact_blobs(const char *db, uint64_t *files, uint64_t *bytes)
{
	char *dir = NULL, *p;
	struct dirent *de;
	struct stat st;
	DIR *dh;

	*files = *bytes = 0;
	if (asprintf(&dir, "%s/blobs", db) < 0 || (dh = opendir(dir)) == NULL) {
		free(dir);
		return;
	}
	while ((de = readdir(dh)) != NULL) {
		if (de->d_name[0] == '.' ||
		    asprintf(&p, "%s/%s", dir, de->d_name) < 0)
			continue;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
			(*files)++;
			*bytes += (uint64_t)st.st_size;
		}
		free(p);
	}
	closedir(dh);
	free(dir);
}

/* pyshelf-dump --compact. */
int
dump_compact_run(struct dump *d)
{
	uint64_t before, after, files, bytes;
	uint64_t t0 = store_now_ms();
	char *cause = NULL, a[32], b[32], c[32];
	int rc;

	d->now_ms = t0;
	dump_progress_db("compact");
	rc = store_compact(d->o->db, &before, &after, &cause);
	if (rc != 0) {
		dump_warn("not compacted: %s", cause != NULL ? cause :
		    store_strerror(rc));
		free(cause);
		return rc == STORE_E_DAMAGED ? DUMP_EXIT_DAMAGE :
		    DUMP_EXIT_ERROR;
	}
	dump_compact_blobs(d->o->db, &files, &bytes);
	if (d->o->json) {
		dump_json_header(d, "compact");
		dump_json_row(d, "compact");
		dump_json_cstr(d, "path", d->o->db);
		dump_json_u64(d, "before", before);
		dump_json_u64(d, "after", after);
		dump_json_u64(d, "freed", before > after ? before - after : 0);
		dump_json_u64(d, "blob_files", files);
		dump_json_u64(d, "blob_bytes", bytes);
		dump_json_u64(d, "elapsed_ms", store_now_ms() - t0);
		dump_json_row_end(d);
	} else {
		fprintf(d->out, "compacted %s/data.mdb: %s -> %s (%s given "
		    "back)\n", d->o->db, dump_out_size(a, sizeof a, before),
		    dump_out_size(b, sizeof b, after), dump_out_size(c,
		    sizeof c, before > after ? before - after : 0));
		fprintf(d->out, "blobs/ kept as it was: %" PRIu64 " files, "
		    "%s\n", files, dump_out_size(a, sizeof a, bytes));
	}
	return DUMP_EXIT_OK;
}
