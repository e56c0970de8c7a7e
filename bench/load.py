"""Load generators: wrk runs, idle connections for the memory test, UDP pings.

Each function is bounded in time and count and only talks to 127.0.0.1.
"""

import errno
import json
import selectors
import socket
import subprocess
import time
from pathlib import Path

from services import HOST, rss_kib

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_json.lua"
WRK_MARK = "WRKJSON "
IDLE_BATCH = 500
IDLE_TIMEOUT = 60.0        # seconds for all idle connections to be relayed
UDP_SOCKETS = 16           # client addresses, one request in flight each
UDP_RESEND = 0.2           # seconds before a lost datagram is sent again


class LoadError(RuntimeError):
    """A load run could not produce a number (`target`: whose fault)."""

    def __init__(self, message, target=None):
        super().__init__(message)
        self.target = target


class Pace:
    """Keeps a loop at `rate` turns a second (0: no pacing): wait() after
    each turn.  A loop that fell more than a second behind (a pause, a slow
    turn) starts afresh rather than catching up in a burst."""

    def __init__(self, rate, stop):
        self.interval = 1.0 / rate if rate else 0.0
        self.stop = stop                    # a threading.Event ends a wait
        self.next_at = time.monotonic()

    def wait(self):
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay < -1.0:
            self.next_at = time.monotonic()
        elif delay > 0:
            self.stop.wait(delay)


def wrk(wrk_exe, port, path, seconds, conns, threads, close=False):
    """One wrk run; returns its summary dict (see wrk_json.lua)."""
    argv = [wrk_exe, "-t", str(threads), "-c", str(conns),
            "-d", f"{seconds:g}s", "--timeout", "5s", "-s", str(WRK_SCRIPT)]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}/{path}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=seconds + 30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish: {' '.join(argv)}") from exc
    for line in done.stdout.splitlines():
        if line.startswith(WRK_MARK):
            result = json.loads(line[len(WRK_MARK):])
            result["seconds"] = result["duration_us"] / 1e6
            result["errors"] = sum(result[k] for k in
                                   ("connect", "read", "write", "status",
                                    "timeout"))
            return result
    raise LoadError(f"wrk printed no summary (exit {done.returncode}): "
                    f"{done.stderr.strip() or done.stdout.strip()}")


def count_established(ports):
    """Established TCP sockets whose local port is one of `ports`."""
    wanted = {f"0100007F:{p:04X}" for p in ports}
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split(None, 4)
            if fields[3] == "01" and fields[1] in wanted:
                count += 1
    return count


def settle_rss(pid, rounds=10, pause=0.1):
    """RSS once two readings agree (bounded), in KiB."""
    last = rss_kib(pid)
    for _ in range(rounds):
        time.sleep(pause)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def idle_memory(proc, n, backend_ports, alive, path, body_size):
    """Hold n idle connections through a balancer; measure its RSS growth.

    The connections are opened from this process in batches; after each
    batch we poll /proc/net/tcp until the backends see as many relayed
    connections as we opened.  RSS is read then ("fresh": connected, no
    byte relayed yet), and again after one kept-alive HTTP request and its
    response went through each connection ("idle": what a pool of idle
    keep-alive connections costs).  Returns a dict of KiB per connection.
    """
    base_conns = count_established(backend_ports)
    base = settle_rss(proc.pid)
    socks = []
    deadline = time.monotonic() + IDLE_TIMEOUT

    def check(what, done, total):
        if not alive():
            raise LoadError(f"balancer exited with {len(socks)} "
                            f"connections open")
        if time.monotonic() > deadline:
            raise LoadError(f"only {done} of {total} connections {what} "
                            f"in {IDLE_TIMEOUT:.0f}s")

    try:
        while len(socks) < n:
            for _ in range(min(IDLE_BATCH, n - len(socks))):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((HOST, proc.port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise LoadError(f"connect: {errno.errorcode.get(err)} "
                                    f"after {len(socks)} connections")
                socks.append(sock)
            while True:
                got = count_established(backend_ports) - base_conns
                if got >= len(socks):
                    break
                check("reached the backends", got, len(socks))
                time.sleep(0.02)
        fresh = settle_rss(proc.pid)
        request = (f"GET /{path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
                   .encode())
        for start in range(0, n, IDLE_BATCH):
            batch = socks[start:start + IDLE_BATCH]
            one_request(batch, request, body_size,
                        lambda done: check("answered a request", start + done,
                                           n))
        idle = settle_rss(proc.pid)
        return {"conns": n, "rss_before_kib": base, "rss_fresh_kib": fresh,
                "rss_after_kib": idle,
                "fresh_kib_per_conn": (fresh - base) / n,
                "kib_per_conn": (idle - base) / n}
    finally:
        for sock in socks:
            sock.close()


def one_request(socks, request, body_size, check):
    """Send `request` on every socket and read each whole response."""
    sel = selectors.DefaultSelector()
    pending = {}
    try:
        for sock in socks:
            if sock.send(request) != len(request):
                raise LoadError("short send of a small request")
            sel.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
        while pending:
            check(len(socks) - len(pending))
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise LoadError("balancer closed an idle connection")
                got = pending[sock] + data
                head, sep, body = got.partition(b"\r\n\r\n")
                if sep and len(body) >= body_size:
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise LoadError(f"bad response {head[:40]!r}")
                    sel.unregister(sock)
                    del pending[sock]
                else:
                    pending[sock] = got
    finally:
        sel.close()


def udp_rate(port, seconds):
    """UDP request/response pairs per second through `port`.

    UDP_SOCKETS client sockets each keep one datagram in flight; a datagram
    not answered within UDP_RESEND seconds is counted lost and sent again.
    """
    sel = selectors.DefaultSelector()
    socks = []
    sent_at = {}
    replies = lost = 0
    try:
        for i in range(UDP_SOCKETS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((HOST, port))
            sel.register(sock, selectors.EVENT_READ, i)
            socks.append(sock)
        payload = b"q" * 64
        start = time.monotonic()
        end = start + seconds
        for sock in socks:
            sock.send(payload)
            sent_at[sock] = start
        now = start
        while now < end:
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                while True:
                    try:
                        sock.recv(2048)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        break
                    replies += 1
                    try:
                        sock.send(payload)
                    except OSError:
                        pass
                    sent_at[sock] = time.monotonic()
            now = time.monotonic()
            for sock, when in sent_at.items():
                if now - when > UDP_RESEND:
                    lost += 1
                    try:
                        sock.send(payload)
                    except OSError:
                        pass
                    sent_at[sock] = now
        elapsed = time.monotonic() - start
        return {"requests": replies, "lost": lost, "seconds": elapsed,
                "errors": lost}
    finally:
        for sock in socks:
            sel.unregister(sock)
            sock.close()
        sel.close()


def interleaved_latency(ports, path, seconds, fresh=False):
    """Round-trip times of one small request, taking turns per request.

    One kept-alive connection per target; each pass sends one request to
    every target in turn (the order rotating each pass), so a noisy
    neighbour hits every target's samples alike.  Returns {target: [ns]}.
    `fresh`: every request on a new connection instead, its connect in
    the time (the client closes it once the response is in).
    """
    request = f"GET /{path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    conns, sizes, times = {}, {}, {}
    buf = bytearray(65536)
    view = memoryview(buf)
    target = None
    try:
        for target, port in ports.items():
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns[target] = sock
            sizes[target] = response_size(sock, request)
            times[target] = []
        order = list(conns)
        end = time.monotonic() + seconds
        turn = 0
        while time.monotonic() < end:
            turn += 1
            shift = turn % len(order)
            for target in order[shift:] + order[:shift]:
                size = sizes[target]
                if fresh:
                    conns[target].close()     # the last one's close is not timed
                start = time.perf_counter_ns()
                if fresh:
                    sock = conns[target] = socket.create_connection((HOST, ports[target]),
                                                                    timeout=5)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                else:
                    sock = conns[target]
                sock.sendall(request)
                got = 0
                while got < size:
                    n = sock.recv_into(view[got:size])
                    if not n:
                        raise LoadError("closed the connection", target)
                    got += n
                times[target].append(time.perf_counter_ns() - start)
        return times
    except LoadError as exc:
        exc.target = exc.target or target
        raise
    except OSError as exc:
        raise LoadError(f"latency run: {exc}", target) from exc
    finally:
        for sock in conns.values():
            sock.close()


def response_size(sock, request):
    """Length of the whole response to `request` (nginx's is constant)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise LoadError("connection closed before the response header")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None or not head.startswith(b"HTTP/1.1 200"):
        raise LoadError(f"unexpected response {head[:60]!r}")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise LoadError("connection closed in the response body")
        body += chunk
    return len(head) + 4 + length


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]
