"""Pre-dispatch stages: steps that run on a new client connection before a
server is chosen.

A stage is built as `Stage(conn)` when its turn comes, then `begin()` is
called.  It owns the client socket's events until it calls
`conn.stage_done(leftover)` (the client bytes it read past what it needed,
which reach the server first), records what it learnt with
`conn.learn(key, value)`, or closes the connection with
`conn.close_client_only()`.  Stages run in the order of the Service's
`stages` list: the PROXY header first (it precedes everything on the wire),
then the TLS handshake (pen/tlsrelay.py), then the first HTTP request head
(the sticky cookie needs it to choose the server).

Every stage is bounded by the connect timeout (-t): `Stage.begin` starts
that timer, `conn.stage_done` and the close stop it.

ClientStage is the base for stages that read raw bytes: it registers the
client socket and hands each read to `feed(data)`.
"""

import logging
import socket

from .loop import EVENT_READ
from .proxyproto import NEED_MORE, Parser, ProxyError
from .relay import SOFT_ERRORS

log = logging.getLogger("pen")

READ_SIZE = 16 * 1024


class Stage:
    """The common part: the conn, the timeout."""

    __slots__ = ("conn",)

    name = "stage"

    def __init__(self, conn):
        self.conn = conn

    def begin(self):
        conn = self.conn
        if conn.timer is None:
            conn.timer = conn.reactor.call_later(conn.settings.connect_timeout,
                                                 self.timed_out)

    def timed_out(self):
        conn = self.conn
        conn.timer = None
        if conn.stage is self and conn.phase != "CLOSED":
            log.debug("conn %d: %s from %s timed out", conn.id, self.name, conn.client_ip)
            self.fail("timed out")

    def abort(self):
        """A bug in this stage's handler: close the connection."""
        self.conn.abort()

    def fail(self, reason):
        """Close the client: this stage cannot go on."""
        log.debug("conn %d: %s: %s", self.conn.id, self.name, reason)
        self.conn.close_client_only()


class ClientStage(Stage):
    """A stage that reads the client's first bytes from the socket."""

    __slots__ = ("on_event", "buf")

    def __init__(self, conn):
        super().__init__(conn)
        self.on_event = self._on_event
        self.buf = bytearray()

    def begin(self):
        super().begin()
        conn = self.conn
        conn.cmask = EVENT_READ
        conn.reactor.register(conn.client, EVENT_READ, self.on_event)

    def _on_event(self, mask):
        conn = self.conn
        if conn.stage is not self:
            return
        try:
            data = self.recv()
        except SOFT_ERRORS:
            return
        except OSError as e:
            self.fail(f"client error: {e}")
            return
        if not data:
            self.fail("client closed the connection")
            return
        self.feed(data)

    def recv(self):
        """The client's next bytes (b"" at EOF); BlockingIOError if none."""
        return self.conn.client.recv(READ_SIZE)

    def feed(self, data):
        """Called with each read; must end in stage_done, fail, or wait."""
        raise NotImplementedError


class FirstByte(Stage):
    """client_timeout: wait until the client has sent something (slowloris
    guard).  Reads nothing: the bytes stay in the socket for whoever comes
    next; the stage's timer is client_timeout instead of the connect
    timeout."""

    __slots__ = ("on_event",)

    name = "waiting for the first byte"

    def __init__(self, conn):
        super().__init__(conn)
        self.on_event = self._on_event

    def begin(self):
        conn = self.conn
        conn.timer = conn.reactor.call_later(conn.settings.client_timeout, self.timed_out)
        conn.cmask = EVENT_READ
        conn.reactor.register(conn.client, EVENT_READ, self.on_event)

    def timed_out(self):
        if self.conn.stage is self:
            self.conn.owner.state.counters.client_timeouts += 1
        super().timed_out()

    def _on_event(self, mask):
        if self.conn.stage is self:
            self.conn.stage_done()


class ProxyHeaderIn(ClientStage):
    """accept_proxy: the PROXY v1/v2 header a front balancer sends first.
    Strict (pen/proxyproto.py): nothing of a partial or malformed header is
    forwarded; such a connection, or one from a source outside
    accept_proxy_acl, is closed and counted.  The address it carries
    becomes the client's for everything after it (ACLs, tracking, hash,
    logs, X-Forwarded-For)."""

    __slots__ = ("parser",)

    name = "PROXY header"

    def __init__(self, conn):
        super().__init__(conn)
        self.parser = Parser()

    def begin(self):
        conn = self.conn
        state = conn.owner.state
        acl = conn.settings.accept_proxy_acl
        if acl >= 0 and conn.client_ip and not state.acls.match(acl, conn.client_ip):
            state.counters.proxy_refused += 1
            self.fail(f"{conn.client_ip} may not send PROXY headers (accept_proxy_acl {acl})")
            return
        super().begin()

    def feed(self, data):
        conn = self.conn
        try:
            header = self.parser.feed(data)
        except ProxyError as e:
            conn.owner.state.counters.proxy_refused += 1
            self.fail(str(e))
            return
        if header is NEED_MORE:
            return
        if header.src is not None and header.family in (socket.AF_INET, socket.AF_INET6):
            log.debug("conn %d: PROXY header: client %s port %d (via %s)", conn.id,
                      header.src[0], header.src[1], conn.client_ip)
            conn.learn("proxied_by", conn.client_ip)
            conn.client_ip, conn.client_port = header.src[0], header.src[1]
        conn.stage_done(header.rest)
