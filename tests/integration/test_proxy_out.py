"""proxy_protocol v1|v2 through the real pen: a backend that reads the PROXY
header one byte at a time as the specification says, and HAProxy's
`accept-proxy` as an independent receiver."""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import pytest

from conftest import (TIMEOUT, Backend, connect, free_port, listening, read_line, recv_all,
                      wait_until)

from pen.proxyproto import NEED_MORE, V2_MAX, V2_SIG, Parser

HAPROXY = "/usr/sbin/haproxy"
CLIENT_IP = "127.0.0.2"            # not pen's address: the header must carry it


class ProxyBackend(Backend):
    """A conftest Backend that first reads the PROXY header with recv(1)
    until the parser has it (never a byte more), then answers `name\\n` and
    echoes until EOF.  `seen` holds (raw header bytes, ProxyHeader, the
    bytes after it)."""

    def __init__(self, name, host="127.0.0.1"):
        self.seen, self.errors = [], []
        super().__init__(name, host=host)

    def _handle(self, conn):
        conn.settimeout(TIMEOUT)
        parser, raw = Parser(), b""
        try:
            header = NEED_MORE
            while header is NEED_MORE and len(raw) < V2_MAX:
                byte = conn.recv(1)
                if not byte:
                    raise EOFError(f"EOF after {raw!r}")
                raw += byte
                header = parser.feed(byte)
            conn.sendall(self.name.encode() + b"\n")
            rest = b""
            for _ in range(10000):
                data = conn.recv(65536)
                if not data:
                    break
                rest += data
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            self.seen.append((raw, header, rest))
        except Exception as e:      # recorded for the test to show
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()


@pytest.fixture
def proxy_backend():
    made = []

    def make(*args, **kw):
        b = ProxyBackend(*args, **kw)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


def exchange(port, payload=b"hello", host="127.0.0.1", source=CLIENT_IP):
    """Connect (from `source`), send at once, half-close; (banner, echo, client port)."""
    with connect(port, host=host, source=source) as s:
        cport = s.getsockname()[1]
        s.sendall(payload)          # before the server could say anything
        s.shutdown(socket.SHUT_WR)
        name = read_line(s)
        echo = recv_all(s, 1 << 20)
    return name, echo, cport


def test_v1_header_comes_first_and_names_client_and_listener(pen, proxy_backend):
    b = proxy_backend("P1")
    port = free_port()
    pen("-o", "proxy_protocol v1", f"127.0.0.1:{port}", b.spec, port=port)
    name, echo, cport = exchange(port)
    assert (name, echo) == ("P1", b"hello"), b.errors
    assert wait_until(lambda: b.seen)
    raw, header, rest = b.seen[0]
    assert raw == f"PROXY TCP4 {CLIENT_IP} 127.0.0.1 {cport} {port}\r\n".encode()
    assert rest == b"hello"


def test_v2_ipv6_header_byte_for_byte(pen, proxy_backend):
    b = proxy_backend("P6", host="::1")
    port = free_port(host="::1")
    pen("-o", "proxy_protocol v2", f"[::1]:{port}", b.spec, port=port)
    name, echo, cport = exchange(port, b"x" * 100000, host="::1", source="::1")
    assert (name, len(echo)) == ("P6", 100000), b.errors
    assert wait_until(lambda: b.seen)
    raw, header, rest = b.seen[0]
    loop6 = socket.inet_pton(socket.AF_INET6, "::1")
    assert raw == (V2_SIG + b"\x21\x21\x00\x24" + loop6 + loop6
                   + struct.pack("!HH", cport, port))
    assert rest == b"x" * 100000


def test_per_server_setting_and_the_control_socket(pen, proxy_backend, tmp_path):
    plain = Backend("S0")
    b = proxy_backend("P1")
    try:
        port, control = free_port(), free_port()
        user = ["-u", "root"] if os.geteuid() == 0 else []
        pen(*user, "-r", "-C", f"127.0.0.1:{control}", "-o", "server 1 proxy_protocol v2",
            f"127.0.0.1:{port}", plain.spec, b.spec, port=port)
        names = [exchange(port, b"abc")[0] for _ in range(2)]
        assert sorted(names) == ["P1", "S0"], b.errors
        assert plain.received == [b"abc"]                 # no header for server 0
        assert wait_until(lambda: b.seen) and b.seen[0][1].version == 2
        assert b.seen[0][1].src[0] == CLIENT_IP
        ctl = subprocess.run([sys.executable, "-m", "penctl", f"127.0.0.1:{control}",
                              "server", "1", "proxy_protocol", "v1"],
                             capture_output=True, text=True, timeout=10)
        assert ctl.returncode == 0, ctl.stderr
        for _ in range(2):
            exchange(port, b"def")
        assert wait_until(lambda: len(b.seen) == 2)
        assert b.seen[1][0].startswith(b"PROXY TCP4 127.0.0.2 127.0.0.1 ")
        assert plain.received == [b"abc", b"def"]
    finally:
        plain.close()


HAPROXY_CFG = """\
global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend via_proxy
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src] %[src_port] %[dst] %[dst_port]"
"""


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason=f"{HAPROXY} is not installed")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_accept_proxy_sees_the_real_client(pen, version):
    hport, port = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="pen-haproxy-")
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG.format(port=hport))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: proc.poll() is not None or listening(hport)), "haproxy"
        assert proc.poll() is None, proc.stdout.read().decode()
        pen("-o", f"proxy_protocol {version}", f"127.0.0.1:{port}", f"127.0.0.1:{hport}",
            port=port)
        with connect(port, source=CLIENT_IP) as s:
            cport = s.getsockname()[1]
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            reply = recv_all(s, 1 << 20)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], reply
        assert body.decode() == f"{CLIENT_IP} {cport} 127.0.0.1 {port}"
    finally:
        proc.terminate()
        if not wait_until(lambda: proc.poll() is not None):
            proc.kill()
        proc.wait(TIMEOUT)
        shutil.rmtree(tmp, ignore_errors=True)
