"""penlogd fed by a real pen (ours, and the reference pen 0.34.1 alike) and
by penlog; SIGHUP reopens, SIGTERM exits cleanly; garbage floods stay
within the -n cache."""

import os
import pwd
import signal
import socket
import subprocess
import sys

import pytest

from conftest import (REFERENCE_PEN, TIMEOUT, Backend, Pen, connect, free_port, listening,
                      rss_kib, wait_until)

ME = pwd.getpwuid(os.getuid()).pw_name
CLIENT = "127.0.0.2"          # the real client; pen (and so the web server's log) is 127.0.0.1
WEB = '127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "{}" 200 5\n'


class Penlogd:
    def __init__(self, tmp_path, *options):
        self.port = free_port(socket.SOCK_DGRAM)
        self.out = tmp_path / "merged.log"
        self.pidfile = tmp_path / "penlogd.pid"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pen.penlogd", "-f", "-l", str(self.out),
             "-p", str(self.pidfile), *options, str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert wait_until(lambda: listening(self.port, udp=True) or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.proc.communicate(timeout=TIMEOUT)

    def lines(self, path=None):
        try:
            return (path or self.out).read_text(encoding="latin-1").splitlines()
        except FileNotFoundError:
            return []

    def wait_lines(self, n, path=None):
        assert wait_until(lambda: len(self.lines(path)) >= n), self.lines(path)
        return self.lines(path)

    stop = Pen.stop            # by PID: (returncode, stderr)


@pytest.fixture
def penlogd(tmp_path):
    started = []

    def start(*options):
        d = Penlogd(tmp_path, *options)
        started.append(d)
        return d
    yield start
    for d in started:
        rc, err = d.stop()
        if err.strip():
            print(f"--- penlogd stderr (rc {rc}):\n{err[-4000:]}")


def penlog(port, text, *extra):
    proc = subprocess.run([sys.executable, "-m", "pen.penlog", "127.0.0.1", str(port), *extra],
                          input=text.encode("latin-1"), capture_output=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    return proc


def ask(ctl, word):
    proc = subprocess.run([sys.executable, "-m", "penctl", f"127.0.0.1:{ctl}", word],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    return proc.stdout


def request_through_pen(pen, logd, reference):
    """One HTTP request from CLIENT through a pen that logs to penlogd;
    returns once pen has logged it (its `recent` counts the bytes)."""
    backend = Backend("web", banner=False)
    try:
        ctl, port = free_port(), free_port()
        pen("-u", ME, "-C", f"127.0.0.1:{ctl}", "-l", f"127.0.0.1:{logd.port}",
            f"127.0.0.1:{port}", backend.spec, port=port, reference=reference)
        assert wait_until(lambda: listening(ctl))
        request = b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n"
        with connect(port, source=CLIENT) as s:
            s.sendall(request)
            got = b""
            while len(got) < len(request):
                chunk = s.recv(4096)
                assert chunk, "pen closed early"
                got += chunk

        def logged():
            return any(line.startswith(CLIENT + " ") and " rx 0" not in line
                       for line in ask(ctl, "recent").splitlines())
        assert wait_until(logged), ask(ctl, "recent")
    finally:
        backend.close()


@pytest.mark.parametrize("reference", [False, True], ids=["our-pen", "reference-pen"])
def test_penlogd_puts_the_real_client_into_web_lines(pen, penlogd, reference):
    if reference and not os.path.exists(REFERENCE_PEN):
        pytest.skip("reference pen not installed")
    logd = penlogd()
    request_through_pen(pen, logd, reference)
    penlog(logd.port, WEB.format("GET /index.html HTTP/1.0") + WEB.format("GET /other HTTP/1.0"),
           "127.0.0.1")
    assert logd.wait_lines(2) == [
        f'{CLIENT} - - [01/Dec/2026:10:00:00 +0000] "GET /index.html HTTP/1.0" 200 5',
        '127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET /other HTTP/1.0" 200 5']


def test_hup_reopens_and_term_exits_cleanly(penlogd, tmp_path):
    logd = penlogd()
    assert wait_until(lambda: logd.pidfile.exists() and logd.pidfile.read_text().strip())
    assert logd.pidfile.read_text().strip() == str(logd.proc.pid)
    feed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with feed:
        feed.sendto(b"+ 10.9.9.9 127.0.0.1 GET /a HTTP/1.0\n", ("127.0.0.1", logd.port))
        penlog(logd.port, WEB.format("GET /a HTTP/1.0"))
        assert logd.wait_lines(1)[0].startswith("10.9.9.9 - -")
        rotated = tmp_path / "merged.log.1"
        os.rename(logd.out, rotated)
        logd.proc.send_signal(signal.SIGHUP)
        assert wait_until(logd.out.exists)
        penlog(logd.port, WEB.format("GET /a HTTP/1.0"))
        assert logd.wait_lines(1)[0].startswith("10.9.9.9 - -")   # the cache survives a HUP
        assert len(logd.lines(rotated)) == 1
    rc, err = logd.stop()
    assert rc == 0, err
    assert not logd.pidfile.exists()


def test_garbage_flood_stays_within_the_cache(penlogd):
    logd = penlogd("-n", "50")
    feed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", logd.port)

    def flood(start, n):
        for i in range(start, start + n):
            feed.sendto(b"+ 10.%d.%d.1 127.0.0.1 GET /%d%s" % (i >> 8 & 255, i & 255, i, b"x" * 300),
                        addr)
            feed.sendto(b"garbage \x00\xff %d" % i + b"y" * 300, addr)
            feed.sendto(b"+ broken", addr)
            if i % 40 == 39:           # let it keep up rather than overflow the socket buffer
                marker = WEB.format(f"GET /mark{i} HTTP/1.0")
                feed.sendto(marker.encode(), addr)
                assert wait_until(lambda: f"/mark{i} " in "\n".join(logd.lines()[-1:]))

    with feed:
        flood(0, 1000)
        before = rss_kib(logd.proc.pid)
        flood(1000, 5000)
        after = rss_kib(logd.proc.pid)
        feed.sendto(b"+ 10.1.2.3 127.0.0.1 GET /last HTTP/1.0\n", addr)
        feed.sendto(WEB.format("GET /last HTTP/1.0").encode(), addr)
        assert wait_until(lambda: logd.lines()[-1].startswith("10.1.2.3 ")), logd.lines()[-3:]
    assert after - before < 2048, (before, after)
    assert all("garbage" not in line for line in logd.lines())


def test_bad_arguments_are_one_clear_line(tmp_path):
    for argv, message in ((["-n", "0", "10000"], "-n '0'"), (["99999"], "port '99999'"),
                          (["-l", str(tmp_path / "no" / "such" / "dir"), "-f", "0"], "port '0'")):
        proc = subprocess.run([sys.executable, "-m", "pen.penlogd", *argv],
                              capture_output=True, text=True, timeout=TIMEOUT * 2)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.run([sys.executable, "-m", "pen.penlogd", "-f", "-l",
                           str(tmp_path / "no" / "dir" / "x.log"), str(port)],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 1
    assert proc.stderr.startswith("penlogd: cannot open log file") and \
        len(proc.stderr.splitlines()) == 1


def test_detached_penlogd_writes_pid_and_stops_on_term(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    out, pidfile = tmp_path / "merged.log", tmp_path / "penlogd.pid"
    proc = subprocess.run([sys.executable, "-m", "pen.penlogd", "-l", str(out), "-p", str(pidfile),
                           str(port)], capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    try:
        assert wait_until(lambda: listening(port, udp=True))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as feed:
            feed.sendto(b"+ 10.7.7.7 127.0.0.1 GET /d HTTP/1.0\n", ("127.0.0.1", port))
        penlog(port, WEB.format("GET /d HTTP/1.0"))
        assert wait_until(lambda: out.exists() and out.read_text().startswith("10.7.7.7 - -"))
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pidfile.exists())
