"""HTTP mode through the real pen (SPEC §10.3): header rules both ways,
sticky cookies, pipelining, upgrades, hostile requests, bytes that are not
HTTP, with a real HTTP backend the test runs."""

import shutil
import socket
import subprocess

import pytest

from conftest import TIMEOUT, ThreadedServer, connect, free_port, listening, wait_until
from test_control import ME, ask

CURL = shutil.which("curl")


class HttpBackend(ThreadedServer):
    """Answers each request with a 200 whose body is the request head it
    received (so the test sees what pen forwarded); /big answers a chunked
    body of `big` bytes; /upgrade answers 101 and then echoes raw bytes."""

    def __init__(self, name="A", big=0, extra=b""):
        self.name, self.big, self.extra = name.encode(), big, extra
        self.heads = []
        super().__init__()

    def handle(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.heads.append(head)
                target = head.split(b" ")[1]
                if target == b"/upgrade":
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                                 b"Connection: Upgrade\r\n\r\n" + buf)
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            return
                        conn.sendall(data)
                if target == b"/big":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b"x" * 65536
                    left = self.big
                    while left:
                        n = min(left, len(chunk))
                        conn.sendall(b"%x\r\n" % n + chunk[:n] + b"\r\n")
                        left -= n
                    conn.sendall(b"0\r\n\r\n")
                    continue
                body = self.name + b"\n" + head
                conn.sendall(b"HTTP/1.1 200 OK\r\nServer: backend\r\n" + self.extra +
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            conn.close()

class Responses:
    """Reads Content-Length responses off one connection, in order."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _more(self):
        data = self.sock.recv(65536)
        assert data, self.buf
        self.buf += data

    def next(self):
        """(head, body) of the next response."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return head, body


def read_response(sock):
    return Responses(sock).next()


@pytest.fixture
def http_pen(pen):
    made = []

    def start(*options, n=1, **kw):
        backends = [HttpBackend(chr(ord("A") + i), **kw) for i in range(n)]
        made.extend(backends)
        ctl, port = free_port(), free_port()
        pen("-u", ME, "-C", f"127.0.0.1:{ctl}", *options, f"127.0.0.1:{port}",
            *[b.spec for b in backends], port=port)
        assert wait_until(lambda: listening(ctl))
        return port, f"127.0.0.1:{ctl}", backends
    yield start
    for b in made:
        b.close()


GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def test_header_rules_both_ways_on_every_pipelined_request(http_pen):
    port, ctl, (a,) = http_pen("-o", 'header set server "X-Real-IP: %r"',
                               "-o", 'header set client "Server: WWW-Server"',
                               "-o", 'header add client "X-Via: pen"')
    assert ask(ctl, "header") == ('0 set server "X-Real-IP: %r"\n'
                                  '1 set client "Server: WWW-Server"\n'
                                  '2 add client "X-Via: pen"\n')
    with connect(port) as s:
        s.sendall(GET % b"1" + GET % b"2" + GET % b"3")     # pipelined
        responses = Responses(s)
        for i in (1, 2, 3):
            head, body = responses.next()
            assert b"\r\nServer: WWW-Server" in head and b"backend" not in head
            assert b"\r\nX-Via: pen" in head
            assert body.startswith(b"A\nGET /%d HTTP/1.1\r\n" % i)
            assert b"\r\nX-Real-IP: 127.0.0.1" in body
    assert len(a.heads) == 3


def test_x_forwarded_for_and_proto_with_http(http_pen):
    port, ctl, (a,) = http_pen("-H")
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n")
        _, body = read_response(s)
    assert b"\r\nX-Forwarded-For: 127.0.0.1" in body
    assert b"\r\nX-Forwarded-Proto: http" in body and b"https" not in body


def _cookie_of(head):
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            return line.split(b":", 1)[1].strip()
    return None


def test_sticky_cookie_keeps_a_client_on_its_server_until_it_cannot(http_pen):
    port, ctl, (a, b) = http_pen("-r", "-o", "sticky_cookie SRV", "-o", "server 1 cookie beta",
                                 n=2)
    with connect(port) as s:
        s.sendall(GET % b"")
        head, body = read_response(s)
    cookie = _cookie_of(head)
    first = body[:1]
    assert cookie == (b"SRV=beta; Path=/; HttpOnly" if first == b"B" else
                      b"SRV=s0; Path=/; HttpOnly")
    value = cookie.split(b";")[0]
    for _ in range(4):                            # round robin would alternate
        with connect(port) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + value + b"\r\n\r\n")
            head, body = read_response(s)
            assert body[:1] == first and _cookie_of(head) is None
    index = 1 if first == b"B" else 0
    assert ask(ctl, "server", str(index), "disable") == ""
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + value + b"\r\n\r\n")
        head, body = read_response(s)
    assert body[:1] != first and _cookie_of(head) not in (None, cookie)


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"400"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"400"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
], ids=["cl-and-te", "two-lengths", "bad-chunk", "folding", "huge-head"])
def test_hostile_requests_are_refused_and_never_forwarded(http_pen, request_bytes, status):
    port, ctl, (a,) = http_pen("-o", 'header set server "X-Real-IP: %r"')
    with connect(port) as s:
        s.sendall(request_bytes)
        reply = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                reply += data
        except ConnectionResetError:
            pass
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:100]
    if b"zz" in request_bytes:
        # a sound head went on; the body it announced is cut short, never misframed
        assert len(a.heads) <= 1
    else:
        assert a.heads == []


def test_an_upgrade_becomes_a_tunnel(http_pen):
    port, ctl, (a,) = http_pen("-H")
    with connect(port) as s:
        s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        assert buf.startswith(b"HTTP/1.1 101")
        s.sendall(b"GET not-http-any-more\r\n\r\n")
        got = b""
        while len(got) < 25:
            got += s.recv(65536)
        assert got == b"GET not-http-any-more\r\n\r\n"   # untouched both ways


def test_bytes_sent_right_after_an_upgrade_request_follow_the_answer(http_pen):
    """What the client sends behind an Upgrade request is held until the 101
    came, then goes to the server at once, not when the client next speaks."""
    port, ctl, (a,) = http_pen("-H")
    with connect(port) as s:
        s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\n"
                  b"Connection: Upgrade\r\n\r\nEARLY")
        buf = b""
        while not buf.endswith(b"EARLY"):
            data = s.recv(65536)
            assert data, buf
            buf += data
        assert buf.startswith(b"HTTP/1.1 101") and buf.count(b"EARLY") == 1
        s.sendall(b"LATE")
        got = b""
        while len(got) < 4:
            got += s.recv(65536)
        assert got == b"LATE"


def test_bytes_that_are_not_http_pass_untouched(http_pen):
    port, ctl, (a,) = http_pen("-H")
    with connect(port) as s:
        s.sendall(b"\x16\x03\x01 binary junk\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        s.recv(100)
    assert wait_until(lambda: a.heads)
    assert a.heads[0] == b"\x16\x03\x01 binary junk"


def test_a_50mb_chunked_response_streams_with_bounded_memory(http_pen, pen):
    from conftest import rss_kib
    port, ctl, (a,) = http_pen("-H", big=50 * 1024 * 1024)
    pid = int(ask(ctl, "pid").strip())
    before = rss_kib(pid)
    total = 0
    with connect(port, timeout=30) as s:
        s.sendall(GET % b"big")
        while True:
            data = s.recv(1 << 20)
            if not data or data.endswith(b"0\r\n\r\n"):
                total += len(data)
                break
            total += len(data)
    assert total > 50 * 1024 * 1024
    assert rss_kib(pid) - before < 20 * 1024


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_through_http_mode(http_pen):
    port, ctl, (a,) = http_pen("-o", 'header set server "X-Real-IP: %r"',
                               "-o", 'header set client "Server: WWW-Server"')
    out = subprocess.run([CURL, "-sS", "-i", "--max-time", "5", f"http://127.0.0.1:{port}/c"],
                         capture_output=True, timeout=TIMEOUT + 5)
    assert out.returncode == 0, out.stderr
    assert b"Server: WWW-Server" in out.stdout and b"X-Real-IP: 127.0.0.1" in out.stdout
