/*
 * hello.c - a C program that keeps Python state in a pyshelf workspace,
 * passing and reading plain data without writing a single pickle.
 *
 * Build (installed):  cc hello.c $(pkg-config --cflags --libs pyshelf)
 * Run:                ./a.out /tmp/hello-db      (run it twice)
 *
 * It starts pyshelfd (found on PATH, or $PYSHELFD), opens the session
 * "hello" of the store given (creating both), and:
 *  - binds `visits` from JSON text the first time (pyshelf_set_text);
 *  - defines a function in the workspace and calls it with arguments
 *    given as a Python literal and as JSON (PYSHELF_ARG_LITERAL/JSON);
 *  - reads results as JSON text (PYSHELF_WANT_JSON) and as repr() text
 *    (PYSHELF_WANT_REPR); a result that is not JSON data comes back as a
 *    handle instead, and nothing is lost.
 * The session persists: a second run finds `visits` where the first left
 * it, one higher.  Exit status 0 on success, 1 with a message on error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pyshelf.h>

/* Report a failed call and exit. */
static void
die(pyshelf_conn *c, const char *what, int rc)
{
	fprintf(stderr, "hello: %s: %s (%s)\n", what, pyshelf_errmsg(c),
	    pyshelf_strerror(rc));
	pyshelf_close(c, NULL);
	exit(1);
}

/* Run code (or call func of code with args) and print its text result. */
static void
run(pyshelf_conn *c, const char *label, const char *code, const char *func,
    const pyshelf_arg *args, size_t nargs, int want)
{
	pyshelf_exec_req req;
	pyshelf_result res;
	int rc;

	memset(&req, 0, sizeof req);
	req.code = code;
	req.func = func;
	req.args = args;
	req.nargs = nargs;
	req.want_value = want;
	if ((rc = pyshelf_exec(c, &req, &res)) != 0)
		die(c, label, rc);
	if (res.kind == PYSHELF_KIND_TEXT)
		printf("%s = %s\n", label, res.text);
	else if (res.kind == PYSHELF_KIND_EXCINFO)
		printf("%s raised %s: %s\n", label, res.exc_type, res.message);
	else
		printf("%s is a %s, kept as handle %llu\n", label, res.type_name,
		    (unsigned long long)res.handle);
	/* a handle keeps its object alive in the session until released */
	if (res.kind == PYSHELF_KIND_WRAPPED || res.kind == PYSHELF_KIND_EXCINFO)
		(void)pyshelf_release(c, &res.handle, 1);
	pyshelf_result_free(&res);
}

int
main(int argc, char **argv)
{
	static const char count_src[] =
	    "def count(step, tags):\n"
	    "    global visits\n"
	    "    visits += step\n"
	    "    seen.update(tags['names'])\n"
	    "    return {'visits': visits, 'seen': sorted(seen)}\n";
	pyshelf_conn *c;
	pyshelf_result res;
	pyshelf_arg args[2];
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: hello STORE-DIRECTORY\n");
		return 2;
	}
	if ((rc = pyshelf_create(&c)) != 0) {
		fprintf(stderr, "hello: %s\n", pyshelf_strerror(rc));
		return 1;
	}
	if ((rc = pyshelf_spawn(c, NULL, argv[1], "hello",
	    PYSHELF_SPAWN_CREATE, (const char *const[]){ "--create-db",
	    NULL })) != 0)
		die(c, "spawn", rc);
	if ((rc = pyshelf_hello(c, "hello.c", NULL)) != 0)
		die(c, "hello", rc);

	/* First run: bind the state from JSON; later runs find it. */
	rc = pyshelf_get(c, "visits", PYSHELF_WANT_JSON, &res);
	if (rc == PYSHELF_E_REMOTE &&
	    pyshelf_remote_errcode(c) == PYSHELF_ERR_NOT_FOUND) {
		if ((rc = pyshelf_set_text(c, "visits", PYSHELF_ARG_JSON,
		    "0")) != 0 ||
		    (rc = pyshelf_set_text(c, "seen", PYSHELF_ARG_LITERAL,
		    "set()")) != 0)
			die(c, "set", rc);
		printf("new workspace\n");
	} else if (rc != 0)
		die(c, "get", rc);
	else
		printf("visits before = %s\n", res.text);
	pyshelf_result_free(&res);

	memset(args, 0, sizeof args);
	args[0].kind = PYSHELF_ARG_LITERAL;
	args[0].data = "1";
	args[1].kind = PYSHELF_ARG_JSON;
	args[1].data = "{\"names\": [\"c\", \"caf\\u00e9\"]}";
	run(c, "count", count_src, "count", args, 2, PYSHELF_WANT_JSON);
	run(c, "seen", "seen", NULL, NULL, 0, PYSHELF_WANT_JSON);
	run(c, "repr(seen)", "seen", NULL, NULL, 0, PYSHELF_WANT_REPR);
	run(c, "1/0", "1/0", NULL, NULL, 0, PYSHELF_WANT_JSON);

	if ((rc = pyshelf_close(c, NULL)) != 0) {
		fprintf(stderr, "hello: close: %s\n", pyshelf_strerror(rc));
		return 1;
	}
	return 0;
}
