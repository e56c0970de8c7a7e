"""Fixtures for integration tests: real backends, a real `pen` process.

Backends run in threads of the test process on real loopback sockets.
`pen` is started as `python -m pen -f ...` (or the reference C pen), waited
for by watching /proc/net for its listening socket (a probe connection
would disturb round robin), and stopped by its PID.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

TIMEOUT = 5.0
STARTUP_TIMEOUT = 20.0     # a loaded machine can take seconds to import and bind
REFERENCE_PEN = "/usr/bin/pen"


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=TIMEOUT, interval=0.02):
    """Poll `predicate` until true or `timeout`; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _proc_net_has(port, files, state):
    hexport = ":%04X" % port
    for name in files:
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(hexport) and parts[3] == state:
                        return True
        except FileNotFoundError:
            continue
    return False


def listening(port, udp=False):
    if udp:
        return _proc_net_has(port, ("udp", "udp6"), "07")
    return _proc_net_has(port, ("tcp", "tcp6"), "0A")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Backend:
    """A threaded TCP backend on a real socket.

    On connect it sends `name + "\\n"` (a banner: the test learns which
    server it reached, and pen must cope with a server that speaks first),
    then echoes everything until EOF, then closes its write side.
    Everything received is kept in `received` (one bytes per connection)."""

    def __init__(self, name, host="127.0.0.1", port=0, banner=True, echo=True):
        self.name = name
        self.banner = banner
        self.echo = echo
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.received = []
        self.peers = []
        self.conns = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def spec(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.peers.append(peer)
            self.conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        conn.settimeout(30)
        index = len(self.received)
        self.received.append(b"")
        try:
            if self.banner:
                conn.sendall(self.name.encode() + b"\n")
            while True:
                data = conn.recv(256 * 1024)
                if not data:
                    break
                self.received[index] += data
                if self.echo:
                    conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped.set()
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        self.thread.join(2)


class ThreadedServer:
    """A TCP listener on 127.0.0.1 whose connections each get a thread
    running `handle(conn)` (subclasses write it); close() stops it."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.spec = f"127.0.0.1:{self.port}"
        self.conns = []
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        raise NotImplementedError

    def close(self):
        self.stopped.set()
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


class UdpBackend:
    """Answers each datagram with `name:` + the datagram."""

    def __init__(self, name, host="127.0.0.1", port=0):
        self.name = name.encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.spec = f"{host}:{self.port}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            self.answer(data, addr)

    def answer(self, data, addr):
        try:
            self.sock.sendto(self.name + b":" + data, addr)
        except OSError:
            pass

    def close(self):
        self.stopped.set()
        self.sock.close()
        self.thread.join(2)


class Pen:
    """A running pen process (ours by default, or the reference)."""

    def __init__(self, args, port=None, udp=False, unix=None, reference=False,
                 foreground=True, wait=True, env=None, launcher=None, preexec_fn=None):
        cmd = [REFERENCE_PEN] if reference else [sys.executable, "-m", "pen"]
        if launcher is not None:      # a script that runs ours, adjusted for a test
            cmd = [sys.executable, str(launcher)]
        if foreground:
            cmd.append("-f")
        self.cmd = cmd + [str(a) for a in args]
        self.port, self.udp, self.unix = port, udp, unix
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env,
                                     preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                return True
            if self.unix:
                return os.path.exists(self.unix)
            return listening(self.port, self.udp)
        up = wait_until(ready, timeout=STARTUP_TIMEOUT)
        if self.proc.poll() is not None:
            out, err = self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"pen exited {self.proc.returncode}: {err.decode()}")
        assert up, f"pen did not listen on {self.unix or self.port} in {STARTUP_TIMEOUT}s"

    def stop(self, sig=signal.SIGTERM):
        """Stop by PID; returns (returncode, stderr text); keeps stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=TIMEOUT)
        self.stdout = out.decode(errors="replace")
        return self.proc.returncode, err.decode(errors="replace")


@pytest.fixture
def backends():
    """backends(n, **kw) -> list of started Backends, closed afterwards."""
    made = []

    def make(n=2, **kw):
        new = [Backend(f"S{i}", **kw) for i in range(len(made), len(made) + n)]
        made.extend(new)
        return new
    yield make
    for b in made:
        b.close()


@pytest.fixture
def pen(request):
    """pen(*args, port=..) -> a running Pen; stopped afterwards, its stderr
    printed if the test failed."""
    started = []

    def start(*args, **kw):
        p = Pen(args, **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        rc, err = p.stop()
        if err.strip():
            print(f"--- stderr of {' '.join(p.cmd)} (rc {rc}):\n{err[-4000:]}")


def raw_listener(backlog=1):
    """A bare listening socket on 127.0.0.1 that the test drives by hand."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(backlog)
    srv.settimeout(TIMEOUT)
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


@pytest.fixture
def single(pen, backends):
    """single(*options) -> the port of a pen (with those options) in front
    of one echo backend named S0."""
    def start(*options):
        (a,) = backends(1)
        port = free_port()
        pen(*options, f"127.0.0.1:{port}", a.spec, port=port)
        return port
    return start


def connect(port, host="127.0.0.1", source=None, timeout=TIMEOUT):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def ctl(port, line):
    """One command on pen's control socket (127.0.0.1:port); the reply text."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as s:
        s.sendall(line.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)


def read_line(sock):
    """One line (the backend's banner) or '' on EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def banner(port, source=None, host="127.0.0.1"):
    """Connect through pen, return the name of the backend reached ('' if
    pen closed the connection)."""
    with connect(port, host=host, source=source) as s:
        try:
            return read_line(s)
        except ConnectionResetError:
            return ""


def recv_all(sock, limit=None):
    chunks = []
    total = 0
    while limit is None or total < limit:
        chunk = sock.recv(256 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
