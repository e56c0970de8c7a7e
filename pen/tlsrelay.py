"""TLS termination on the data path: a TLS client connection relayed to a
plain backend, on the same Reactor as everything else.

TLS is composed into the connection: while a TLS context is in use
(`enable`) the Service attaches a TlsLink to each new Conn
(Conn.attach_tls), whose pumps then read and write the link instead of
the socket (TlsLink.read_pump / write_pump); the plain-TCP path does not
change.

Why memory BIOs rather than an SSLSocket: to half-close towards the client
(the backend sent EOF while the client is still sending) pen must send
close_notify and keep reading.  Sending it is SSL_shutdown(), and CPython's
unwrap() always calls SSL_shutdown() twice; the second call reads from the
socket, and if the client's next data record is already there OpenSSL fails
with APPLICATION_DATA_AFTER_CLOSE_NOTIFY and the upload is lost.  With an
SSLObject on two MemoryBIOs the bytes OpenSSL can see are exactly the ones
pen fed it: TlsLink.close_notify() takes the unread ciphertext out of the
incoming BIO, lets SSL_shutdown() find it empty, and puts it back.  It
also saves system calls: one recv per TLS record (an SSLSocket makes two,
header then body) and one send for a whole buffer of records.

The handshake is a pre-dispatch stage (TlsHandshake, pen/stages.py): it
runs before the backend is chosen (a client that never finishes
it costs one fd and one timer, and no backend connection); the connect
timeout (-t) bounds it.  Backpressure as for plain TCP: while a pump holds
data it does not read its source; at most one buffer of plaintext and one
of ciphertext per direction.  Data already inside the BIO or the SSL object
is invisible to epoll, so when reading resumes after the buffer was filled
to the brim, the conn reads again on the next loop turn (`_kick`).
"""

import logging
import socket
import ssl

from .errors import ConfigError
from .loop import EVENT_READ, EVENT_WRITE
from .relay import SOFT_ERRORS, Pump
from .stages import Stage

log = logging.getLogger("pen")

# Sizes that bound what OpenSSL's memory BIOs keep per connection (a BIO
# never gives memory back): one TLS record's worth in and out.
# (64 KiB each cost ~150 KiB per connection that ever moved bulk data,
# against ~64 KiB, for no throughput difference measurable here.)
RECV_SIZE = 17 * 1024          # a whole record (16 KiB + header) per recv
WRITE_SLICE = 16 * 1024        # one record per SSL write

SSLWantReadError = ssl.SSLWantReadError
SSL_EOF_ERRORS = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


class TlsLink:
    """One TLS session over a non-blocking client socket, through memory BIOs.

    `tx` holds ciphertext the socket did not take yet (None when all sent);
    `more` says the last read stopped because the buffer was full, so
    plaintext may be waiting inside without any socket event to announce it.
    """

    __slots__ = ("sock", "obj", "inc", "out", "pools", "tx", "more", "raw_eof",
                 "eof_seen", "notified")

    def __init__(self, ctx, sock, pools):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.pools = pools
        self.tx = None
        self.more = False
        self.raw_eof = False       # the client's TCP FIN was fed to the BIO
        self.eof_seen = False      # the TLS stream ended (close_notify or FIN)
        self.notified = False      # close_notify generated

    def fileno(self):
        return self.sock.fileno()

    def _recv(self):
        """Feed what the socket has to the incoming BIO.  False if nothing."""
        if self.raw_eof:
            return False
        scratch = self.pools.get_buffer()
        try:
            n = self.sock.recv_into(scratch, RECV_SIZE)
            if n:
                self.inc.write(scratch[:n])
            else:
                self.inc.write_eof()
                self.raw_eof = True
        except SOFT_ERRORS:
            return False
        finally:
            self.pools.put_buffer(scratch)
        return True

    def flush(self):
        """Send pending ciphertext.  True when everything is on the wire;
        raises OSError if the client is gone."""
        tx = self.tx
        out = self.out
        send = self.sock.send
        while True:
            if tx is None:
                if not out.pending:
                    self.tx = None
                    return True
                tx = memoryview(out.read())
            try:
                n = send(tx)
            except SOFT_ERRORS:
                self.tx = tx
                return False
            tx = tx[n:] if n < len(tx) else None

    def handshake(self, readable):
        """One handshake step: None when done, else the events to wait for.
        Raises OSError (ssl.SSLError included) when it fails."""
        if readable and self._recv() and self.raw_eof:
            raise ConnectionAbortedError("client closed the connection during the handshake")
        try:
            self.obj.do_handshake()
            done = True
        except SSLWantReadError:
            done = False
        self.flush()
        if done:
            self.more = True      # the client may have sent data right after Finished
            return None
        return EVENT_READ | (EVENT_WRITE if self.tx is not None else 0)

    def recv_into(self, buf):
        """Socket-like, for Pump.pull: decrypt into `buf`; 0 at EOF
        (close_notify or a bare FIN); BlockingIOError when nothing is there
        yet.  Reads the socket only when the SSL object needs more, so the
        incoming BIO stays small."""
        if self.eof_seen:
            return 0
        obj = self.obj
        size = len(buf)
        end = 0
        eof = False
        while end < size:
            try:
                n = obj.read(size - end, buf[end:])
            except SSLWantReadError:
                if not self._recv():
                    break
                continue
            except SSL_EOF_ERRORS:
                eof = True
                break
            if not n:
                eof = True
                break
            end += n
        self.more = end == size
        if self.out.pending:          # alerts, key-update answers
            self.flush()
        if eof:
            self.eof_seen = True
            self.more = True          # report the EOF next time: no event may say so
        elif not end:
            raise BlockingIOError
        return end

    def encrypt(self, data):
        """All of `data` -> ciphertext in `tx` (call with `tx` empty, then
        flush).  One record at a time, so the outgoing BIO stays small, and
        one send for them all.  OpenSSL never needs to read for a write here
        (renegotiation is refused); if it did, the SSLWantReadError, an
        OSError, closes the connection."""
        obj, out = self.obj, self.out
        size = len(data)
        done = 0
        chunks = []
        while done < size:
            done += obj.write(data[done:done + WRITE_SLICE])
            chunks.append(out.read())
        self.tx = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close_notify(self):
        """Queue close_notify (send it with flush()).  False while part of a
        record is still unread: OpenSSL's shutdown would see it and fail, so
        the caller retries after the next read."""
        if self.notified:
            return True
        inc = self.inc
        if self.obj.pending() or (self.raw_eof and inc.pending):
            return False
        saved = inc.read() if inc.pending else None
        try:
            self.obj.unwrap()
        except SSLWantReadError:
            pass                  # sent; the client's own close_notify is not awaited
        except ssl.SSLError as e:
            log.debug("close_notify: %s", e)
        finally:
            if saved:
                inc.write(saved)
        self.notified = True
        return True

    def read_pump(self, dst, pools, filter=None, dump=None):
        """The client -> server pump of a Conn whose client is this link."""
        return TlsReadPump(self, dst, pools, False, filter, dump)

    def write_pump(self, src, pools, filter=None, dump=None):
        """The server -> client pump."""
        return TlsWritePump(src, self, pools, False, filter, dump)

    def fin(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                  # already gone: the next read or write says so

    def close(self):
        self.sock.close()


class TlsReadPump(Pump):
    """Client (TLS) -> server (plain): Pump.pull reading the TlsLink, which
    behaves like a socket.  Never splices (can_splice)."""

    __slots__ = ()

    can_splice = False


class TlsWritePump(Pump):
    """Server (plain) -> client (TLS): Pump.pull reading the server, this
    push encrypting into the TlsLink.  `pending` counts what is not on the
    wire yet: plaintext, encrypted or not, and 1 for a queued close_notify;
    so Conn's masks, backpressure and tcp_fastclose hold as for plain TCP."""

    __slots__ = ("inflight",)

    direct = False

    def __init__(self, src, dst, pools, splice, filter=None, dump=None):
        super().__init__(src, dst, pools, False, filter, dump)
        self.inflight = 0      # plaintext bytes whose ciphertext is in link.tx

    def push(self):
        link = self.dst
        sent = 0
        while self.pending:
            if link.tx is not None and not link.flush():
                break                          # the client is slow: EVENT_WRITE
            if self.inflight:
                sent += self.inflight
                self.pending -= self.inflight
                self.inflight = 0
            elif self.out is not None:
                link.encrypt(self.out)
                self.inflight = len(self.out)
                self.out = None
                self._release_buffer()
            else:                              # the close_notify went out
                self.pending = 0
                self._fin()
        self.total += sent
        if self.eof and not self.pending and not self.shut:
            self._shutdown_dst()
        return sent

    def _shutdown_dst(self):
        # close_notify after everything before it, then the TCP FIN.  When a
        # record is half read, Conn._update tries again after the read.
        link = self.dst
        if link.close_notify():
            if link.flush():
                self._fin()
            else:
                self.pending = 1

    def _fin(self):
        self.dst.fin()
        self.shut = True


class TlsHandshake(Stage):
    """The pre-dispatch stage that completes the TLS handshake (before a
    backend is chosen: a client that never finishes it costs one fd and one
    timer).  A client the ACL refuses, with no abuse server to go to, is
    closed without a handshake."""

    __slots__ = ("on_event",)

    name = "TLS handshake"

    def __init__(self, conn):
        super().__init__(conn)
        self.on_event = self._on_event

    def begin(self):
        conn = self.conn
        owner = conn.owner
        if owner.state.abuse is None and not owner.client_allowed(conn.client_ip):
            conn.stage_done()         # refused by dispatch, no handshake
            return
        super().begin()
        conn.cmask = EVENT_READ
        conn.reactor.register(conn.client, EVENT_READ, self.on_event)
        if conn.preread:
            # Read past a PROXY header: the start of the client's handshake.
            conn.tls.inc.write(conn.preread)
            conn.preread = None
            self._on_event(0)

    def _on_event(self, mask):
        conn = self.conn
        if conn.stage is not self:
            return
        link = conn.tls
        try:
            if mask & EVENT_WRITE:
                link.flush()
            want = link.handshake(mask & EVENT_READ)
        except OSError as e:
            try:
                link.flush()          # the alert, if any, so the client knows why
            except OSError:
                pass
            self.fail(f"failed: {e}")
            return
        if want is not None:
            if want != conn.cmask:
                conn.reactor.modify(conn.client, want, self.on_event)
                conn.cmask = want
            return
        log.debug("conn %d: TLS %s with %s", conn.id, link.obj.version(), conn.client_ip)
        conn.stage_done()


# --- wiring into the daemon ------------------------------------------------------------

def enable(app, ctx):
    """Terminate TLS on `app`'s listener with `ctx` (None: plain TCP): new
    Conns get a TlsLink, and the handshake is among the service's stages."""
    service = app.service
    service.tls_context = ctx
    service.set_stage("tls", TlsHandshake if ctx is not None else None)


def setup(app):
    """Startup, before detaching: check the certificates (ConfigError, one
    line: the caller prints it and exits 1) and switch to TLS if -E given.
    Without any TLS option, `cryptography` is not even imported."""
    st = app.state.settings
    if not (st.ssl_cert or st.ssl_key or st.ssl_cafile or st.ssl_cadir
            or st.ssl_require_cert or st.ssl_sni_path):
        return
    from . import tls
    enable(app, tls.check_certificates(st))


def reload(app):
    """SIGHUP: load the certificates again (renewed files take effect for new
    connections; open ones keep theirs).  A broken new certificate keeps the
    one in use and logs why.  Returns True if a new context is in use."""
    if app.tls_context is None:
        return False
    from . import tls
    try:
        ctx = tls.reload(app.state.settings, app.tls_context)
    except ConfigError as e:
        log.error("%s", e)
        return False
    enable(app, ctx)
    log.debug("TLS certificates reloaded")
    return True
