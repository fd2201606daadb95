/*
 * dump-unpickle.c - pyshelf-dump --unpickle: repr() of an entry's value,
 * which means running the pickle's code.  It is done by the Python that
 * configure matched to the backend (PYTHON_EXECUTABLE, which can import
 * cloudpickle and tblib), as a child process that gets a small script in
 * its argv and the payload on stdin, after the store is closed (no LMDB
 * environment crosses the fork).  Persistent references load as
 * placeholders that print as <ref global 'a'>; they are classes, so that a
 * reference to a class defined by shipped code (a global of its own) still
 * lets its instances load, as <object of <ref global 'Point'>: ...>.  The
 * backend's classes come from a stub pyshelf module, and the functions its
 * records call from a stub _pyshelf_backend (a numpy view of another
 * entry prints as <numpy view of <ref global 'a'>: ...>).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dump.h"

extern char **environ;

/* The child's program: argv[1] record flags, argv[2] longest repr; the
 * payload on stdin; prints "V" + repr or "E" + the error on stdout. */
static const char dump_unpickle_script[] =
"import builtins, io, pickle, struct, sys, types\n"
"sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
"flags, limit = int(sys.argv[1]), int(sys.argv[2])\n"
"data = bytearray(sys.stdin.buffer.read())\n"
"m = types.ModuleType('pyshelf', 'pyshelf-dump stub of the backend classes')\n"
"class DirectValue:\n"
"    __slots__ = ('value',)\n"
"    def __init__(self, value=None): self.value = value\n"
"    def __repr__(self): return 'DirectValue(%r)' % (self.value,)\n"
"class Wrapped:\n"
"    __slots__ = ('id', 'type_name')\n"
"    def __init__(self, id, type_name): self.id, self.type_name = id, type_name\n"
"    def __repr__(self): return '<Wrapped %r %s>' % (self.id, self.type_name)\n"
"class WrappedExcinfo(Wrapped):\n"
"    __slots__ = ('exc_type', 'message')\n"
"    def __init__(self, id, type_name, exc_type='', message=''):\n"
"        Wrapped.__init__(self, id, type_name)\n"
"        self.exc_type, self.message = exc_type, message\n"
"    def __repr__(self):\n"
"        return '<WrappedExcinfo %r %s: %s>' % (self.id, self.exc_type, self.message)\n"
"class Placeholder:\n"
"    def __init__(self, entry=None, type_name=None, reason=None, payload=None):\n"
"        self.entry, self.type_name, self.reason = entry, type_name, reason\n"
"        self.payload = payload\n"
"    def __repr__(self):\n"
"        return '<pyshelf.Placeholder for %s (%s): %s>' % (self.entry, self.type_name, self.reason)\n"
"class VolatileEntryError(LookupError): pass\n"
"class EntryGroup:\n"
"    def __init__(self, keys, objs): self.keys, self.objs = keys, objs\n"
"    def __repr__(self): return 'EntryGroup(%r, %r)' % (self.keys, self.objs)\n"
"class GroupMember:\n"
"    def __init__(self, first, i): self.first, self.i = first, i\n"
"    def __repr__(self):\n"
"        return '<object %d of the EntryGroup in %r>' % (self.i, self.first)\n"
"def group_member(first, i): return GroupMember(first, i)\n"
"for c in (DirectValue, Wrapped, WrappedExcinfo, Placeholder, VolatileEntryError,\n"
"          EntryGroup, group_member):\n"
"    c.__module__ = 'pyshelf'; setattr(m, c.__name__, c)\n"
"sys.modules['pyshelf'] = m\n"
"b = types.ModuleType('_pyshelf_backend')\n"
"def _rebuild_ws_function(code, name, defaults, closure, kwdefaults, qualname,\n"
"                         fdict, annotations, doc, module):\n"
"    g = {'__name__': '__pyshelf__', '__builtins__': builtins}\n"
"    f = types.FunctionType(code, g, name, defaults, closure)\n"
"    f.__kwdefaults__ = kwdefaults; f.__qualname__ = qualname\n"
"    f.__annotations__ = annotations or {}; f.__doc__ = doc; f.__module__ = module\n"
"    if fdict: f.__dict__.update(fdict)\n"
"    return f\n"
"b._rebuild_ws_function = b._rebuild_ws_function_compat = _rebuild_ws_function\n"
"class View:\n"
"    def __init__(self, *args): self.args = args\n"
"    def __repr__(self):\n"
"        return '<numpy view of %r: offset %r, shape %r, strides %r, dtype %s, writeable %r>' % self.args\n"
"def _rebuild_view(*args): return View(*args)\n"
"def _new_object_array(shape, fortran):\n"
"    import numpy\n"
"    return numpy.empty(shape, dtype=object, order='F' if fortran else 'C')\n"
"def _fill_object_array(arr, items):\n"
"    import numpy\n"
"    if type(arr) is not numpy.ndarray or type(items) is not list or len(items) != arr.size:\n"
"        raise pickle.UnpicklingError('an array of Python objects does not match its items')\n"
"    flat = arr.ravel(order='K')\n"
"    for i, x in enumerate(items): flat[i] = x\n"
"b._rebuild_view, b._new_object_array = _rebuild_view, _new_object_array\n"
"b._fill_object_array = _fill_object_array\n"
"sys.modules['_pyshelf_backend'] = b\n"
"class RefMeta(type):\n"
"    def __repr__(cls): return cls._text\n"
"class RefBase(metaclass=RefMeta):\n"
"    _text = '<ref>'\n"
"    def __new__(cls, *args, **kw):\n"
"        o = object.__new__(cls); o._args = args; o._state = None; return o\n"
"    def __init__(self, *args, **kw): pass\n"
"    def __setstate__(self, state): self._state = state\n"
"    def __repr__(self):\n"
"        return '<object of %s: args %r, state %r>' % (type(self)._text, self._args, self._state)\n"
"refs = {}\n"
"def ref(pid):\n"
"    # a type, so that a reference can stand for a class (NEWOBJ, REDUCE)\n"
"    key = repr(pid)\n"
"    if key not in refs:\n"
"        if type(pid) is tuple and len(pid) == 2 and pid[0] in ('g', 'h'):\n"
"            text = '<ref %s %r>' % ('global' if pid[0] == 'g' else 'handle', pid[1])\n"
"        else:\n"
"            text = '<ref %r>' % (pid,)\n"
"        refs[key] = RefMeta('Ref', (RefBase,), {'_text': text})\n"
"    return refs[key]\n"
"class Loader(pickle.Unpickler):\n"
"    def persistent_load(self, pid): return ref(pid)\n"
"def out(tag, text):\n"
"    sys.stdout.buffer.write(tag + text.encode('utf-8', 'backslashreplace'))\n"
"try:\n"
"    try:\n"
"        import tblib.pickling_support; tblib.pickling_support.install()\n"
"    except ImportError: pass\n"
"    try:\n"
"        import cloudpickle\n"
"    except ImportError: pass\n"
"    pk, bufs = memoryview(data), None\n"
"    if flags & 4:\n"
"        n, plen = struct.unpack_from('>IQ', data, 0)\n"
"        lens = struct.unpack_from('>%dQ' % n, data, 12)\n"
"        off = 12 + 8 * n\n"
"        pk, off, bufs = pk[off:off + plen], off + plen, []\n"
"        for l in lens:\n"
"            bufs.append(memoryview(data)[off:off + l]); off += l\n"
"    r = repr(Loader(io.BytesIO(pk), buffers=bufs).load())\n"
"except BaseException as e:\n"
"    out(b'E', '%s: %s' % (type(e).__name__, e)); sys.exit(1)\n"
"if len(r) > limit: r = r[:limit] + '... (%d characters)' % len(r)\n"
"out(b'V', r)\n";

/* Write all of p to fd (EPIPE: the child stopped reading, not an error
 * of ours; it says why on its stdout). */
static int
dump_unpickle_write(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EPIPE ? 0 : -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read fd to its end into a malloc'd, NUL-terminated buffer. */
static char *
dump_unpickle_read(int fd, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap), *nb;
	ssize_t r;

	while (buf != NULL) {
		if (n + 1 >= cap) {
			if ((nb = realloc(buf, cap * 2)) == NULL)
				break;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			buf[n] = '\0';
			*len = n;
			return buf;
		}
		n += (size_t)r;
	}
	free(buf);
	return NULL;
}

/* Start the child with its stdin and stdout on pipes. */
static int
dump_unpickle_spawn(struct dump *d, pid_t *pid, int *to, int *from)
{
	char flags[16], limit[32];
	char *argv[] = {PYTHON_EXECUTABLE, "-c", (char *)dump_unpickle_script,
	    flags, limit, NULL};
	posix_spawn_file_actions_t fa;
	int in[2], out[2], rc;

	snprintf(flags, sizeof flags, "%u", (unsigned)d->payload_flags);
	snprintf(limit, sizeof limit, "%zu", d->o->repr_max);
	if (pipe2(in, O_CLOEXEC) != 0)
		return -1;
	if (pipe2(out, O_CLOEXEC) != 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	rc = posix_spawn(pid, PYTHON_EXECUTABLE, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		errno = rc;
		return -1;
	}
	*to = in[1];
	*from = out[0];
	return 0;
}

/* Show the child's answer. */
static int
dump_unpickle_show(struct dump *d, const char *res, size_t len, int status)
{
	int ok = len > 0 && res[0] == 'V' && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0;
	const char *text = len > 0 ? res + 1 : "";
	char why[64];

	if (len == 0) {
		if (WIFSIGNALED(status))
			snprintf(why, sizeof why, "python died of signal %d",
			    WTERMSIG(status));
		else
			snprintf(why, sizeof why, "python exited with status %d "
			    "and no answer", WEXITSTATUS(status));
		text = why;
	}
	if (d->o->json) {
		dump_json_row(d, "value");
		if (ok) {
			dump_json_str(d, "repr", text, strlen(text));
			dump_json_null(d, "error");
		} else {
			dump_json_null(d, "repr");
			dump_json_cstr(d, "error", text);
		}
		dump_json_row_end(d);
	} else if (ok)
		fprintf(d->out, "\nvalue (unpickled by %s, which ran the "
		    "pickle's code):\n%s\n", PYTHON_EXECUTABLE, text);
	else
		fprintf(d->out, "\nvalue     cannot be unpickled: %s\n", text);
	return ok ? DUMP_EXIT_OK : DUMP_EXIT_ERROR;
}

/* Unpickle d->payload in a child Python and show repr() of the value. */
int
dump_unpickle_run(struct dump *d)
{
	struct sigaction ign, old;
	char *res;
	size_t len = 0;
	pid_t pid;
	int to, from, status = 0, rc;

	fflush(d->out);
	if (dump_unpickle_spawn(d, &pid, &to, &from) != 0) {
		dump_warn("cannot run %s: %s", PYTHON_EXECUTABLE,
		    strerror(errno));
		return DUMP_EXIT_ERROR;
	}
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old);
	rc = dump_unpickle_write(to, d->payload, d->payload_len);
	close(to);
	sigaction(SIGPIPE, &old, NULL);
	res = dump_unpickle_read(from, &len);
	close(from);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rc != 0 || res == NULL) {
		dump_warn("talking to %s: %s", PYTHON_EXECUTABLE,
		    res == NULL ? "out of memory" : strerror(errno));
		free(res);
		return DUMP_EXIT_ERROR;
	}
	rc = dump_unpickle_show(d, res, len, status);
	free(res);
	if (dump_interrupted)
		return DUMP_EXIT_INTERRUPTED;
	return rc;
}
