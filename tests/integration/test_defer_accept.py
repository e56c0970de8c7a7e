"""defer_accept SECONDS (TCP_DEFER_ACCEPT on the client listener): a client
that has sent nothing is not accepted, so no server connection is made for
it; once it speaks it is relayed as usual.  Set with -o and at run time,
written by `write`, refused when malformed."""

import os
import pwd
import time

from conftest import connect, ctl as ask, free_port, listening, read_line, wait_until

ME = pwd.getpwuid(os.getuid()).pw_name
QUIET = 0.6          # seconds a silent client is watched for a server connect


def start(pen, backends, *options):
    (a,) = backends(1)
    ctl, port = free_port(), free_port()
    pen("-u", ME, "-C", f"127.0.0.1:{ctl}", *options, f"127.0.0.1:{port}", a.spec, port=port)
    assert wait_until(lambda: listening(ctl))
    return a, ctl, port


def stays_unconnected(backend, count):
    """The backend has seen `count` connections, and still only that many
    after QUIET seconds (a bounded watch)."""
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        if len(backend.peers) != count:
            return False
        time.sleep(0.05)
    return len(backend.peers) == count


def test_silent_client_is_not_relayed_until_it_speaks(pen, backends):
    a, ctl, port = start(pen, backends, "-o", "defer_accept 5")
    assert ask(ctl, "defer_accept") == "5\n"
    with connect(port) as c:
        assert stays_unconnected(a, 0)          # handshake done, never accepted
        c.sendall(b"hello")
        assert read_line(c) == "S0"             # now accepted and relayed
        assert c.recv(5) == b"hello"
    assert len(a.peers) == 1


def test_turned_off_at_run_time(pen, backends):
    a, ctl, port = start(pen, backends, "-o", "defer_accept 5")
    assert ask(ctl, "defer_accept 0") == "0\n"
    with connect(port) as c:
        assert wait_until(lambda: len(a.peers) == 1)   # relayed before any byte
        assert read_line(c) == "S0"
    assert ask(ctl, "defer_accept 3") == "3\n"
    with connect(port) as c:
        assert stays_unconnected(a, 1)
        c.sendall(b"x")
        assert read_line(c) == "S0"


def test_bad_values_are_refused_and_change_nothing(pen, backends):
    a, ctl, port = start(pen, backends, "-o", "defer_accept 2")
    for bad in ("defer_accept -1", "defer_accept soon", "defer_accept 1 2",
                "defer_accept 3601"):
        reply = ask(ctl, bad)
        assert reply.count("\n") == 1 and "defer_accept" in reply, (bad, reply)
    assert ask(ctl, "defer_accept") == "2\n"


def test_write_round_trip(pen, backends, tmp_path):
    os.chmod(tmp_path, 0o777)
    a, ctl, port = start(pen, backends, "-o", "defer_accept 4")
    cfg = tmp_path / "pen.cfg"
    assert ask(ctl, f"write {cfg}") == ""
    assert "defer_accept 4" in cfg.read_text().splitlines()
    b, ctl2, port2 = start(pen, backends)
    assert ask(ctl2, "defer_accept") == "0\n"
    assert "defer_accept" not in ask(ctl2, f"write {tmp_path / 'plain.cfg'}")
    assert "defer_accept" not in (tmp_path / "plain.cfg").read_text()
    assert ask(ctl2, f"include {cfg}") == ""
    assert ask(ctl2, "defer_accept") == "4\n"
