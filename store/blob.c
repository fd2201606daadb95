/*
 * blob.c - large payloads as files beside data.mdb (docs/STORAGE.md,
 * "Blob files").  A payload of at least blob_min bytes is written with
 * write(2) straight from the writer's buffers into blobs/<name>, hashed on
 * the way, and the record in `entries` carries only the file's name, size
 * and digest.  LMDB never copies it into a dirty page of its own: that
 * copy, and the kernel zeroing the fresh pages it lands in, were half of a
 * large checkpoint.
 *
 * The rules that keep files and records in step:
 *  - a file is written, inside the write transaction, before the record
 *    that names it; under STORE_SYNC_ALWAYS it and the directory are
 *    fsynced before the commit;
 *  - the `blobs` database maps each entry key that has a file to the file's
 *    name and size, changed in the same transaction as the record;
 *  - a file whose record was replaced or deleted is unlinked after the
 *    commit; the files of an aborted transaction are unlinked at once;
 *  - whatever a crash leaves between those steps is a file that no row
 *    names: a writable open removes those while it holds the writer lock
 *    (no other transaction can be writing a file then).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xxh.h"

#include "store-int.h"

/* Bytes hashed then written at a time: hashed while it is still in the
 * cache, then read from there by write(2). */
#define BLOB_CHUNK ((size_t)1 << 20)
/* Under STORE_SYNC_ALWAYS, start the disk's write-back every this many
 * bytes, so the fsync at commit waits for the tail only. */
#define BLOB_KICK ((size_t)8 << 20)

/* Most files remembered for the next store_sync(); past it, that call
 * syncs the whole file system (syncfs) instead of each file. */
#define BLOB_UNSYNCED_MAX 65536

/* The meta key of the bytes in blob files, which count against map_max
 * with the map's pages. */
#define BLOB_BYTES_KEY "blob_bytes"

/* Bytes in blob files as of this transaction's start (meta). */
static int
blob_bytes(store_txn *t, uint64_t *out)
{
	MDB_val k = {sizeof BLOB_BYTES_KEY - 1, (void *)BLOB_BYTES_KEY}, v;
	int rc = mdb_get(t->txn, t->s->meta, &k, &v);

	*out = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_map_err(rc);
	if (v.mv_size != 8 || !store_val_ok(t, &v))
		return STORE_E_CORRUPT;
	*out = be64_get(v.mv_data);
	return 0;
}

/* Would size more bytes in files take the store past map_max?  The
 * limit is on the store's whole size: the map's pages in use plus the
 * files. */
static int
blob_room(store_txn *t, size_t size)
{
	MDB_envinfo info;
	MDB_stat st;
	uint64_t files, used;
	int rc;

	if ((rc = blob_bytes(t, &files)) != 0)
		return rc;
	mdb_env_info(t->s->env, &info);
	mdb_env_stat(t->s->env, &st);
	used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	files += (uint64_t)t->blob_delta;
	if (used + files + size > t->s->opt.map_max ||
	    used + files + size < size) {
		t->nogrow = 1;
		store_txn_cause(t, "blob file of %zu bytes: %s would pass its "
		    "map_max of %zu bytes (%" PRIu64 " in use)", size,
		    t->s->path, t->s->opt.map_max, used + files);
		return STORE_E_FULL;
	}
	return 0;
}

/* The file name of a blob: 32 lowercase hex digits. */
static void
blob_fname(const uint8_t *name, char *out)
{
	store_hex(name, STORE_BLOB_NAME_SIZE, out);
}

/* Append one name to a list (grown by doubling). */
static int
blob_list_add(struct blob_list *l, const uint8_t *name)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		uint8_t (*v)[STORE_BLOB_NAME_SIZE] =
		    realloc(l->v, cap * sizeof *v);
		if (v == NULL)
			return STORE_E_NOMEM;
		l->v = v;
		l->cap = cap;
	}
	memcpy(l->v[l->n++], name, STORE_BLOB_NAME_SIZE);
	return 0;
}

/* Open (and, writable, create) the blobs directory.  A read-only open of
 * a store that has none goes on without it (blobfd -1: no blob records). */
int
blob_dir_open(store *s, char **cause)
{
	char *dir;
	int fd;

	s->blobfd = -1;
	if (asprintf(&dir, "%s/blobs", s->path) < 0)
		return STORE_E_NOMEM;
	if (!s->opt.readonly && mkdir(dir, 0700) != 0 && errno != EEXIST)
		goto io;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && !(s->opt.readonly && errno == ENOENT))
		goto io;
	s->blobfd = fd;
	free(dir);
	return 0;
io:
	if (cause != NULL && asprintf(cause, "%s: %s", dir,
	    strerror(errno)) < 0)
		*cause = NULL;
	free(dir);
	return STORE_E_IO;
}

/* Decode a blob record's payload (STORE_BLOB_REF_SIZE bytes). */
int
blob_ref_decode(const uint8_t *p, size_t n, store_blob_ref *out)
{
	if (n != STORE_BLOB_REF_SIZE)
		return STORE_E_CORRUPT;
	memcpy(out->name, p, STORE_BLOB_NAME_SIZE);
	out->size = be64_get(p + STORE_BLOB_NAME_SIZE);
	memcpy(out->digest, p + STORE_BLOB_NAME_SIZE + 8, STORE_DIGEST_SIZE);
	return 0;
}

/* write(2) all of n bytes. */
static int
blob_write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {   /* no progress and no reason: give up */
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The store error for errno err of a failed file operation; a full disk
 * stops the transaction without growing the map (growing would not
 * help). */
static int
blob_errno(store_txn *t, int err)
{
	if (err == ENOSPC || err == EDQUOT) {
		t->nogrow = 1;
		return STORE_E_FULL;
	}
	return err == ENOMEM ? STORE_E_NOMEM : STORE_E_IO;
}

/* A file operation failed with errno err: say which (step, and the file
 * fname in the blobs directory, or the directory itself when NULL), as
 * the transaction's cause, and return its store error. */
static int
blob_fail(store_txn *t, int err, const char *step, const char *fname)
{
	store_txn_cause(t, "%s %s/blobs%s%s: %s", step, t->s->path,
	    fname != NULL ? "/" : "", fname != NULL ? fname : "",
	    strerror(err));
	return blob_errno(t, err);
}

/*
 * Write in's payload (size bytes, gathered from in->iov) to a new blob
 * file, note it in `blobs` under key k, and encode the record's payload
 * into ref (STORE_BLOB_REF_SIZE bytes).  Sets in->payload_digest when
 * asked, from the same pass.
 */
int
blob_write(store_txn *t, const MDB_val *k, const store_entry_in *in,
           size_t size, uint8_t *ref)
{
	uint8_t name[STORE_BLOB_NAME_SIZE], row[STORE_BLOB_NAME_SIZE + 8];
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	XXH3_state_t st, pst;
	XXH128_hash_t h;
	size_t done = 0, kicked = 0;
	const char *step = "write";
	MDB_val rk, rv;
	int fd, i, rc, err;

	if (t->s->blobfd < 0) {
		store_txn_cause(t, "open %s/blobs: not open (a read-only store "
		    "without that directory)", t->s->path);
		return STORE_E_IO;
	}
	if ((rc = blob_room(t, size)) != 0)
		return rc;
	if ((rc = store_random(name, sizeof name)) != 0) {
		store_txn_cause(t, "getrandom (a blob file's name): %s",
		    strerror(errno));
		return rc;
	}
	blob_fname(name, fname);
	fd = openat(t->s->blobfd, fname,
	    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return blob_fail(t, errno, "openat", fname);
	if ((rc = blob_list_add(&t->created, name)) != 0) {
		close(fd);
		unlinkat(t->s->blobfd, fname, 0);
		return rc;
	}
	XXH3_128bits_reset(&st);
	for (i = 0; i < in->iovcnt; i++) {
		const uint8_t *src = in->iov[i].iov_base;
		size_t left = in->iov[i].iov_len;

		while (left > 0) {
			size_t c = left < BLOB_CHUNK ? left : BLOB_CHUNK;

			XXH3_128bits_update(&st, src, c);
			if (blob_write_all(fd, src, c) != 0) {
				step = "write";
				goto io;
			}
			src += c;
			left -= c;
			done += c;
			if (t->s->opt.sync == STORE_SYNC_ALWAYS &&
			    done - kicked >= BLOB_KICK) {
				sync_file_range(fd, (off_t)kicked,
				    (off_t)(done - kicked),
				    SYNC_FILE_RANGE_WRITE);
				kicked = done;
			}
		}
	}
	if (close(fd) != 0) {
		fd = -1;
		step = "close";
		goto io;
	}
	if (in->payload_digest != NULL) {
		/* the payload digest continues from the file's: the payload
		 * was hashed once, on its way to the file */
		XXH3_copyState(&pst, &st);
		record_payload_digest_end(&pst, in->flags, in->refs,
		    in->refs_len, in->payload_digest);
	}
	h = XXH3_128bits_digest(&st);
	memcpy(ref, name, sizeof name);
	be64_put(ref + STORE_BLOB_NAME_SIZE, size);
	be64_put(ref + STORE_BLOB_NAME_SIZE + 8, h.high64);
	be64_put(ref + STORE_BLOB_NAME_SIZE + 16, h.low64);
	memcpy(row, name, sizeof name);
	be64_put(row + STORE_BLOB_NAME_SIZE, size);
	rk = *k;
	rv.mv_data = row;
	rv.mv_size = sizeof row;
	if ((rc = mdb_put(t->txn, t->s->blobs, &rk, &rv, 0)) != 0)
		return store_map_err(rc);
	t->blob_delta += (int64_t)size;
	return 0;
io:
	err = errno;    /* before close() can change it */
	if (fd >= 0)
		close(fd);
	return blob_fail(t, err, step, fname);
}

/* Does `blobs` have any row?  Asked once per batch of puts or deletes, so
 * that a store without blob files pays nothing more per entry. */
int
blob_any(store_txn *t)
{
	MDB_stat st;

	if (!t->s->has_blobs || mdb_stat(t->txn, t->s->blobs, &st) != 0)
		return 0;
	return st.ms_entries > 0;
}

/* Drop the blob file of entry key k, when it has one: its row goes now,
 * its file after the commit. */
int
blob_drop(store_txn *t, const MDB_val *k)
{
	MDB_val rk = *k, rv;
	int rc;

	rc = mdb_get(t->txn, t->s->blobs, &rk, &rv);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_map_err(rc);
	if (rv.mv_size != STORE_BLOB_NAME_SIZE + 8 || !store_val_ok(t, &rv))
		return STORE_E_CORRUPT;
	if ((rc = blob_list_add(&t->dropped, rv.mv_data)) != 0)
		return rc;
	t->blob_delta -= (int64_t)be64_get((const uint8_t *)rv.mv_data +
	    STORE_BLOB_NAME_SIZE);
	rk = *k;
	return store_map_err(mdb_del(t->txn, t->s->blobs, &rk, NULL));
}

/* Before a commit: the bytes in files go into meta; under
 * STORE_SYNC_ALWAYS the transaction's new files, then the directory that
 * names them, reach the disk. */
int
blob_precommit(store_txn *t)
{
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	uint8_t buf[8];
	uint64_t files;
	MDB_val k = {sizeof BLOB_BYTES_KEY - 1, (void *)BLOB_BYTES_KEY}, v;
	size_t i;
	int rc;

	if (t->blob_delta != 0) {
		if ((rc = blob_bytes(t, &files)) != 0)
			return rc;
		files += (uint64_t)t->blob_delta;
		if ((int64_t)files < 0)
			files = 0; /* a store whose count was lost */
		be64_put(buf, files);
		v.mv_data = buf;
		v.mv_size = 8;
		if ((rc = mdb_put(t->txn, t->s->meta, &k, &v, 0)) != 0)
			return store_map_err(rc);
	}
	if (t->created.n == 0 || t->s->opt.sync != STORE_SYNC_ALWAYS)
		return 0;
	for (i = 0; i < t->created.n; i++) {
		int fd, err;

		blob_fname(t->created.v[i], fname);
		if ((fd = openat(t->s->blobfd, fname, O_RDONLY | O_CLOEXEC)) < 0)
			return blob_fail(t, errno, "openat", fname);
		err = fdatasync(fd) != 0 ? errno : 0;
		close(fd);      /* may change errno: err keeps fdatasync's */
		if (err != 0)
			return blob_fail(t, err, "fdatasync", fname);
	}
	if (fsync(t->s->blobfd) != 0)
		return blob_fail(t, errno, "fsync", NULL);
	return 0;
}

/* Unlink the files of a list. */
void
blob_unlink_list(store *s, const struct blob_list *l)
{
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	size_t i;

	for (i = 0; i < l->n; i++) {
		blob_fname(l->v[i], fname);
		unlinkat(s->blobfd, fname, 0);
	}
}

/*
 * End of a transaction's blob work: after a commit, unlink the dropped
 * files (and remember the new ones for store_sync() unless they were
 * synced already); after an abort, unlink the new ones.  Unmaps what
 * entry_resolve mapped, and empties the lists for a retry.
 */
void
blob_txn_end(store_txn *t, int committed)
{
	store *s = t->s;
	size_t i;

	if (committed) {
		if (!s->opt.defer_unlink)
			blob_unlink_list(s, &t->dropped);
		else if (t->dropped.n > 0) {
			pthread_mutex_lock(&s->unsynced_lock);
			for (i = 0; i < t->dropped.n; i++)
				if (blob_list_add(&s->reap, t->dropped.v[i]))
					break;
			pthread_mutex_unlock(&s->unsynced_lock);
			/* one that cannot be queued goes now */
			for (; i < t->dropped.n; i++) {
				struct blob_list one = {&t->dropped.v[i], 1, 1};
				blob_unlink_list(s, &one);
			}
		}
		if (t->created.n > 0 && s->opt.sync != STORE_SYNC_ALWAYS) {
			pthread_mutex_lock(&s->unsynced_lock);
			if (s->unsynced.n >= BLOB_UNSYNCED_MAX) {
				/* a program that never syncs (NEVER): keep
				 * the list bounded, and let a store_sync()
				 * sync the file system instead */
				s->unsynced.n = 0;
				s->unsynced_lost = 1;
			}
			for (i = 0; i < t->created.n; i++)
				if (blob_list_add(&s->unsynced,
				    t->created.v[i]) != 0) {
					/* cannot remember it: sync the
					 * whole file system at the next
					 * store_sync() */
					s->unsynced_lost = 1;
					break;
				}
			pthread_mutex_unlock(&s->unsynced_lock);
		}
	} else
		blob_unlink_list(s, &t->created);
	for (i = 0; i < t->nmaps; i++)
		munmap(t->maps[i].p, t->maps[i].n);
	free(t->maps);
	free(t->created.v);
	free(t->dropped.v);
	t->maps = NULL;
	t->nmaps = t->capmaps = 0;
	memset(&t->created, 0, sizeof t->created);
	memset(&t->dropped, 0, sizeof t->dropped);
	t->nogrow = 0;
	t->blob_delta = 0;
}

/* blob_sync's step that failed with errno err, as a sentence in *cause
 * (when asked; NULL without memory).  Returns STORE_E_IO. */
static int
blob_sync_fail(store *s, char **cause, int err, const char *step,
               const char *fname)
{
	if (cause != NULL && asprintf(cause, "%s %s/blobs%s%s: %s", step,
	    s->path, fname != NULL ? "/" : "", fname != NULL ? fname : "",
	    strerror(err)) < 0)
		*cause = NULL;
	return STORE_E_IO;
}

/* store_sync()'s part: fsync the files committed since the last one, then
 * the directory.  cause (may be NULL) as store_sync_cause's. */
int
blob_sync(store *s, char **cause)
{
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	struct blob_list l;
	int lost, rc = 0;
	size_t i;

	if (s->blobfd < 0)
		return 0;
	pthread_mutex_lock(&s->unsynced_lock);
	l = s->unsynced;
	lost = s->unsynced_lost;
	memset(&s->unsynced, 0, sizeof s->unsynced);
	s->unsynced_lost = 0;
	pthread_mutex_unlock(&s->unsynced_lock);
	if (lost && syncfs(s->blobfd) != 0)
		rc = blob_sync_fail(s, cause, errno, "syncfs", NULL);
	for (i = 0; i < l.n && rc == 0; i++) {
		int fd, err;

		blob_fname(l.v[i], fname);
		fd = openat(s->blobfd, fname, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue; /* dropped since: nothing to sync */
			rc = blob_sync_fail(s, cause, errno, "openat", fname);
			break;
		}
		err = fdatasync(fd) != 0 ? errno : 0;
		close(fd);      /* may change errno: err keeps fdatasync's */
		if (err != 0)
			rc = blob_sync_fail(s, cause, err, "fdatasync", fname);
	}
	if (rc == 0 && (l.n > 0 || lost) && fsync(s->blobfd) != 0)
		rc = blob_sync_fail(s, cause, errno, "fsync", NULL);
	free(l.v);
	return rc;
}

/* Keep a mapping until the transaction ends. */
static int
blob_keep_map(store_txn *t, void *p, size_t n)
{
	if (t->nmaps == t->capmaps) {
		size_t cap = t->capmaps ? t->capmaps * 2 : 4;
		struct blob_map *v = realloc(t->maps, cap * sizeof *v);
		if (v == NULL)
			return STORE_E_NOMEM;
		t->maps = v;
		t->capmaps = cap;
	}
	t->maps[t->nmaps].p = p;
	t->maps[t->nmaps].n = n;
	t->nmaps++;
	return 0;
}

/*
 * Resolve a decoded record: when it is a blob record, map its file and
 * point r's payload at it (valid until the transaction ends), its digest
 * checked when check is set, and clear STORE_FLAG_BLOB.  Other records
 * are left as they are.  STORE_E_CORRUPT when the reference is malformed,
 * the file is missing or of the wrong size, or (check) its digest differs.
 * why (may be NULL) says which, and fsize (may be NULL) the file's size:
 * the file is opened once and everything after is read through that
 * descriptor, so a file unlinked meanwhile by a newer commit is either
 * missing (BLOB_WHY_MISSING, never a size or digest) or read whole.
 */
int
blob_resolve(store_txn *t, store_record *r, int check, enum blob_why *why,
             uint64_t *fsize)
{
	uint64_t len = 0;
	void *p = NULL;
	int rc;

	if (!(r->flags & STORE_FLAG_BLOB))
		return 0;
	rc = blob_map_at(t->s->blobfd, r, check, why, fsize, &p, &len);
	if (p != NULL) {
		if (rc == 0)
			rc = blob_keep_map(t, p, len);
		if (rc != 0) {
			munmap(p, len);
			return rc;
		}
	}
	return rc;
}

/*
 * blob_resolve's work, on the blobs directory dirfd (may be -1: none):
 * the file mapped in *map (*maplen bytes, NULL for an empty file), the
 * caller's to munmap, also when the digest differs (STORE_E_CORRUPT).
 */
int
blob_map_at(int dirfd, store_record *r, int check, enum blob_why *why,
            uint64_t *fsize, void **map, uint64_t *maplen)
{
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	uint8_t d[STORE_DIGEST_SIZE];
	enum blob_why w = BLOB_WHY_NONE;
	store_blob_ref ref;
	XXH128_hash_t h;
	struct stat st;
	void *p = NULL;
	int fd, rc;

	*map = NULL;
	*maplen = 0;
	if (fsize != NULL)
		*fsize = 0;
	if (why == NULL)
		why = &w;
	*why = BLOB_WHY_NONE;
	if ((rc = blob_ref_decode(r->payload, r->payload_len, &ref)) != 0) {
		*why = BLOB_WHY_REF;
		return rc;
	}
	if (dirfd < 0) {
		*why = BLOB_WHY_MISSING;
		return STORE_E_CORRUPT;
	}
	blob_fname(ref.name, fname);
	if ((fd = openat(dirfd, fname, O_RDONLY | O_CLOEXEC)) < 0) {
		*why = errno == ENOENT ? BLOB_WHY_MISSING : BLOB_WHY_IO;
		return errno == ENOENT ? STORE_E_CORRUPT : STORE_E_IO;
	}
	if (fstat(fd, &st) != 0) {
		*why = BLOB_WHY_IO;
		close(fd);
		return STORE_E_IO;
	}
	if (fsize != NULL)
		*fsize = (uint64_t)st.st_size;
	if ((uint64_t)st.st_size != ref.size) {
		*why = BLOB_WHY_SIZE;
		close(fd);
		return STORE_E_CORRUPT;
	}
	if (ref.size > 0) {
		p = mmap(NULL, ref.size, PROT_READ, MAP_PRIVATE | MAP_POPULATE,
		    fd, 0);
		if (p == MAP_FAILED) {
			*why = BLOB_WHY_IO;
			close(fd);
			return errno == ENOMEM ? STORE_E_NOMEM : STORE_E_IO;
		}
		*map = p;
		*maplen = ref.size;
	}
	close(fd);
	if (check) {
		h = XXH3_128bits(p, ref.size);
		be64_put(d, h.high64);
		be64_put(d + 8, h.low64);
		if (memcmp(d, ref.digest, sizeof d) != 0) {
			*why = BLOB_WHY_DIGEST;
			return STORE_E_CORRUPT;
		}
	}
	r->payload = p;
	r->payload_len = ref.size;
	r->flags &= (uint16_t)~STORE_FLAG_BLOB;
	return 0;
}

/* Compare two blob names (for qsort and bsearch). */
static int
blob_name_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STORE_BLOB_NAME_SIZE);
}

/*
 * Remove the files that no row of `blobs` names: what a crash left
 * between writing a file and its commit, or between a commit and the
 * unlink of the files it dropped.  Runs in a write transaction, so no
 * other process is writing a file meanwhile.  *removed counts them.
 */
int
blob_sweep(store_txn *t, size_t *removed)
{
	char fname[2 * STORE_BLOB_NAME_SIZE + 1];
	struct blob_list names = {0};
	MDB_cursor *c;
	MDB_val k, v;
	struct dirent *de;
	DIR *d;
	int rc, op = MDB_FIRST, dfd;

	*removed = 0;
	if (t->s->blobfd < 0 || !t->s->has_blobs)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->blobs, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (v.mv_size != STORE_BLOB_NAME_SIZE + 8 ||
		    !store_val_ok(t, &v))
			continue; /* --check reports it */
		if ((rc = blob_list_add(&names, v.mv_data)) != 0)
			break;
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		free(names.v);
		return rc < 0 ? rc : store_map_err(rc);
	}
	if (names.n > 1)
		qsort(names.v, names.n, sizeof names.v[0], blob_name_cmp);
	if ((dfd = fcntl(t->s->blobfd, F_DUPFD_CLOEXEC, 0)) < 0 ||
	    (d = fdopendir(dfd)) == NULL) {
		if (dfd >= 0)
			close(dfd);
		free(names.v);
		return STORE_E_IO;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		uint8_t name[STORE_BLOB_NAME_SIZE];

		if (de->d_name[0] == '.')
			continue;
		/* only our own names: anything else in the directory was put
		 * there by someone else, and is left alone */
		if (strlen(de->d_name) != 2 * STORE_BLOB_NAME_SIZE ||
		    store_unhex(de->d_name, name, sizeof name) != 0)
			continue;
		blob_fname(name, fname);
		if (strcmp(fname, de->d_name) != 0)
			continue;
		if (names.n > 0 && bsearch(name, names.v, names.n,
		    sizeof names.v[0], blob_name_cmp) != NULL)
			continue;
		if (unlinkat(t->s->blobfd, de->d_name, 0) == 0)
			(*removed)++;
	}
	closedir(d);
	free(names.v);
	return 0;
}

/* Has a commit newer than read transaction t dropped file `name` of the
 * entry?  (blob_superseded in store.h) */
int
blob_superseded(store_txn *t, const uint8_t *sid, const store_key *k,
                const uint8_t *name)
{
	store_txn now = {.s = t->s, .txn = NULL, .readonly = 1};
	store_blob_ref ref;
	store_record r;
	MDB_val mv;
	int rc, res;

	if (!t->readonly)
		return STORE_E_INVAL;
	/* a second snapshot beside t's (MDB_NOTLS lets a thread hold two);
	 * t's caller holds the resize lock already */
	if ((rc = mdb_txn_begin(t->s->env, NULL, MDB_RDONLY, &now.txn)) != 0)
		return store_map_err(rc);
	rc = entry_value(&now, sid, k->kind, k->name, k->name_len, k->handle,
	    &mv);
	if (rc == STORE_E_NOTFOUND)
		res = 1;
	else if (rc != 0)
		res = rc;
	else if (record_decode_nocheck(mv.mv_data, mv.mv_size, &r) != 0 ||
	    !(r.flags & STORE_FLAG_BLOB) ||
	    blob_ref_decode(r.payload, r.payload_len, &ref) != 0)
		res = 1;
	else
		res = memcmp(ref.name, name, STORE_BLOB_NAME_SIZE) != 0;
	mdb_txn_abort(now.txn);
	return res;
}

/* Walk `blobs` for the admin tool's check. */
int
blob_walk(store_txn *t,
          int (*fn)(const uint8_t *sid, const store_key *key,
                    const uint8_t *name, uint64_t size, void *),
          void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	store_key sk;
	int rc, op = MDB_FIRST;

	if (!t->s->has_blobs)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->blobs, &c)) != 0)
		return store_map_err(rc);
	while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
		int ok = v.mv_size == STORE_BLOB_NAME_SIZE + 8;

		op = MDB_NEXT;
		if (!store_val_ok(t, &k) || !store_val_ok(t, &v)) {
			rc = STORE_E_CORRUPT;
			goto out;
		}
		entry_key_parse_any(k.mv_data, k.mv_size, &sk);
		sk.value_len = 0;
		rc = fn(k.mv_size >= STORE_ID_SIZE ? k.mv_data : NULL, &sk,
		    ok ? v.mv_data : NULL,
		    ok ? be64_get((const uint8_t *)v.mv_data +
		    STORE_BLOB_NAME_SIZE) : 0, arg);
		if (rc != 0)
			goto out;
	}
	rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : store_map_err(rc);
out:
	mdb_cursor_close(c);
	return rc;
}
