/*
 * fuzz_pickledis.c - libFuzzer target of the pickle disassembler that
 * pyshelf-dump runs on every stored pickle: any input, with and without
 * the rendering callback, must come back as well formed or malformed,
 * never crash or read outside its input.  `make fuzz-pickledis-run`.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pickledis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch the rendered texts so that a bad pointer shows. */
static int
fuzz_op(const struct pickledis_op *op, void *arg)
{
	size_t *n = arg;

	*n += strlen(op->arg) + strlen(op->note) + strlen(op->name);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static pickledis *pd;
	size_t n = 0;

	if (pd == NULL && (pd = pickledis_new()) == NULL)
		return 0;
	pickledis_run(pd, data, size, NULL, (size_t)-1, fuzz_op, &n);
	pickledis_run(pd, data, size, NULL, 1, NULL, NULL);
	return 0;
}
