"""`idlers N`: connections to each server opened before the clients come,
with real pen processes and real backends that count what they accept.

pen refuses a control port to root unless -u is given, so every pen here
gets `-u <current user>`.
"""

import os
import pwd
import resource
import socket
import struct
import threading
import time

import pytest

from conftest import (TIMEOUT, ThreadedServer, connect, ctl, free_port,
                      read_line, wait_until)
from pen.idlers import usable

ME = pwd.getpwuid(os.getuid()).pw_name


class Counting(ThreadedServer):
    """An echo backend (no banner) that counts the connections it accepted
    (len(conns)) and those pen closed (`eofs`).  With `idle_close`, it
    closes a connection that sent nothing for that many seconds, as servers
    with a header timeout do; with `at_once`, every connection as soon as
    it is accepted (a server that fails its idlers)."""

    def __init__(self, idle_close=None, at_once=False):
        self.idle_close, self.at_once = idle_close, at_once
        self.eofs = self.idle_closed = 0
        self.lock = threading.Lock()
        super().__init__()

    def handle(self, conn):
        try:
            if self.at_once:
                return
            conn.settimeout(self.idle_close or 30)
            try:
                data = conn.recv(65536)
            except socket.timeout:
                with self.lock:
                    self.idle_closed += 1
                return
            conn.settimeout(30)
            while data:
                conn.sendall(data)
                data = conn.recv(65536)
            with self.lock:
                self.eofs += 1
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def accepted(self):
        return len(self.conns)


def ask(port, line):
    return ctl(port, line).strip()


@pytest.fixture
def lb(pen):
    """lb(specs, *options) -> (listen port, control port) of a pen in
    front of the backend specs."""
    def start(specs, *options, **kw):
        port, ctl = free_port(), free_port()
        pen("-u", ME, "-C", f"127.0.0.1:{ctl}", *options, f"127.0.0.1:{port}", *specs,
            port=port, **kw)
        return port, ctl
    return start


@pytest.fixture
def counting():
    made = []

    def make(n=1, **kw):
        new = [Counting(**kw) for _ in range(n)]
        made.extend(new)
        return new
    yield make
    for b in made:
        b.close()


def echo(port, data=b"ping\n"):
    """One client: send, read the echo back, close."""
    with connect(port) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_idlers_are_opened_to_every_server(lb, counting):
    a, b = counting(2)
    port, ctl = lb([a.spec, b.spec], "-o", "idlers 3")
    assert wait_until(lambda: a.accepted == 3 and b.accepted == 3), (a.accepted, b.accepted)
    assert wait_until(lambda: ask(ctl, "idlers") == "Idlers: 6/3")
    time.sleep(0.6)          # a sweep later: no more than asked for
    assert (a.accepted, b.accepted) == (3, 3)


def test_a_client_is_served_over_an_idler_which_is_then_replaced(lb, backends):
    (s0,) = backends(1)              # speaks first: a banner, then echo
    port, ctl = lb([s0.spec], "-o", "idlers 2")
    assert wait_until(lambda: len(s0.peers) == 2)
    with connect(port) as c:
        assert read_line(c) == "S0"              # the greeting waited in the idler
        c.sendall(b"over-an-idler\n")
        assert read_line(c) == "over-an-idler"
    # The bytes went over one of the two connections opened before the
    # client came (the third, its replacement, is opened as it is served).
    assert wait_until(lambda: any(b"over-an-idler" in r for r in s0.received[:2]))
    assert wait_until(lambda: len(s0.peers) == 3)         # its replacement
    assert wait_until(lambda: ask(ctl, "idlers") == "Idlers: 2/2")


def test_pen_never_hands_out_an_idler_the_server_closed(lb, counting):
    (srv,) = counting(idle_close=0.1)
    port, ctl = lb([srv.spec], "-o", "idlers 2")
    assert wait_until(lambda: srv.accepted >= 2)
    failed = 0
    for i in range(30):
        time.sleep((i % 5) * 0.04)              # 0 to 0.16 s: some idlers expire first
        if echo(port, b"req %d\n" % i) != b"req %d\n" % i:
            failed += 1
    assert failed == 0
    assert srv.idle_closed >= 2          # the server did close idle ones under pen
    assert wait_until(lambda: srv.eofs == 30)


def test_leaving_up_closes_the_idlers_and_coming_back_reopens_them(lb, counting):
    a, b = counting(2)
    port, ctl = lb([a.spec, b.spec], "-o", "idlers 2")
    assert wait_until(lambda: a.accepted == 2 and b.accepted == 2)
    ask(ctl, "server 0 disable")
    assert wait_until(lambda: a.eofs == 2)
    ask(ctl, "server 1 blacklist 60")
    assert wait_until(lambda: b.eofs == 2)
    assert wait_until(lambda: ask(ctl, "idlers") == "Idlers: 0/2")
    time.sleep(0.6)
    assert (a.accepted, b.accepted) == (2, 2)           # none to a server out
    ask(ctl, "server 0 enable")
    ask(ctl, "server 1 blacklist 0")
    assert wait_until(lambda: a.accepted == 4 and b.accepted == 4)
    ask(ctl, "server 1 drain")
    assert wait_until(lambda: b.eofs == 4)


def test_idlers_0_closes_them_all(lb, counting):
    a, b = counting(2)
    port, ctl = lb([a.spec, b.spec], "-o", "idlers 2")
    assert wait_until(lambda: a.accepted == 2 and b.accepted == 2)
    assert ask(ctl, "idlers 0") == "Idlers: 4/0"      # pen's reply: before it applies
    assert wait_until(lambda: a.eofs == 2 and b.eofs == 2)
    assert ask(ctl, "idlers") == "Idlers: 0/0"
    assert echo(port) == b"ping\n"                     # clients connect as before
    assert wait_until(lambda: a.accepted + b.accepted == 5)


def test_maxc_leaves_idlers_only_the_room_the_clients_leave(lb, counting):
    (srv,) = counting()
    port, ctl = lb([f"{srv.spec}:2"], "-o", "idlers 4")      # maxc 2
    assert wait_until(lambda: srv.accepted == 2)
    time.sleep(0.6)
    assert srv.accepted == 2
    with connect(port) as c:                  # takes one; the room is now 1
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        time.sleep(0.6)
        assert srv.accepted == 2
        assert ask(ctl, "idlers") == "Idlers: 1/4"


def test_a_server_that_fails_its_idlers_is_not_hammered(lb, counting):
    (srv,) = counting(at_once=True)        # accepts, closes at once
    port, ctl = lb([srv.spec], "-o", "idlers 2")
    assert wait_until(lambda: srv.accepted >= 2)
    time.sleep(2)
    # back-off from 0.25 s doubling: a few rounds of two, not a busy loop
    assert srv.accepted <= 12, srv.accepted


def test_write_keeps_idlers_and_a_pen_started_from_it_opens_them(lb, counting, pen, tmp_path):
    (srv,) = counting()
    port, ctl = lb([srv.spec])
    ask(ctl, "idlers 3")
    assert wait_until(lambda: srv.accepted == 3)
    cfg = tmp_path / "pen.cfg"
    assert ask(ctl, f"write {cfg}") == ""
    assert "idlers 3" in cfg.read_text().splitlines()
    port2 = free_port()
    pen("-F", str(cfg), f"127.0.0.1:{port2}", port=port2)    # its `server 0` is srv
    assert wait_until(lambda: srv.accepted == 6)


def test_usable_sees_a_close_behind_unread_data():
    """The check before an idler is handed out: a FIN queued behind a
    greeting (which MSG_PEEK would not see) or a reset make it unusable."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(TIMEOUT)
    try:
        for how in ("open", "greeting", "greeting+fin", "fin", "reset"):
            c = socket.create_connection(srv.getsockname(), TIMEOUT)
            peer, _ = srv.accept()
            if "greeting" in how:
                peer.sendall(b"220 hello\r\n")
            if how == "reset":
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if "fin" in how or how == "reset":
                peer.close()
            assert wait_until(lambda: usable(c, socket.AF_INET) == (how in ("open", "greeting")),
                              timeout=1), how
            c.close()
            peer.close()
    finally:
        srv.close()


def test_a_dead_server_is_backed_off_and_found_again(lb, counting):
    """A refused connect blacklists the server, as any connect failure."""
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{spare.getsockname()[1]}"      # bound, not listening: refused
    (live,) = counting()
    port, ctl = lb([dead, live.spec], "-o", "idlers 2", "-b", "1")
    assert wait_until(lambda: live.accepted == 2)
    assert ask(ctl, "idlers") == "Idlers: 2/2"        # none to the dead one
    spare.listen(8)
    spare.settimeout(TIMEOUT)
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 2 and time.monotonic() < deadline:
        try:
            got.append(spare.accept()[0])
        except socket.timeout:
            break
    assert len(got) == 2                     # once out of its blacklist: idlers again
    for s in got:
        s.close()
    spare.close()


FD_LIMIT = 64


def _few_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_out_of_descriptors_the_idlers_give_way_to_clients(lb, counting):
    (srv,) = counting()
    port, ctl = lb([srv.spec], "-o", "idlers 200", preexec_fn=_few_fds)
    assert wait_until(lambda: srv.accepted > 10)
    assert wait_until(lambda: ask(ctl, "idlers") == "Idlers: 0/200")   # shed, resting
    assert srv.accepted < FD_LIMIT
    assert [echo(port, b"%d" % i) for i in range(5)] == [b"%d" % i for i in range(5)]
