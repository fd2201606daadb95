/*
 * util.c - small helpers of the store: clock, randomness, SHA-256, hex and
 * big-endian integers.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "store-int.h"

/* Wall clock in milliseconds since the epoch. */
uint64_t
store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Fill p with n bytes from the kernel's random source. */
int
store_random(void *p, size_t n)
{
	uint8_t *q = p;

	while (n > 0) {
		ssize_t got = getrandom(q, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return STORE_E_IO;
		}
		q += got;
		n -= (size_t)got;
	}
	return 0;
}

/* SHA-256 through libcrypto's one-shot digest. */
void
store_sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned int len = 32;

	if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1)
		memset(out, 0, 32); /* cannot happen with the built-in sha256 */
}

/* Lower-case hex of p[0..n) into out, NUL-terminated. */
void
store_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Value of one hex digit, or -1. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse exactly 2n hex digits of s into p. */
int
store_unhex(const char *s, uint8_t *p, size_t n)
{
	size_t i;

	if (strlen(s) != 2 * n)
		return STORE_E_INVAL;
	for (i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return STORE_E_INVAL;
		p[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void
be64_put(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

uint64_t
be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void
be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

uint32_t
be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

void
be16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

uint16_t
be16_get(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
