"""The control socket and penctl, with real pen and penctl processes.

pen refuses a control port to root unless -u is given, and these tests may
run as root, so every pen here gets `-u <current user>`.
"""

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import (REFERENCE_PEN, TIMEOUT, banner, connect, free_port, listening,
                      read_line, wait_until)

import penctl as penctl_mod  # noqa: E402

ME = pwd.getpwuid(os.getuid()).pw_name


def penctl(ctl, *words, stdin=None):
    proc = subprocess.run([sys.executable, "-m", "penctl", str(ctl), *words],
                          input=stdin, capture_output=True, text=True, timeout=TIMEOUT * 2)
    return proc


def ask(ctl, *words):
    """pen's reply; penctl exits 0, or 2 when that reply is an error."""
    proc = penctl(ctl, *words)
    assert proc.returncode in (0, 2), proc.stderr
    assert (proc.returncode == 2) == penctl_mod.is_error(list(words), proc.stdout), proc.stdout
    return proc.stdout


def raw(port, data, timeout=TIMEOUT):
    """Send bytes on a fresh control connection, return all of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture
def farm(pen, backends):
    """start(*extra) -> (pen, control_port, listen_port, backends)."""
    def start(*extra, n=2, exit_enabled=True):
        bs = backends(n)
        ctl, port = free_port(), free_port()
        args = ["-u", ME, "-C", f"127.0.0.1:{ctl}"] + (["-X"] if exit_enabled else [])
        p = pen(*args, *extra, f"127.0.0.1:{port}", *[b.spec for b in bs], port=port)
        assert wait_until(lambda: listening(ctl))
        return p, ctl, port, bs
    return start


def test_replies(farm):
    p, ctl, port, bs = farm()
    c = f"127.0.0.1:{ctl}"
    assert ask(c, "servers") == "".join(
        f"{i} addr 127.0.0.1 port {b.port} conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n"
        for i, b in enumerate(bs))
    assert ask(c, "mode") == "no hash no roundrobin no stubborn no weight no prio\n"
    assert ask(c, "blacklist") == "30\n"
    assert ask(c, "blacklist", "45") == "45\n"
    assert ask(c, "timeout") == "3\n"
    assert ask(c, "tracking") == "0\n"
    assert ask(c, "clients_max") == "2048\n"
    assert ask(c, "conn_max") == "500\n"
    assert ask(c, "debug") == "0\n"
    assert ask(c, "idle_timeout") == "Idle timeout: 0 seconds\n"
    assert ask(c, "pid") == f"{p.pid}\n"
    assert ask(c, "listen") == f"127.0.0.1:{port}\n"
    assert ask(c, "control") == f"127.0.0.1:{ctl}\n"
    assert ask(c, "hash") == ""
    assert ask(c, "mode") == "hash no roundrobin no stubborn no weight no prio\n"
    assert ask(c, "frobnicate", "now") == "do_cmd: ignoring command starting with 'frobnicate'\n"
    assert ask(c, "server", "7", "max", "1") == (
        "server: index 7 out of range (0-2; 2 adds a new server)\n")
    assert ask(c, "blacklist", "soon") == (
        "blacklist: seconds must be a whole number, got 'soon'\n")
    assert ask(c, "blacklist") == "45\n"


def test_blacklist_diverts_traffic_and_blacklist_0_restores(farm):
    p, ctl, port, bs = farm("-r")
    c = f"127.0.0.1:{ctl}"
    assert {banner(port) for _ in range(4)} == {"S0", "S1"}
    assert ask(c, "server", "0", "blacklist", "60") == ""
    assert {banner(port) for _ in range(4)} == {"S1"}
    assert ask(c, "server", "0", "blacklist", "0") == ""
    assert {banner(port) for _ in range(4)} == {"S0", "S1"}
    assert ask(c, "server", "1", "disable") == ""
    assert {banner(port) for _ in range(4)} == {"S0"}
    assert ask(c, "server", "1", "enable") == ""
    assert {banner(port) for _ in range(4)} == {"S0", "S1"}


def test_new_server_takes_traffic(farm, backends):
    p, ctl, port, bs = farm("-r", n=1)
    extra = backends(1)[0]
    c = f"127.0.0.1:{ctl}"
    assert ask(c, "server", "1", "address", "127.0.0.1", "port", str(extra.port)) == ""
    assert {banner(port) for _ in range(4)} == {bs[0].name, extra.name}


def test_exit_only_with_dash_x(farm):
    p, ctl, port, bs = farm(exit_enabled=False)
    c = f"127.0.0.1:{ctl}"
    assert ask(c, "exit") == "Exit is not enabled; restart with -X flag\n"
    assert p.proc.poll() is None
    p2, ctl2, port2, _ = farm()
    assert ask(f"127.0.0.1:{ctl2}", "exit") == ""
    assert p2.proc.wait(TIMEOUT) == 0


def test_recent_close_connection_and_mrtg(farm):
    p, ctl, port, bs = farm()
    c = f"127.0.0.1:{ctl}"
    with connect(port) as s:
        name = read_line(s)
        s.sendall(b"hello\n")
        assert s.recv(100) == b"hello\n"
        doc = json.loads(ask(c, "status", "json"))
        [conn] = doc["connections"]
        assert conn["client"] == "127.0.0.1"
        n = conn["id"]
        assert ask(c, "connection", str(n)).startswith(f"Connection {n}:\nstate = 2\n")
        assert ask(c, "close", str(n)) == f"Forcibly closing connection {n}\n"
        assert s.recv(100) == b""
    index = int(name[1:])
    lines = ask(c, "recent").splitlines()
    assert len(lines) == 1 and lines[0].startswith("127.0.0.1 connects 1 sx ")
    mrtg = ask(c, "mrtg_bytes", str(index)).splitlines()
    assert mrtg[3:] == [f"server {index}"]
    assert re.fullmatch(r"0 days, 00:0[0-9]:[0-5][0-9]", mrtg[2])   # uptime
    assert int(mrtg[0]) > 0 and int(mrtg[1]) > 0


def test_status_page_and_webfile(farm, tmp_path):
    web = tmp_path / "pen.html"
    os.chmod(tmp_path, 0o777)
    p, ctl, port, bs = farm("-w", str(web))
    page = ask(f"127.0.0.1:{ctl}", "status")
    assert page.startswith("<html>\n<head>\n<title>Pen status page</title>")
    assert web.read_text() == page


def test_write_round_trip_through_include(farm, tmp_path):
    os.chmod(tmp_path, 0o777)
    p, ctl, port, bs = farm()
    c = f"127.0.0.1:{ctl}"
    for line in ("acl 1 permit 127.0.0.1", "acl 1 deny 2001:db8::/32", "blacklist 12",
                 "server 0 max 3 hard 5 weight 2 prio 1", "tracking 60", "hash",
                 "client_acl 0", "idle_timeout 9", "server 1 disable", "leastconn"):
        assert ask(c, *line.split()) in ("", "12\n", "60\n", "0\n",
                                         "Idle timeout: 9 seconds\n"), line
    cfg = tmp_path / "pen.cfg"
    assert ask(c, "write", str(cfg)) == ""
    first = cfg.read_text().splitlines()
    assert first[0].startswith("# Generated by pen ")

    p2, ctl2, port2, bs2 = farm()
    c2 = f"127.0.0.1:{ctl2}"
    assert ask(c2, "include", str(cfg)) == ""
    cfg2 = tmp_path / "pen2.cfg"
    assert ask(c2, "write", str(cfg2)) == ""
    second = cfg2.read_text().splitlines()
    # Same settings; only the header (date, command line) may differ.
    assert second[2:] == first[2:]
    assert ask(c2, "mode") == "hash no roundrobin no stubborn no weight no prio leastconn\n"


def test_include_reports_bad_lines(farm, tmp_path):
    p, ctl, port, bs = farm()
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("blacklist 7\nblacklist x\nnonsense\ntracking 4\n")
    os.chmod(tmp_path, 0o755)
    reply = ask(f"127.0.0.1:{ctl}", "include", str(cfg))
    assert reply == (f"{cfg}:2: blacklist: seconds must be a whole number, got 'x'\n"
                     f"{cfg}:3: do_cmd: ignoring command starting with 'nonsense'\n")
    assert ask(f"127.0.0.1:{ctl}", "blacklist") == "7\n"
    assert ask(f"127.0.0.1:{ctl}", "tracking") == "4\n"


def test_listen_rebinds_live(farm):
    p, ctl, port, bs = farm()
    new = free_port()
    assert ask(f"127.0.0.1:{ctl}", "listen", f"127.0.0.1:{new}") == f"127.0.0.1:{new}\n"
    assert banner(new) in ("S0", "S1")
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        taken = busy.getsockname()[1]
        reply = ask(f"127.0.0.1:{ctl}", "listen", f"127.0.0.1:{taken}")
        assert reply.splitlines()[1].startswith("listen: cannot listen on")
        assert banner(new) in ("S0", "S1")         # the old listener is kept
    finally:
        busy.close()


def test_garbage_long_lines_and_floods_leave_pen_serving(farm):
    p, ctl, port, bs = farm()
    assert raw(ctl, bytes(range(1, 256)) * 8 + b"\n").startswith(b"do_cmd: ignoring")
    assert raw(ctl, b"x" * (1 << 20)) == b"control: command longer than 4096 bytes; ignored\n"
    assert raw(ctl, b"mode\nexit\n") == b"no hash no roundrobin no stubborn no weight no prio\n"
    assert raw(ctl, b"") == b""
    # silent control clients do not stall traffic or other control clients
    silent = [socket.create_connection(("127.0.0.1", ctl), TIMEOUT) for _ in range(5)]
    try:
        assert banner(port) in ("S0", "S1")
        for _ in range(200):
            assert raw(ctl, b"blacklist\n") == b"30\n"
    finally:
        for s in silent:
            s.close()
    assert banner(port) in ("S0", "S1")
    assert p.proc.poll() is None
    assert int(ask(f"127.0.0.1:{ctl}", "pid")) == p.pid


def test_control_acl(farm):
    p, ctl, port, bs = farm()
    c = f"127.0.0.1:{ctl}"
    assert ask(c, "acl", "2", "deny", "127.0.0.1") == ""
    assert ask(c, "control_acl", "2") == "2\n"
    assert ask(c, "mode") == "control: access from 127.0.0.1 denied by control_acl 2\n"
    assert banner(port) in ("S0", "S1")      # clients are not affected (client_acl 0)


def test_unix_control_socket(pen, backends, tmp_path):
    bs = backends(1)
    path = str(tmp_path / "pen.ctl")
    port = free_port()
    p = pen("-u", ME, "-C", path, f"127.0.0.1:{port}", bs[0].spec, port=port)
    assert wait_until(lambda: os.path.exists(path))
    assert ask(path, "control") == f"{path}\n"
    assert ask(path, "servers").startswith("0 addr 127.0.0.1")
    rc, err = p.stop()
    assert rc == 0
    assert not os.path.exists(path)


@pytest.mark.skipif(os.getuid() != 0, reason="the rule is about running as root")
def test_root_without_dash_u_refuses_to_start(backends):
    # pen's manual: as root without -u pen refuses the control port; it
    # says so once and exits 1 (it used to carry on without the socket).
    if os.getuid() != 0:
        pytest.skip("the refusal is for root only")
    bs = backends(1)
    ctl, port = free_port(), free_port()
    r = subprocess.run([sys.executable, "-m", "pen", "-f", "-C", f"127.0.0.1:{ctl}",
                        f"127.0.0.1:{port}", bs[0].spec],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 1
    assert r.stderr.count("Won't open control port running as root") == 1, r.stderr
    assert not listening(ctl) and not listening(port)


def test_penctl_cannot_connect():
    port = free_port()
    proc = penctl(f"127.0.0.1:{port}", "mode")
    assert proc.returncode == 1
    assert proc.stderr == f"penctl: cannot connect to 127.0.0.1:{port}: Connection refused\n"


def test_penctl_interactive(farm):
    p, ctl, port, bs = farm()
    proc = subprocess.run([sys.executable, "-m", "penctl", "-i", f"127.0.0.1:{ctl}"],
                          input="blacklist 20\n\nmode\nquit\nblacklist 99\n",
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0
    assert proc.stdout == "20\nno hash no roundrobin no stubborn no weight no prio\n"
    assert ask(f"127.0.0.1:{ctl}", "blacklist") == "20\n"


# --- the same commands to the reference pen and to ours ------------------------------------

SAME = ["blacklist", "blacklist 10", "mode", "hash", "roundrobin", "stubborn", "weight",
        "prio", "mode", "no hash", "no roundrobin", "no stubborn", "no weight", "no prio",
        "mode", "server 0 max 5 hard 7 weight 3 prio 2", "servers", "timeout", "timeout 7",
        "tracking", "tracking 60", "clients_max", "clients_max 4000", "conn_max",
        "conn_max 1000", "debug", "idle_timeout", "idle_timeout 5", "idlers",
        "client_acl", "client_acl 5", "control_acl", "connection 0", "connection 9999",
        "connection -1", "close 1600", "socket 3", "foo bar", "MODE", "tcp_fastclose",
        "tcp_fastclose both", "listen", "log", "web_stats", "recent", "pending_max 5",
        "keepalive", "no keepalive", "acl 1 permit 127.0.0.1", "no acl 1",
        "server 1 blacklist 60", "server 1 blacklist 0", "servers",
        "ascii", "no ascii", "dummy", "no dummy", "http", "no http", "tcp_nodelay",
        "no tcp_nodelay", "transparent", "no transparent", "abort_on_error", "epoll",
        "poll", "select", "kqueue", "no block", "control", "recent 10", "debug 2",
        "debug", "debug 0", "log", "no log", "web_stats", "no web_stats", "idlers 0",
        "idlers", "acl 3 deny ::1", "ssl_ciphers", "tracking 0", "timeout 3",
        "listen", "recent", "socket 0", "exit"]
# Where we deliberately differ (see penctl(1)): error replies for garbage,
# a newline after tarpit_acl's reply, `status` without -w.
DIFFERENT = {"blacklist abc": "0\n", "tarpit_acl": "tarpit_acl = -1"}


@pytest.mark.skipif(not os.path.exists(REFERENCE_PEN), reason="no reference pen")
def test_same_replies_as_the_reference_pen(pen, backends):
    bs = backends(2)
    replies = {}
    for reference in (True, False):
        ctl, port = free_port(), free_port()
        p = pen("-X", "-u", ME, "-C", f"127.0.0.1:{ctl}", f"127.0.0.1:{port}",
                *[b.spec for b in bs], port=port, reference=reference)
        assert wait_until(lambda: listening(ctl))
        got = []
        for line in SAME + list(DIFFERENT):
            if line == "exit":
                continue
            out = penctl(f"127.0.0.1:{ctl}", *line.split()).stdout
            got.append(out.replace(str(ctl), "CTL").replace(str(port), "PORT"))
        replies[reference] = got
        penctl(f"127.0.0.1:{ctl}", "exit")
        assert p.proc.wait(TIMEOUT) == 0
    ref, ours = replies[True], replies[False]
    n = len(SAME) - 1
    assert ours[:n] == ref[:n]
    assert ref[n:] == list(DIFFERENT.values())
    assert ours[n:] == ["blacklist: seconds must be a whole number, got 'abc'\n",
                        "tarpit_acl = -1\n"]
