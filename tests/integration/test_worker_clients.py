"""pyshelfd --worker: several clients on one session, detach while code
runs, call ids (replay, join, run once), CLOSE with two clients, ATTACH's
rules.  The test is the supervisor: worker_wire.py."""

import os
import pickle

import pytest

from worker_wire import (worker, ERR, RESULT, ERROR, OK, DETACH, CLOSE,
                         CALL_RESULT, ATTACHED, call_state, calls, wait_for)


def test_two_clients_share_the_session_with_their_own_replies(worker):
    w = worker()
    a, ma = w.attach()
    b, mb = w.attach()
    assert ma.type == ATTACHED and mb.type == ATTACHED
    assert ma.get("CREATED") == 1 and mb.get("CREATED") == 0
    assert ma.get("PID") == mb.get("PID") == w.pid
    assert ma.get("SESSION_ID") == mb.get("SESSION_ID")
    assert a.value("x = 41\nx") == 41
    assert b.value("x += 1\nx") == 42
    # a handle made on one connection is valid on the other
    _, r = a.run("d = {'k': 'v'}\nd", want=0)
    assert r.type == RESULT and r.get("HANDLE")
    assert b.value("def f(o):\n    return o['k'] + str(x)\n", func="f",
                   handles=[r.get("HANDLE")]) == "v42"
    # requests from both in flight: each gets its own output and reply
    ra = a.exec("print('from-a')\n'a'")
    rb = b.exec("print('from-b')\n'b'")
    out_a, rep_a = a.until_reply(ra)
    out_b, rep_b = b.until_reply(rb)
    assert out_a[1] == b"from-a\n" and out_b[1] == b"from-b\n"
    assert pickle.loads(rep_a.get("VALUE")) == "a"
    assert pickle.loads(rep_b.get("VALUE")) == "b"
    # SIGTERM: a clean shutdown, the values checkpointed
    w.proc.terminate()
    assert w.wait() == 0
    w2 = worker(mode="w")
    c, _ = w2.attach(mode="w")
    assert c.value("x") == 42


def test_detach_while_code_runs_then_replay_from_another_connection(
        worker, tmp_path):
    w = worker()
    a, _ = w.attach()
    flag = tmp_path / "go"
    cid = os.urandom(16)
    code = ("import os, time\n"
            "print('started')\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.02)\n"
            "print('finished')\n"
            "done = 'yes'\n"
            "6 * 7\n" % str(flag))
    a.exec(code, call_id=cid)
    assert wait_for(lambda: call_state(a, cid) == "running", "running")
    rid = a.send(DETACH)
    _, m = a.until_reply(rid)
    assert m.type == OK
    assert a.recv() is None        # the connection is gone
    a.close()
    flag.write_text("")
    b, _ = w.attach()
    assert wait_for(lambda: call_state(b, cid) == "done", "the call done")
    (entry,) = [c for c in calls(b) if c["id"] == cid.hex()]
    assert entry["summary"] == "import os, time"
    assert entry["ended"] is not None
    rid = b.send(CALL_RESULT, [("CALL_ID", cid)])
    out, m = b.until_reply(rid)
    assert m.type == RESULT and m.get("CALL_ID") == cid
    assert pickle.loads(m.get("VALUE")) == 42
    assert out[1] == b"started\nfinished\n"
    assert b.value("done") == "yes"
    # an unknown call id
    rid = b.send(CALL_RESULT, [("CALL_ID", os.urandom(16))])
    _, m = b.until_reply(rid)
    assert m.type == ERROR and m.get("ERRCODE") == ERR["UNKNOWN_CALL"]


def test_a_resent_exec_runs_once(worker):
    w = worker()
    a, _ = w.attach()
    cid = os.urandom(16)
    code = "n = globals().get('n', 0) + 1\nprint('ran', n)\nn"
    out1, m1 = a.run(code, call_id=cid)
    assert m1.type == RESULT and pickle.loads(m1.get("VALUE")) == 1
    # the re-send (say, after a reconnect) from another connection
    b, _ = w.attach()
    out2, m2 = b.run(code, call_id=cid)
    assert m2.type == RESULT and pickle.loads(m2.get("VALUE")) == 1
    assert out1[1] == out2[1] == b"ran 1\n"
    assert b.value("n") == 1       # the code ran once


def test_a_resend_while_the_call_runs_joins_it(worker, tmp_path):
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    flag = tmp_path / "go"
    cid = os.urandom(16)
    code = ("import os, time\n"
            "m = globals().get('m', 0) + 1\n"
            "print('one')\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.02)\n"
            "print('two')\n"
            "m\n" % str(flag))
    ra = a.exec(code, call_id=cid)
    assert wait_for(lambda: call_state(b, cid) == "running", "running")
    rb = b.exec(code, call_id=cid)
    flag.write_text("")
    out_a, rep_a = a.until_reply(ra)
    out_b, rep_b = b.until_reply(rb)
    assert rep_a.type == rep_b.type == RESULT
    assert pickle.loads(rep_a.get("VALUE")) == 1
    assert pickle.loads(rep_b.get("VALUE")) == 1
    assert out_a[1] == out_b[1] == b"one\ntwo\n"
    assert a.value("m") == 1


def test_call_result_without_wait_on_a_running_call(worker, tmp_path):
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    flag = tmp_path / "go"
    cid = os.urandom(16)
    ra = a.exec("import os, time\nwhile not os.path.exists(%r):\n"
                "    time.sleep(0.02)\n1\n" % str(flag), call_id=cid)
    assert wait_for(lambda: call_state(b, cid) == "running", "running")
    rid = b.send(CALL_RESULT, [("CALL_ID", cid), ("WAIT", 0)])
    _, m = b.until_reply(rid)
    assert m.type == ERROR and m.get("ERRCODE") == ERR["BAD_REQUEST"]
    assert "still running" in m.text("MESSAGE")
    # WAIT (the default) waits for it
    rid = b.send(CALL_RESULT, [("CALL_ID", cid)])
    flag.write_text("")
    _, m = b.until_reply(rid)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == 1
    _, m = a.until_reply(ra)
    assert m.type == RESULT


def test_a_connection_that_breaks_leaves_the_code_running(worker,
                                                          tmp_path):
    w = worker()
    a, _ = w.attach()
    flag = tmp_path / "go"
    cid = os.urandom(16)
    a.exec("import os, time\nwhile not os.path.exists(%r):\n"
           "    time.sleep(0.02)\nleft = 'ran on'\n'r'\n" % str(flag),
           call_id=cid)
    assert wait_for(lambda: call_state(a, cid) == "running", "running")
    a.close()                      # no DETACH: the client vanished
    b, _ = w.attach()
    flag.write_text("")
    rid = b.send(CALL_RESULT, [("CALL_ID", cid)])
    _, m = b.until_reply(rid)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == "r"
    assert b.value("left") == "ran on"


def test_close_with_two_clients(worker):
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    assert a.value("y = 1\ny") == 1
    rid = a.send(CLOSE)
    _, m = a.until_reply(rid)
    assert m.type == OK
    m = b.recv()
    assert m.type == ERROR and m.get("ERRCODE") == ERR["SESSION_DEAD"]
    assert w.wait() == 0
    # the session is gone: a new worker without --create cannot open it
    w2 = worker(mode="w")
    c, m = w2.attach()
    assert m.type == ERROR and m.get("ERRCODE") == ERR["SESSION_DEAD"]
    assert w2.wait() == 1


def test_attach_rules(worker):
    w = worker()
    a, m = w.attach(signal_=9, message="the previous worker was killed "
                    "by signal 9 (SIGKILL)", lease_ms=3600 * 1000)
    # what the supervisor knew of the previous worker is passed on
    assert m.type == ATTACHED and m.get("SIGNAL") == 9
    assert "SIGKILL" in m.text("MESSAGE")
    assert m.get("LEASE_MS") == 3600 * 1000
    # flag 'n' cannot replace a session live in its worker
    b, m = w.attach(mode="n")
    assert m.type == ERROR and m.get("ERRCODE") == ERR["SESSION_BUSY"]
    # 'w' attaches
    c, m = w.attach(mode="w")
    assert m.type == ATTACHED and m.get("CREATED") == 0
    assert c.value("1 + 1") == 2


def test_a_new_supervisor_takes_over_through_the_control_socket(worker,
                                                                tmp_path):
    import socket
    from worker_wire import CTL_READY, CTL_STATE, Worker
    path = str(tmp_path / "ctl.sock")
    w = worker(control_path=path)
    assert w.ctl_wait(CTL_READY) is not None
    a, _ = w.attach()
    assert a.value("q = 'still here'\nq") == "still here"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    w.ctl.close()                  # the supervisor crashed
    assert a.value("q") == "still here"   # the worker serves on
    # a new supervisor connects: it is told who the worker is, and hands
    # it clients
    new = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    new.connect(path)
    w.ctl = new
    ready = w.ctl_wait(CTL_READY)
    assert ready.get("PID") == w.pid and ready.text("SESSION") == "s"
    state = w.ctl_wait(CTL_STATE)
    assert '"clients": 1' in state.text("DATA")
    b, m = w.attach()
    assert m.type == ATTACHED
    assert b.value("q") == "still here"


def test_ping_and_interrupt_stay_on_their_connection(worker, tmp_path):
    from worker_wire import INTERRUPT, PING, PONG
    w = worker()
    a, _ = w.attach()
    b, _ = w.attach()
    flag = tmp_path / "go"
    # counts the KeyboardInterrupts it gets until the flag exists
    counting = ("import os, time\nhits = 0\n"
                "while not os.path.exists(%r):\n"
                "    try:\n"
                "        time.sleep(0.02)\n"
                "    except KeyboardInterrupt:\n"
                "        hits += 1\n"
                "hits\n" % str(flag))
    cid = os.urandom(16)
    ra = a.exec(counting, call_id=cid)
    assert wait_for(lambda: call_state(b, cid) == "running", "running")
    # another client's INTERRUPT does not reach a's code; PING is
    # answered at once while code runs, on the connection it came on
    b.send(INTERRUPT)
    rid = b.send(PING)
    m = b.recv()
    assert m.type == PONG and m.id == rid
    flag.write_text("")
    _, m = a.until_reply(ra)
    assert m.type == RESULT and pickle.loads(m.get("VALUE")) == 0
    # a's own INTERRUPT stops its call, whose RESULT goes to a only
    flag.unlink()
    cid = os.urandom(16)
    ra = a.exec("import os, time\nwhile not os.path.exists(%r):\n"
                "    time.sleep(0.02)\n" % str(flag), call_id=cid)
    assert wait_for(lambda: call_state(b, cid) == "running", "running")
    a.send(INTERRUPT, rid=ra)
    _, m = a.until_reply(ra)
    assert m.type == RESULT and m.get("EXC_TYPE") == b"KeyboardInterrupt"
    assert m.get("CALL_ID") == cid
    assert call_state(b, cid) == "done"
    rid = b.send(PING)             # nothing of a's call reached b
    m = b.recv()
    assert m.type == PONG and m.id == rid
