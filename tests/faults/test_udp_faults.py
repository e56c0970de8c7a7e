"""UDP faults through the real pen (`-U`) with real UDP backends (issue 15,
part 3), on ours and, where it is installed, on the reference pen 0.34.1
(strict known failures where it does not survive, with the reason).
"""

import selectors
import time

import pytest

from faultkit import (HAVE_REFERENCE, LimitedPen, Sampler, UdpEcho, alive, cpu_seconds,
                      free_port, open_fds, payload, udp_ask, udp_client, wait_until)

NO_REF = pytest.mark.skipif(not HAVE_REFERENCE, reason="no /usr/bin/pen")
MAX_DATAGRAM = 65507          # the largest UDP payload over IPv4


def impls(ref_fails=None):
    """ours, then the reference; `ref_fails` is why the reference does not
    survive this fault (a strict xfail: if it ever passes, the table is wrong)."""
    marks = [NO_REF]
    if ref_fails:
        marks.append(pytest.mark.xfail(reason="pen 0.34.1: " + ref_fails, strict=True))
    return ["ours", pytest.param("ref", marks=marks)]


class UdpFront:
    """pen -U -x 100 -b 1 (ours or the reference) on a free port in front
    of one UdpEcho; back(port) brings a backend back on a closed one's port."""

    def __init__(self, impl):
        self.backend = UdpEcho()
        self.port = free_port()
        self.pen = LimitedPen(["-U", "-x", "100", "-b", "1", f"127.0.0.1:{self.port}",
                               self.backend.spec], port=self.port, udp=True,
                              reference=(impl == "ref"), wait=False)
        self.pid = self.pen.pid
        self.base_fds = None

    def wait_ready(self):
        self.pen.wait_ready()
        self.base_fds = open_fds(self.pid)

    def back(self, port):
        self.backend = UdpEcho(port=port)

    def close(self):
        rc, err = self.pen.stop()
        if err.strip():
            print(f"--- stderr of {' '.join(self.pen.cmd[:2])} (rc {rc}):\n{err[-3000:]}")
        self.backend.close()


@pytest.fixture(scope="module")
def shared():
    """One pen per implementation for the whole module (pen's start-up is
    most of what these tests cost)."""
    made = {}

    def get(impl):
        if not made:                  # both at once: their start-ups overlap
            for i in ["ours"] + ["ref"] * HAVE_REFERENCE:
                made[i] = UdpFront(i)
            for f in made.values():
                f.wait_ready()
        return made[impl]
    yield get
    for f in made.values():
        f.close()


@pytest.fixture
def udp(request, shared):
    f = shared(request.param)
    assert alive(f.pen), "an earlier test killed this pen"
    return f


def token(i, rnd):
    return b"client %d round %d " % (i, rnd) + b"." * (i % 50)


def sender(data):
    """The client index a token names."""
    return int(data.split(b" ")[1])


def bursts(clients, port, rounds, wait):
    """`rounds` bursts back to back, every client sending one datagram in
    each; the replies are then collected for `wait` s.  Returns (right,
    wrong): replies with the receiving client's own token (of any round),
    and replies that name another client."""
    for rnd in range(1, rounds + 1):
        for i, s in enumerate(clients):
            s.sendto(token(i, rnd), ("127.0.0.1", port))
    sel = selectors.DefaultSelector()
    for i, s in enumerate(clients):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    right, wrong = 0, []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                try:
                    data = key.fileobj.recv(65535)
                except OSError:
                    continue
                if sender(data) == key.data:
                    right += 1
                else:
                    wrong.append((key.data, sender(data)))
    finally:
        sel.close()
        for s in clients:
            s.settimeout(1.0)
    return right, wrong


@pytest.mark.parametrize("udp", impls(
    "a late reply can reach another client: a new session may get the local "
    "port of one just closed"), indirect=True)
def test_udp_500_clients_with_x100(udp):
    """500 client addresses, at most 100 sessions (-x 100).  One at a time
    every client is answered.  Then five bursts of all 500 at once while
    the backend answers a second late, so the sessions those replies were
    for are long closed and their ports freed: whatever arrives must reach
    the client that asked, never another (with the kernel choosing the
    ports, about ten of the last 100 sessions get a port that a late reply
    is on its way to).  pen's fds stay bounded by the table, and it serves
    afterwards."""
    p, port, base = udp.pen, udp.port, udp.base_fds
    fds = Sampler(lambda: open_fds(p.pid))
    clients = [udp_client() for _ in range(500)]
    try:
        answered = sum(udp_ask(s, port, token(i, 0), timeout=0.5, tries=2) == token(i, 0)
                       for i, s in enumerate(clients))
        assert answered == 500, f"{answered} of 500 clients answered one at a time"
        udp.backend.delay = 1.0
        right, wrong = bursts(clients, port, 5, wait=2.0)
        udp.backend.delay = 0.0
        peak = fds.stop()
        assert not wrong, f"{len(wrong)} replies reached the wrong client: {wrong[:5]}"
        assert right > 0
        # bounded by the table, not by the clients: at most two fds a
        # session (ours holds one, the reference two)
        assert peak <= base + 2 * 100 + 4, f"{peak} fds open with -x 100 ({base} at start)"
        assert alive(p)
        s = clients[7]
        assert udp_ask(s, port, b"client 7 after", timeout=0.5, tries=3) == b"client 7 after"
    finally:
        udp.backend.delay = 0.0
        fds.stop()
        for s in clients:
            s.close()


@pytest.mark.parametrize("udp", impls(
    "a datagram over 32 KB is cut to 32768 bytes (its buffer size)"), indirect=True)
def test_udp_largest_datagrams_intact(udp):
    """65507-byte datagrams (the IPv4 maximum) go through whole both ways,
    each with its own contents."""
    p, port, b = udp.pen, udp.port, udp.backend
    with udp_client() as s:
        for seed in range(3):
            data = payload(MAX_DATAGRAM, seed=seed)
            reply = udp_ask(s, port, data, timeout=1.0, tries=2)
            assert reply is not None, "no reply"
            assert len(reply) == MAX_DATAGRAM and reply == data, \
                f"{len(reply)} bytes came back of {MAX_DATAGRAM}"
    assert MAX_DATAGRAM in b.sizes and max(b.sizes) == MAX_DATAGRAM, sorted(set(b.sizes))
    assert alive(p)


@pytest.mark.parametrize("udp", impls(), indirect=True)
def test_udp_backend_silent_away_and_back(udp):
    """The only backend goes silent (drops everything), then away (its port
    closed: ICMP port unreachable), then comes back on the same port: pen
    does not die or spin meanwhile (CPU low), and answers again once the
    backend is back (-b 1: its blacklisting ends after a second)."""
    p, port, b = udp.pen, udp.port, udp.backend
    with udp_client() as s:
        assert udp_ask(s, port, b"hello", tries=3) == b"hello"
        b.silent = True
        for i in range(3):
            assert udp_ask(s, port, b"silent %d" % i, timeout=0.2) is None
        the_port = b.port
        b.close()                                   # away
        c0 = cpu_seconds(p.pid)
        for i in range(10):
            assert udp_ask(s, port, b"away %d" % i, timeout=0.1) is None
        used = cpu_seconds(p.pid) - c0
        assert alive(p), "pen died while the backend was away"
        assert used < 0.3, f"pen used {used:.2f} s of CPU in 1 s with its backend away"
        udp.back(the_port)                          # back
        assert wait_until(lambda: udp_ask(s, port, b"back", timeout=0.2) == b"back",
                          timeout=6), "no answer once the backend was back"
    with udp_client() as other:
        assert udp_ask(other, port, b"new client", tries=3) == b"new client"
    assert alive(p)
    assert wait_until(lambda: open_fds(p.pid) <= udp.base_fds + 2 * 100 + 4)
