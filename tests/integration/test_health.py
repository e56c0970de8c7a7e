"""Active health checks and hooks through the real `pen` (SPEC §10.2):
revival by `check tcp`, `check http /health` down/up with traffic flowing,
`check expect` against a redis-style backend, `check udp` in -U mode, an
operator's blacklist and disable surviving probes, hooks' environment,
hooks_max, hook_timeout, no zombies."""

import json
import os
import pwd
import socket
import threading
import time

from conftest import (TIMEOUT, Backend, UdpBackend, banner, connect, ctl, free_port,
                      listening, read_line, wait_until)

ME = pwd.getpwuid(os.getuid()).pw_name


def servers_json(port):
    return json.loads(ctl(port, "status json"))["servers"]


def start(pen, backends_specs, *options, udp=False):
    """pen -f -u ME -C ctl <options> listen backends; (pen, listen port, ctl port)."""
    ctl_port = free_port()
    port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    args = ["-u", ME, "-C", f"127.0.0.1:{ctl_port}"] + list(options)
    if udp:
        args.insert(0, "-U")
    p = pen(*args, f"127.0.0.1:{port}", *backends_specs, port=port, udp=udp)
    assert wait_until(lambda: listening(ctl_port))
    return p, port, ctl_port


def children_of(pid):
    """(pid, state) of every process whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


class HttpBackend:
    """HTTP/1.0 backend: `/health` answers `self.health`, anything else 200
    with the backend's name."""

    def __init__(self, name, port=0):
        self.name = name.encode()
        self.health = 200
        self.requests = []           # every /health request, as received
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.spec = f"127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                if data.startswith(b"GET /health "):
                    self.requests.append(data)
                    code, body = self.health, b"health"
                else:
                    code, body = 200, self.name
                conn.sendall(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n%s"
                             % (code, len(body), body))
            except OSError:
                pass

    def close(self):
        self.stopped.set()
        self.sock.close()
        self.thread.join(2)


def http_get(port):
    """One request through pen: the body, or None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.0 200"):
        return None
    return data.split(b"\r\n\r\n", 1)[1].decode()


def test_check_tcp_revives_a_restarted_backend_long_before_b_runs_out(pen, backends):
    a, b = backends(2)
    p, port, c = start(pen, [a.spec, b.spec], "-r", "-b", "60",
                       "-o", "check_interval 0.3", "-o", "check_rise 1")
    assert wait_until(lambda: servers_json(c)[0]["check"]["passed"] >= 1)
    a_port = a.port
    a.close()
    # a client that meets the dead backend is failed over to the other one
    names = [banner(port) for _ in range(4)]
    assert set(names) == {"S1"}
    assert wait_until(lambda: servers_json(c)[0]["state"] != "up")
    assert servers_json(c)[0]["state"] in ("blacklisted", "down")
    revived = Backend("S0", port=a_port)
    try:
        t0 = time.monotonic()
        assert wait_until(lambda: servers_json(c)[0]["state"] == "up", timeout=10)
        took = time.monotonic() - t0
        print(f"check tcp: revived {took:.2f}s after the backend came back (-b 60)")
        assert took < 5
        assert "S0" in {banner(port) for _ in range(4)}
    finally:
        revived.close()


def test_check_http_takes_a_server_down_and_up_with_zero_failed_requests(pen, tmp_path):
    a, b = HttpBackend("A"), HttpBackend("B")
    events = tmp_path / "events"
    stop = threading.Event()
    served, failed = [], []

    def traffic():
        while not stop.is_set():
            body = http_get(port)
            (served if body is not None else failed).append(body)
            time.sleep(0.01)
    try:
        p, port, c = start(pen, [a.spec, b.spec], "-r",
                           "-o", "check_interval 0.2", "-o", "check http /health",
                           "-o", "check_fall 3", "-o", "check_rise 2",
                           "-o", f'on_down "echo $PEN_EVENT $PEN_SERVER $PEN_REASON >> {events}"',
                           "-o", f'server 0 on_up "echo own $PEN_EVENT $PEN_SERVER >> {events}"')
        assert wait_until(lambda: servers_json(c)[0]["check"]["passed"] >= 1)
        client = threading.Thread(target=traffic, daemon=True)
        client.start()
        samples = []

        def sample(want):
            s = servers_json(c)[0]
            samples.append((s["state"], s["check"]["failed"], s["check"]["passed"]))
            return s["state"] == want
        a.health = 500
        t0 = time.monotonic()
        assert wait_until(lambda: sample("down"), timeout=10, interval=0.02)
        went_down = time.monotonic() - t0
        fails_when_down = samples[-1][1]
        assert fails_when_down >= 3
        # up until the third failed probe in a row (failed counts were 0 before)
        assert all(state == "up" for state, fl, _ in samples if fl < 3)
        assert json.loads(ctl(c, "status json"))["servers"][0]["check"]["last"] == "http status 500"
        n = len(served)
        assert wait_until(lambda: len(served) >= n + 20)
        assert set(served[n + 2:]) == {"B"}             # traffic goes to B only
        a.health = 200
        samples.clear()
        t1 = time.monotonic()
        passed_before = servers_json(c)[0]["check"]["passed"]
        assert wait_until(lambda: sample("up"), timeout=10, interval=0.02)
        came_up = time.monotonic() - t1
        assert samples[-1][2] - passed_before >= 2       # check_rise 2 passes
        n = len(served)
        assert wait_until(lambda: "A" in served[n:], timeout=5)
        stop.set()
        client.join(TIMEOUT)
        print(f"check http: down {went_down:.2f}s after /health broke, up "
              f"{came_up:.2f}s after it mended (interval 0.2, fall 3, rise 2); "
              f"{len(served)} requests, {len(failed)} failed")
        assert failed == []
        assert len(served) > 50
        # the global on_down and server 0's own on_up ran once each
        assert wait_until(lambda: events.exists() and len(events.read_text().splitlines()) == 2)
        assert events.read_text().splitlines() == ["down 0 http status 500", "own up 0"]
    finally:
        stop.set()
        a.close()
        b.close()


def test_check_expect_against_a_redis_style_backend(pen):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(32)
    srv.settimeout(0.2)
    healthy = threading.Event()
    healthy.set()
    stopped = threading.Event()
    pings = []

    def serve():
        while not stopped.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(100)
                    pings.append(data)
                    if data == b"PING\r\n":
                        conn.sendall(b"+PONG\r\n" if healthy.is_set() else
                                     b"-LOADING Redis is loading the dataset\r\n")
                except OSError:
                    pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        spec = f"127.0.0.1:{srv.getsockname()[1]}"
        p, port, c = start(pen, [spec], "-o", "check_interval 0.2",
                           "-o", 'check expect "+PONG" send "PING\\r\\n"',
                           "-o", "check_fall 2", "-o", "check_rise 1")
        assert ctl(c, "check") == 'check expect "+PONG" send "PING\\r\\n"\n'
        assert wait_until(lambda: servers_json(c)[0]["check"]["passed"] >= 2)
        assert b"PING\r\n" in pings
        healthy.clear()
        assert wait_until(lambda: servers_json(c)[0]["state"] == "down")
        assert servers_json(c)[0]["check"]["last"] == "closed without the expected reply"
        healthy.set()
        assert wait_until(lambda: servers_json(c)[0]["state"] == "up")
    finally:
        stopped.set()
        srv.close()
        thread.join(2)


def test_check_udp_in_udp_mode(pen):
    u = UdpBackend("U0")
    try:
        p, port, c = start(pen, [u.spec], "-o", "check_interval 0.2",
                           "-o", 'check udp "ping" expect "U0:ping"',
                           "-o", "check_fall 2", udp=True)
        assert wait_until(lambda: servers_json(c)[0]["check"]["passed"] >= 2)
        assert servers_json(c)[0]["state"] == "up"
        u.close()                                   # ICMP port unreachable from now on
        assert wait_until(lambda: servers_json(c)[0]["state"] == "down")
        assert servers_json(c)[0]["check"]["last"] in ("refused", "timeout")
    finally:
        u.close()


def test_operator_blacklist_and_disable_survive_passing_probes(pen, backends):
    a, b = backends(2)
    p, port, c = start(pen, [a.spec, b.spec], "-o", "check_interval 0.1")
    ctl(c, "server 0 blacklist 120")
    ctl(c, "server 1 disable")
    before = servers_json(c)
    assert [s["state"] for s in before] == ["blacklisted", "disabled"]
    assert wait_until(lambda: servers_json(c)[0]["check"]["passed"]
                      >= before[0]["check"]["passed"] + 5)
    after = servers_json(c)
    assert [s["state"] for s in after] == ["blacklisted", "disabled"]
    assert after[1]["check"]["passed"] == before[1]["check"]["passed"]   # not probed


def test_checks_and_hooks_survive_write_and_dash_F(pen, backends, tmp_path):
    (a,) = backends(1)
    cfg = tmp_path / "pen.cfg"
    cfg.write_text("")
    p, port, c = start(pen, [a.spec], "-F", str(cfg))
    for line in ("check_interval 5", "check http /health 200", "check_rise 3",
                 "check_fall 4", "server_retry 2", "hooks_max 4", "hook_timeout 9",
                 'on_down "logger -t pen \\"server $PEN_SERVER down\\""',
                 "server 0 check_port 8081", 'server 0 on_up "echo up"'):
        assert ctl(c, line) in ("", line.split()[-1] + "\n"), line
    written = tmp_path / "written.cfg"
    assert ctl(c, f"write {written}") == ""
    text = written.read_text()
    for line in ("check_interval 5", "check http /health 200", "check_rise 3",
                 "check_fall 4", "server_retry 2", "hooks_max 4", "hook_timeout 9",
                 'on_down "logger -t pen \\"server $PEN_SERVER down\\""',
                 "server 0 check_port 8081", 'server 0 on_up "echo up"'):
        assert line in text.splitlines(), line
    p2, port2, c2 = start(pen, [a.spec], "-F", str(written))
    assert ctl(c2, "check") == "check http /health 200\n"
    assert ctl(c2, "on_down") == 'logger -t pen "server $PEN_SERVER down"\n'
    assert ctl(c2, "check_interval") == "5\n"


# --- hooks -------------------------------------------------------------------------


def test_hooks_get_their_facts_from_the_environment(pen, backends, tmp_path):
    a, b = backends(2)
    out = tmp_path / "env"
    dead = free_port()
    p, port, c = start(pen, [f"127.0.0.1:{dead}", b.spec], "-r",
                       "-o", f'on_failure "env | grep ^PEN_ | sort > {out}"')
    # round robin: one of the two clients meets server 0, which refuses
    assert [banner(port), banner(port)] == ["S1", "S1"]
    assert wait_until(lambda: out.exists() and out.read_text().count("\n") == 6)
    assert out.read_text().splitlines() == [
        "PEN_CLIENT_ADDR=127.0.0.1", "PEN_EVENT=failure",
        out.read_text().splitlines()[2], "PEN_SERVER=0",
        "PEN_SERVER_ADDR=127.0.0.1", f"PEN_SERVER_PORT={dead}"]
    assert out.read_text().splitlines()[2].startswith("PEN_REASON=")
    assert out.read_text().splitlines()[2] != "PEN_REASON="


def test_sleeping_hooks_do_not_delay_traffic_and_the_rest_are_dropped(pen, backends):
    (a,) = backends(1)
    p, port, c = start(pen, [a.spec], "-o", 'on_success "sleep 30"',
                       "-o", "hooks_max 3", "-o", "hook_timeout 1.5")
    took = []
    for _ in range(10):
        t0 = time.monotonic()
        assert banner(port) == "S0"
        took.append(time.monotonic() - t0)
    assert max(took) < 0.5, took
    kids = wait_until(lambda: len(children_of(p.pid)) == 3, timeout=3)
    assert kids, children_of(p.pid)
    # killed after hook_timeout with their process groups, and reaped
    assert wait_until(lambda: children_of(p.pid) == [], timeout=6), children_of(p.pid)
    rc, err = p.stop()
    assert "dropped" in err and "hooks_max 3" in err
    assert "still running after 1.5s: killing its process group" in err


def test_no_zombie_children_remain(pen, backends, tmp_path):
    (a,) = backends(1)
    count = tmp_path / "count"
    p, port, c = start(pen, [a.spec], "-o", f'on_success "echo x >> {count}"',
                       "-o", "hooks_max 64")
    for _ in range(20):
        assert banner(port) == "S0"
    assert wait_until(lambda: count.exists() and len(count.read_text().split()) == 20)
    assert wait_until(lambda: children_of(p.pid) == [], timeout=3), children_of(p.pid)


# --- passive failure rules ---------------------------------------------------------


def test_server_retry_blacklists_after_three_failed_connects_in_a_row(pen, backends):
    (b,) = backends(1)
    dead = free_port()
    p, port, c = start(pen, [f"127.0.0.1:{dead}", b.spec], "-r", "-o", "server_retry 3")
    seen = []
    for _ in range(8):                   # round robin: every other client tries server 0
        assert banner(port) == "S0"
        seen.append((servers_json(c)[0]["state"], ctl(c, "server 0").split("failures ")[1].split()[0]))
        if seen[-1][0] != "up":
            break
    failures_while_up = [int(f) for state, f in seen if state == "up"]
    assert failures_while_up and max(failures_while_up) <= 2, seen
    assert seen[-1] == ("blacklisted", "3"), seen


def test_autodisable_keeps_a_failed_server_out_even_when_probes_pass(pen, backends):
    a, b = backends(2)
    p, port, c = start(pen, [a.spec, b.spec], "-r", "-o", "autodisable",
                       "-o", "check_interval 0.2")
    a_port = a.port
    a.close()
    names = {banner(port) for _ in range(3)}
    assert names == {"S1"}
    assert wait_until(lambda: servers_json(c)[0]["state"] == "disabled")
    revived = Backend("S0x", port=a_port)
    try:
        time.sleep(1.0)                  # five probe periods: nothing may lift it
        assert servers_json(c)[0]["state"] == "disabled"
        assert {banner(port) for _ in range(4)} == {"S1"}
        ctl(c, "server 0 enable")
        assert wait_until(lambda: "S0x" in {banner(port) for _ in range(2)})
    finally:
        revived.close()


def test_probes_do_not_count_against_client_limits(pen, backends):
    (a,) = backends(1)
    p, port, c = start(pen, [a.spec], "-x", "1", "-o", "check_interval 0.1")
    with connect(port) as held:                 # the one connection -x 1 allows
        assert read_line(held) == "S0"
        before = servers_json(c)[0]["check"]["passed"]
        assert wait_until(lambda: servers_json(c)[0]["check"]["passed"] >= before + 5)
        held.sendall(b"still here")
        assert held.recv(100) == b"still here"
        assert json.loads(ctl(c, "status json"))["counters"]["accepted"] == 1
    assert wait_until(lambda: banner(port) == "S0")
