/*
 * interp.c - starting and stopping the embedded interpreter: PyConfig with
 * every PyStatus checked, the _pyshelfd builtin module registered first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <stdio.h>
#include <string.h>

#include "exec.h"
#include "pyexec.h"

/* Start CPython.  On failure *cause says why. */
int
interp_init(char **cause)
{
	PyConfig config;
	PyStatus status;

	if (PyImport_AppendInittab("_pyshelfd", PyInit__pyshelfd) < 0) {
		*cause = strdup("cannot register the _pyshelfd module");
		return -1;
	}
	PyConfig_InitPythonConfig(&config);
	config.parse_argv = 0;
	config.install_signal_handlers = 1;
	config.buffered_stdio = 0;
	/* sys.executable: the interpreter configure matched to libpython, so
	 * that multiprocessing and friends in shipped code find a python */
	status = PyConfig_SetBytesString(&config, &config.executable,
	    PYTHON_EXECUTABLE);
	if (PyStatus_Exception(status))
		goto fail;
	status = Py_InitializeFromConfig(&config);
	if (PyStatus_Exception(status))
		goto fail;
	PyConfig_Clear(&config);
	return 0;
fail:
	PyConfig_Clear(&config);
	if (asprintf(cause, "cannot start the Python interpreter: %s%s%s",
	    status.func != NULL ? status.func : "",
	    status.func != NULL ? ": " : "",
	    status.err_msg != NULL ? status.err_msg : "unknown error") < 0)
		*cause = NULL;
	return -1;
}

/* Stop CPython; -1 when finalisation reported an error. */
int
interp_fini(void)
{
	if (!Py_IsInitialized())
		return 0;
	if (Py_FinalizeEx() < 0) {
		fprintf(stderr, "pyshelfd: the interpreter did not finalise "
		    "cleanly (buffered data may be lost)\n");
		return -1;
	}
	return 0;
}
