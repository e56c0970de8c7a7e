"""pen.tls contexts on real sockets (socketpair and 127.0.0.1), driven
through non-blocking SSLSockets by the steps below: handshake_step until
None, recv_into with pending(), send retried with the same bytes,
close_notify_step (the relay itself uses memory BIOs, pen/tlsrelay.py).  Every
socket has a timeout, every loop is bounded.
"""

import os
import selectors
import signal
import socket
import ssl
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import certs as certgen  # noqa: E402  (tests/certs.py)

from pen import tls  # noqa: E402
from pen.state import Settings  # noqa: E402

EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


# --- non-blocking SSLSocket steps (what these tests drive the contexts with) ---------------

def wrap_server_side(ctx, sock):
    """Wrap an accepted socket (made non-blocking); `sock` is detached after."""
    sock.setblocking(False)
    return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                           suppress_ragged_eofs=True)


def handshake_step(sslsock):
    """One handshake attempt: None when done, else the event to wait for.

    Raises ssl.SSLError / OSError when the handshake fails (close the socket).
    """
    try:
        sslsock.do_handshake()
    except ssl.SSLWantReadError:
        return EVENT_READ
    except ssl.SSLWantWriteError:
        return EVENT_WRITE
    return None


def close_notify_step(sslsock):
    """Half-close towards the TLS peer: send close_notify, then a TCP FIN.

    None when done (reads keep working), EVENT_WRITE to be called again when
    writable.  Raises OSError/ssl.SSLError if the peer is gone (close then).
    Not safe while the peer is still sending: if a data record is already in
    the socket, OpenSSL fails (APPLICATION_DATA_AFTER_CLOSE_NOTIFY) and that
    data is lost; the relay uses TlsLink.close_notify (pen/tlsrelay.py).
    """
    try:
        sslsock.unwrap()
    except ssl.SSLWantReadError:
        pass     # close_notify sent; the peer's own close_notify is not needed
    except ssl.SSLWantWriteError:
        return EVENT_WRITE
    # SSLSocket.shutdown() would drop the TLS layer; shut the TCP side directly.
    try:
        socket.socket.shutdown(sslsock, socket.SHUT_WR)
    except OSError:
        pass     # already disconnected: the next read or write reports it
    return None

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    return certgen.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server_ctx(c):
    return tls.check_certificates(Settings(ssl_cert=c.server_combined,
                                           ssl_cafile=c.ca_cert))


def client_ctx(c):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(c.ca_cert)
    return ctx


def wait(sock, events, deadline):
    """Block until `sock` is ready for `events` or the deadline passes."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, events)
        left = deadline - time.monotonic()
        assert left > 0, "timed out"
        return sel.select(left)


def step_until_done(server, client):
    """Drive both non-blocking sides of a socketpair through the handshake."""
    done_s = done_c = False
    for _ in range(100):
        if not done_s:
            done_s = handshake_step(server) is None
        if not done_c:
            done_c = handshake_step(client) is None
        if done_s and done_c:
            return
    raise AssertionError("handshake not done after 100 steps")


@pytest.fixture
def pair(c, server_ctx):
    a, b = socket.socketpair()
    for s in (a, b):
        s.settimeout(0)
    server = wrap_server_side(server_ctx, a)
    client = client_ctx(c).wrap_socket(b, server_hostname="localhost",
                                       do_handshake_on_connect=False)
    assert a.fileno() == -1          # wrap_socket detached the plain socket
    yield server, client
    server.close()
    client.close()


def recv_all(sock, want, deadline, bufsize=65536):
    """Read `want` bytes from a non-blocking SSL socket, draining pending()."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    got = bytearray()
    while len(got) < want:
        try:
            n = sock.recv_into(view)
        except ssl.SSLWantReadError:
            wait(sock, selectors.EVENT_READ, deadline)
            continue
        if n == 0:
            break
        got += view[:n]
    return bytes(got)


def test_handshake_step_reports_what_to_wait_for(pair):
    server, client = pair
    assert handshake_step(server) == selectors.EVENT_READ   # nothing sent yet
    step_until_done(server, client)
    assert server.version() in ("TLSv1.2", "TLSv1.3")
    assert handshake_step(server) is None                    # idempotent


def test_big_send_is_retried_with_the_same_bytes(pair):
    server, client = pair
    step_until_done(server, client)
    data = os.urandom(4 * 1024 * 1024)
    deadline = time.monotonic() + TIMEOUT
    received = bytearray()
    view = memoryview(data)
    sent = 0
    buf = bytearray(65536)
    while len(received) < len(data):
        assert time.monotonic() < deadline, "timed out"
        if sent < len(data):
            try:
                sent += server.send(view[sent:])    # the retry passes the same bytes
            except ssl.SSLWantWriteError:
                pass
        try:
            n = client.recv_into(buf)
            received += buf[:n]
        except ssl.SSLWantReadError:
            pass
    assert bytes(received) == data


def test_pending_data_must_be_drained_before_waiting(pair):
    server, client = pair
    step_until_done(server, client)
    client.setblocking(True)
    client.settimeout(TIMEOUT)
    client.sendall(b"x" * 10000)                 # one TLS record
    deadline = time.monotonic() + TIMEOUT
    small = bytearray(1000)
    while True:
        try:
            n = server.recv_into(small)
            break
        except ssl.SSLWantReadError:
            wait(server, selectors.EVENT_READ, deadline)
    assert n == 1000
    assert server.pending() == 9000
    # the kernel socket is empty now: the selector would not wake us up
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ)
        assert sel.select(0.05) == []
    total = n
    while server.pending():
        total += server.recv_into(small)
    assert total == 10000


def test_close_notify_is_a_half_close(pair):
    server, client = pair
    step_until_done(server, client)
    for _ in range(10):
        if close_notify_step(server) is None:
            break
    deadline = time.monotonic() + TIMEOUT
    assert recv_all(client, 1, deadline) == b""              # close_notify == EOF
    client.setblocking(True)
    client.settimeout(TIMEOUT)
    client.sendall(b"still talking")                          # the other way works
    assert recv_all(server, 13, deadline) == b"still talking"


def test_client_fin_without_close_notify_is_plain_eof(pair):
    server, client = pair
    step_until_done(server, client)
    client.setblocking(True)
    client.settimeout(TIMEOUT)
    client.sendall(b"last words")
    socket.socket.shutdown(client, socket.SHUT_WR)           # TCP FIN only
    deadline = time.monotonic() + TIMEOUT
    assert recv_all(server, 11, deadline) == b"last words"    # then EOF, no error
    server.send(b"reply after the client's FIN")              # half-close honoured
    assert recv_all(client, 28, deadline) == b"reply after the client's FIN"


def test_garbage_instead_of_a_handshake_fails_cleanly(server_ctx):
    a, b = socket.socketpair()
    a.settimeout(0)
    b.settimeout(TIMEOUT)
    server = wrap_server_side(server_ctx, a)
    try:
        b.sendall(b"GET / HTTP/1.0\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT
        with pytest.raises(ssl.SSLError):
            for _ in range(10):
                if handshake_step(server) is None:
                    break
                wait(server, selectors.EVENT_READ, deadline)
    finally:
        server.close()
        b.close()


def test_stalled_client_does_not_block_and_others_complete(c, server_ctx):
    """One client connects and says nothing; another does a full exchange."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(TIMEOUT)
    port = lsock.getsockname()[1]
    stalled = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    result = {}

    def good_client():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
                with client_ctx(c).wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"ping")
                    result["reply"] = s.recv(100)
        except Exception as e:          # reported by the assertion below
            result["error"] = e

    conns = []
    sel = selectors.DefaultSelector()
    t = threading.Thread(target=good_client, daemon=True)
    try:
        first, _ = lsock.accept()         # the stalled one connected first
        first.settimeout(0)
        slow = wrap_server_side(server_ctx, first)
        conns.append(slow)
        t0 = time.monotonic()
        assert handshake_step(slow) == selectors.EVENT_READ
        assert time.monotonic() - t0 < 0.5
        sel.register(slow, selectors.EVENT_READ, "slow")
        t.start()
        second, _ = lsock.accept()
        second.settimeout(0)
        fast = wrap_server_side(server_ctx, second)
        conns.append(fast)
        sel.register(fast, selectors.EVENT_READ, "fast")
        handshaken = False
        deadline = time.monotonic() + TIMEOUT
        while "reply" not in result and "error" not in result:
            assert time.monotonic() < deadline, "timed out"
            for key, _mask in sel.select(0.1):
                if key.data == "slow":
                    pytest.fail("the stalled client sent something")
                if not handshaken:
                    want = handshake_step(fast)
                    if want is None:
                        handshaken = True
                    else:
                        sel.modify(fast, want, "fast")
                    continue
                try:
                    n = fast.recv(100)
                except ssl.SSLWantReadError:
                    continue
                if n:
                    fast.send(b"pong:" + n)
            if not t.is_alive() and "reply" not in result:
                break
        t.join(TIMEOUT)
        assert result.get("reply") == b"pong:ping", result
        assert handshake_step(slow) == selectors.EVENT_READ   # still waiting
    finally:
        sel.close()
        for s in conns:
            s.close()
        stalled.close()
        lsock.close()


def test_encrypted_key_passphrase_asked_on_a_terminal(c):
    """With stdin a terminal and no ssl_key_password_file, pen asks (getpass)."""
    import pty
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from pen import tls\nfrom pen.state import Settings\n"
            "s = Settings(ssl_cert=%r, ssl_key=%r, ssl_cafile=%r)\n"
            "tls.check_certificates(s)\nprint('OK', s.ssl_key_passphrase == %r)\n"
            % (root, c.encrypted_cert, c.encrypted_key, c.ca_cert, certgen.PASSWORD))
    pid, fd = pty.fork()
    if pid == 0:                                  # child: stdin is the pty
        try:
            os.chdir(root)
            os.execv(sys.executable, [sys.executable, "-c", code])
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        sent = False
        while time.monotonic() < deadline:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
            try:
                chunk = os.read(fd, 4096)
            except OSError:                        # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"passphrase for" in out:
                os.write(fd, certgen.PASSWORD + b"\n")
                sent = True
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:                               # still waiting: stop it
            for _ in range(50):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.02)
            else:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert b"passphrase for %s" % c.encrypted_key.encode() in out
    assert certgen.PASSWORD not in out             # not echoed
    assert b"OK True" in out, out
    assert os.waitstatus_to_exitcode(status) == 0
