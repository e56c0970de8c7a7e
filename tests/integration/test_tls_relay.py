"""TLS termination end to end through the real pen process (issue 4).

pen runs as `python -m pen -f ...` (conftest.Pen), backends are threads of
this process on 127.0.0.1, certificates come from tests/certs.py.  Every
socket has a timeout; every wait is a bounded poll.
"""

import hashlib
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from conftest import TIMEOUT, Backend, free_port, rss_kib, wait_until

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import certs as certgen  # noqa: E402  (tests/certs.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BODY = b"hello over TLS from the backend\n"


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    return certgen.make_certs(tmp_path_factory.mktemp("certs"))


# --- helpers ---------------------------------------------------------------------------

class HttpBackend(Backend):
    """HTTP/1.0 backend: records each request head, answers `body`, closes."""

    def __init__(self, body=BODY):
        self.body = body
        self.heads = []
        super().__init__("http", banner=False)

    def _handle(self, conn):
        with conn:
            conn.settimeout(TIMEOUT)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                self.heads.append(head)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body)
            except OSError:
                pass


@pytest.fixture
def http_backend():
    made = []

    def make(**kw):
        b = HttpBackend(**kw)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


@pytest.fixture
def tls_pen(pen, c):
    """tls_pen(*options, backend=SPEC, cert=(-E/-K/-G args)) -> port of a
    running pen terminating TLS (the server certificate by default)."""
    def start(*options, backend, cert=None):
        port = free_port()
        if cert is None:
            cert = ("-E", c.server_combined, "-G", c.ca_cert)
        pen(*options, *cert, f"127.0.0.1:{port}", backend, port=port)
        return port
    return start


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "5", *args],
                          capture_output=True, timeout=TIMEOUT + 5)


def client_ctx(c, cert=None, key=None, low=None, high=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(c.ca_cert)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if low:
        ctx.minimum_version = low
    if high:
        ctx.maximum_version = high
    return ctx


def tls_connect(port, ctx, name="localhost"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


def read_to_eof(sock, limit=64 * 1024 * 1024):
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def https_get(port, ctx, name="localhost", path="/"):
    """(response bytes, TLS version, server certificate DER)."""
    with tls_connect(port, ctx, name) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), name.encode()))
        return read_to_eof(s), s.version(), s.getpeercert(binary_form=True)


def body_of(response):
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK"), response[:200]
    return body


def der(cert_obj):
    from cryptography.hazmat.primitives import serialization
    return cert_obj.public_bytes(serialization.Encoding.DER)


class StderrReader:
    """Reads a running pen's stderr without blocking (bounded polls)."""

    def __init__(self, proc):
        self.fd = proc.stderr.fileno()
        os.set_blocking(self.fd, False)
        self.text = ""

    def wait_for(self, needle, timeout=TIMEOUT):
        def seen():
            try:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.text += chunk.decode(errors="replace")
            except BlockingIOError:
                pass
            return needle in self.text
        return wait_until(seen, timeout=timeout)


def transfer(sock, data, deadline):
    """Send `data` and read everything back on one non-blocking TLS socket,
    in one thread (an SSL object must not be used by two threads at once).
    Sending goes on after an EOF from pen (TLS allows a half-close); after
    the last byte it half-closes with a plain TCP FIN.  Returns what arrived
    before EOF, once both directions are done."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    fin = eof = False
    got = bytearray()
    buf = bytearray(256 * 1024)
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while not (eof and fin):
            assert time.monotonic() < deadline, f"timed out: sent {sent}, got {len(got)}"
            while not eof:
                try:
                    n = sock.recv_into(buf)
                except ssl.SSLWantReadError:
                    break
                if not n:
                    eof = True
                got += buf[:n]
            if sent < len(data):
                try:
                    sent += sock.send(view[sent:sent + 256 * 1024])
                except ssl.SSLWantWriteError:
                    pass
            elif not fin:
                socket.socket.shutdown(sock, socket.SHUT_WR)
                fin = True
            sel.modify(sock, (0 if eof else selectors.EVENT_READ)
                       | (0 if fin else selectors.EVENT_WRITE) or selectors.EVENT_READ)
            sel.select(0.2)
    return bytes(got)


# --- the basics --------------------------------------------------------------------------

def test_https_get_returns_the_backend_body(c, http_backend, tls_pen):
    port = tls_pen(backend=http_backend().spec)
    for _ in range(3):           # several connections in a row
        response, version, _ = https_get(port, client_ctx(c))
        assert body_of(response) == BODY
        assert version in ("TLSv1.2", "TLSv1.3")
    response, version, _ = https_get(port, client_ctx(c, high=ssl.TLSVersion.TLSv1_2))
    assert body_of(response) == BODY and version == "TLSv1.2"


def test_separate_key_file(c, http_backend, tls_pen):
    port = tls_pen(backend=http_backend().spec,
                   cert=("-E", c.server_cert, "-K", c.server_key, "-G", c.ca_cert))
    response, _, cert = https_get(port, client_ctx(c))
    assert body_of(response) == BODY
    assert cert == der(c.server_obj)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_pens_own_ssl_termination_test_with_curl(c, http_backend, pen):
    """pen's "SSL termination": pen -E cert.pem PORT backend; curl -sk https://..."""
    b = http_backend()
    port = free_port()
    pen("-E", c.selfsigned_combined, str(port), b.spec, port=port)
    out = curl("-k", f"https://127.0.0.1:{port}/index.html")
    assert out.returncode == 0, out.stderr
    assert out.stdout == BODY
    # curl verifying: the self-signed certificate is not from our CA
    verified = ("--cacert", c.ca_cert, "--resolve", f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/")
    assert curl(*verified).returncode != 0


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_curl_verifies_the_chain_and_sees_an_orderly_close(c, http_backend, tls_pen):
    port = tls_pen(backend=http_backend().spec)
    for version in ("--tlsv1.2", "--tlsv1.3"):
        out = curl(version, "--cacert", c.ca_cert, "--resolve", f"localhost:{port}:127.0.0.1",
                   f"https://localhost:{port}/")
        assert out.returncode == 0, out.stderr     # no "unexpected eof" either
        assert out.stdout == BODY


def test_x_forwarded_for_and_proto_through_tls(c, http_backend, tls_pen):
    b = http_backend()
    port = tls_pen("-H", backend=b.spec)
    response, _, _ = https_get(port, client_ctx(c))
    assert body_of(response) == BODY
    head = b.heads[-1]
    assert head.startswith(b"GET / HTTP/1.0\r\n")
    assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in head
    assert b"\r\nX-Forwarded-Proto: https\r\n" in head
    assert head.count(b"X-Forwarded-For") == 1


def test_log_line_has_the_request_line(c, http_backend, tls_pen, tmp_path):
    log = tmp_path / "pen.log"
    port = tls_pen("-l", str(log), backend=http_backend().spec)
    https_get(port, client_ctx(c), path="/logged")
    assert wait_until(lambda: log.exists() and log.read_text().strip())
    ip, _stamp, server, *request = log.read_text().strip().split(" ")
    assert ip == "127.0.0.1" and server == "127.0.0.1"
    assert " ".join(request) == "GET /logged HTTP/1.0"


# --- client certificates, SNI, protocol versions ------------------------------------------

def test_require_client_certificate(c, http_backend, tls_pen):
    b = http_backend()
    port = tls_pen("-R", backend=b.spec)
    # signed by the -G CA: accepted
    response, _, _ = https_get(port, client_ctx(c, c.client_cert, c.client_key))
    assert body_of(response) == BODY
    assert len(b.heads) == 1
    # no certificate, or one from a stranger: refused, the backend never sees it
    for cert, key in ((None, None), (c.stranger_cert, c.stranger_key)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            response, _, _ = https_get(port, client_ctx(c, cert, key))
            assert response == b""     # TLS 1.3: the alert may look like EOF
            raise ConnectionError("closed without a response")
    assert len(b.heads) == 1


def test_sni_picks_the_certificate_for_each_name(c, http_backend, tls_pen):
    port = tls_pen("-o", f"ssl_sni_path {c.sni_dir}", backend=http_backend().spec)
    for name in c.sni_names:
        response, _, cert = https_get(port, client_ctx(c), name=name)
        assert body_of(response) == BODY
        assert cert == der(c.sni_objs[name])
    # an unknown name gets the default certificate
    _, _, cert = https_get(port, client_ctx(c), name="localhost")
    assert cert == der(c.server_obj)


@pytest.mark.parametrize("pen_protocol, ok, refused", [
    ("tls1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    ("tls1.3", ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2),
])
def test_protocol_option_refuses_other_versions(c, http_backend, tls_pen, pen_protocol,
                                                ok, refused):
    b = http_backend()
    port = tls_pen("-L", pen_protocol, backend=b.spec)
    response, version, _ = https_get(port, client_ctx(c, low=ok, high=ok))
    assert body_of(response) == BODY
    assert version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                       ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[ok]
    with pytest.raises(ssl.SSLError):
        https_get(port, client_ctx(c, low=refused, high=refused))
    assert len(b.heads) == 1


def test_encrypted_key_with_password_file_and_sni_options(c, http_backend, tls_pen):
    """-o commands run before the certificates are loaded (the passphrase
    file and the SNI directory are known when the key is read)."""
    port = tls_pen("-o", f"ssl_key_password_file {c.password_file}",
                   "-o", f"ssl_sni_path {c.sni_dir}", backend=http_backend().spec,
                   cert=("-E", c.encrypted_cert, "-K", c.encrypted_key, "-G", c.ca_cert))
    response, _, _ = https_get(port, client_ctx(c))
    assert body_of(response) == BODY
    _, _, cert = https_get(port, client_ctx(c), name=c.sni_names[0])
    assert cert == der(c.sni_objs[c.sni_names[0]])


def test_client_refused_by_acl_gets_no_handshake(c, http_backend, tls_pen):
    b = http_backend()
    port = tls_pen("-o", "acl 1 deny 127.0.0.1", "-o", "client_acl 1", backend=b.spec)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        assert s.recv(100) == b""          # closed before any TLS byte
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(port, client_ctx(c))
    assert b.heads == []


# --- data: size, half-close, close_notify, backpressure -------------------------------------

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS)
def test_20mb_byte_exact_both_ways(c, backends, tls_pen, version):
    (echo,) = backends(1, banner=False)
    port = tls_pen(backend=echo.spec)
    data = os.urandom(20 * 1000 * 1000)
    with tls_connect(port, client_ctx(c, high=version)) as s:
        got = transfer(s, data, time.monotonic() + 60)
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert wait_until(lambda: echo.received and len(echo.received[0]) == len(data))
    assert hashlib.sha256(echo.received[0]).digest() == hashlib.sha256(data).digest()


class Sink:
    """A one-connection backend: sends `reply` first (and half-closes at
    once if `early_fin`), reads everything (slowly if `delay`), then sends
    `after` and closes.  `received` is (byte count, sha256)."""

    def __init__(self, reply=b"", early_fin=False, delay=0.0, after=b""):
        self.reply, self.early_fin, self.delay, self.after = reply, early_fin, delay, after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(TIMEOUT)
        self.spec = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.received = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            h, n = hashlib.sha256(), 0
            try:
                conn.sendall(self.reply)
                if self.early_fin:
                    conn.shutdown(socket.SHUT_WR)
                while True:
                    chunk = conn.recv(7000)      # small, odd-sized reads
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                    if self.delay:
                        time.sleep(self.delay)
                if not self.early_fin:
                    conn.sendall(self.after)
            except OSError:
                pass
            self.received = (n, h.digest())
            self.done.set()

    def close(self):
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def sink():
    made = []

    def make(**kw):
        s = Sink(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_half_close_sends_close_notify_and_upload_continues(c, sink, tls_pen,
                                                                   version):
    """The backend answers and half-closes while the client is still sending:
    pen sends close_notify (the client sees a clean EOF) and still delivers
    every byte the client sends afterwards.  (An SSLSocket's unwrap() loses
    that upload; see pen/tlsrelay.py.)"""
    backend = sink(reply=b"bye early\n", early_fin=True)
    port = tls_pen(backend=backend.spec)
    data = os.urandom(8 * 1000 * 1000)
    with tls_connect(port, client_ctx(c, high=version)) as s:
        got = transfer(s, data, time.monotonic() + 60)
    assert got == b"bye early\n"
    assert backend.done.wait(TIMEOUT)
    assert backend.received == (len(data), hashlib.sha256(data).digest())


def test_slow_backend_reader_gets_every_byte(c, sink, tls_pen):
    """The backend reads slowly: pen's buffer fills in the middle of TLS
    records again and again, and reading must resume without a socket event
    for the plaintext already decrypted inside."""
    backend = sink(delay=0.001, after=b"done")
    port = tls_pen(backend=backend.spec)
    data = os.urandom(6 * 1000 * 1000)
    with tls_connect(port, client_ctx(c)) as s:
        got = transfer(s, data, time.monotonic() + 60)
    assert backend.received == (len(data), hashlib.sha256(data).digest())
    assert got == b"done"


def test_client_close_notify_reaches_the_backend_as_eof(c, backends, tls_pen):
    (quiet,) = backends(1, banner=False, echo=False)
    port = tls_pen(backend=quiet.spec)
    with tls_connect(port, client_ctx(c)) as s:
        s.sendall(b"last words")
        # close_notify; unwrap() returns once pen's close_notify came back,
        # which pen sends after the backend saw EOF and closed its side.
        s.unwrap().close()
    assert wait_until(lambda: quiet.received == [b"last words"])


def test_backend_reply_to_a_half_closed_client(c, http_backend, tls_pen):
    """Client sends its request and a TCP FIN; the whole reply still arrives."""
    b = http_backend(body=os.urandom(3 * 1000 * 1000))
    port = tls_pen(backend=b.spec)
    with tls_connect(port, client_ctx(c)) as s:
        got = transfer(s, b"GET /big HTTP/1.0\r\n\r\n", time.monotonic() + 30)
    assert body_of(got) == b.body


@pytest.mark.parametrize("direction", ["to_client", "to_backend"])
def test_slow_reader_is_backpressure_not_memory(c, pen, direction):
    """One side floods, the other does not read: pen stops reading the
    flooding side instead of buffering (TLS on the client side)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(TIMEOUT)
    with srv:
        port = free_port()
        p = pen("-E", c.server_combined, "-G", c.ca_cert, f"127.0.0.1:{port}",
                "127.0.0.1:%d" % srv.getsockname()[1], port=port)
        client = tls_connect(port, client_ctx(c))
        client.sendall(b"hi")
        peer, _ = srv.accept()
        with client, peer:
            assert peer.recv(2) == b"hi"
            before = rss_kib(p.pid)
            flood = peer if direction == "to_client" else client
            flood.setblocking(False)
            chunk = b"x" * 65536
            sent = 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and sent < 512 * 1024 * 1024:
                try:
                    sent += flood.send(chunk)
                except (BlockingIOError, ssl.SSLWantWriteError):
                    time.sleep(0.01)
            growth = rss_kib(p.pid) - before
        assert sent < 64 * 1024 * 1024, "pen kept reading a side nobody drains"
        assert growth < 16 * 1024, f"pen grew by {growth} KiB"


def test_many_concurrent_tls_clients(c, backends, tls_pen):
    (echo,) = backends(1, banner=False)
    port = tls_pen(backend=echo.spec)
    socks = [tls_connect(port, client_ctx(c)) for _ in range(30)]
    try:
        for i, s in enumerate(socks):
            s.sendall(b"client %d\n" % i)
        for i, s in enumerate(socks):
            want = b"client %d\n" % i
            got = b""
            while len(got) < len(want):
                chunk = s.recv(100)
                assert chunk
                got += chunk
            assert got == want
    finally:
        for s in socks:
            s.close()


# --- slow and broken clients ----------------------------------------------------------------

def test_stalled_handshakes_do_not_delay_others_and_time_out(c, http_backend, tls_pen):
    b = http_backend()
    port = tls_pen("-t", "3", backend=b.spec)
    # one says nothing, one sends half a ClientHello
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(c).wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    silent = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    half = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with silent, half:
        half.sendall(hello[:len(hello) // 2])
        t0 = time.monotonic()
        # others are served at once (well before -t 3 runs out), several times
        for _ in range(5):
            response, _, _ = https_get(port, client_ctx(c))
            assert body_of(response) == BODY
        assert time.monotonic() - t0 < 2.0
        # the stalled ones are dropped after -t 3, and never reached a backend
        for s in (silent, half):
            s.settimeout(TIMEOUT + 3)
            assert s.recv(100) == b""
        assert 2.5 < time.monotonic() - t0 < 3 + TIMEOUT
    assert len(b.heads) == 5


def test_garbage_instead_of_a_handshake_is_closed(c, http_backend, tls_pen):
    b = http_backend()
    port = tls_pen(backend=b.spec)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            data = read_to_eof(s)
        except ConnectionResetError:
            data = b""
        assert b"HTTP" not in data          # an alert at most, then closed
    response, _, _ = https_get(port, client_ctx(c))
    assert body_of(response) == BODY
    assert len(b.heads) == 1


# --- startup checks and SIGHUP ------------------------------------------------------------------

def broken_cases(c):
    return [
        (["-E", c.missing], "cannot read"),
        (["-E", c.garbage], "not a PEM file"),
        (["-E", c.der_cert], "looks like DER"),
        (["-E", c.empty], "empty"),
        (["-E", c.server_cert], "no private key"),
        (["-E", c.server_cert, "-K", c.mismatch_key], "does not match"),
        (["-E", c.expired_cert, "-K", c.expired_key, "-G", c.ca_cert], "expired"),
        (["-E", c.future_cert, "-K", c.future_key, "-G", c.ca_cert], "not valid before"),
        (["-E", c.nochain_cert, "-K", c.chain_key], "intermediate certificate is missing"),
        (["-E", c.encrypted_cert, "-K", c.encrypted_key, "-G", c.ca_cert], "encrypted"),
        (["-E", c.server_combined, "-G", c.missing], "cannot read"),
        (["-K", c.server_key], "-E certfile"),
        (["-L", "tls9", "-E", c.server_combined, "-G", c.ca_cert], "-L tls9"),
    ]


@pytest.mark.parametrize("foreground", [True, False])
def test_broken_certificates_stop_startup_with_one_line(c, foreground):
    for args, reason in broken_cases(c):
        port = free_port()
        cmd = [sys.executable, "-m", "pen"] + (["-f"] if foreground else []) + args + [
            f"127.0.0.1:{port}", "127.0.0.1:1"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL, cwd=REPO)
        lines = out.stderr.splitlines()
        assert out.returncode != 0, (args, out.stderr)
        assert len(lines) == 1, (args, out.stderr)
        assert lines[0].startswith("pen: ") and reason in lines[0], (args, lines[0])


def test_sighup_picks_up_a_renewed_certificate(c, tmp_path, http_backend, pen):
    b = http_backend()
    live = certgen.copy(c.server_combined, tmp_path / "live.pem")
    port = free_port()
    p = pen("-E", live, "-G", c.ca_cert, f"127.0.0.1:{port}", b.spec, port=port)
    err = StderrReader(p.proc)
    _, _, cert = https_get(port, client_ctx(c))
    assert cert == der(c.server_obj)
    # an open connection keeps working across the reload
    held = tls_connect(port, client_ctx(c))
    certgen.copy(c.renewed_combined, tmp_path / "new.pem")
    os.replace(tmp_path / "new.pem", live)
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(lambda: https_get(port, client_ctx(c))[2] == der(c.renewed_obj))
    with held:
        held.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert body_of(read_to_eof(held)) == BODY
        assert held.getpeercert(binary_form=True) == der(c.server_obj)
    # a broken renewal keeps the certificate in use and says why
    with open(live, "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    os.kill(p.pid, signal.SIGHUP)
    assert err.wait_for("TLS reload failed, keeping the certificates in use")
    assert "damaged" in err.text
    response, _, cert = https_get(port, client_ctx(c))
    assert body_of(response) == BODY and cert == der(c.renewed_obj)
    assert p.proc.poll() is None


def test_sighup_with_ssl_lines_in_the_config_reloads_tls_once(c, tmp_path, http_backend, pen):
    b = http_backend()
    live = certgen.copy(c.server_combined, tmp_path / "live.pem")
    cfg = tmp_path / "pen.cfg"
    cfg.write_text("ssl_ciphers HIGH\nssl_option cipher_server_preference\nssl_ciphers HIGH\n")
    port = free_port()
    p = pen("-F", cfg, "-E", live, "-G", c.ca_cert, f"127.0.0.1:{port}", b.spec, port=port)
    err = StderrReader(p.proc)
    with open(live, "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    os.kill(p.pid, signal.SIGHUP)
    assert err.wait_for("TLS reload failed, keeping the certificates in use")
    # Everything the reload had to say has been said once the pen answers.
    response, _, _ = https_get(port, client_ctx(c))
    assert body_of(response) == BODY
    assert err.text.count("TLS reload failed") == 1, err.text


def test_proxy_header_before_the_tls_handshake(c, http_backend, tls_pen):
    """accept_proxy with TLS: the PROXY header comes first on the wire, the
    bytes read past it are the start of the handshake, and the carried
    address reaches X-Forwarded-For."""
    from pen.proxyproto import build_v2
    b = http_backend()
    port = tls_pen("-H", "-o", "accept_proxy", backend=b.spec)
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        raw.sendall(build_v2(("192.0.2.44", 5000), ("127.0.0.1", port)))
        with client_ctx(c).wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            assert body_of(read_to_eof(s)) == BODY
    finally:
        raw.close()
    assert b"\r\nX-Forwarded-For: 192.0.2.44\r\n" in b.heads[-1]
