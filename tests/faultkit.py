"""Helpers for the fault suite (tests/faults/): scripted backends, a pen
started with lowered limits, control-socket talk, and process figures.

tests/faults has no conftest.py (two conftest modules in sibling test
directories would collide as `conftest`); the integration fixtures'
building blocks are imported from tests/integration/conftest.py as the
module `integration.conftest` (tests/ is on pythonpath) and reused here.
"""

import hashlib
import os
import queue
import resource
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

from integration.conftest import (REFERENCE_PEN, TIMEOUT, Backend, Pen, UdpBackend,  # noqa: F401
                                  free_port, listening, recv_all, rss_kib, wait_until)

HAVE_REFERENCE = os.access(REFERENCE_PEN, os.X_OK)


def payload(size, seed=0):
    """`size` deterministic, non-repeating-looking bytes (cheap to make)."""
    block = hashlib.sha256(b"%d" % seed).digest() * 2048          # 64 KiB
    reps = size // len(block) + 1
    return (block * reps)[:size]


def digest(data):
    return hashlib.sha256(data).hexdigest()


# --- processes -------------------------------------------------------------------------

class LimitedPen(Pen):
    """A Pen whose process starts with RLIMIT_NOFILE lowered to `nofile`
    (set in the child by a preexec_fn, so the limit is pen's own)."""

    def __init__(self, args, port=None, nofile=None, reference=False, udp=False, wait=True):
        cmd = [REFERENCE_PEN] if reference else [sys.executable, "-m", "pen"]
        self.cmd = cmd + ["-f"] + [str(a) for a in args]
        self.port, self.udp, self.unix = port, udp, None

        def lower():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=lower)
        self.pid = self.proc.pid
        if wait:                  # else the caller calls wait_ready() (pens started at once)
            self.wait_ready()


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return -1


def cpu_seconds(pid):
    """utime + stime of `pid` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(p):
    return p.proc.poll() is None


# --- control socket --------------------------------------------------------------------

def control(port, line, timeout=TIMEOUT):
    """Send one command to pen's control port; returns the reply text."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        return recv_all(s).decode(errors="replace")


def config_snapshot(port):
    """What `write` says (the whole configuration) minus nothing: the
    yardstick for "a refused command changed nothing"."""
    return control(port, "write")


# --- scripted backends -----------------------------------------------------------------

class ScriptBackend(Backend):
    """A threaded backend whose every connection runs `script(conn)`.
    Whatever `script` returns is appended to `results`."""

    def __init__(self, script, host="127.0.0.1", backlog=128):
        self.script = script
        self.results = []
        super().__init__("script", host=host, banner=False)
        if backlog != 128:
            self.sock.listen(backlog)

    def _handle(self, conn):
        conn.settimeout(30)
        try:
            self.results.append(self.script(conn))
        except OSError as e:
            self.results.append(e)
        finally:
            try:
                conn.close()
            except OSError:
                pass


def reset(sock):
    """Close with RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(256 * 1024, n - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def exchange(sock, data, want, timeout=30):
    """Send `data` while reading the reply, on one thread: returns what was
    read once `want` bytes arrived, the peer closed, or `timeout` passed.
    One thread because an SSLSocket is one OpenSSL SSL object, which must
    not be read and written by two threads at once: OpenSSL's state
    breaks (about 1 run in 8 of 50 parallel 2 MB echoes, the reader got
    no byte and then an SSL EOF).  Plain sockets go the same way."""
    tls = isinstance(sock, ssl.SSLSocket)
    soft = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
    sock.setblocking(False)
    out = memoryview(data)
    got = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while len(got) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            sel.modify(sock, events)
            if not (tls and sock.pending()):      # decrypted bytes wait inside
                sel.select(min(left, 1.0))
            try:
                chunk = sock.recv(min(256 * 1024, want - len(got)))
                if not chunk:
                    break
                got += chunk
            except soft:
                pass
            if out:
                try:
                    out = out[sock.send(out[:256 * 1024]):]
                except soft:
                    pass
    sock.settimeout(timeout)
    return bytes(got)


def drain(sock, limit=64 << 20):
    """Read until EOF (or an error); returns (bytes read count, error or None)."""
    total = 0
    try:
        while total < limit:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                return total, None
            total += len(chunk)
    except OSError as e:
        return total, e
    return total, None


# --- a pen in front of backends, in one of the data-path modes -------------------------

MODES = ("splice", "buffer", "tls", "http")


class Front:
    """pen (ours or the reference) listening on `port` in `mode`, in front of
    `backends` (specs).  connect() gives a client socket (TLS-wrapped in
    tls mode: a stream that ends without close_notify raises SSLEOFError).
    http mode is -H: clients must speak HTTP/1.x."""

    def __init__(self, mode, specs, reference=False, extra=(), nofile=None, certs=None,
                 wait=True):
        self.mode, self.reference = mode, reference
        self.port = free_port()
        args = list(extra)
        if mode == "buffer":
            args += ["-o", "no splice"]
        if mode == "http":
            args += ["-H"]
        if mode == "tls":
            args += ["-E", certs.server_cert, "-K", certs.server_key, "-G", certs.ca_cert]
            self.ctx = ssl.create_default_context(cafile=certs.ca_cert)
        args += [f"127.0.0.1:{self.port}"] + list(specs)
        self.pen = LimitedPen(args, port=self.port, nofile=nofile, reference=reference,
                              wait=wait)

    def connect(self, timeout=TIMEOUT):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.mode == "tls":
            # A TLS stream cut without close_notify must read as an error
            # (SSLEOFError), not as a clean EOF.
            s = self.ctx.wrap_socket(s, server_hostname="localhost",
                                     suppress_ragged_eofs=False)
        return s

    def stop(self):
        return self.pen.stop()


def shut_write(sock):
    """Half-close the write side (TLS: close_notify is not a half-close, so
    the plain shutdown on the TCP socket under it)."""
    if isinstance(sock, ssl.SSLSocket):
        socket.socket.shutdown(sock, socket.SHUT_WR)
    else:
        sock.shutdown(socket.SHUT_WR)


def run_threads(fn, n, timeout=60):
    """Run fn(i) in n threads; returns the list of results (exceptions kept)."""
    results = [None] * n

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:        # noqa: BLE001 - reported by the caller's assert
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results


def sighup(p):
    p.proc.send_signal(signal.SIGHUP)


# --- one backend for many faults: the client's first line names the script ------------

def read_line(sock, limit=100):
    """Bytes up to and including the first newline (one recv per byte, so
    nothing after the line is taken from the socket)."""
    line = b""
    while len(line) < limit and not line.endswith(b"\n"):
        c = sock.recv(1)
        if not c:
            break
        line += c
    return line


def echo(conn):
    """Echo until EOF, then half-close; returns (bytes, sha256) received."""
    h, total = hashlib.sha256(), 0
    while True:
        data = conn.recv(256 * 1024)
        if not data:
            break
        h.update(data)
        total += len(data)
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    return total, h.hexdigest()


class CommandBackend(ScriptBackend):
    """A ScriptBackend whose connections each start with a line naming the
    script to run (`scripts[name](conn)`), so one pen in front of one
    backend serves every fault of a test module.  `results` gets
    (name, what the script returned)."""

    def __init__(self, scripts, **kw):
        self.scripts = dict(scripts, echo=echo)
        super().__init__(self._dispatch, **kw)

    def _dispatch(self, conn):
        name = read_line(conn).strip().decode(errors="replace")
        script = self.scripts.get(name)
        return name, (script(conn) if script is not None else None)


# --- UDP -------------------------------------------------------------------------------

class UdpEcho(UdpBackend):
    """A UDP backend that sends every datagram back unchanged (up to 65507
    bytes, so no prefix), `delay` seconds later if set; `silent` makes it
    drop them instead; close() and a new UdpEcho(port=...) take it away
    and bring it back."""

    def __init__(self, host="127.0.0.1", port=0):
        self.silent = False
        self.delay = 0.0
        self.sizes = []               # size of every datagram received
        self.late = queue.Queue()     # (when, data, addr) while delay is set
        super().__init__("echo", host=host, port=port)
        threading.Thread(target=self._answer_late, daemon=True).start()

    def answer(self, data, addr):
        self.sizes.append(len(data))
        if self.silent:
            return
        if self.delay:
            self.late.put((time.monotonic() + self.delay, data, addr))
        else:
            self._reply(data, addr)

    def _answer_late(self):
        while not self.stopped.is_set():
            try:
                when, data, addr = self.late.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(max(0.0, when - time.monotonic()))
            self._reply(data, addr)

    def _reply(self, data, addr):
        try:
            self.sock.sendto(data, addr)
        except OSError:
            pass


def udp_client(timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def udp_ask(sock, port, data, timeout=1.0, tries=1):
    """Send `data` to pen's UDP port and wait for one reply (None if none
    came in `tries` times `timeout`)."""
    sock.settimeout(timeout)
    for _ in range(tries):
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except socket.timeout:
            continue
    return None


class Sampler:
    """Samples fn() every `interval` s in a thread until stop(); keeps the max."""

    def __init__(self, fn, interval=0.01):
        self.fn, self.interval = fn, interval
        self.peak = fn()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, self.fn())

    def stop(self):
        self.done.set()
        self.thread.join(2)
        return self.peak
