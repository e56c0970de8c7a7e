"""Issue 13's small gaps against pen 0.34.1: Unix-socket backends, the
`::1:PORT` listen form, `recent`'s sx/rx, the -l host:port network log line,
and a burst of control connections on a Unix control socket."""

import errno
import os
import pwd
import socket
import subprocess
import sys
import threading

import pytest

from conftest import (REFERENCE_PEN, TIMEOUT, Backend, banner, connect, free_port, listening,
                      read_line, recv_all, wait_until)

ME = pwd.getpwuid(os.getuid()).pw_name


def ask(ctl, *words):
    proc = subprocess.run([sys.executable, "-m", "penctl", str(ctl), *words],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class UnixBackend(Backend):
    """conftest's echo backend (banner first) on a Unix-domain stream socket."""

    def __init__(self, name, path):
        self.name, self.path, self.banner, self.echo = name, path, True, True
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.received, self.peers, self.conns = [], [], []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()


@pytest.fixture
def unix_backends(tmp_path):
    made = []

    def make(n):
        new = [UnixBackend(f"U{i}", str(tmp_path / f"u{i}.sock")) for i in range(n)]
        made.extend(new)
        return new
    yield make
    for b in made:
        b.close()


# --- gap 1: a backend containing '/' is a Unix-domain socket -------------------------------

@pytest.mark.parametrize("options", [[], ["-o", "tcp_nodelay"]])
def test_unix_socket_backends_relay(pen, unix_backends, options):
    u0, u1 = unix_backends(2)
    port = free_port()
    pen("-r", *options, f"127.0.0.1:{port}", u0.path, f"{u1.path}:80:5", port=port)
    seen = {banner(port) for _ in range(4)}
    assert seen == {"U0", "U1"}
    with connect(port) as s:
        assert read_line(s) in ("U0", "U1")
        s.sendall(b"hello over a Unix socket")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"hello over a Unix socket"


def _servers_reply(pen, unix_paths, reference):
    ctl, port = free_port(), free_port()
    p = pen("-u", ME, "-C", f"127.0.0.1:{ctl}", f"127.0.0.1:{port}", *unix_paths,
            port=port, reference=reference)
    assert wait_until(lambda: listening(ctl))
    try:
        return ask(f"127.0.0.1:{ctl}", "servers")
    finally:
        p.stop()


def test_unix_socket_backends_listed_as_pen_does(pen, tmp_path):
    paths = [str(tmp_path / "a.sock"), str(tmp_path / "b.sock") + ":80:5:6:7"]
    ours = _servers_reply(pen, paths, reference=False)
    assert ours.splitlines()[0] == (f"0 addr {tmp_path / 'a.sock'} port 1 conn 0 max 0 "
                                    "hard 0 weight 0 prio 0 sx 0 rx 0")
    if not os.path.exists(REFERENCE_PEN):
        pytest.skip("reference pen not installed")
    assert ours == _servers_reply(pen, paths, reference=True)


def test_unix_backend_missing_socket_fails_over(pen, unix_backends, tmp_path):
    (u0,) = unix_backends(1)
    port = free_port()
    pen(f"127.0.0.1:{port}", str(tmp_path / "absent.sock"), u0.path, port=port)
    assert {banner(port) for _ in range(3)} == {"U0"}


# --- gap 2: `::1:PORT` -----------------------------------------------------------------------

def _have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no ::1")
def test_listen_on_bare_ipv6_address_with_last_colon_port(pen, backends):
    (a,) = backends(1)
    port = free_port(host="::1")
    pen(f"::1:{port}", a.spec, port=port)
    assert banner(port, host="::1") == "S0"


def test_listen_on_bad_bare_ipv6_is_one_clear_line(pen):
    proc = subprocess.run([sys.executable, "-m", "pen", "-f", "fe::zz:8080", "127.0.0.1:80"],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 1
    assert "is not an IPv6 address" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- gap 5: recent's sx is what went to the client, rx what came from it ----------------

def _recent_after_one_conn(pen, backends, reference):
    (a,) = backends(1)                 # sends "S<n>\n", then echoes
    ctl, port = free_port(), free_port()
    pen("-u", ME, "-C", f"127.0.0.1:{ctl}", f"127.0.0.1:{port}", a.spec,
        port=port, reference=reference)
    assert wait_until(lambda: listening(ctl))
    with connect(port) as s:
        banner_line = read_line(s)
        s.sendall(b"x" * 10)
        echoed = b""
        while len(echoed) < 10:       # no half-close: pen 0.34.1 closes at once
            chunk = s.recv(64)
            assert chunk, "connection closed early"
            echoed += chunk
    assert echoed == b"x" * 10
    to_client = len(banner_line) + 1 + 10

    def settled():
        lines = [ln for ln in ask(f"127.0.0.1:{ctl}", "recent").splitlines() if ln.startswith("127.0.0.1 ")]
        return lines if lines and " rx 0" not in lines[0] else None
    lines = wait_until(settled)
    assert lines, ask(f"127.0.0.1:{ctl}", "recent")
    return lines[0], to_client


def test_recent_sx_is_bytes_sent_to_client(pen, backends):
    line, to_client = _recent_after_one_conn(pen, backends, reference=False)
    assert line == f"127.0.0.1 connects 1 sx {to_client} rx 10"


@pytest.mark.skipif(not os.path.exists(REFERENCE_PEN), reason="reference pen not installed")
def test_recent_matches_reference(pen, backends):
    line, to_client = _recent_after_one_conn(pen, backends, reference=True)
    assert line == f"127.0.0.1 connects 1 sx {to_client} rx 10"


# --- gap 6: -l host:port sends `+ CLIENT SERVER REQUEST` ---------------------------------

def _netlog_datagram(pen, backends, reference):
    (a,) = backends(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(TIMEOUT)
    try:
        port = free_port()
        pen("-l", f"127.0.0.1:{udp.getsockname()[1]}", f"127.0.0.1:{port}", a.spec,
            port=port, reference=reference)
        with connect(port) as s:
            read_line(s)
            s.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            recv_all(s)
        data, _ = udp.recvfrom(2048)
        return data
    finally:
        udp.close()


def test_network_log_is_pens_plus_line(pen, backends):
    assert _netlog_datagram(pen, backends, False) == \
        b"+ 127.0.0.1 127.0.0.1 GET /index.html HTTP/1.0\n"


@pytest.mark.skipif(not os.path.exists(REFERENCE_PEN), reason="reference pen not installed")
def test_network_log_matches_reference(pen, backends):
    assert _netlog_datagram(pen, backends, True) == \
        b"+ 127.0.0.1 127.0.0.1 GET /index.html HTTP/1.0\n"


# --- gap 7: 500 control connections at once -----------------------------------------------

def test_control_burst_of_500_connects_never_gets_eagain(pen, backends, tmp_path):
    (a,) = backends(1)
    ctl = str(tmp_path / "ctl.sock")
    port = free_port()
    pen("-u", ME, "-C", ctl, f"127.0.0.1:{port}", a.spec, port=port)
    assert wait_until(lambda: os.path.exists(ctl))
    socks, refused = [], 0
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            err = s.connect_ex(ctl)
            if err == errno.EAGAIN:
                refused += 1
            else:
                assert err == 0, os.strerror(err)
    finally:
        for s in socks:
            s.close()
    assert refused == 0
    assert "127.0.0.1" in ask(ctl, "servers")
