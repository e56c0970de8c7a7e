"""Plain TCP relaying through both data paths of a real pen process:
os.splice through pooled pipes (the default) and the recv_into/send buffer
path it falls back to (forced here by `no splice`, for both
directions; -H only buffers the client's direction).  Byte-exact transfers,
many small exchanges on one connection (the hot path of kept-alive HTTP),
half-close and resets from either side.  (The memory bound of the buffer
path: tests/unit/test_relay.py; of the splice path: test_core.)"""

import os
import socket
import time

import pytest

from conftest import (TIMEOUT, connect, free_port, raw_listener, read_line,
                      recv_all, wait_until)
from test_core import _transfer

PATHS = ["splice", "buffer"]


@pytest.fixture
def relay(pen):
    """relay(path, *args, port=...) -> a running pen on that data path
    (`no splice` sends plain TCP through the user-space buffers, the path
    pen falls back to where splice is missing or refused)."""
    def start(path, *args, port):
        if path == "buffer":
            args = ("-o", "no splice", *args)
        return pen(*args, port=port)
    return start


def _front(relay, path, backend_spec, *options):
    port = free_port()
    p = relay(path, *options, f"127.0.0.1:{port}", backend_spec, port=port)
    return port, p


def _fds(pid, kind):
    """How many of the process's descriptors are `kind` ('pipe', 'socket')."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(kind + ":")
        except OSError:
            pass
    return n


@pytest.mark.parametrize("path", PATHS)
def test_many_small_exchanges_on_one_connection(relay, backends, path):
    (b,) = backends(1)
    port, p = _front(relay, path, b.spec)
    with connect(port) as s:
        assert read_line(s) == "S0"
        for i in range(2000):
            msg = b"request %d " % i + os.urandom(i % 300)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                assert chunk, f"closed after {i} exchanges"
                got += chunk
            assert got == msg
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    # The splice path keeps its pipes in a pool; the buffer path has none
    # (only the stdout/stderr pipes the test gave it).
    if path == "splice":
        assert _fds(p.pid, "pipe") > 2
    else:
        assert _fds(p.pid, "pipe") == 2


def test_50mb_byte_exact_both_ways_with_half_close_buffer_path(relay, backends):
    # test_core runs the same transfer on the splice path (and with -H).
    (b,) = backends(1)
    port, _ = _front(relay, "buffer", b.spec)
    _transfer(port, 50 * 1024 * 1024)


@pytest.mark.parametrize("path", PATHS)
def test_half_closed_client_still_gets_the_whole_reply(relay, backends, path):
    (b,) = backends(1)
    port, _ = _front(relay, path, b.spec)
    with connect(port) as s:
        s.sendall(b"question")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"S0\nquestion"


@pytest.mark.parametrize("path", PATHS)
def test_backend_half_close_reaches_the_client_which_may_still_send(relay, path):
    srv, spec = raw_listener()
    port, _ = _front(relay, path, spec)
    with connect(port) as c:
        peer, _ = srv.accept()
        peer.settimeout(TIMEOUT)
        peer.sendall(b"bye")
        peer.shutdown(socket.SHUT_WR)           # the server is done talking
        assert recv_all(c) == b"bye"            # the client sees its EOF
        c.sendall(b"but I am not")              # and can still be heard
        c.shutdown(socket.SHUT_WR)
        assert recv_all(peer) == b"but I am not"
        peer.close()
    srv.close()


@pytest.mark.parametrize("path", PATHS)
def test_backend_reset_mid_stream_delivers_a_prefix_then_closes(relay, path):
    """The backend sends more than pen holds while the client is not reading
    yet, then resets: the client gets an exact prefix of the stream, then
    EOF or a reset, and pen carries on."""
    srv, spec = raw_listener()
    port, p = _front(relay, path, spec)
    payload = os.urandom(4 * 1024 * 1024)
    with connect(port) as c:
        peer, _ = srv.accept()
        peer.setblocking(False)
        sent, stalls = 0, 0
        while sent < len(payload) and stalls < 5:   # until the buffers are full
            try:
                sent += peer.send(payload[sent:sent + 65536])
            except BlockingIOError:
                stalls += 1
                time.sleep(0.02)
        assert sent > 256 * 1024
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()                      # RST, with data still on its way
        chunks = []
        try:
            while True:
                chunk = c.recv(256 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        data = b"".join(chunks)
        assert data == payload[:len(data)]
    srv.close()
    assert p.proc.poll() is None


@pytest.mark.parametrize("path", PATHS)
def test_client_reset_mid_stream_closes_the_backend(relay, path):
    srv, spec = raw_listener()
    port, p = _front(relay, path, spec)
    c = connect(port)
    peer, _ = srv.accept()
    peer.settimeout(TIMEOUT)
    c.sendall(b"x" * 100000)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()                         # RST
    data = b""
    try:
        data = recv_all(peer)
    except ConnectionResetError:
        pass
    assert len(data) <= 100000        # whatever got through, then EOF or reset
    peer.close()
    srv.close()
    assert p.proc.poll() is None


@pytest.mark.parametrize("path", PATHS)
def test_connection_close_requests_in_a_row(relay, backends, path):
    """The new-connection path: connect, one exchange, close, many times;
    every connection is closed on both sides afterwards."""
    (b,) = backends(1)
    port, p = _front(relay, path, b.spec)
    for i in range(200):
        with connect(port) as s:
            assert read_line(s) == "S0"
            s.sendall(b"ping %d" % i)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"ping %d" % i
    # pen's own sockets: the listener, the signal wake-up pair; nothing left
    # of the 400 relayed sockets once the backend closed its side too.
    wait_until(lambda: _fds(p.pid, "socket") <= 3)
    assert _fds(p.pid, "socket") <= 3



def test_backend_whose_connect_completes_later(pen):
    """Backends on this host usually finish the handshake inside connect(),
    and pen relays at once; this one's accept queue is full, so the SYN is
    dropped and retried about a second later: pen must wait for the
    connect to complete (EVENT_WRITE, SO_ERROR) and then relay as usual."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    srv.settimeout(TIMEOUT)
    spec = f"127.0.0.1:{srv.getsockname()[1]}"
    fillers = []
    for _ in range(8):                  # fill the accept queue (and then some)
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(srv.getsockname())
        fillers.append(f)
    port = free_port()
    pen("-t", "10", f"127.0.0.1:{port}", spec, port=port)
    backend_port = srv.getsockname()[1]
    waiting = _syn_sent(backend_port)
    with connect(port, timeout=15) as c:
        c.sendall(b"hello late backend")
        # pen's connect must be stuck too before anything is accepted.
        assert wait_until(lambda: _syn_sent(backend_port) > waiting)
        started = time.monotonic()
        accepted = []
        while time.monotonic() - started < 12:    # drain fillers until pen's arrives
            peer, _ = srv.accept()
            peer.settimeout(0.3)
            try:
                data = peer.recv(100)
            except socket.timeout:
                peer.close()                      # a filler: says nothing
                continue
            accepted.append(peer)
            break
        assert accepted, "pen's connection never arrived"
        peer = accepted[0]
        assert data == b"hello late backend"
        peer.sendall(b"and hello back")
        peer.close()
        assert recv_all(c) == b"and hello back"
    for f in fillers:
        f.close()
    srv.close()


def _syn_sent(port):
    """Sockets on this host whose connect to 127.0.0.1:port is unanswered."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[2].endswith(":%04X" % port) and fields[3] == "02":
                n += 1
    return n
