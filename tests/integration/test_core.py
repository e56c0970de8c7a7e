"""The core through the real pen process: selection, relaying, lifecycle."""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (REFERENCE_PEN, TIMEOUT, Backend, Pen, UdpBackend,
                      banner, connect, free_port, listening, raw_listener,
                      read_line, recv_all, rss_kib, wait_until)


def names(port, count, source=None):
    return [banner(port, source=source) for _ in range(count)]


# --- selection --------------------------------------------------------------------


def test_two_clients_land_on_different_servers_and_stay(pen, backends):
    a, b = backends(2)
    port = free_port()
    pen(f"127.0.0.1:{port}", a.spec, b.spec, port=port)
    first = names(port, 3, source="127.0.0.1")
    second = names(port, 3, source="127.0.0.2")
    assert len(set(first)) == 1 and len(set(second)) == 1
    assert first[0] != second[0]
    assert first[0] == "S1"      # pen's first round-robin pick is server 1


def test_roundrobin_alternates(pen, backends):
    a, b, c = backends(3)
    port = free_port()
    pen("-r", f"127.0.0.1:{port}", a.spec, b.spec, c.spec, port=port)
    assert names(port, 6) == ["S1", "S2", "S0", "S1", "S2", "S0"]


def test_hash_maps_client_ip_like_pen(pen, backends):
    srv = backends(3)
    port = free_port()
    pen("-h", f"127.0.0.1:{port}", *[s.spec for s in srv], port=port)
    # pen hashes the little-endian IPv4 word modulo the server count.
    got = [banner(port, source=f"127.0.0.{i}") for i in (1, 2, 3)]
    assert got == ["S2", "S0", "S1"]


def test_weight_prefers_least_loaded_per_weight(pen, backends):
    a, b = backends(2)
    port = free_port()
    pen("-W", "-r", f"127.0.0.1:{port}", f"{a.spec}:0:0:1", f"{b.spec}:0:0:3",
        port=port)
    held = [connect(port) for _ in range(4)]
    got = [read_line(s) for s in held]
    # loads 256*c/w: S0 0 -> S0; then S1 0 -> S1; S1 85 < S0 256 -> S1, S1 170 -> S1
    assert got == ["S0", "S1", "S1", "S1"]
    for s in held:
        s.close()


def test_dead_backend_is_skipped_then_retried_after_blacklist(pen, backends):
    (a,) = backends(1)
    dead_port = free_port()
    port = free_port()
    p = pen("-r", "-b", "2", f"127.0.0.1:{port}", a.spec, f"127.0.0.1:{dead_port}",
            port=port)
    assert names(port, 4) == ["S0"] * 4   # server 1 refused: failed over
    revived = Backend("S1", port=dead_port)
    try:
        assert wait_until(lambda: "S1" in names(port, 2), timeout=6)
    finally:
        revived.close()


def test_emergency_server_takes_over_when_all_are_down(pen, backends):
    (e,) = backends(1)
    port = free_port()
    pen("-e", e.spec, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}",
        f"127.0.0.1:{free_port()}", port=port)
    assert names(port, 2) == ["S0", "S0"]


def test_connect_timeout_blacklists_and_fails_over(pen, backends):
    (a,) = backends(1)
    # A backend whose accept queue is full drops SYNs: the connect hangs.
    srv, spec = raw_listener(backlog=0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(srv.getsockname())
        fillers.append(f)
    port = free_port()
    pen("-r", "-t", "1", f"127.0.0.1:{port}", a.spec, spec, port=port)
    started = time.monotonic()
    assert banner(port) == "S0"        # server 1 timed out, then S0
    assert 0.8 < time.monotonic() - started < 4
    started = time.monotonic()
    assert banner(port) == "S0"        # server 1 is blacklisted now: no wait
    assert time.monotonic() - started < 0.8
    for f in fillers:
        f.close()
    srv.close()


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_pauses_instead_of_spinning(backends):
    import resource
    (a,) = backends(1)
    port = free_port()

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    proc = subprocess.Popen([sys.executable, "-m", "pen", "-f", f"127.0.0.1:{port}", a.spec],
                            stderr=subprocess.PIPE, preexec_fn=low_fd_limit)
    clients = []
    try:
        assert wait_until(lambda: listening(port))
        for _ in range(30):          # two fds each in pen: well past 40
            c = socket.socket()
            c.settimeout(TIMEOUT)
            c.connect(("127.0.0.1", port))
            clients.append(c)
        cpu = _cpu_seconds(proc.pid)
        time.sleep(1.0)              # measuring: pen must be idle meanwhile
        assert _cpu_seconds(proc.pid) - cpu < 0.5, "pen spins on EMFILE"
        for c in clients:
            c.close()
        clients.clear()
        assert wait_until(lambda: banner(port) == "S0")
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        _, err = proc.communicate(timeout=TIMEOUT)
    assert b"pausing the listener" in err
    assert b"Traceback" not in err


def test_no_server_left_closes_the_client(pen):
    port = free_port()
    pen(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}", port=port)
    assert banner(port) == ""


def test_stubborn_closes_instead_of_failing_over(pen, backends):
    (a,) = backends(1)
    port = free_port()
    pen("-s", "-r", f"127.0.0.1:{port}", a.spec, f"127.0.0.1:{free_port()}", port=port)
    assert banner(port) == ""         # first pick is server 1: dead, no failover
    assert banner(port) == "S0"       # next pick is server 0


def test_maxc_pushes_a_second_concurrent_client_elsewhere(pen, backends):
    a, b = backends(2)
    port = free_port()
    pen(f"127.0.0.1:{port}", f"{a.spec}:1", f"{b.spec}:1", port=port)
    one = connect(port)
    assert read_line(one) == "S1"
    two = connect(port)
    assert read_line(two) == "S0"     # S1 is at its soft limit
    one.close()
    two.close()


def test_conn_max_is_enforced(single):
    port = single("-x", "2")
    held = [connect(port) for _ in range(2)]
    assert [read_line(s) for s in held] == ["S0", "S0"]
    third = connect(port, timeout=0.5)    # sits in the kernel backlog
    with pytest.raises(socket.timeout):
        third.recv(1)
    held[0].close()
    third.settimeout(TIMEOUT)
    assert read_line(third) == "S0"       # accepted once a slot is free
    third.close()
    held[1].close()


# --- relaying ---------------------------------------------------------------------


def _transfer(port, size):
    payload = os.urandom(1024 * 1024) * (size // (1024 * 1024))
    with connect(port, timeout=30) as s:
        assert read_line(s) == "S0"
        got = []
        reader = threading.Thread(target=lambda: got.append(recv_all(s)))
        reader.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)   # half-close: the echo must still come back
        reader.join(60)
    assert not reader.is_alive()
    assert len(got[0]) == len(payload)
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("options", [[], ["-H"]], ids=["splice", "buffered"])
def test_50mb_byte_exact_both_ways_with_half_close(single, options):
    port = single(*options)
    _transfer(port, 50 * 1024 * 1024)


def test_half_closed_client_still_gets_the_whole_reply(single):
    port = single()
    with connect(port) as s:
        s.sendall(b"question")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"S0\nquestion"


def test_backend_that_speaks_first(single):
    port = single()
    with connect(port) as s:
        assert read_line(s) == "S0"   # before the client sent anything


def test_backend_reset_mid_stream_closes_the_client(pen):
    srv, spec = raw_listener()
    port = free_port()
    pen(f"127.0.0.1:{port}", spec, port=port)
    with connect(port) as c:
        peer, _ = srv.accept()
        peer.sendall(b"partial")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()                  # RST
        data = b""
        try:
            data = recv_all(c)        # ends (EOF or reset), never hangs
        except ConnectionResetError:
            pass
        assert b"partial".startswith(data)    # what arrived is the stream's start
    with connect(port) as c:              # and pen serves the next client
        peer, _ = srv.accept()
        peer.sendall(b"next")
        assert c.recv(10) == b"next"
        peer.close()
    srv.close()


def test_slow_reader_does_not_grow_memory(pen):
    """A backend floods, the client never reads: pen must stop reading the
    backend instead of buffering."""
    srv, spec = raw_listener()
    port = free_port()
    p = pen("-H", f"127.0.0.1:{port}", spec, port=port)
    client = connect(port)
    peer, _ = srv.accept()
    before = rss_kib(p.pid)
    peer.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 512 * 1024 * 1024:
        try:
            sent += peer.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    growth = rss_kib(p.pid) - before
    assert sent < 64 * 1024 * 1024, "pen kept reading a backend nobody drains"
    assert growth < 16 * 1024, f"pen grew by {growth} KiB"
    client.close()
    peer.close()
    srv.close()


def test_x_forwarded_for_on_each_request(pen):
    b = Backend("S0", banner=False, echo=False)
    try:
        port = free_port()
        pen("-H", f"127.0.0.1:{port}", b.spec, port=port)
        with connect(port) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /b HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            recv_all(s)
        assert wait_until(lambda: b.received and b.received[0].count(b"\r\n\r\n") == 2)
        data = b.received[0]
        assert data.startswith(b"GET /a HTTP/1.1\r\nHost: x\r\n"
                               b"X-Forwarded-Proto: http\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n")
        assert b"X-Forwarded-For: 10.0.0.9, 127.0.0.1\r\n" in data
        assert data.count(b"X-Forwarded-For") == 2
    finally:
        b.close()


def test_non_http_passes_untouched_with_H(single):
    port = single("-H")
    with connect(port) as s:
        s.sendall(b"\x00\x01binary\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"S0\n\x00\x01binary\r\n\r\nGET / HTTP/1.1\r\n\r\n"


# --- address families -------------------------------------------------------------------


def test_ipv6_client_to_ipv4_backend(pen, backends):
    (a,) = backends(1)
    port = free_port(host="::1")
    pen(f"[::1]:{port}", a.spec, port=port)
    assert banner(port, host="::1") == "S0"


def test_ipv4_client_to_ipv6_backend(pen, backends):
    (a,) = backends(1, host="::1")
    port = free_port()
    pen(f"127.0.0.1:{port}", a.spec, port=port)
    assert banner(port) == "S0"


def test_unix_socket_listener(pen, backends, tmp_path):
    (a,) = backends(1)
    path = str(tmp_path / "pen.sock")
    pen(path, a.spec, unix=path)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        assert read_line(s) == "S0"
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"ping"


# --- UDP ---------------------------------------------------------------------------------


def _udp_ask(port, payload, source="127.0.0.1", sock=None):
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.settimeout(1.0)
    try:
        sock.sendto(payload, ("127.0.0.1", port))
        data, addr = sock.recvfrom(65535)
        assert addr == ("127.0.0.1", port)   # the reply comes from pen's port
        return data
    except socket.timeout:
        return b""
    finally:
        if own:
            sock.close()


def test_udp_clients_stick_to_their_servers():
    u0, u1 = UdpBackend("U0"), UdpBackend("U1")
    port = free_port(socket.SOCK_DGRAM)
    p = Pen(["-U", f"127.0.0.1:{port}", u0.spec, u1.spec], port=port, udp=True)
    try:
        a = [_udp_ask(port, b"x", "127.0.0.1") for _ in range(3)]
        b = [_udp_ask(port, b"y", "127.0.0.2") for _ in range(3)]
        assert a == [b"U1:x"] * 3
        assert b == [b"U0:y"] * 3
    finally:
        p.stop()
        u0.close()
        u1.close()


def test_udp_roundrobin_and_failover_from_a_dead_server():
    u0 = UdpBackend("U0")
    dead = free_port(socket.SOCK_DGRAM)
    port = free_port(socket.SOCK_DGRAM)
    p = Pen(["-U", "-r", f"127.0.0.1:{port}", u0.spec, f"127.0.0.1:{dead}"],
            port=port, udp=True)
    try:
        # The first pick is the dead server 1: its ICMP refusal blacklists
        # it, and the client's retry goes to U0.
        answers = [_udp_ask(port, b"q%d" % i) for i in range(4)]
        assert answers[-1].startswith(b"U0:")
        assert sum(1 for x in answers if x.startswith(b"U0:")) >= 3
    finally:
        p.stop()
        u0.close()


def test_udp_session_table_is_bounded():
    u0 = UdpBackend("U0")
    port = free_port(socket.SOCK_DGRAM)
    p = Pen(["-U", "-x", "20", f"127.0.0.1:{port}", u0.spec], port=port, udp=True)
    try:
        socks = []
        for i in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(1.0)
            socks.append(s)
            assert _udp_ask(port, b"%d" % i, sock=s) == b"U0:%d" % i
        fds = len(os.listdir(f"/proc/{p.pid}/fd"))
        assert fds < 60, f"{fds} fds open for 100 clients with -x 20"
        for s in socks:
            s.close()
    finally:
        p.stop()
        u0.close()


# --- lifecycle ----------------------------------------------------------------------------


def test_daemon_mode_pidfile_and_sigterm(backends, tmp_path):
    (a,) = backends(1)
    port = free_port()
    pidfile = tmp_path / "pen.pid"
    r = subprocess.run([sys.executable, "-m", "pen", "-p", str(pidfile),
                        f"127.0.0.1:{port}", a.spec], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert wait_until(pidfile.exists)
    pid = int(pidfile.read_text())
    try:
        assert wait_until(lambda: listening(port))
        assert banner(port) == "S0"
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert not pidfile.exists()


def test_startup_errors_are_one_line_and_before_detaching(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cases = [
        ([f"127.0.0.1:{port}", "127.0.0.1:1"], "cannot listen on 127.0.0.1:%d" % port),
        (["-z", "80", "a"], "unknown option -z"),
        (["-b", "x", "80"], "option -b: 'x' is not a number"),
        (["80", "127.0.0.1:1:x"], "max 'x' is not a non-negative number"),
        (["80", "127.0.0.1:99999"], "out of range"),
        (["80", "[::1"], "missing ']'"),
        (["-u", "no-such-user-xyz", "80", "127.0.0.1:1"], "no such user"),
    ]
    try:
        for args, expected in cases:
            r = subprocess.run([sys.executable, "-m", "pen"] + args,
                               capture_output=True, text=True, timeout=TIMEOUT)
            assert r.returncode == 1, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0], (args, r.stderr)
    finally:
        busy.close()


def test_log_file_has_one_line_per_connection(pen, backends, tmp_path):
    (a,) = backends(1)
    log = tmp_path / "pen.log"
    port = free_port()
    p = pen("-l", str(log), f"127.0.0.1:{port}", a.spec, port=port)
    with connect(port) as s:
        s.sendall(b"GET /logged HTTP/1.0\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        recv_all(s)
    assert wait_until(lambda: log.exists() and log.read_text().strip())
    ip, stamp, server, *request = log.read_text().strip().split(" ")
    assert ip == "127.0.0.1" and server == "127.0.0.1"
    assert abs(int(stamp) - time.time()) < 60
    assert " ".join(request) == "GET /logged HTTP/1.0"


# --- against the reference pen --------------------------------------------------------------

needs_reference = pytest.mark.skipif(not os.path.exists(REFERENCE_PEN),
                                     reason="reference pen 0.34.1 not installed")


@needs_reference
@pytest.mark.parametrize("options,sources", [
    (["-r"], ["127.0.0.1"] * 5),
    ([], ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.3", "127.0.0.2"]),
    (["-h"], ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]),
])
def test_selection_matches_reference_pen(pen, backends, options, sources):
    srv = backends(3)
    results = []
    for reference in (True, False):
        port = free_port()
        pen(*options, f"127.0.0.1:{port}", *[s.spec for s in srv], port=port,
            reference=reference)
        results.append([banner(port, source=src) for src in sources])
    assert results[0] == results[1]
