"""proxyout.send_header with a real Pump over socketpairs: the header goes
first, outside the filter, and the pump keeps splicing."""

import socket
from types import SimpleNamespace

import pytest

from pen.proxyout import header_for, send_header, version_for
from pen.proxyproto import parse
from pen.relay import HAVE_SPLICE, Pools, Pump
from pen.state import Settings


class Upper:
    def feed(self, data):
        return bytes(data).upper()


@pytest.fixture
def link():
    """client_out -> client_in (pen's client side), server_in -> server_out."""
    client_out, client_in = socket.socketpair()
    server_in, server_out = socket.socketpair()
    for s in (client_out, client_in, server_in, server_out):
        s.setblocking(False)
    pools = Pools()
    yield client_out, client_in, server_in, server_out, pools
    pools.close()
    for s in (client_out, client_in, server_in, server_out):
        s.close()


def conn_for(client, server, version="v2", index=0):
    st = Settings(proxy_protocol=version)
    return SimpleNamespace(settings=st, index=index, client=client, server=server, id=1,
                           facts=None)


def drain(sock):
    out = b""
    for _ in range(10000):
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_version_for_prefers_the_server_setting():
    st = Settings(proxy_protocol="v1", server_proxy_protocol={2: "off", 3: "v2"})
    assert [version_for(st, i) for i in (0, 2, 3, "abuse")] == ["v1", None, "v2", "v1"]


class _Conn:
    """What header_for reads of a Conn: its client socket and the facts."""

    def __init__(self, client, facts=None, ip="", port=0):
        self.client, self.facts, self.client_ip, self.client_port = client, facts, ip, port


def test_header_for_an_unnamed_unix_peer_and_a_closed_socket():
    a, b = socket.socketpair()
    assert parse(header_for(_Conn(a), "v2")).family == socket.AF_UNIX
    assert header_for(_Conn(a), "v1") == b"PROXY UNKNOWN\r\n"
    a.close()
    b.close()
    assert header_for(_Conn(a), "v2").endswith(b"\x20\x00\x00\x00")     # LOCAL
    assert header_for(_Conn(a), "v1") == b"PROXY UNKNOWN\r\n"


def test_header_for_carries_the_address_a_proxy_header_brought_in():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=5)
    accepted, _ = server.accept()
    try:
        conn = _Conn(accepted, {"proxied_by": "127.0.0.1"}, "203.0.113.5", 777)
        assert header_for(conn, "v1").startswith(b"PROXY TCP4 203.0.113.5 127.0.0.1 777 ")
    finally:
        for s in (server, client, accepted):
            s.close()


@pytest.mark.skipif(not HAVE_SPLICE, reason="no os.splice here")
def test_header_first_then_the_pump_still_splices(link):
    client_out, client_in, server_in, server_out, pools = link
    c2s = Pump(client_in, server_in, pools, splice=True)
    conn = conn_for(client_in, server_in)
    assert send_header(conn, c2s, b"pre") == b"pre"       # the caller holds it
    assert c2s.pending == 0 and c2s.splice
    client_out.sendall(b"data")
    assert c2s.pull() == 4
    assert c2s.splice and c2s.pipe is None and pools.pipes   # it went through a pipe
    h = parse(drain(server_out))
    assert h.family == socket.AF_UNIX and h.rest == b"data"


def test_off_sends_nothing(link):
    client_out, client_in, server_in, server_out, pools = link
    c2s = Pump(client_in, server_in, pools, splice=False)
    assert send_header(conn_for(client_in, server_in, "off"), c2s, None) is None
    assert drain(server_out) == b""


def test_short_send_keeps_the_rest_and_the_preread_in_order(link):
    client_out, client_in, server_in, server_out, pools = link
    server_in.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    filler = 0
    for size in (512, 1):                   # fill the server socket to the brim
        for _ in range(100000):
            try:
                filler += server_in.send(b"f" * size)
            except BlockingIOError:
                break
    c2s = Pump(client_in, server_in, pools, splice=True)
    c2s.filter = Upper()                   # like -H's X-Forwarded-For rewriter
    conn = conn_for(client_in, server_in, "v1")
    assert send_header(conn, c2s, b"pre") is None
    assert c2s.pending and bytes(c2s.out).endswith(b"PRE")
    got = b""
    for _ in range(1000):
        got += drain(server_out)
        if c2s.pending:
            c2s.push()
        else:
            break
    got += drain(server_out)
    got = got[filler:]
    assert got == b"PROXY UNKNOWN\r\nPRE"
