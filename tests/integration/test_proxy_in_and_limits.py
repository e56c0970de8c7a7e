"""PROXY protocol in, graceful stop and per-client limits (SPEC §10.8),
through the real pen with real backends and a real HAProxy where installed."""

import json
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (Backend, TIMEOUT, connect, free_port, listening, read_line,
                      recv_all, wait_until)
from test_control import ME, ask

from pen.proxyproto import build_v1, build_v2

HAPROXY = shutil.which("haproxy")


@pytest.fixture
def front(pen):
    """start(*options, backend=None) -> (listen port, control port, backend)."""
    made = []

    def start(*options, banner=False):
        backend = Backend("B", banner=banner)
        made.append(backend)
        ctl, port = free_port(), free_port()
        pen("-u", ME, "-X", "-C", f"127.0.0.1:{ctl}", *options,
            f"127.0.0.1:{port}", backend.spec, port=port)
        assert wait_until(lambda: listening(ctl))
        return port, f"127.0.0.1:{ctl}", backend
    yield start
    for backend in made:
        backend.close()


def closed_by_pen(sock):
    """pen closed this connection without sending anything (a reset when it
    closed with the client's bytes unread)."""
    try:
        return recv_all(sock) == b""
    except ConnectionResetError:
        return True


def counters(ctl):
    return json.loads(ask(ctl, "status", "json"))["counters"]


@pytest.mark.parametrize("build", [build_v1, build_v2], ids=["v1", "v2"])
def test_the_carried_address_is_the_client_and_only_the_payload_goes_on(front, build):
    port, ctl, backend = front("-o", "accept_proxy")
    header = build(("203.0.113.7", 4242), ("127.0.0.1", port))
    with connect(port) as s:
        s.sendall(header[:5])             # split: the parser waits for the rest
        time.sleep(0.05)
        s.sendall(header[5:] + b"hello")
        assert s.recv(10) == b"hello"     # echoed: the backend got no header
    assert wait_until(lambda: backend.received == [b"hello"])
    assert wait_until(lambda: "203.0.113.7" in ask(ctl, "recent"))


def test_x_forwarded_for_names_the_carried_address(front):
    port, ctl, backend = front("-H", "-o", "accept_proxy")
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(port) as s:
        s.sendall(build_v1(("198.51.100.9", 1000), ("127.0.0.1", port)) + request)
        assert wait_until(lambda: backend.received and b"\r\n\r\n" in backend.received[0])
    assert b"X-Forwarded-For: 198.51.100.9\r\n" in backend.received[0]


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.0\r\n\r\n", b"PROXY TCP4 1.2.3.4 x\r\n",
                                  b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n"],
                         ids=["no-header", "bad-port", "bad-address"])
def test_a_malformed_header_closes_the_connection_and_forwards_nothing(front, junk):
    port, ctl, backend = front("-o", "accept_proxy")
    with connect(port) as s:
        s.sendall(junk + b"payload")
        assert closed_by_pen(s)
    assert counters(ctl)["proxy_refused"] == 1
    assert backend.received == []


def test_a_source_outside_accept_proxy_acl_is_refused(front):
    port, ctl, backend = front("-o", "accept_proxy", "-o", "acl 3 permit 127.0.0.2",
                               "-o", "accept_proxy_acl 3")
    header = build_v1(("203.0.113.7", 4242), ("127.0.0.1", port))
    with connect(port) as s:                         # from 127.0.0.1: refused
        s.sendall(header + b"x")
        assert closed_by_pen(s)
    with connect(port, source="127.0.0.2") as s:     # permitted
        s.sendall(header + b"y")
        assert s.recv(10) == b"y"
    assert counters(ctl)["proxy_refused"] == 1


def test_a_header_that_never_completes_is_bounded_by_the_connect_timeout(front):
    port, ctl, backend = front("-t", "1", "-o", "accept_proxy")
    with connect(port) as s:
        s.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        assert recv_all(s) == b""
        assert time.monotonic() - started < 3
    assert backend.received == []


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_haproxy_send_proxy_v2_to_our_accept_proxy(front, tmp_path):
    port, ctl, backend = front("-o", "accept_proxy")
    hport = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 5s
    timeout server 5s
listen front
    bind 127.0.0.1:{hport}
    server pen 127.0.0.1:{port} send-proxy-v2
""")
    proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: listening(hport))
        with connect(hport, source="127.0.0.3") as s:
            s.sendall(b"through haproxy")
            assert s.recv(100) == b"through haproxy"
        assert wait_until(lambda: "127.0.0.3" in ask(ctl, "recent"))
        assert backend.received == [b"through haproxy"]
    finally:
        proc.terminate()
        proc.wait(5)


# --- graceful stop --------------------------------------------------------------------------


def test_sigquit_stops_accepting_lets_the_open_connection_finish_then_exits(pen, tmp_path):
    backend = Backend("B")
    try:
        port = free_port()
        pidfile = tmp_path / "pen.pid"
        p = pen("-p", str(pidfile), f"127.0.0.1:{port}", backend.spec, port=port)
        assert wait_until(pidfile.exists)
        held = connect(port)
        assert read_line(held) == "B"
        p.proc.send_signal(signal.SIGQUIT)
        assert wait_until(lambda: not listening(port))
        with pytest.raises(OSError):
            connect(port, timeout=1.0).close()       # refused: the listener is closed
        held.sendall(b"still here")
        assert held.recv(100) == b"still here"       # the open one goes on
        assert p.proc.poll() is None
        held.close()
        assert p.proc.wait(TIMEOUT) == 0             # the last one ended: pen exits
        assert not pidfile.exists()
    finally:
        backend.close()


def test_shutdown_seconds_bounds_the_wait(front):
    port, ctl, backend = front(banner=True)
    held = connect(port)
    try:
        assert read_line(held) == "B"
        assert ask(ctl, "shutdown", "1") == ""
        started = time.monotonic()
        assert wait_until(lambda: not listening(port))
        assert wait_until(lambda: not listening(int(ctl.rsplit(":", 1)[1])), timeout=4)
        assert time.monotonic() - started < 4
    finally:
        held.close()


# --- per-client limits ----------------------------------------------------------------------


def test_client_conn_max_refuses_the_third_connection_of_one_address(front):
    port, ctl, backend = front("-o", "client_conn_max 2", banner=True)
    a, b = connect(port), connect(port)
    try:
        assert read_line(a) == "B" and read_line(b) == "B"
        with connect(port) as c:
            assert recv_all(c) == b""                 # closed: over the limit
        with connect(port, source="127.0.0.2") as d:  # another address is not
            assert read_line(d) == "B"
        a.close()
        assert wait_until(lambda: _serves(port))      # a slot came free
    finally:
        a.close()
        b.close()
    assert counters(ctl)["client_limited"] >= 1


def _serves(port):
    try:
        with connect(port, timeout=1.0) as s:
            return s.recv(10) == b"B\n"
    except OSError:
        return False


def test_client_rate_refuses_past_n_new_connections_per_window(front):
    port, ctl, backend = front("-o", "client_rate 3 60", banner=True)
    got = [_serves(port) for _ in range(5)]
    assert got == [True, True, True, False, False]
    with connect(port, source="127.0.0.2") as s:
        assert read_line(s) == "B"
    assert counters(ctl)["client_limited"] == 2


def test_client_timeout_closes_a_silent_client_and_keeps_a_talking_one(front):
    port, ctl, backend = front("-o", "client_timeout 1")
    silent = connect(port)
    try:
        with connect(port) as talker:
            talker.sendall(b"hi")
            assert talker.recv(10) == b"hi"
        started = time.monotonic()
        assert recv_all(silent) == b""
        assert 0.8 < time.monotonic() - started < 3
        assert backend.received == [b"hi"]            # the silent one never reached it
    finally:
        silent.close()
    assert counters(ctl)["client_timeouts"] == 1


def test_limits_survive_write(front, tmp_path):
    port, ctl, backend = front("-o", "client_conn_max 5", "-o", "client_rate 10 2",
                               "-o", "client_timeout 4", "-o", "accept_proxy",
                               "-o", "accept_proxy_acl 2")
    cfg = tmp_path / "w.cfg"
    assert ask(ctl, "write", str(cfg)) == ""
    text = cfg.read_text()
    for line in ("client_conn_max 5", "client_rate 10 2", "client_timeout 4",
                 "accept_proxy", "accept_proxy_acl 2"):
        assert line + "\n" in text
