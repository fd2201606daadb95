/*
 * record.c - the entry record: a 40-byte header, the type name, the
 * persistent-reference blob and the payload, with an XXH3-128 digest over
 * everything but the digest field itself (docs/STORAGE.md).
 */
#include "config.h"

#include <string.h>

#include "xxh.h"

#include "store-int.h"

#define RECORD_VERSION 1

/* Bytes a record takes. */
size_t
record_size(size_t type_len, size_t refs_len, size_t payload_len)
{
	return RECORD_FIXED + type_len + refs_len + payload_len;
}

/* Digest of a whole encoded record of n bytes (digest field skipped). */
static void
record_digest(const uint8_t *p, size_t n, uint8_t out[STORE_DIGEST_SIZE])
{
	XXH3_state_t st;
	XXH128_hash_t h;
	uint8_t small[512];

	if (n - 16 <= sizeof small) {
		/* most records: one shot over a copy is faster than the
		 * streaming state, and gives the same digest */
		memcpy(small, p, 16);
		memcpy(small + 16, p + 32, n - 32);
		h = XXH3_128bits(small, n - 16);
	} else {
		XXH3_128bits_reset(&st);
		XXH3_128bits_update(&st, p, 16);
		XXH3_128bits_update(&st, p + 32, n - 32);
		h = XXH3_128bits_digest(&st);
	}
	be64_put(out, h.high64);
	be64_put(out + 8, h.low64);
}

/*
 * A large record's payload is copied and hashed a chunk at a time, each
 * chunk hashed while it is still in the cache: one pass over memory instead
 * of two.  The digest is the same as record_digest()'s (XXH3's streaming
 * state does not depend on how its input is cut).
 */
#define RECORD_FUSE_MIN (1u << 20)
#define RECORD_FUSE_CHUNK (32u << 10)

/* Finish a payload digest whose payload went into st: the flags (u16
 * big-endian), then the refs blob; out high half first, each big-endian
 * (store.h).  The one place that says what follows the payload: the
 * passes that copy or write a payload hash it on the way and end here. */
void
record_payload_digest_end(XXH3_state_t *st, unsigned flags,
                          const void *refs, size_t refs_len,
                          uint8_t out[STORE_DIGEST_SIZE])
{
	XXH128_hash_t h;
	uint8_t fb[2];

	be16_put(fb, (uint16_t)flags);
	XXH3_128bits_update(st, fb, 2);
	if (refs_len > 0)
		XXH3_128bits_update(st, refs, refs_len);
	h = XXH3_128bits_digest(st);
	be64_put(out, h.high64);
	be64_put(out + 8, h.low64);
}

/* The payload digest of a payload given whole or in pieces. */
void
record_payload_digest(const void *data, size_t len,
                      const struct iovec *parts, size_t nparts,
                      unsigned flags, const void *refs, size_t refs_len,
                      uint8_t out[STORE_DIGEST_SIZE])
{
	XXH3_state_t st;
	XXH128_hash_t h;
	uint8_t small[512];
	size_t i;

	if (nparts == 0 && len + 2 + refs_len <= sizeof small) {
		/* most entries: one shot over a copy is faster than the
		 * streaming state, and gives the same digest */
		if (len > 0)
			memcpy(small, data, len);
		be16_put(small + len, (uint16_t)flags);
		if (refs_len > 0)
			memcpy(small + len + 2, refs, refs_len);
		h = XXH3_128bits(small, len + 2 + refs_len);
		be64_put(out, h.high64);
		be64_put(out + 8, h.low64);
		return;
	}
	XXH3_128bits_reset(&st);
	if (len > 0)
		XXH3_128bits_update(&st, data, len);
	for (i = 0; i < nparts; i++)
		if (parts[i].iov_len > 0)
			XXH3_128bits_update(&st, parts[i].iov_base,
			    parts[i].iov_len);
	record_payload_digest_end(&st, flags, refs, refs_len, out);
}

/* dst holds the header, type name and refs up to q; copy the payload
 * pieces from in->iov to q on, hashing as they go (and into the payload
 * digest, when asked), and stamp the digest. */
static void
record_copy_digest(uint8_t *dst, uint8_t *q, const store_entry_in *in)
{
	XXH3_state_t st, pst;
	XXH128_hash_t h;
	int i;

	XXH3_128bits_reset(&st);
	XXH3_128bits_update(&st, dst, 16);
	XXH3_128bits_update(&st, dst + 32, (size_t)(q - dst) - 32);
	if (in->payload_digest != NULL)
		XXH3_128bits_reset(&pst);
	for (i = 0; i < in->iovcnt; i++) {
		const uint8_t *src = in->iov[i].iov_base;
		size_t left = in->iov[i].iov_len;

		while (left > 0) {
			size_t c = left < RECORD_FUSE_CHUNK ? left :
			    RECORD_FUSE_CHUNK;

			memcpy(q, src, c);
			XXH3_128bits_update(&st, q, c);
			if (in->payload_digest != NULL)
				XXH3_128bits_update(&pst, q, c);
			q += c;
			src += c;
			left -= c;
		}
	}
	h = XXH3_128bits_digest(&st);
	be64_put(dst + 16, h.high64);
	be64_put(dst + 24, h.low64);
	if (in->payload_digest != NULL)
		record_payload_digest_end(&pst, in->flags, in->refs,
		    in->refs_len, in->payload_digest);
}

/* Encode in's header and payload into dst, then stamp the digest. */
void
record_encode(uint8_t *dst, const store_entry_in *in, uint64_t now_ms)
{
	size_t tlen = in->type_name != NULL ? strlen(in->type_name) : 0;
	size_t total = RECORD_FIXED + tlen + in->refs_len;
	uint8_t *q;
	int i;

	dst[0] = RECORD_VERSION;
	dst[1] = in->pickler;
	be16_put(dst + 2, in->flags);
	be32_put(dst + 4, (uint32_t)tlen);
	be64_put(dst + 8, now_ms);
	be32_put(dst + 32, in->refs_len);
	be32_put(dst + 36, 0);
	q = dst + RECORD_FIXED;
	if (tlen > 0)
		memcpy(q, in->type_name, tlen);
	q += tlen;
	if (in->refs_len > 0)
		memcpy(q, in->refs, in->refs_len);
	q += in->refs_len;
	for (i = 0; i < in->iovcnt; i++)
		total += in->iov[i].iov_len;
	if (total >= RECORD_FUSE_MIN) {
		record_copy_digest(dst, q, in);
		return;
	}
	for (i = 0; i < in->iovcnt; i++) {
		if (in->iov[i].iov_len > 0)
			memcpy(q, in->iov[i].iov_base, in->iov[i].iov_len);
		q += in->iov[i].iov_len;
	}
	record_digest(dst, total, dst + 16);
	if (in->payload_digest != NULL) {
		size_t plen = total - (RECORD_FIXED + tlen + in->refs_len);

		record_payload_digest(q - plen, plen, NULL, 0, in->flags,
		    in->refs, in->refs_len, in->payload_digest);
	}
}

/* Decode the layout of a record without checking its digest. */
int
record_decode_nocheck(const uint8_t *p, size_t n, store_record *out)
{
	uint32_t tlen, rlen;

	if (n < RECORD_FIXED || p[0] != RECORD_VERSION)
		return STORE_E_CORRUPT;
	tlen = be32_get(p + 4);
	rlen = be32_get(p + 32);
	if ((size_t)tlen > n - RECORD_FIXED ||
	    (size_t)rlen > n - RECORD_FIXED - tlen)
		return STORE_E_CORRUPT;
	out->version = p[0];
	out->pickler = p[1];
	out->flags = be16_get(p + 2);
	out->time_ms = be64_get(p + 8);
	memcpy(out->digest, p + 16, STORE_DIGEST_SIZE);
	out->type_name = (const char *)p + RECORD_FIXED;
	out->type_len = tlen;
	out->refs = p + RECORD_FIXED + tlen;
	out->refs_len = rlen;
	out->payload = p + RECORD_FIXED + tlen + rlen;
	out->payload_len = n - RECORD_FIXED - tlen - rlen;
	return 0;
}

/* Decode a record and verify its digest. */
int
record_decode(const uint8_t *p, size_t n, store_record *out)
{
	uint8_t d[STORE_DIGEST_SIZE];
	int rc;

	if ((rc = record_decode_nocheck(p, n, out)) != 0)
		return rc;
	record_digest(p, n, d);
	if (memcmp(d, p + 16, STORE_DIGEST_SIZE) != 0)
		return STORE_E_CORRUPT;
	return 0;
}
