"""Pump driven over socket.socketpair(): no network, no pen process."""

import os
import socket

import pytest

from pen.relay import BUF_SIZE, Pools, Pump


class Upper:
    def feed(self, data):
        return bytes(data).upper()

    def close(self):
        return b""


@pytest.fixture(params=["splice", "buffer"])
def pump(request):
    a_out, a_in = socket.socketpair()     # test writes a_out -> pump reads a_in
    b_in, b_out = socket.socketpair()     # pump writes b_in -> test reads b_out
    for s in (a_out, a_in, b_in, b_out):
        s.setblocking(False)
    pools = Pools()
    p = Pump(a_in, b_in, pools, splice=request.param == "splice")
    yield p, a_out, b_out, pools
    p.close()
    pools.close()
    for s in (a_out, a_in, b_in, b_out):
        s.close()


def drain(sock):
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_moves_bytes_and_releases_pipe_or_buffer(pump):
    p, src, dst, pools = pump
    src.sendall(b"hello")
    assert p.pull() == 5
    assert drain(dst) == b"hello"
    assert p.pending == 0 and p.pipe is None and p.buf is None
    assert p.total == 5


def test_backpressure_holds_data_and_stops(pump):
    p, src, dst, pools = pump
    payload = os.urandom(4 * 1024 * 1024)
    sent = 0
    received = b""
    for _ in range(10000):
        if sent < len(payload):
            try:
                sent += src.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
        if p.pending:
            p.push()                 # dst not drained: at most one chunk held
            assert p.pending <= max(BUF_SIZE, 65536)
        else:
            p.pull()
        if p.pending and len(received) < len(payload):
            received += drain(dst)
        if len(received) == len(payload):
            break
        if not p.pending and sent == len(payload):
            received += drain(dst)
    received += drain(dst)
    assert received == payload


def test_eof_is_forwarded_as_half_close_after_the_data(pump):
    p, src, dst, pools = pump
    src.sendall(b"last words")
    src.shutdown(socket.SHUT_WR)
    p.pull()
    p.pull()
    assert p.eof and p.shut
    assert drain(dst) == b"last words"      # then EOF: drain returned on b""
    dst.send(b"reply still flows back")     # the other direction is open


def test_closed_source_ends_the_pump_and_half_closes_dst(pump):
    p, src, dst, pools = pump
    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    src.close()
    # A Unix socketpair reports a closed peer as EOF, not a reset: the pump
    # ends (no spin) and passes the EOF on.
    assert p.pull() == 0 and p.eof and p.shut
    assert dst.recv(10) == b""


def test_a_gone_destination_raises_oserror_and_holds_nothing(pump):
    p, src, dst, pools = pump
    dst.close()
    src.sendall(b"into the void")
    with pytest.raises(OSError):
        p.pull()
    p.close()
    assert p.pending == 0 and p.buf is None and p.pipe is None


def test_filter_forces_the_buffer_path():
    a_out, a_in = socket.socketpair()
    b_in, b_out = socket.socketpair()
    for s in (a_out, a_in, b_in, b_out):
        s.setblocking(False)
    pools = Pools()
    p = Pump(a_in, b_in, pools, splice=True, filter=Upper())
    assert not p.splice
    a_out.sendall(b"shout")
    p.pull()
    assert drain(b_out) == b"SHOUT"
    p.close()
    pools.close()
    for s in (a_out, a_in, b_in, b_out):
        s.close()
