/*
 * pysink.c - Sink: the checkpoint's pickler's file.  write() appends to a
 * C buffer (the Batch takes the bytes from there), buffer() (the
 * pickler's buffer_callback) keeps out-of-band PickleBuffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "config.h"

#include <string.h>

#include "wire.h"
#include "pyexec.h"

/* ---------------------------------------------------------------------- */
/* Sink                                                                   */

/* write(b): append bytes-like b. */
static PyObject *
pysink_write(PyObject *self, PyObject *arg)
{
	sinkobject *s = (sinkobject *)self;
	Py_buffer v;

	if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
		return NULL;
	if (s->len + (size_t)v.len > s->cap) {
		size_t ncap = (s->cap + (size_t)v.len) * 2;
		char *n = PyMem_Realloc(s->buf, ncap);
		if (n == NULL) {
			PyBuffer_Release(&v);
			return PyErr_NoMemory();
		}
		s->buf = n;
		s->cap = ncap;
	}
	memcpy(s->buf + s->len, v.buf, (size_t)v.len);
	s->len += (size_t)v.len;
	PyBuffer_Release(&v);
	return PyLong_FromSsize_t(v.len);
}

/* buffer(pb): keep an out-of-band buffer (pickle's buffer_callback). */
static PyObject *
pysink_buffer(PyObject *self, PyObject *pb)
{
	sinkobject *s = (sinkobject *)self;

	if (s->oob == NULL && (s->oob = PyList_New(0)) == NULL)
		return NULL;
	if (PyList_Append(s->oob, pb) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* reset(): forget the current dump. */
void
pysink_reset(sinkobject *s)
{
	s->len = 0;
	Py_CLEAR(s->oob);
}

static PyObject *
pysink_reset_py(PyObject *self, PyObject *unused)
{
	pysink_reset((sinkobject *)self);
	Py_RETURN_NONE;
}

/* getvalue() -> bytes of the current dump */
static PyObject *
pysink_getvalue(PyObject *self, PyObject *unused)
{
	sinkobject *s = (sinkobject *)self;

	return PyBytes_FromStringAndSize(s->buf, (Py_ssize_t)s->len);
}

/* buffers() -> list of the current dump's PickleBuffers */
static PyObject *
pysink_buffers(PyObject *self, PyObject *unused)
{
	sinkobject *s = (sinkobject *)self;

	return s->oob != NULL ? Py_NewRef(s->oob) : PyList_New(0);
}

static void
pysink_dealloc(PyObject *self)
{
	sinkobject *s = (sinkobject *)self;

	PyObject_GC_UnTrack(self);
	Py_CLEAR(s->oob);
	PyMem_Free(s->buf);
	Py_TYPE(self)->tp_free(self);
}

static int
pysink_traverse(PyObject *self, visitproc visit, void *arg)
{
	Py_VISIT(((sinkobject *)self)->oob);
	return 0;
}

static int
pysink_clear(PyObject *self)
{
	Py_CLEAR(((sinkobject *)self)->oob);
	return 0;
}

static PyMethodDef pysink_methods[] = {
	{"write", pysink_write, METH_O, "append bytes"},
	{"buffer", pysink_buffer, METH_O, "keep an out-of-band buffer"},
	{"reset", pysink_reset_py, METH_NOARGS, "forget the current dump"},
	{"getvalue", pysink_getvalue, METH_NOARGS, "the current dump's bytes"},
	{"buffers", pysink_buffers, METH_NOARGS, "the current dump's buffers"},
	{NULL, NULL, 0, NULL}
};

PyTypeObject pysink_SinkType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_pyshelfd.Sink",
	.tp_basicsize = sizeof(sinkobject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "a pickler's file: bytes in C, out-of-band buffers kept",
	.tp_methods = pysink_methods,
	.tp_dealloc = pysink_dealloc,
	.tp_traverse = pysink_traverse,
	.tp_clear = pysink_clear,
	.tp_new = PyType_GenericNew,
};
