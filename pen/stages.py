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

from .loop import EVENT_READ
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
        if conn.stage is self:
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
            data = conn.client.recv(READ_SIZE)
        except SOFT_ERRORS:
            return
        except OSError as e:
            self.fail(f"client error: {e}")
            return
        if not data:
            self.fail("client closed the connection")
            return
        self.feed(data)

    def feed(self, data):
        """Called with each read; must end in stage_done, fail, or wait."""
        raise NotImplementedError
