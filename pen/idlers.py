"""Idlers: connections to the servers opened before a client needs them
(pen's `idlers N`).

With `idlers N` the pool keeps N connected, idle sockets to each server in
service.  Service._connect asks take() for one before it connects; the
Conn relays over it at once (Conn.use: no socket(), no connect, no wait
for the handshake), and the pool opens a replacement REFILL_DELAY later.

pen 0.35 keeps N idlers in all, spread by round robin, and never gives
one to a client ("reliable idling": they only hold connections open).
Here N is per server and the idlers serve clients, which is what makes
them worth their file descriptors.

The rules (README and penctl(1) say the same for users):

- An idler waiting in the pool is watched for reading.  EOF or an error
  means the server closed it: it is closed and replaced.
- Before one is handed out its TCP state must still be ESTABLISHED
  (TCP_INFO; poll's POLLRDHUP for Unix sockets): that sees a FIN or a
  reset even behind unread data, which a MSG_PEEK would not.
- A server that speaks first (SMTP, SSH, FTP, MySQL): its greeting is
  left unread in the idler and is the first thing the client receives,
  as on a fresh connection.  Such an idler is no longer watched (level-
  triggered epoll would wake on it every turn); the sweep checks its
  state instead, every TICK.
- Only servers that are up get idlers: not blacklisted, down, disabled,
  draining or without an address.  When a server leaves up (its
  WENT_DOWN event, or the sweep) its idlers are closed.
- Idlers are not clients: they are not in Server.conn, so `servers`,
  maxc/hard and the leastconn/weight choices see clients only.  But with
  a maxc set a server gets at most maxc - conn idlers, so clients and
  idlers together stay within maxc (a backend with a fixed number of
  workers is not filled with idle connections); idlers beyond that room
  are closed.
- A connect that fails or passes connect_timeout is a connect failure
  for the server's state machine, as in pen (blacklist, server_retry,
  hooks).  On top of that the pool backs off per server: after a failure,
  or an idler the server closed within YOUNG seconds, no new one for
  RETRY_MIN seconds, doubling up to RETRY_MAX; the delay resets when a
  client uses one or one lives longer than YOUNG.
- At most N x servers descriptors.  Out of descriptors, the pool closes
  its ready idlers and rests for RETRY_MAX (clients come first).
- None with -U (UDP), `transparent` (an idler cannot connect from a
  client's address not yet known) or `dummy`, and none to the emergency
  or abuse server.
- An idler made before `keepalive`, `tcp_nodelay`, `source` or the
  server's address changed is replaced by the next sweep.
"""

import errno
import logging
import os
import select
import socket
import time

from .loop import EVENT_READ, EVENT_WRITE
from .relay import STREAM_NONBLOCK, TCP_INFO, established
from .servers import WENT_DOWN

log = logging.getLogger("pen")

TICK = 0.5            # seconds between sweeps: refill, back-off, stale idlers
RETRY_MIN = 0.25      # seconds: the first back-off after a failed idler
RETRY_MAX = 30.0      # the longest back-off; also the rest after EMFILE
YOUNG = 1.0           # an idler the server closes sooner than this failed
# A replacement is opened this long after its idler was taken: by then the
# client's request has gone out and, on a LAN, its answer is back, so
# neither our connect nor the server's accept of it delays that exchange.
REFILL_DELAY = 0.002
WARN_EVERY = 10.0     # seconds between repeated out-of-descriptor warnings
GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0x2000)
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def usable(sock, family):
    """True while the server has neither closed nor reset this idle
    connection (data it sent, a greeting, does not matter)."""
    if family != socket.AF_UNIX and TCP_INFO is not None:
        return established(sock)
    poller = select.poll()
    poller.register(sock, select.POLLIN | GONE)
    ready = poller.poll(0)
    return not ready or not ready[0][1] & GONE


class Backoff:
    """PURE: when the next idler to one server may be opened."""

    __slots__ = ("delay", "until")

    def __init__(self):
        self.delay = 0.0
        self.until = 0.0

    def failed(self, now):
        self.delay = min(RETRY_MAX, max(RETRY_MIN, self.delay * 2))
        self.until = now + self.delay

    def healthy(self):
        self.delay = 0.0
        self.until = 0.0

    def allows(self, now):
        return now >= self.until


def room(server, wanted):
    """PURE: how many idlers `server` may have: `wanted`, and within maxc
    together with its clients."""
    if server.max:
        return max(0, min(wanted, server.max - server.conn))
    return wanted


class Idler:
    """One idle connection to one server, connecting or ready."""

    __slots__ = ("pool", "sock", "server", "sockaddr", "options", "born",
                 "timer", "ready", "watched", "on_event")

    def __init__(self, pool, sock, server, options):
        self.pool = pool
        self.sock = sock
        self.server = server
        self.sockaddr = server.sockaddr   # where it went: replaced if that changes
        self.options = options            # the upstream settings it was made with
        self.born = 0.0                   # monotonic time it connected
        self.timer = None                 # connect timeout
        self.ready = False                # connected, in the pool
        self.watched = False              # registered with the reactor
        self.on_event = self._on_event

    def _on_event(self, mask):
        pool = self.pool
        if self.sock is None:
            return
        if not self.ready:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                pool.connect_failed(self, os.strerror(err))
            else:
                pool.connected(self)
            return
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            pool.died(self, e.strerror)
            return
        if not data or not usable(self.sock, self.server.family):
            pool.died(self, "closed by the server")
            return
        # The server spoke first: leave its greeting for the client and
        # stop watching (it would wake every turn); the sweep checks it.
        pool.reactor.unregister(self.sock)
        self.watched = False

    def timed_out(self):
        self.timer = None
        if self.sock is not None and not self.ready:
            self.pool.connect_failed(self, "timed out")

    def abort(self):
        """A bug in the handler (the Reactor logged it): drop this idler."""
        if self.sock is not None:
            self.pool.discard(self)

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watched:
            self.pool.reactor.unregister(self.sock)
            self.watched = False
        self.sock.close()
        self.sock = None
        self.on_event = None     # the bound handler points back at us


class IdlerPool:
    """The idlers of one Service, per server index."""

    def __init__(self, owner):
        self.owner = owner                # Service: settings, state, source_ip
        self.state = owner.state
        self.settings = owner.settings
        self.reactor = owner.reactor
        self.ready = {}          # server index -> [Idler], the youngest last
        self.connecting = {}     # server index -> set of Idlers still connecting
        self.backoff = {}        # server index -> Backoff
        self.rest_until = 0.0    # out of descriptors: no new idler before this
        self.last_warning = -WARN_EVERY
        self.running = False
        self.sweeper = None      # the TICK timer, while idlers are wanted
        self.refill_due = False  # a refill is queued for the end of this turn
        self.state.server_events.subscribe(self._on_server_event)

    # --- life ------------------------------------------------------------------------
    def start(self):
        self.running = True
        self.configure()

    def configure(self):
        """`idlers N` changed (or the pool started or stopped): open or
        close to match."""
        if self.wanted():
            if self.sweeper is None:
                self.sweeper = self.reactor.call_later(TICK, self._sweep)
            self.refill()
            return
        self.close_all()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None

    def wanted(self):
        """N, or 0 where idlers cannot be used."""
        st = self.settings
        if not self.running or st.udp or st.transparent or st.dummy:
            return 0
        return st.idlers

    def stop(self):
        """The service stops (exit, graceful stop): no more idlers."""
        self.running = False
        self.configure()

    # --- the hot path: a client takes one --------------------------------------------
    def take(self, server, index):
        """A connected socket to `server` for a new client, registered with
        the reactor for reading (the Conn changes the handler), or None."""
        ready = self.ready.get(index)
        while ready:
            idler = ready.pop()
            self.state.idlers_open -= 1
            if idler.sockaddr == server.sockaddr and usable(idler.sock, server.family):
                sock = idler.sock
                if not idler.watched:
                    self.reactor.register(sock, EVENT_READ, idler.on_event)
                if idler.timer is not None:
                    idler.timer.cancel()
                idler.sock = idler.on_event = None
                self.backoff[index].healthy()
                self._refill_soon()
                return sock
            self._dead(idler, index, "closed by the server")
        return None

    def _refill_soon(self):
        if not self.refill_due:
            self.refill_due = True
            self.reactor.call_later(REFILL_DELAY, self._refill_now)

    def _refill_now(self):
        self.refill_due = False
        self.refill()

    # --- opening ---------------------------------------------------------------------
    def options(self):
        st = self.settings
        return (st.keepalive, st.tcp_nodelay, self.owner.source_ip)

    def refill(self):
        """Open idlers where a server that is up has fewer than it may."""
        wanted = self.wanted()
        if not wanted:
            return
        now = time.monotonic()
        if now < self.rest_until:
            return
        options = self.options()
        for server in self.state.servers:
            if server.sockaddr is None or not server.in_service(now):
                continue
            index = server.index
            backoff = self.backoff.get(index)
            if backoff is None:
                backoff = self.backoff[index] = Backoff()
            if not backoff.allows(now):
                continue
            ready = self.ready.setdefault(index, [])
            connecting = self.connecting.setdefault(index, set())
            for _ in range(room(server, wanted) - len(ready) - len(connecting)):
                if not self._open(server, options, now) or not backoff.allows(now):
                    break
            if now < self.rest_until:
                return

    def _open(self, server, options, now):
        """Start one connect; False if it could not even start."""
        keepalive, nodelay, source = options
        try:
            sock = socket.socket(server.family, STREAM_NONBLOCK)
        except OSError as e:
            if e.errno in OUT_OF_FDS:
                self.shed(now)
            else:                   # no such family here, ...: not for now
                log.debug("idler to %s: socket: %s", server, e)
                self.backoff[server.index].failed(now)
            return False
        if STREAM_NONBLOCK == socket.SOCK_STREAM:
            sock.setblocking(False)
        unix = server.family == socket.AF_UNIX
        try:
            if keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if nodelay and not unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source is not None and not unix:
                sock.bind((source, 0))
        except OSError as e:
            log.debug("idler to %s: socket options: %s", server, e)
        err = sock.connect_ex(server.sockaddr)
        idler = Idler(self, sock, server, options)
        self.state.idlers_open += 1
        self.connecting[server.index].add(idler)
        if err == 0 or (err == errno.EINPROGRESS and established(sock)):
            self.connected(idler)
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            self.reactor.register(sock, EVENT_WRITE, idler.on_event)
            idler.watched = True
            idler.timer = self.reactor.call_later(self.settings.connect_timeout,
                                                  idler.timed_out)
        else:
            self.connect_failed(idler, os.strerror(err))
            return False
        return True

    def shed(self, now=None):
        """Out of descriptors: close the ready idlers and rest; returns the
        descriptors freed."""
        if not self.wanted():
            return 0
        now = time.monotonic() if now is None else now
        freed = 0
        for index, ready in self.ready.items():
            while ready:
                ready.pop().close()
                self.state.idlers_open -= 1
                freed += 1
        self.rest_until = now + RETRY_MAX
        if now - self.last_warning > WARN_EVERY:
            self.last_warning = now
            log.warning("idlers: out of file descriptors; %d idlers closed, none "
                        "opened for %ds", freed, RETRY_MAX)
        return freed

    def connected(self, idler):
        """Its connect completed: into the pool, watched for reading."""
        if idler.timer is not None:
            idler.timer.cancel()
            idler.timer = None
        server = idler.server
        self.connecting[server.index].discard(idler)
        idler.ready = True
        idler.born = time.monotonic()
        if idler.watched:
            self.reactor.modify(idler.sock, EVENT_READ, idler.on_event)
        else:
            self.reactor.register(idler.sock, EVENT_READ, idler.on_event)
            idler.watched = True
        self.ready[server.index].append(idler)
        if server.failures or server.blacklisted_until:
            server.mark_ok(idler.born)

    def connect_failed(self, idler, reason):
        server = idler.server
        log.debug("idler to server %d: connect failed: %s", server.index, reason)
        self.connecting[server.index].discard(idler)
        self.state.idlers_open -= 1
        idler.close()
        now = time.monotonic()
        self.backoff[server.index].failed(now)
        self.state.counters.connect_failures += 1
        server.mark_failed(now, f"idler connect: {reason}", self.settings)

    # --- closing ---------------------------------------------------------------------
    def died(self, idler, reason):
        """The server closed (or reset) a ready idler."""
        index = idler.server.index
        ready = self.ready.get(index, ())
        if idler in ready:
            ready.remove(idler)
            self.state.idlers_open -= 1
        self._dead(idler, index, reason)
        self._refill_soon()

    def _dead(self, idler, index, reason):
        now = time.monotonic()
        log.debug("idler to server %d: %s after %.1fs", index, reason, now - idler.born)
        if now - idler.born < YOUNG:
            self.backoff[index].failed(now)
        else:
            self.backoff[index].healthy()
        idler.close()

    def discard(self, idler):
        """Close one idler, ready or connecting, without judging the server."""
        index = idler.server.index
        ready = self.ready.get(index, [])
        if idler in ready:
            ready.remove(idler)
            self.state.idlers_open -= 1
        elif idler in self.connecting.get(index, ()):
            self.connecting[index].discard(idler)
            self.state.idlers_open -= 1
        idler.close()

    def close_server(self, index):
        for idler in list(self.ready.get(index, ())) + list(self.connecting.get(index, ())):
            self.discard(idler)

    def close_all(self):
        for index in set(self.ready) | set(self.connecting):
            self.close_server(index)

    def _on_server_event(self, event, server, reason="", client=None):
        if event == WENT_DOWN:
            self.close_server(server.index)

    # --- the sweep ---------------------------------------------------------------------
    def _sweep(self):
        """Every TICK: drop idlers to servers out of service, moved, over
        their room, made with old options, or closed unseen; then refill."""
        self.sweeper = self.reactor.call_later(TICK, self._sweep)
        now = time.monotonic()
        wanted = self.wanted()
        options = self.options()
        servers = self.state.servers
        for index in list(self.ready):
            server = servers[index] if index < len(servers) else None
            if server is None or not server.in_service(now):
                self.close_server(index)
                continue
            ready = self.ready[index]
            for idler in list(ready):
                if idler.sockaddr != server.sockaddr or idler.options != options:
                    self.discard(idler)
                elif not idler.watched and not usable(idler.sock, server.family):
                    self.died(idler, "closed by the server")
            extra = len(ready) + len(self.connecting.get(index, ())) - room(server, wanted)
            while extra > 0 and ready:
                self.discard(ready[0])          # the oldest first
                extra -= 1
        self.refill()
