"""pen/health.py's probes over a real Reactor against real loopback
backends, with a stand-in for the server state machine (it records every
check_result); pen/hooks.py's runner over a real Reactor.  No pen process:
the tests through `python -m pen` are in test_health.py."""

import os
import socket
import threading
import time

import pytest

from pen import health
from pen.health import Checker, parse_check
from pen.hooks import Hooks
from pen.loop import Reactor
from pen.state import Settings

from conftest import Backend, UdpBackend, free_port
from test_health import HttpBackend

TIMEOUT = 5.0


class StandIn:
    """What Checker needs of a pen.servers.Server."""

    def __init__(self, index, host, port, kind=socket.AF_INET):
        self.index, self.host, self.port, self.family = index, host, port, kind
        self.sockaddr = (host, port)
        self.addr = host
        self.disabled = self.down = False
        self.extra = {}
        self.results = []

    def state(self, now):
        return "down" if self.down else "up"

    def check_result(self, now, ok, reason, rise, fall):
        self.results.append((ok, reason))


class FakeState:
    def __init__(self, servers, **settings):
        self.settings = Settings(**settings)
        self.servers = servers


def run_until(reactor, predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout

    def look():
        if predicate() or time.monotonic() > deadline:
            reactor.stop()
        else:
            reactor.call_later(0.02, look)
    reactor.call_later(0.02, look)
    reactor.run()
    return predicate()


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.close()


def probe_once(reactor, server, spec, timeout=2.0):
    state = FakeState([server], check=spec, connect_timeout=timeout, check_interval=0.2)
    checker = Checker(state, reactor)
    checker.start()
    try:
        assert run_until(reactor, lambda: server.results)
    finally:
        checker.close()
    return server.results[0]


def test_tcp_probe_passes_on_a_listener_and_fails_refused(reactor):
    backend = Backend("S0")
    try:
        assert probe_once(reactor, StandIn(0, "127.0.0.1", backend.port), health.TCP) == (True, "ok")
    finally:
        backend.close()
    closed = free_port()
    assert probe_once(reactor, StandIn(0, "127.0.0.1", closed), health.TCP) == (False, "refused")


def test_tcp_probe_to_ipv6(reactor):
    backend = Backend("S0", host="::1")
    try:
        server = StandIn(0, "::1", backend.port, socket.AF_INET6)
        server.sockaddr = ("::1", backend.port, 0, 0)
        assert probe_once(reactor, server, health.TCP) == (True, "ok")
    finally:
        backend.close()


def test_a_silent_server_times_out_within_the_connect_timeout(reactor):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)            # accepts the handshake, never answers
    try:
        server = StandIn(0, "127.0.0.1", srv.getsockname()[1])
        started = time.monotonic()
        result = probe_once(reactor, server, parse_check(["expect", "220"]), timeout=1)
        took = time.monotonic() - started
        assert result == (False, "timeout")
        assert 0.8 < took < 2.5
    finally:
        srv.close()


def test_http_probe_sends_get_with_host_and_judges_the_code(reactor):
    backend = HttpBackend("H")
    backend.health = 204
    try:
        server = StandIn(0, "127.0.0.1", 1)
        server.extra["check_port"] = backend.port          # server N check_port P
        assert probe_once(reactor, server, parse_check(["http", "/health"])) == (True, "ok")
        request = backend.requests[0]
        assert request.startswith(b"GET /health HTTP/1.0\r\n")
        assert b"\r\nHost: 127.0.0.1:%d\r\n" % backend.port in request
        backend.health = 500
        server.results.clear()
        assert probe_once(reactor, server, parse_check(["http", "/health"])) == (
            False, "http status 500")
        server.results.clear()
        assert probe_once(reactor, server, parse_check(["http", "/health", "500"])) == (True, "ok")
    finally:
        backend.close()


def test_expect_probe_with_send_against_a_redis_style_backend(reactor):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(TIMEOUT)
    seen = []

    def serve():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = conn.recv(100)
                seen.append(data)
                conn.sendall(b"+PONG\r\n" if data == b"PING\r\n" else b"-ERR\r\n")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        server = StandIn(0, "127.0.0.1", srv.getsockname()[1])
        good = parse_check(["expect", "+PONG", "send", "PING\\r\\n"])
        assert probe_once(reactor, server, good) == (True, "ok")
        server.results.clear()
        bad = parse_check(["expect", "+PONG", "send", "QUIT\\r\\n"])
        assert probe_once(reactor, server, bad) == (False, "closed without the expected reply")
        assert seen == [b"PING\r\n", b"QUIT\r\n"]
    finally:
        srv.close()
        thread.join(2)


def test_udp_probe_any_reply_or_the_expected_one_and_refused(reactor):
    backend = UdpBackend("U0")
    try:
        server = StandIn(0, "127.0.0.1", backend.port)
        assert probe_once(reactor, server, parse_check(["udp", "ping"])) == (True, "ok")
        server.results.clear()
        assert probe_once(reactor, server, parse_check(["udp", "ping", "expect", "U0:ping"])) == (
            True, "ok")
        server.results.clear()
        assert probe_once(reactor, server, parse_check(["udp", "ping", "expect", "nope"])) == (
            False, "unexpected reply")
    finally:
        backend.close()
    server = StandIn(0, "127.0.0.1", free_port(socket.SOCK_DGRAM))
    assert probe_once(reactor, server, parse_check(["udp", "ping"])) == (False, "refused")


def test_one_probe_in_flight_per_server_and_disabled_servers_are_skipped(reactor):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)            # never answers: every expect probe hangs to its timeout
    try:
        hung = StandIn(0, "127.0.0.1", srv.getsockname()[1])
        off = StandIn(1, "127.0.0.1", srv.getsockname()[1])
        off.disabled = True
        state = FakeState([hung, off], check=parse_check(["expect", "x"]),
                          connect_timeout=1, check_interval=0.1)
        checker = Checker(state, reactor)
        checker.start()
        run_until(reactor, lambda: hung.results, timeout=3)
        checker.close()
        # ~10 periods passed while one probe hung for 1 s: one probe, one result
        assert hung.results == [(False, "timeout")]
        assert checker.probes <= 2
        assert off.results == []
    finally:
        srv.close()


def test_jittered_probes_of_many_servers_spread_over_the_interval(reactor):
    backend = Backend("S0", banner=False)
    try:
        servers = [StandIn(i, "127.0.0.1", backend.port) for i in range(20)]
        stamps = []
        for s in servers:
            s.check_result = (lambda now, ok, reason, rise, fall, s=s:
                              (s.results.append((ok, reason)), stamps.append(now)))
        state = FakeState(servers, check=health.TCP, check_interval=1)
        checker = Checker(state, reactor)
        checker.start()
        run_until(reactor, lambda: all(s.results for s in servers), timeout=4)
        checker.close()
        assert all(s.results and s.results[0] == (True, "ok") for s in servers)
        first = sorted(stamps)[:20]
        assert first[-1] - first[0] > 0.3            # not all in the same millisecond
    finally:
        backend.close()


def test_turning_checks_on_at_run_time_starts_probing(reactor):
    backend = Backend("S0", banner=False)
    try:
        server = StandIn(0, "127.0.0.1", backend.port)
        state = FakeState([server], check=health.TCP, check_interval=0)
        checker = Checker(state, reactor)
        checker.start()
        run_until(reactor, lambda: False, timeout=0.7)
        assert server.results == []
        state.settings.check_interval = 0.2            # `check_interval 0.2` from penctl
        assert run_until(reactor, lambda: len(server.results) >= 2, timeout=3)
        checker.close()
    finally:
        backend.close()


# --- hooks over a real Reactor ----------------------------------------------------


class HookState:
    def __init__(self, **settings):
        self.settings = Settings(**settings)


def test_hook_runs_with_the_facts_in_its_environment_only(reactor, tmp_path):
    out = tmp_path / "env"
    marker = tmp_path / "x"
    state = HookState(on_failure=f'env | grep ^PEN_ | sort > {out}; echo said so')
    runner = Hooks(state, reactor)
    server = StandIn(3, "127.0.0.1", 8080)
    runner.on_event("failure", server, "refused", f"127.0.0.1;touch {marker}")
    assert run_until(reactor, lambda: not runner.running)
    lines = out.read_text().splitlines()
    assert lines == ["PEN_CLIENT_ADDR=127.0.0.1;touch " + str(marker), "PEN_EVENT=failure",
                     "PEN_REASON=refused", "PEN_SERVER=3", "PEN_SERVER_ADDR=127.0.0.1",
                     "PEN_SERVER_PORT=8080"]
    assert not marker.exists()
    assert runner.started == 1 and runner.dropped == 0


def test_hooks_max_drops_the_rest_and_timeout_kills_the_group(reactor, tmp_path):
    pidfile = tmp_path / "pids"
    state = HookState(on_down=f"sleep 30 & echo $! >> {pidfile}; wait",
                      hooks_max=2, hook_timeout=0.5)
    runner = Hooks(state, reactor)
    server = StandIn(0, "127.0.0.1", 1)
    started = time.monotonic()
    for _ in range(5):
        runner.on_event("down", server, "check failed")
    assert time.monotonic() - started < 0.5          # spawning never waits
    assert runner.started == 2 and runner.dropped == 3
    assert run_until(reactor, lambda: not runner.running, timeout=4)
    assert runner.killed == 2
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    for pid in pids:                                 # the background sleeps died too
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert reactor.children == {}


def test_no_zombies_after_many_short_hooks(reactor):
    state = HookState(on_success="exit 3", hooks_max=50)
    runner = Hooks(state, reactor)
    server = StandIn(0, "127.0.0.1", 1)
    for _ in range(30):
        runner.on_event("success", server)
    assert run_until(reactor, lambda: not runner.running)
    assert reactor.children == {}
    me = os.getpid()
    zombies = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == me:
                zombies.append(pid)
    assert zombies == []


def test_hook_output_goes_to_the_log_bounded(reactor, caplog):
    state = HookState(on_up="echo hello; echo oops >&2; head -c 100000 /dev/zero | tr '\\0' a")
    runner = Hooks(state, reactor)
    with caplog.at_level("WARNING", logger="pen"):
        runner.on_event("up", StandIn(1, "127.0.0.1", 1))
        assert run_until(reactor, lambda: not runner.running)
    text = caplog.text
    assert "hook on_up server 1" in text and "hello" in text and "oops" in text
    assert "[output truncated]" in text
    assert len(text) < 20000


def test_tcp_probe_to_a_unix_socket_backend(reactor, tmp_path):
    path = str(tmp_path / "backend.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    try:
        server = StandIn(0, path, 1, socket.AF_UNIX)
        server.sockaddr = path
        assert probe_once(reactor, server, health.TCP) == (True, "ok")
    finally:
        srv.close()
    server.results.clear()
    os.unlink(path)
    assert probe_once(reactor, server, health.TCP)[0] is False
