/*
 * open-check.c - what the structural check costs a writable open
 * (issue 14): store_check_structure on the store at DIR (default budget,
 * STORE_CHECK_BUDGET pages), and a whole writable store_open + store_close,
 * each the mean of N runs (default 200), from the page cache.
 *
 *   bench/dump-gen DIR 1000000      # a store of a million entries
 *   bench/open-check DIR [N]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "store.h"

static double
open_check_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	store_options so = {0};
	int i, n = argc > 2 ? atoi(argv[2]) : 200, rc;
	double t0, check, open;
	store *s;

	if (argc < 2 || n <= 0) {
		fprintf(stderr, "usage: open-check DIR [N]\n");
		return 2;
	}
	rc = store_check_structure(argv[1], STORE_CHECK_BUDGET, NULL, NULL);
	if (rc != 0) {
		fprintf(stderr, "open-check: %s: %d problems or error %d\n",
		    argv[1], rc > 0 ? rc : 0, rc < 0 ? rc : 0);
		return 1;
	}
	t0 = open_check_now();
	for (i = 0; i < n; i++)
		store_check_structure(argv[1], STORE_CHECK_BUDGET, NULL, NULL);
	check = (open_check_now() - t0) / n;
	so.sync = STORE_SYNC_NEVER;
	t0 = open_check_now();
	for (i = 0; i < n; i++) {
		if ((rc = store_open(&s, argv[1], &so, NULL)) != 0) {
			fprintf(stderr, "open-check: store_open: %s\n",
			    store_strerror(rc));
			return 1;
		}
		store_close(s);
	}
	open = (open_check_now() - t0) / n;
	printf("structural check %.3f ms, writable open + close %.3f ms "
	    "(check included): %.0f%%\n", check * 1e3, open * 1e3,
	    100 * check / open);
	return 0;
}
