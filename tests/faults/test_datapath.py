"""Data-path faults through the real pen with real backends (issue 15, part 1).

Every test runs on ours in each data path (splice; the buffer path, `-o
"no splice"`; TLS; HTTP mode with a sticky cookie and a header rule) and,
where the reference pen 0.34.1 is installed, on it too (its plain path, and
-H for the HTTP tests). What the reference does not survive is marked as a
strict known failure with the reason, found by running this file against
it: README's table "Faults survived: ours vs pen 0.34.1" is this file's
result.

To stay in the fault suite's time budget, one pen per data path serves all
the tests that need nothing special (a module-wide pen in front of one
CommandBackend: each connection's first line names the backend's script).
After every fault pen must still be running, its open fds must come back
to where they were, and the next client must be served.
"""

import socket
import time

import pytest

import certs as certgen
from faultkit import (HAVE_REFERENCE, TIMEOUT, CommandBackend, Front, alive, cpu_seconds,
                      digest, drain, exchange, open_fds, payload, read_exactly, read_line, reset,
                      rss_kib, run_threads, shut_write, wait_until)

MB = 1 << 20
STREAM_MODES = ("splice", "buffer", "tls")
# Faults met before any byte is relayed (accept, connect): the buffer path
# is the splice path there, so they run in these two only.
CONNECT_MODES = ("splice", "tls")
NO_REF = pytest.mark.skipif(not HAVE_REFERENCE, reason="no /usr/bin/pen")


def cases(ref_fails=None, modes=STREAM_MODES):
    """(mode, impl) for each of our data paths, then the reference's plain
    path; `ref_fails` is the reason the reference does not survive this
    fault (a strict xfail: if it ever passes, the table is wrong)."""
    marks = [NO_REF]
    if ref_fails:
        marks.append(pytest.mark.xfail(reason="pen 0.34.1: " + ref_fails, strict=True))
    ref_mode = "http" if modes == ("http",) else "splice"
    return ([pytest.param((m, "ours"), id=f"{m}-ours") for m in modes]
            + [pytest.param((ref_mode, "ref"), id="ref", marks=marks)])


# --- backend scripts (the client's first line picks one) ------------------------------

def send_then(close, size):
    """Send `size` bytes, then close (FIN) or reset (RST)."""
    def script(conn):
        conn.sendall(payload(size))
        if close == "rst":
            reset(conn)
        return size
    return script


def read_then(close, keep):
    """Read `keep` bytes of the upload, then stop: close or reset."""
    def script(conn):
        got = len(read_exactly(conn, keep))
        if close == "rst":
            reset(conn)
        return got
    return script


def reply_after_eof(conn):
    got = drain(conn)[0]
    conn.sendall(payload(5 * MB, seed=1))
    return got


def reply_then_read(conn):
    conn.sendall(payload(5 * MB, seed=2))
    conn.shutdown(socket.SHUT_WR)
    # read the upload late and through a small buffer: it waits in pen
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    time.sleep(0.3)
    return drain(conn)[0]


def firehose(conn):
    block = payload(MB)
    sent = 0
    try:
        while sent < 512 * MB:
            conn.sendall(block)
            sent += len(block)
    except OSError:
        pass
    return sent


SCRIPTS = {
    "reply-fin": send_then("fin", 3 * MB), "reply-rst": send_then("rst", 3 * MB),
    "upload-fin": read_then("fin", 256 * 1024), "upload-rst": read_then("rst", 256 * 1024),
    "reply-after-eof": reply_after_eof, "reply-then-read": reply_then_read,
    "firehose": firehose,
}


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tlscerts(tmp_path_factory):
    return certgen.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def backend():
    b = CommandBackend(SCRIPTS)
    yield b
    b.close()


def started(f):
    f.base_fds = open_fds(f.pen.pid)
    return f


def stop_all(fronts):
    for f in fronts:
        rc, err = f.stop()
        if err.strip():
            name = "pen 0.34.1" if f.reference else f"our pen ({f.mode})"
            print(f"--- stderr of {name} (rc {rc}):\n{err[-3000:]}")


def start_all(fronts):
    """Wait for pens started together (wait=False): on a loaded machine
    their start-ups overlap instead of adding up."""
    for f in fronts:
        f.pen.wait_ready()
        started(f)


@pytest.fixture(scope="module")
def shared(backend, tlscerts):
    """shared(mode, impl) -> the module's pen for that data path (all of
    them are started together, on first use)."""
    made = {}

    def get(mode, impl):
        if not made:
            todo = [(m, "ours") for m in STREAM_MODES] + [("splice", "ref")] * HAVE_REFERENCE
            for m, i in todo:
                made[m, i] = Front(m, [backend.spec], reference=(i == "ref"), certs=tlscerts,
                                   extra=["-x", "200"], wait=False)
            start_all(made.values())
        return made[mode, impl]
    yield get
    stop_all(made.values())


@pytest.fixture
def front(request, shared):
    f = shared(*request.param)
    assert alive(f.pen), "an earlier test killed this pen"
    return f


@pytest.fixture
def fronts(tlscerts):
    """fronts(mode, impl, specs, **kw) -> a pen of this test's own."""
    made = []

    def make(mode, impl, specs, **kw):
        made.append(started(Front(mode, specs, reference=(impl == "ref"),
                                  certs=tlscerts, **kw)))
        return made[-1]
    yield make
    stop_all(made)


def ask(f, script, timeout=10):
    """A client of `f` whose first line picks the backend's script."""
    s = f.connect(timeout=timeout)
    s.sendall(script.encode() + b"\n")
    return s


def echo_ok(f):
    """One round trip, without a half-close (the reference's loss of data
    after one is a fault of its own, below)."""
    with ask(f, "echo") as s:
        s.sendall(b"ping\n")
        assert read_exactly(s, 5) == b"ping\n"


def still_serving(f):
    """pen is alive, its fds are back to the baseline, a new client is served."""
    assert alive(f.pen), "pen died"
    assert wait_until(lambda: open_fds(f.pen.pid) <= f.base_fds + 2, timeout=8), \
        f"fds leaked: {open_fds(f.pen.pid)} open, {f.base_fds} at start"
    echo_ok(f)


# --- the backend goes away mid-stream ----------------------------------------------------

@pytest.mark.parametrize("front", cases(), indirect=True)
def test_backend_fin_mid_reply(front):
    """The backend sends 3 MB and closes: the client gets every byte, then EOF."""
    t0 = time.monotonic()
    with ask(front, "reply-fin") as s:
        got, err = drain(s)
    assert time.monotonic() - t0 < 8, "the client hung after the backend went away"
    assert (got, err) == (3 * MB, None)
    still_serving(front)


@pytest.mark.parametrize("front", cases(
    "a backend's reset reaches the client as a clean EOF: it cannot tell its reply "
    "was cut short"), indirect=True)
def test_backend_rst_mid_reply(front):
    """The backend sends 3 MB and resets: the client must not mistake the
    truncated reply for a whole one -- its connection ends with an error."""
    t0 = time.monotonic()
    with ask(front, "reply-rst") as s:
        got, err = drain(s)
    assert time.monotonic() - t0 < 8, "the client hung after the backend went away"
    assert got <= 3 * MB
    assert isinstance(err, OSError), f"clean EOF after {got} of {3 * MB} bytes"
    still_serving(front)


@pytest.mark.parametrize("front", cases(), indirect=True)
@pytest.mark.parametrize("close", ["fin", "rst"])
def test_backend_closes_mid_upload(front, close):
    """The backend stops reading an 8 MB upload after 256 KB and closes
    (or resets): the client's upload ends with an error, it does not hang."""
    t0 = time.monotonic()
    ended = None
    with ask(front, "upload-" + close) as s:
        try:
            s.sendall(payload(8 * MB))
            shut_write(s)
            ended = drain(s)[1] or "eof"
        except OSError as e:
            ended = e
    assert time.monotonic() - t0 < 9, "the upload hung after the backend went away"
    assert isinstance(ended, OSError), "the cut upload looked complete to the client"
    still_serving(front)


# --- half-close both ways -----------------------------------------------------------------

REF_HALF_CLOSE = ("closes both sides once the backend has closed, dropping what it had "
                  "not yet delivered")


@pytest.mark.parametrize("front", cases(REF_HALF_CLOSE), indirect=True)
def test_client_half_close_gets_whole_reply(front, backend):
    """The client sends 1 MB and shuts its write side; the backend answers
    5 MB after that EOF and closes: all 5 MB arrive, though the client
    reads them only later (and through a small receive buffer)."""
    with ask(front, "reply-after-eof", timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(payload(MB))
        shut_write(s)
        time.sleep(0.3)        # the reply waits in pen when the backend closes
        reply = read_exactly(s, 5 * MB + 1)
    assert digest(reply) == digest(payload(5 * MB, seed=1)), len(reply)
    assert wait_until(lambda: ("reply-after-eof", MB) in backend.results)
    still_serving(front)


@pytest.mark.parametrize("front", cases(REF_HALF_CLOSE), indirect=True)
def test_backend_half_close_gets_whole_upload(front, backend):
    """The backend sends 5 MB and shuts its write side; 0.3 s after that
    EOF the client uploads 5 MB and shuts its own: the backend gets all of
    it, though it reads it only later (and through a small buffer)."""
    before = len(backend.results)
    with ask(front, "reply-then-read", timeout=5) as s:
        reply = read_exactly(s, 5 * MB + 1)
        assert digest(reply) == digest(payload(5 * MB, seed=2)), len(reply)
        time.sleep(0.3)        # the upload comes a while after the backend's EOF
        s.sendall(payload(5 * MB, seed=3))
        shut_write(s)
        drain(s)

    def mine():
        return [r for r in backend.results[before:]
                if isinstance(r, tuple) and r[0] == "reply-then-read"]
    assert wait_until(mine, timeout=5) and mine()[0][1] == 5 * MB, mine()
    still_serving(front)


# --- slow reader, slowloris ----------------------------------------------------------------

@pytest.mark.parametrize("front", cases(), indirect=True)
def test_slow_reader_keeps_rss_bounded(front):
    """A backend that sends as fast as it can, a client that reads 16 KB
    every 20 ms for 1.5 s: pen must not buffer the difference (its RSS
    grows by less than 32 MB; unbounded buffering would add GBs)."""
    base = peak = rss_kib(front.pen.pid)
    with ask(front, "firehose") as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            s.recv(16 * 1024)
            time.sleep(0.02)
            peak = max(peak, rss_kib(front.pen.pid))
    assert peak - base < 32 * 1024, f"RSS grew {base} -> {peak} KiB"
    still_serving(front)


@pytest.mark.parametrize("front", cases(), indirect=True)
def test_slowloris_does_not_starve_others(front):
    """100 clients that dribble one byte every 0.2 s (in TLS mode, a
    ClientHello that never completes): a normal client is served at once."""
    slow = []
    tls = front.mode == "tls"
    try:
        for _ in range(100):
            slow.append(socket.create_connection(("127.0.0.1", front.port), timeout=TIMEOUT))
        for round_ in range(3):
            for s in slow:
                s.send(b"\x16" if tls and round_ == 0 else b"e")
            t0 = time.monotonic()
            echo_ok(front)
            assert time.monotonic() - t0 < 2.0, "a normal client waited behind slowloris"
            time.sleep(0.2)
        assert alive(front.pen)
    finally:
        for s in slow:
            s.close()
    still_serving(front)


# --- many parallel bulk transfers --------------------------------------------------------------

@pytest.mark.parametrize("front", cases(), indirect=True)
def test_50_parallel_2mb_both_ways(front, backend):
    """50 clients at once each send 2 MB of their own and read it back:
    every byte arrives, unchanged, both ways (no half-close here, that has
    tests of its own)."""
    size = 2 * MB
    seeds = [int(time.monotonic() * 1000) % 100000 * 100 + i for i in range(50)]

    def one(i):
        data = payload(size, seed=seeds[i])
        with ask(front, "echo", timeout=30) as s:
            return digest(exchange(s, data, size, timeout=40)) == digest(data)
    results = run_threads(one, 50, timeout=90)
    assert results == [True] * 50, results
    want = {("echo", (size, digest(payload(size, seed=sd)))) for sd in seeds}
    assert wait_until(lambda: want <= set(backend.results), timeout=10)
    still_serving(front)


# --- the fd limit ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases(
    "exits (\"Too many open files\") when it cannot open a socket for a server",
    modes=CONNECT_MODES))
def test_fd_storm_past_the_limit(fronts, backend, case):
    """RLIMIT_NOFILE 64, 150 clients held open: pen stays idle (no busy
    loop on EMFILE: under 0.25 s of CPU in 1.5 s), and serves again once
    they are gone."""
    mode, impl = case
    f = fronts(mode, impl, [backend.spec], nofile=64)
    clients = []
    try:
        for _ in range(150):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", f.port))
            clients.append(s)
        time.sleep(0.5)                       # let pen hit the limit
        c0 = cpu_seconds(f.pen.pid)
        time.sleep(1.5)
        used = cpu_seconds(f.pen.pid) - c0
        assert used < 0.25, f"pen used {used:.2f} s of CPU in 1.5 s while out of fds"
        assert alive(f.pen), "pen died"
    finally:
        for s in clients:
            s.close()
    still_serving(f)


# --- a backend whose accept queue is full ----------------------------------------------------

@pytest.mark.parametrize("case", cases(modes=CONNECT_MODES))
def test_backend_accept_queue_full_times_out(fronts, backend, case):
    """The first backend's listen queue is full (it never accepts, connects
    hang): with -t 1 a client is not kept waiting past the timeout -- it
    reaches the second, good backend."""
    mode, impl = case
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(8):                  # fill the queue until connects hang
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(full.getsockname())
            fillers.append(s)
        spec = "127.0.0.1:%d" % full.getsockname()[1]
        f = fronts(mode, impl, [spec, backend.spec], extra=["-t", "1", "-r"])
        for _ in range(2):              # round robin: one of these meets the full one
            t0 = time.monotonic()
            echo_ok(f)
            assert time.monotonic() - t0 < 4, "the client waited past -t"
        still_serving(f)
    finally:
        for s in fillers:
            s.close()
        full.close()


# --- HTTP mode ---------------------------------------------------------------------------------

class HttpEcho(CommandBackend):
    """HTTP/1.1 on the CommandBackend: the path names what to do -- /echo
    answers with the request's body, /fin and /rst stop a 2 MB reply after
    1 MB (close, or reset)."""

    def __init__(self):
        super().__init__({})
        self.script = self._http

    def _http(self, conn):
        head = read_line(conn, 10000)
        while not head.endswith(b"\r\n\r\n"):
            line = read_line(conn, 10000)
            if not line:
                return None
            head += line
        path = head.split(b" ")[1].decode()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        body = read_exactly(conn, length)
        if path in ("/fin", "/rst"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * MB)
                         + payload(MB))
            if path == "/rst":
                reset(conn)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return path, head, len(body), digest(body)


HTTP_OPTIONS = ["-x", "200", "-o", "sticky_cookie PENID",
                "-o", 'header set server "X-Fault: yes"']


@pytest.fixture(scope="module")
def http_shared():
    backend = HttpEcho()
    made = {}

    def get(impl):
        if not made:
            for i in ["ours"] + ["ref"] * HAVE_REFERENCE:
                extra = ["-x", "200"] if i == "ref" else HTTP_OPTIONS
                made[i] = Front("http", [backend.spec], reference=(i == "ref"), extra=extra,
                                wait=False)
                made[i].backend = backend
            start_all(made.values())
        return made[impl]
    yield get
    stop_all(made.values())
    backend.close()


@pytest.fixture
def http_front(request, http_shared):
    f = http_shared(request.param[1])
    assert alive(f.pen), "an earlier test killed this pen"
    return f


def http_post(f, path, body, timeout=30):
    """POST, read to EOF; returns (head, body, error or None)."""
    with f.connect(timeout=timeout) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
        data, err = bytearray(), None
        try:
            while True:
                chunk = s.recv(256 * 1024)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            err = e
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return head, rest, err


def http_still_serving(f):
    assert alive(f.pen), "pen died"
    assert wait_until(lambda: open_fds(f.pen.pid) <= f.base_fds + 2, timeout=8), \
        f"fds leaked: {open_fds(f.pen.pid)} open, {f.base_fds} at start"
    head, rest, err = http_post(f, "/echo", b"ping")
    assert head.startswith(b"HTTP/1.1 200") and rest == b"ping", (head, rest, err)


@pytest.mark.parametrize("http_front", cases(modes=("http",)), indirect=True)
def test_http_50_parallel_2mb_both_ways(http_front):
    """50 POSTs of 2 MB at once through the HTTP framing (ours: with a
    sticky cookie and a header rule): each body reaches the backend whole
    and comes back whole."""
    f = http_front
    seeds = [int(time.monotonic() * 1000) % 100000 * 100 + i for i in range(50)]

    def one(i):
        body = payload(2 * MB, seed=seeds[i])
        head, rest, err = http_post(f, "/echo", body)
        cookie = f.reference or b"Set-Cookie: PENID=" in head
        return head.startswith(b"HTTP/1.1 200") and digest(rest) == digest(body) and cookie
    assert run_threads(one, 50, timeout=90) == [True] * 50
    seen = [r for r in f.backend.results if isinstance(r, tuple) and r[0] == "/echo"]
    want = {digest(payload(2 * MB, seed=sd)) for sd in seeds}
    assert want <= {r[3] for r in seen}
    if not f.reference:
        assert all(b"X-Fault: yes" in r[1] for r in seen)
    http_still_serving(f)


@pytest.mark.parametrize("http_front", cases(modes=("http",)), indirect=True)
def test_http_backend_fin_mid_body(http_front):
    """The backend promises 2 MB, sends 1 MB and closes: the client gets
    no more than was sent and is not left hanging."""
    t0 = time.monotonic()
    head, rest, err = http_post(http_front, "/fin", b"x" * 1000)
    assert time.monotonic() - t0 < 8, "the client hung after the backend went away"
    assert head.startswith(b"HTTP/1.1 200") and len(rest) <= MB, (head, len(rest))
    http_still_serving(http_front)


@pytest.mark.parametrize("http_front", cases(
    "a backend's reset reaches the client as a clean EOF: it cannot tell its reply "
    "was cut short", modes=("http",)), indirect=True)
def test_http_backend_rst_mid_body(http_front):
    """The backend promises 2 MB, sends 1 MB and resets: the client's
    connection ends with an error, not a clean EOF."""
    t0 = time.monotonic()
    head, rest, err = http_post(http_front, "/rst", b"x" * 1000)
    assert time.monotonic() - t0 < 8, "the client hung after the backend went away"
    assert len(rest) <= MB
    assert isinstance(err, OSError), f"clean EOF after {len(rest)} of {2 * MB} bytes"
    http_still_serving(http_front)
