"""The supervisor, `pyshelfd --server`, with real processes and sockets:
its directory and socket modes, the uid check, the version error, its
start (daemon, pid file, stale socket, two at once) and its ends (SIGTERM,
exit-empty), then end to end through a real worker: routing, a worker
killed, the supervisor killed and a new one adopting the live workers,
SIGTERM with busy sessions.

The clients here speak the protocol with the struct module over a raw
socket (docs/PROTOCOL.md), so that nothing but the server is under test.
"""
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time

import pytest

HDR = struct.Struct(">IHHQ")
FLD = struct.Struct(">BI")

HELLO, WELCOME, ATTACH, ATTACHED = 0x0001, 0x0002, 0x0010, 0x0011
EXEC, RESULT, OUTPUT, GET, SET = 0x0100, 0x0101, 0x0102, 0x0110, 0x0111
SYNC, DETACH, OK, ERROR = 0x0120, 0x0121, 0x01F0, 0x7F00
T_VERSION, T_NAME, T_SESSION_ID, T_CREATE, T_CODE = 1, 2, 3, 5, 6
T_WANT_VALUE, T_KIND, T_MESSAGE, T_VALUE, T_ERRCODE = 10, 12, 16, 17, 20
T_KEY, T_PID, T_MAX_FRAME, T_SESSION, T_MODE, T_SIGNAL = 21, 23, 24, 25, 34, 37
E_TOO_BIG, E_VERSION, E_AUTH, E_BAD_REQUEST = 2, 4, 5, 15
KIND_DIRECT = 1
VERSION = 3
PEER_USER = "pyshelf-peer"
WAIT = 120  # seconds: generous, never a timing assertion


def u64(v):
    return struct.pack(">Q", v)


def frame(mtype, fields, rid=1):
    body = b"".join(FLD.pack(tag, len(d)) + d for tag, d in fields)
    return HDR.pack(len(body), mtype, 0, rid) + body


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes"
                           % (len(buf), n))
        buf += chunk
    return buf


def read_frame(sock):
    """(type, {tag: [bytes, ...]}) of the next frame."""
    n, mtype, _flags, _rid = HDR.unpack(recv_exact(sock, HDR.size))
    body = recv_exact(sock, n)
    fields, pos = {}, 0
    while pos < len(body):
        tag, ln = FLD.unpack_from(body, pos)
        pos += FLD.size
        fields.setdefault(tag, []).append(body[pos:pos + ln])
        pos += ln
    return mtype, fields


def f_u64(fields, tag):
    return struct.unpack(">Q", fields[tag][0])[0]


def f_str(fields, tag):
    return fields[tag][0].decode()


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT)
    s.connect(path)
    return s


def hello(sock, version=VERSION):
    sock.sendall(frame(HELLO, [(T_VERSION, u64(version)),
                               (T_NAME, b"test_server_supervisor")]))
    return read_frame(sock)


def attach(path, session, mode=b"c"):
    """A connection attached to session through the server: (sock,
    ATTACHED's fields).  Fails on anything but ATTACHED."""
    s = connect(path)
    t, f = hello(s)
    assert t == WELCOME, f
    s.sendall(frame(ATTACH, [(T_SESSION, session.encode()),
                             (T_MODE, mode)], rid=2))
    t, f = read_frame(s)
    assert t == ATTACHED, (t, f.get(T_MESSAGE))
    return s, f


def run_code(sock, code, rid=10):
    """EXEC code: the RESULT's fields (OUTPUT frames skipped)."""
    sock.sendall(frame(EXEC, [(T_CODE, code.encode())], rid=rid))
    while True:
        t, f = read_frame(sock)
        if t != OUTPUT:
            assert t == RESULT, (t, f.get(T_MESSAGE))
            return f


def get_repr(sock, key, rid=11):
    """repr() of the global key (GET with WANT_VALUE 2)."""
    sock.sendall(frame(GET, [(T_KEY, key.encode()), (T_WANT_VALUE, u64(2))],
                       rid=rid))
    t, f = read_frame(sock)
    assert t == RESULT, (t, f.get(T_MESSAGE))
    return f[T_VALUE][0].decode()


def wait_until(pred, what, timeout=WAIT):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def accepts(path):
    try:
        connect(path).close()
        return True
    except OSError:
        return False


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def env(tmp_path):
    """An environment whose socket directory is new: a short directory
    under /tmp (the workers' control sockets must fit sun_path) is
    XDG_RUNTIME_DIR (0700); the server makes its pyshelf/ inside."""
    run = tempfile.mkdtemp(prefix="ps-", dir="/tmp")
    e = dict(os.environ)
    e["XDG_RUNTIME_DIR"] = run
    e["HOME"] = str(tmp_path)
    e.pop("XDG_DATA_HOME", None)
    yield e
    shutil.rmtree(run, ignore_errors=True)


class Server:
    """One `pyshelfd --server` on the store tmp_path/db."""

    def __init__(self, backend, env, tmp_path, *args):
        self.backend, self.env, self.tmp = backend, env, tmp_path
        self.db = str(tmp_path / "db")
        self.args = list(args)
        self.proc = None

    def cmd(self, *more):
        return [self.backend, "--server", "--db", self.db] + self.args + \
            list(more)

    def start(self):
        """Daemon mode: exits 0 once the socket accepts."""
        r = subprocess.run(self.cmd(), env=self.env, capture_output=True,
                           text=True, timeout=WAIT)
        assert r.returncode == 0, r.stderr
        assert accepts(self.path)
        return r

    def start_fg(self, *more):
        self.errf = open(self.tmp / ("fg-%d.log" % time.monotonic_ns()),
                         "w+")
        self.proc = subprocess.Popen(self.cmd("--foreground", *more),
                                     env=self.env, stderr=self.errf)
        wait_until(lambda: accepts(self.path) or
                   self.proc.poll() is not None, "the server to accept")
        assert self.proc.poll() is None, self.fg_log()
        return self.proc

    def fg_log(self):
        self.errf.seek(0)
        return self.errf.read()

    @property
    def dir(self):
        return os.path.join(self.env["XDG_RUNTIME_DIR"], "pyshelf")

    @property
    def path(self):
        names = [n for n in os.listdir(self.dir) if n.startswith("db-")
                 and "." not in n] if os.path.isdir(self.dir) else []
        if names:
            return os.path.join(self.dir, names[0])
        return os.path.join(self.dir, "db-unknown")

    def base(self):
        # the name is FNV-1a of the store's real path: take it from the
        # pid file, which exists from the start
        for n in os.listdir(self.dir):
            if n.endswith(".pid"):
                return os.path.join(self.dir, n[:-4])
        return None

    @property
    def pid(self):
        with open(self.base() + ".pid") as f:
            return int(f.read())

    def log(self):
        with open(self.base() + ".log") as f:
            return f.read()

    def stop(self):
        """SIGTERM; wait until it is gone."""
        try:
            pid = self.pid
        except (OSError, TypeError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.proc is not None:
            self.proc.wait(WAIT)
        wait_until(lambda: not alive(pid), "the server to exit")


@pytest.fixture
def server(backend, env, tmp_path):
    servers = []

    def make(*args):
        s = Server(backend, env, tmp_path, *args)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


def peer_uid():
    """A second user to run a stranger client as (created when missing)."""
    try:
        return pwd.getpwnam(PEER_USER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", PEER_USER],
                       check=True)
        return pwd.getpwnam(PEER_USER).pw_uid


# --- the socket directory and the socket ---------------------------------

def test_dir_created_0700_socket_0600(server):
    s = server()
    s.start()
    st = os.stat(s.dir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid()
    sock = os.stat(s.path)
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(s.base() + ".w").st_mode) == 0o700
    assert alive(s.pid)
    assert "listening on " + s.path in s.log()


def test_dir_open_to_others_refused(server):
    s = server()
    os.mkdir(s.dir, 0o755)
    os.chmod(s.dir, 0o755)
    r = subprocess.run(s.cmd(), env=s.env, capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1
    assert s.dir in r.stderr and "755" in r.stderr, r.stderr
    assert os.listdir(s.dir) == []


def test_dir_owned_by_another_user_refused(server):
    s = server()
    os.mkdir(s.dir, 0o700)
    os.chown(s.dir, peer_uid(), -1)
    r = subprocess.run(s.cmd(), env=s.env, capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1
    assert "belongs to uid %d" % peer_uid() in r.stderr, r.stderr
    assert os.listdir(s.dir) == []


STRANGER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(120)
s.connect(sys.argv[1])
body = struct.pack(">BIQ", 1, 8, 3)
try:
    s.sendall(struct.pack(">IHHQ", len(body), 1, 0, 1) + body)
except OSError:
    pass
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:  # our HELLO was never read: reset
        break
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.hex())
"""


def test_peer_of_another_uid_refused(server, tmp_path):
    """The socket made reachable on purpose (--socket in a directory of
    mode 0711, the socket chmod'ed 0666): the SO_PEERCRED check alone must
    refuse the stranger, with ERROR{AUTH}, and close; the owner is served
    as before."""
    uid = peer_uid()
    gid = pwd.getpwuid(uid).pw_gid
    pub = tempfile.mkdtemp(prefix="pyshelf-peer-", dir="/tmp")
    try:
        os.chmod(pub, 0o711)
        path = os.path.join(pub, "s")
        s = server("--socket", path)
        r = subprocess.run(s.cmd(), env=s.env, capture_output=True,
                           text=True, timeout=WAIT)
        assert r.returncode == 0, r.stderr
        os.chmod(path, 0o666)
        r = subprocess.run(["setpriv", "--reuid=%d" % uid,
                            "--regid=%d" % gid, "--clear-groups",
                            "/usr/bin/python3", "-c", STRANGER, path],
                           capture_output=True, text=True, timeout=WAIT)
        assert r.returncode == 0, r.stderr
        check_refused(r.stdout, uid, path, pub)
    finally:
        try:
            with open(os.path.join(pub, "s.pid")) as pf:
                os.kill(int(pf.read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        shutil.rmtree(pub, ignore_errors=True)


def check_refused(out, uid, path, pub):
    data = bytes.fromhex(out)
    n, mtype, _, _ = HDR.unpack_from(data)
    assert mtype == ERROR
    body = data[HDR.size:HDR.size + n]
    fields, pos = {}, 0
    while pos < len(body):
        tag, ln = FLD.unpack_from(body, pos)
        fields[tag] = body[pos + 5:pos + 5 + ln]
        pos += 5 + ln
    assert struct.unpack(">Q", fields[T_ERRCODE])[0] == E_AUTH
    msg = fields[T_MESSAGE].decode()
    assert msg == "uid %d is not allowed to use this server (owned by " \
        "uid %d)" % (uid, os.getuid()), msg
    assert len(data) == HDR.size + n  # nothing after it: closed
    with open(path + ".log") as f:
        assert "refused pid" in f.read()
    c = connect(path)
    t, f = hello(c)
    assert t == WELCOME
    with open(path + ".pid") as pf:
        pid = int(pf.read())
    assert f_u64(f, T_PID) == pid
    c.close()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), "the server to exit")


# --- the handshake ------------------------------------------------------

def test_version_2_hello_gets_the_restart_sentence(server):
    s = server()
    s.start()
    c = connect(s.path)
    t, f = hello(c, version=2)
    assert t == ERROR and f_u64(f, T_ERRCODE) == E_VERSION
    msg = f_str(f, T_MESSAGE)
    assert "kill -TERM %d" % s.pid in msg, msg
    assert "state is in the store" in msg or "in the store" in msg, msg
    with pytest.raises(EOFError):
        read_frame(c)


def test_welcome_then_read_only_attach_starts_no_worker(server):
    """MODE r never attaches (read-only is a private stdio backend's): it
    asks the session's idle worker to go; with none, NO_SESSION, and no
    worker is started for it."""
    s = server()
    s.start()
    c = connect(s.path)
    t, f = hello(c)
    assert t == WELCOME
    assert f_u64(f, T_VERSION) == VERSION
    assert f_u64(f, T_PID) == s.pid
    assert f_u64(f, T_MAX_FRAME) == 64 << 20
    assert T_SESSION_ID not in f
    c.sendall(frame(ATTACH, [(T_SESSION, b"s"), (T_MODE, b"r")]))
    t, f = read_frame(c)
    assert t == ERROR and f_u64(f, T_ERRCODE) == 6      # NO_SESSION
    assert "no worker of this server serves session 's'" in \
        f_str(f, T_MESSAGE)
    assert "started worker" not in s.log()


def test_preauth_frame_limit(server):
    s = server()
    s.start()
    c = connect(s.path)
    c.sendall(HDR.pack(64 * 1024 + 1, HELLO, 0, 1))
    t, f = read_frame(c)
    assert t == ERROR and f_u64(f, T_ERRCODE) == E_TOO_BIG


def test_silent_client_dropped_and_stalls_no_one(server):
    """A client that sends nothing is dropped (after 10 s); meanwhile
    others are served, as is one that sent half a frame."""
    s = server()
    s.start()
    silent = connect(s.path)
    half = connect(s.path)
    half.sendall(frame(HELLO, [(T_VERSION, u64(VERSION))])[:10])
    for _ in range(3):
        c = connect(s.path)
        t, f = hello(c)
        assert t == WELCOME
        c.close()
    t, f = read_frame(silent)
    assert t == ERROR and "HELLO" in f_str(f, T_MESSAGE)
    with pytest.raises(EOFError):
        read_frame(silent)
    t, f = read_frame(half)
    assert t == ERROR


# --- start and end -------------------------------------------------------

def test_sigterm_exits_0_and_removes_the_socket(server):
    s = server("--exit-empty", "0")
    p = s.start_fg()
    path, pidf = s.path, s.base() + ".pid"
    assert s.pid == p.pid
    p.send_signal(signal.SIGTERM)
    assert p.wait(WAIT) == 0, s.fg_log()
    assert not os.path.exists(path)
    assert not os.path.exists(pidf)


def test_exit_empty(server):
    s = server("--exit-empty", "1")
    p = s.start_fg()
    path = s.path
    assert p.wait(WAIT) == 0
    assert not os.path.exists(path)
    assert "no session and no client for 1 s" in s.fg_log()


def test_stale_socket_replaced(server, tmp_path):
    s = server()
    s.start()
    path = s.path
    os.kill(s.pid, signal.SIGKILL)
    wait_until(lambda: not accepts(path), "the socket to go stale")
    assert os.path.exists(path)  # the dead server's file stays
    s.start()
    assert "replaced the stale socket " + path in s.log()
    c = connect(path)
    assert hello(c)[0] == WELCOME


def test_two_servers_started_at_once_end_as_one(server):
    s = server()
    procs = [subprocess.Popen(s.cmd(), env=s.env, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errs = [p.communicate(timeout=WAIT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum("already runs" in e for e in errs) == 1, errs
    assert s.log().count("listening on") == 1
    assert alive(s.pid)
    # a third, later: the same answer, naming the pid
    r = subprocess.run(s.cmd(), env=s.env, capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 0
    assert "already runs for this store (pid %d" % s.pid in r.stderr


def test_help_describes_server_mode(backend):
    r = subprocess.run([backend, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("SERVER MODE", "--exit-empty", "--foreground", "--socket",
                 "SO_PEERCRED"):
        assert word in r.stdout


# --- end to end, through real workers ------------------------------------

T_CREATED = 26


def test_attach_routes_to_one_worker_per_session(server):
    s = server()
    s.start()
    c1, f1 = attach(s.path, "e2e")
    wpid = f_u64(f1, T_PID)
    assert wpid != s.pid and alive(wpid)
    assert f_str(f1, T_SESSION) == "e2e" and f_u64(f1, T_CREATED) == 1
    assert T_SIGNAL not in f1
    run_code(c1, "x = 6 * 7")
    assert get_repr(c1, "x") == "42"
    # a second client of the session: the same worker and globals
    c2, f2 = attach(s.path, "e2e")
    assert f_u64(f2, T_PID) == wpid and f_u64(f2, T_CREATED) == 0
    assert get_repr(c2, "x") == "42"
    # another session: another worker
    c3, f3 = attach(s.path, "other")
    assert f_u64(f3, T_PID) not in (wpid, s.pid)
    assert "started worker pid %d for session 'e2e'" % wpid in s.log()


def test_missing_session_answered_by_its_worker(server):
    """MODE w on a session that does not exist: the worker refuses it
    (ERROR NO_SESSION) and exits; the next client, with MODE c, gets a
    new worker."""
    s = server()
    s.start()
    c = connect(s.path)
    assert hello(c)[0] == WELCOME
    c.sendall(frame(ATTACH, [(T_SESSION, b"nope"), (T_MODE, b"w")]))
    t, f = read_frame(c)
    assert t == ERROR and f_u64(f, T_ERRCODE) == 6, f  # NO_SESSION
    c2, f2 = attach(s.path, "nope", b"c")
    assert f_u64(f2, T_CREATED) == 1


def test_worker_killed_next_attach_gets_the_signal(server):
    s = server()
    s.start()
    c, f = attach(s.path, "k")
    wpid = f_u64(f, T_PID)
    run_code(c, "x = 1")
    os.kill(wpid, signal.SIGKILL)
    with pytest.raises((EOFError, ConnectionResetError)):
        read_frame(c)
    wait_until(lambda: "killed by signal 9 (SIGKILL)" in s.log(),
               "the supervisor to reap the worker")
    c2, f2 = attach(s.path, "k")
    assert f_u64(f2, T_PID) != wpid
    assert f_u64(f2, T_SIGNAL) == 9
    assert "killed by signal 9 (SIGKILL)" in f_str(f2, T_MESSAGE)
    assert get_repr(c2, "x") == "1"  # resumed from the checkpoint
    # told once: the next client attaches to a worker that is well
    c3, f3 = attach(s.path, "k")
    assert f_u64(f3, T_PID) == f_u64(f2, T_PID) and T_SIGNAL not in f3


def test_supervisor_killed_workers_live_on_and_are_adopted(server):
    s = server()
    s.start()
    spid = s.pid
    c1, f1 = attach(s.path, "a")
    wpid = f_u64(f1, T_PID)
    run_code(c1, "y = 5")
    os.kill(spid, signal.SIGKILL)
    wait_until(lambda: not alive(spid), "the supervisor to die")
    # the worker serves its client on
    assert alive(wpid)
    run_code(c1, "y += 1")
    assert get_repr(c1, "y") == "6"
    # a new supervisor adopts it and routes a second client to it
    s.start()
    assert s.pid != spid
    assert "adopted worker pid %d of session 'a'" % wpid in s.log()
    c2, f2 = attach(s.path, "a")
    assert f_u64(f2, T_PID) == wpid
    assert T_SIGNAL not in f2
    assert get_repr(c2, "y") == "6"
    assert get_repr(c1, "y") == "6"


BUSY = """v += 1
import time
print("running", flush=True)
while True:
    v += 1
    time.sleep(0.01)
"""


def test_sigterm_with_20_busy_sessions(server, tmp_path):
    """20 sessions each running code: SIGTERM to the supervisor ends
    every worker with a checkpoint (what each had set, and what its
    running code changed, is in the store) and the supervisor exits 0."""
    import pyshelf
    from restarts import value

    s = server()
    p = s.start_fg()
    conns, pids = [], []
    for i in range(20):
        c, f = attach(s.path, "busy%d" % i)
        pids.append(f_u64(f, T_PID))
        run_code(c, "v = %d" % (1000 * i))
        c.sendall(frame(EXEC, [(T_CODE, BUSY.encode())], rid=50))
        conns.append(c)
    for c in conns:  # each is running its loop
        t, f = read_frame(c)
        assert t == OUTPUT and b"running" in f[19][0]
    assert len(set(pids)) == 20
    p.send_signal(signal.SIGTERM)
    assert p.wait(WAIT) == 0, s.fg_log()
    assert not os.path.exists(s.path)
    for pid in pids:
        assert not alive(pid)
    for i in range(20):
        ws = pyshelf.spawn(db=s.db, session="busy%d" % i, flag="w",
                           backend=s.backend)
        try:
            assert value(ws, "DirectValue(v)") >= 1000 * i + 1
        finally:
            ws.close()


def test_clients_waiting_for_a_refusing_worker_get_a_new_one(server):
    """Two ATTACHes of a missing session at once: the first (MODE w) is
    refused by the worker started for it, which exits; the second (MODE
    c), which waited for that worker, gets a new one that creates it."""
    s = server()
    s.start()
    c1, c2 = connect(s.path), connect(s.path)
    assert hello(c1)[0] == WELCOME and hello(c2)[0] == WELCOME
    c1.sendall(frame(ATTACH, [(T_SESSION, b"late"), (T_MODE, b"w")]))
    c2.sendall(frame(ATTACH, [(T_SESSION, b"late"), (T_MODE, b"c")]))
    t, f = read_frame(c1)
    assert t == ERROR and f_u64(f, T_ERRCODE) == 6, f  # NO_SESSION
    t, f = read_frame(c2)
    assert t == ATTACHED, f.get(T_MESSAGE)
    assert f_u64(f, T_CREATED) == 1


def test_idle_worker_exits_then_the_server(server):
    """--idle-exit passed on: a worker whose client left asks CTL_IDLE,
    is told yes and exits 0; then, with no worker and no client, the
    supervisor exits (exit-empty).  A new server's worker resumes the
    session, and no death is reported for the clean exit."""
    s = server("--idle-exit", "1", "--exit-empty", "1")
    p = s.start_fg()
    c, f = attach(s.path, "idle")
    wpid = f_u64(f, T_PID)
    run_code(c, "z = 'kept'")
    c.close()
    assert p.wait(WAIT) == 0
    log = s.fg_log()
    assert "worker pid %d of session 'idle' exited with status 0" % wpid \
        in log, log
    assert "no session and no client for 1 s" in log
    s.args = []
    s.start()
    c2, f2 = attach(s.path, "idle")
    assert f_u64(f2, T_PID) != wpid and T_SIGNAL not in f2
    assert f_u64(f2, T_CREATED) == 0
    assert get_repr(c2, "z") == "'kept'"


def test_bad_options_refused(backend, tmp_path):
    for args in (["--bogus"], ["--exit-empty", "soon"],
                 ["--sync", "sometimes"], ["--max-frame", "12"],
                 ["--idle-exit", "-1"], ["stray"]):
        r = subprocess.run([backend, "--server", "--db", str(tmp_path)] +
                           args, capture_output=True, text=True,
                           timeout=WAIT)
        assert r.returncode == 2, (args, r.stderr)
        assert "pyshelfd --server" in r.stderr
    r = subprocess.run([backend, "--server", "--help"], capture_output=True,
                       text=True, timeout=WAIT)
    assert r.returncode == 0 and "SERVER MODE" in r.stdout


def test_worker_options_passed_on(server):
    """--lease and --max-frame given to the supervisor reach its workers:
    the worker's ATTACHED carries them."""
    s = server("--lease", "7", "--max-frame", "1M")
    s.start()
    c = connect(s.path)
    t, f = hello(c)
    assert f_u64(f, T_MAX_FRAME) == 1 << 20  # WELCOME: the workers' limit
    c.close()
    c, f = attach(s.path, "opts")
    assert f_u64(f, 29) == 7000  # LEASE_MS
    assert f_u64(f, T_MAX_FRAME) == 1 << 20


def test_daemon_start_failure_is_exit_1_with_the_reason(server):
    """A failure after the fork (here: another program listens on the
    socket path) reaches the waiting parent: exit 1 and the reason; the
    other program's socket is left alone."""
    s = server()
    os.mkdir(s.dir, 0o700)
    path = os.path.join(s.dir, "other")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)
    try:
        s.args = ["--socket", path]
        r = subprocess.run(s.cmd(), env=s.env, capture_output=True,
                           text=True, timeout=WAIT)
        assert r.returncode == 1
        assert "another process listens there" in r.stderr, r.stderr
        assert accepts(path)
    finally:
        other.close()


def test_log_truncated_in_place_goes_on_at_its_start(server):
    """logrotate's copytruncate (OPERATIONS.md, "The log"): the server and
    its workers write the log through one O_APPEND description, so after
    the file is cut to 0 the next lines land at its new start, with no
    hole of NULs where the old ones were; and nothing needs a signal."""
    s = server("--idle-exit", "0.3")
    s.start()
    c, f = attach(s.path, "a")
    wpid = f_u64(f, T_PID)
    # a volatile entry: the idle worker stays, and says so in the log
    run_code(c, "import socket\nsk = socket.socket()")
    before = os.path.getsize(s.base() + ".log")
    assert before > 0
    with open(s.base() + ".log", "r+") as lf:       # copytruncate's cut
        lf.truncate(0)
    c.sendall(frame(DETACH, [], rid=20))
    t, _ = read_frame(c)
    assert t == OK
    c.close()
    wait_until(lambda: "idle, but not exiting" in s.log(),
               "the worker to write to the log")
    c2, f2 = attach(s.path, "b")
    wait_until(lambda: "started worker pid %d for session 'b'"
               % f_u64(f2, T_PID) in s.log(), "the supervisor's line")
    with open(s.base() + ".log", "rb") as lf:
        data = lf.read()
    assert not data.startswith(b"\0"), data[:64]
    assert b"\0" not in data
    # the lines from before the cut are gone; the later ones are all there
    assert b"started worker pid %d for session 'a'" % wpid not in data
    c2.close()
