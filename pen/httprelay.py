"""HTTP mode on the data path (SPEC §10.3): the framers of pen/http.py
and the rules of pen/rewrite.py behind a connection's two pumps.

`filters_for(conn, settings, tls)` gives the client -> server and server ->
client filters (Pump.filter: feed(bytes) -> bytes, close() -> bytes at
EOF).  They
- answer a refused request (400, 431) or response (502) to the client
  before the connection closes, having passed on the good bytes before it;
- release what the client sent after an Upgrade or CONNECT request once
  the answer came (Exchange.resume);
- step aside when both directions became a tunnel (101, 2xx to CONNECT,
  or bytes that are not HTTP at all): the pumps splice again.

`StickyHead` is the pre-dispatch stage of sticky_cookie: it reads the
client's first request head (without changing a byte) so that the Service
can send a request carrying a server's cookie to that server.
"""

import logging

from . import http, rewrite
from .stages import ClientStage

log = logging.getLogger("pen")


class _Side:
    """One direction's framer behind the Pump.filter interface: feed(bytes)
    -> bytes, raising HttpRefused for what must not pass."""

    __slots__ = ("framer", "pair")

    def __init__(self, framer, pair):
        self.framer = framer
        self.pair = pair

    @property
    def first_line(self):
        return self.framer.first_line

    def close(self):
        return self.framer.close()

    def refuse(self, out, to_server):
        exc = http.HttpRefused(self.framer.error, out)
        self.pair.refused(exc, to_server)
        raise exc


class RequestSide(_Side):
    __slots__ = ()

    def feed(self, data):
        framer = self.framer
        out = framer.feed(data)
        if framer.error is not None:
            self.refuse(out, True)
        if framer.state == http.TUNNEL:
            self.pair.check_tunnel()
        return out


class ResponseSide(_Side):
    __slots__ = ()

    def feed(self, data):
        framer = self.framer
        out = framer.feed(data)
        if framer.error is not None:
            self.refuse(out, False)
        pair = self.pair
        exchange = pair.exchange
        if exchange.resume:
            exchange.resume = False
            pair.release()
        if framer.state == http.TUNNEL:
            pair.check_tunnel()
        return out


class Pair:
    """The two framers of one HTTP-mode connection, and what they share."""

    __slots__ = ("conn", "exchange", "request", "response")

    def __init__(self, conn, rewriter):
        (on_request, quick_request), (on_response, quick_response) = rewriter.hooks()
        exchange = self.exchange = http.Exchange()
        self.conn = conn
        self.request = RequestSide(http.RequestFramer(on_request, exchange, quick_request), self)
        self.response = ResponseSide(http.ResponseFramer(exchange, on_response, quick_response),
                                     self)

    def refused(self, exc, to_server):
        """Best effort before the close: the good bytes framed before the
        refusal, then the status reply to the client."""
        conn = self.conn
        log.debug("conn %d: HTTP from %s refused: %s", conn.id, conn.client_ip, exc)
        try:
            if exc.passed:
                (conn.server if to_server else conn.client).send(exc.passed)
            reply = exc.error.reply
            if reply:
                if conn.plain:
                    conn.client.send(reply)
                else:
                    conn.tls.encrypt(reply)
                    conn.tls.flush()
        except OSError:
            pass

    def release(self):
        """The answer to an Upgrade/CONNECT came: what the client sent
        after that request goes to the server now."""
        conn = self.conn
        request = self.request
        held = request.framer.feed(b"")
        if request.framer.error is not None:
            request.refuse(held, True)
        c2s = conn.c2s
        if held and c2s is not None:
            if c2s.pending:
                c2s.out = memoryview(bytes(c2s.out) + held)
                c2s.pending += len(held)
            else:
                c2s.out = memoryview(held)
                c2s.pending = len(held)
                # The plain event handlers look only at the pump that read
                # (here the server's): send it now, and if the server does
                # not take it all, have the masks recomputed (EVENT_WRITE).
                conn.target.sx += c2s.push()
                if c2s.pending:
                    conn._update()

    def check_tunnel(self):
        """Both directions pass through untouched: the pumps may splice."""
        if self.request.framer.tunnel and self.response.framer.tunnel:
            conn = self.conn
            for pump in (conn.c2s, conn.s2c):
                if pump is not None and pump.filter is not None:
                    pump.filter = None
                    pump.splice = (pump.can_splice and conn.owner.pools.splice
                                   and pump.dump is None)


def filters_for(conn, settings, tls):
    """(client -> server filter, server -> client filter) for a
    connection in HTTP mode to conn.index."""
    index = conn.index if isinstance(conn.index, int) else -1
    rewriter = rewrite.rewriter_for(settings, index, conn.client_ip or "unix", tls=tls)
    pair = Pair(conn, rewriter)
    return pair.request, pair.response


class StickyHead(ClientStage):
    """sticky_cookie: read the first request head, note the server its
    cookie names (conn.facts["sticky"]), and hand every byte read on,
    unchanged, to the connection (its own framer reads them again)."""

    __slots__ = ("framer",)

    name = "first HTTP request head"

    def __init__(self, conn):
        super().__init__(conn)
        self.framer = http.RequestFramer(self._on_head, http.Exchange())

    def _on_head(self, head):
        conn = self.conn
        index = rewrite.server_for_cookie(conn.settings, head, len(conn.owner.state.servers))
        if index is not None:
            conn.learn("sticky", index)
        return head

    def begin(self):
        super().begin()
        if not self.conn.plain:
            self._on_event(0)     # plaintext may wait inside the TLS link already

    def recv(self):
        conn = self.conn
        if conn.plain:
            return super().recv()
        buf = bytearray(80 * 1024)       # more than a head may take (64 KiB)
        n = conn.tls.recv_into(buf)      # BlockingIOError when nothing is there
        return bytes(buf[:n])

    def feed(self, data):
        self.buf += data
        framer = self.framer
        framer.feed(data)
        if framer.exchange.seen or framer.tunnel or framer.error is not None:
            self.conn.stage_done(bytes(self.buf))   # the real filter refuses bad heads

