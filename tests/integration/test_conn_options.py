"""Per-connection settings the relay enforces: idle_timeout, keepalive,
tcp_fastclose, dummy."""

import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import TIMEOUT, Backend, connect, free_port, raw_listener, read_line, recv_all


def test_idle_timeout_closes_quiet_connections_only(pen, backends):
    (a,) = backends(1)
    port = free_port()
    pen("-o", "idle_timeout 1", f"127.0.0.1:{port}", a.spec, port=port)
    quiet = connect(port)
    busy = connect(port)
    assert read_line(quiet) == "S0" and read_line(busy) == "S0"
    started = time.monotonic()
    closed_at = None
    while time.monotonic() - started < 6:
        busy.sendall(b"x")              # keeps moving bytes
        assert busy.recv(1) == b"x"
        quiet.settimeout(0.2)
        try:
            if quiet.recv(1) == b"":
                closed_at = time.monotonic() - started
                break
        except socket.timeout:
            pass
    assert closed_at is not None and 0.9 < closed_at < 4, closed_at
    busy.sendall(b"still here")
    assert busy.recv(100) == b"still here"
    quiet.close()
    busy.close()


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2)")
def test_keepalive_sets_so_keepalive_on_server_sockets(pen, backends):
    (a,) = backends(1)
    port = free_port()
    pen("-o", "keepalive", f"127.0.0.1:{port}", a.spec, port=port)
    with connect(port) as c:
        assert read_line(c) == "S0"
        out = subprocess.run(["ss", "-tnoH", "state", "established", f"dport = :{a.port}"],
                             capture_output=True, text=True, timeout=TIMEOUT).stdout
        assert "keepalive" in out, out


def _half_closing_backend():
    """Says bye, closes its write side, then records whatever still comes."""
    srv, spec = raw_listener()
    got = []

    def run():
        conn, _ = srv.accept()
        conn.settimeout(TIMEOUT)
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        try:
            got.append(recv_all(conn))
        except OSError:
            got.append(b"")
        conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, spec, t, got


@pytest.mark.parametrize("mode,delivered", [("off", True), ("up", False), ("down", True)])
def test_tcp_fastclose(pen, mode, delivered):
    srv, spec, thread, got = _half_closing_backend()
    port = free_port()
    pen("-o", f"tcp_fastclose {mode}", f"127.0.0.1:{port}", spec, port=port)
    with connect(port) as c:
        assert recv_all(c) == b"bye"     # the server's EOF reached us
        try:
            c.sendall(b"late words")
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass                          # pen already closed us: fine
    thread.join(TIMEOUT)
    srv.close()
    assert (got == [b"late words"]) == delivered, got


def test_dummy_answers_without_a_backend(pen):
    port = free_port()
    pen("-o", "dummy", f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}", port=port)
    with connect(port) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = recv_all(c)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"Ulric was here.")
