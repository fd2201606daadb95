/*
 * pyfields.c - what crosses the seam between the C half and the Python
 * half by name: the record types of _pyshelfd (struct sequences: fields by
 * name, still indexable and unpackable as the tuples they replace), and
 * the constants the Python half needs, exported from their C definitions
 * (proto/wire.h, store/store.h) so that no number is copied by hand.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

PyTypeObject *pyfields_Record;      /* get() */
PyTypeObject *pyfields_Head;        /* head() */
PyTypeObject *pyfields_Check;       /* check() */
PyTypeObject *pyfields_Room;        /* room() */
PyTypeObject *pyfields_Dumped;      /* Batch.dump_keys() */
PyTypeObject *pyfields_Committed;   /* Batch.commit(), commit_part() */
PyTypeObject *pyfields_Result;      /* the Python half's request results */

static PyStructSequence_Field pyfields_record[] = {
	{"pickler", "PICKLER_* the payload was written with"},
	{"flags", "the record's FLAG_* bits"},
	{"type_name", "\"module.Qualname\" of the value's type (str)"},
	{"payload", "the pickle, a bytearray copied out of the store"},
	{"digest", "the content digest (16 bytes)"},
	{"refs", "the refs blob (bytes)"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_head[] = {
	{"flags", "the record's FLAG_* bits"},
	{"type_name", "\"module.Qualname\" of the value's type (str)"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_check[] = {
	{"flags", "the record's FLAG_* bits"},
	{"type_name", "\"module.Qualname\" of the value's type (str)"},
	{"refs", "the refs blob (bytes)"},
	{"reason", "a volatile record's reason (str), else None"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_room[] = {
	{"map_max", "the store's size limit in bytes (--map-max)"},
	{"disk_free", "bytes free on its file system, -1 when unknown"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_dumped[] = {
	{"written", "records pickled into the batch"},
	{"failed", "[(key, object, flags, type_name)] of the ones that "
	    "could not be pickled"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_committed[] = {
	{"written", "records written"},
	{"noted", "[(key, refs)] whose references must be noted again"},
	{NULL, NULL}
};
static PyStructSequence_Field pyfields_result[] = {
	{"kind", "KIND_DIRECT, KIND_WRAPPED, KIND_EXCINFO or KIND_TEXT"},
	{"handle", "the handle id (0 for a direct value)"},
	{"type_name", "the value's type name (str)"},
	{"exc_type", "an exception's type name (str) or None"},
	{"message", "an exception's message (str) or None"},
	{"value", "a direct value's pickle (bytes) or None"},
	{NULL, NULL}
};

/* One type per table above. */
static struct {
	PyTypeObject **type;
	PyStructSequence_Desc desc;
} pyfields_types[] = {
	{&pyfields_Record, {"_pyshelfd.Record", "an entry's record (get)",
	    pyfields_record, 6}},
	{&pyfields_Head, {"_pyshelfd.Head", "a record's layout, its digest "
	    "unchecked (head)", pyfields_head, 2}},
	{&pyfields_Check, {"_pyshelfd.Check", "a record checked, its pickle "
	    "not copied (check)", pyfields_check, 4}},
	{&pyfields_Room, {"_pyshelfd.Room", "room()", pyfields_room, 2}},
	{&pyfields_Dumped, {"_pyshelfd.Dumped", "Batch.dump_keys()",
	    pyfields_dumped, 2}},
	{&pyfields_Committed, {"_pyshelfd.Committed", "Batch.commit()",
	    pyfields_committed, 2}},
	{&pyfields_Result, {"_pyshelfd.Result", "a request's result, as the "
	    "Python half gives it to the C half", pyfields_result, 6}},
};

/* Constants of the C definitions the Python half uses. */
static const struct {
	const char *name;
	long value;
} pyfields_consts[] = {
	/* proto/wire.h, enum wire_errcode */
	{"ERR_MALFORMED", WIRE_ERR_MALFORMED},
	{"ERR_TOO_BIG", WIRE_ERR_TOO_BIG},
	{"ERR_UNKNOWN_TYPE", WIRE_ERR_UNKNOWN_TYPE},
	{"ERR_VERSION", WIRE_ERR_VERSION},
	{"ERR_AUTH", WIRE_ERR_AUTH},
	{"ERR_NO_SESSION", WIRE_ERR_NO_SESSION},
	{"ERR_SESSION_DEAD", WIRE_ERR_SESSION_DEAD},
	{"ERR_UNKNOWN_HANDLE", WIRE_ERR_UNKNOWN_HANDLE},
	{"ERR_UNPICKLE", WIRE_ERR_UNPICKLE},
	{"ERR_PICKLE", WIRE_ERR_PICKLE},
	{"ERR_NOT_FOUND", WIRE_ERR_NOT_FOUND},
	{"ERR_STORE", WIRE_ERR_STORE},
	{"ERR_VOLATILE", WIRE_ERR_VOLATILE},
	{"ERR_INTERNAL", WIRE_ERR_INTERNAL},
	{"ERR_BAD_REQUEST", WIRE_ERR_BAD_REQUEST},
	{"ERR_SESSION_BUSY", WIRE_ERR_SESSION_BUSY},
	{"ERR_USAGE", WIRE_ERR_USAGE},
	{"ERR_READ_ONLY", WIRE_ERR_READ_ONLY},
	{"ERR_UNKNOWN_CALL", WIRE_ERR_UNKNOWN_CALL},
	{"ERR_WORKER_DIED", WIRE_ERR_WORKER_DIED},
	{"ERR_WORKER_RESTARTED", WIRE_ERR_WORKER_RESTARTED},
	/* proto/wire.h, result kinds */
	{"KIND_DIRECT", WIRE_KIND_DIRECT},
	{"KIND_WRAPPED", WIRE_KIND_WRAPPED},
	{"KIND_EXCINFO", WIRE_KIND_EXCINFO},
	{"KIND_TEXT", WIRE_KIND_TEXT},
	{"WANT_REPR", WIRE_WANT_REPR},
	{"WANT_JSON", WIRE_WANT_JSON},
	/* store/store.h, record flags and picklers */
	{"FLAG_EXCINFO", STORE_FLAG_EXCINFO},
	{"FLAG_VOLATILE", STORE_FLAG_VOLATILE},
	{"FLAG_OOB", STORE_FLAG_OOB},
	{"FLAG_HIDDEN", STORE_FLAG_HIDDEN},
	{"FLAG_BLOB", STORE_FLAG_BLOB},
	{"PICKLER_NONE", STORE_PICKLER_NONE},
	{"PICKLER_PICKLE", STORE_PICKLER_PICKLE},
	{"PICKLER_CLOUDPICKLE", STORE_PICKLER_CLOUDPICKLE},
	/* store/store.h, limits */
	{"KEY_MAX", STORE_KEY_MAX},
	{"DIGEST_SIZE", STORE_DIGEST_SIZE},
};

/* Make the types and add them and the constants to module m; 0 or -1. */
int
pyfields_init(PyObject *m)
{
	size_t i;

	for (i = 0; i < sizeof pyfields_types / sizeof pyfields_types[0]; i++) {
		PyTypeObject *tp = *pyfields_types[i].type;
		const char *dot;
		if (tp == NULL && (tp = PyStructSequence_NewType(
		    &pyfields_types[i].desc)) == NULL)
			return -1;
		*pyfields_types[i].type = tp;  /* kept for the process */
		dot = strchr(pyfields_types[i].desc.name, '.');
		if (PyModule_AddObjectRef(m, dot + 1, (PyObject *)tp) < 0)
			return -1;
	}
	for (i = 0; i < sizeof pyfields_consts / sizeof pyfields_consts[0]; i++)
		if (PyModule_AddIntConstant(m, pyfields_consts[i].name,
		    pyfields_consts[i].value) < 0)
			return -1;
	/* entry kinds of keys: ("g", name), ("h", id) */
	if (PyModule_AddStringConstant(m, "ENTRY_GLOBAL",
	    (char[]){STORE_KIND_GLOBAL, '\0'}) < 0 ||
	    PyModule_AddStringConstant(m, "ENTRY_HANDLE",
	    (char[]){STORE_KIND_HANDLE, '\0'}) < 0)
		return -1;
	return 0;
}

/* A record of type tp with the items of tuple t (stolen; its length must
 * be the type's); new reference, or NULL (also for a NULL t). */
PyObject *
pyfields_named(PyTypeObject *tp, PyObject *t)
{
	PyObject *r;
	Py_ssize_t i;

	if (t == NULL)
		return NULL;
	if ((r = PyStructSequence_New(tp)) == NULL) {
		Py_DECREF(t);
		return NULL;
	}
	for (i = 0; i < PyTuple_GET_SIZE(t); i++)
		PyStructSequence_SET_ITEM(r, i, Py_NewRef(PyTuple_GET_ITEM(t, i)));
	Py_DECREF(t);
	return r;
}
