"""UDP relay (-U): each client address gets a backend "session".

A session is a connected UDP socket to the chosen server; datagrams from
the client go out on it and replies come back to the client from the
listening socket, so the client sees answers from the address it talked to.
The session table is bounded (-x): when full, the least recently used
session is closed, so a flood of client addresses cannot exhaust file
descriptors.  Idle sessions expire.  An ICMP "port unreachable" from a
server (ConnectionRefusedError) blacklists it; the client's next datagram
goes to another server.

A session's local port is taken in turn from the ephemeral range (PortCycle),
not left to the kernel: it picks a random free port, and one just freed by
a closed session comes back soon enough that a late reply to that session
would reach the client of the new one.
"""

import errno
import logging
import random
import socket
import time
from collections import OrderedDict

from .loop import EVENT_READ
from .service import ABUSE, REFUSED

log = logging.getLogger("pen")

DATAGRAM_MAX = 65535
BATCH = 64               # datagrams handled per readiness event
UDP_IDLE = 60            # seconds an idle session lives (idle_timeout wins)
SWEEP = 1.0
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
PORT_TRIES = 64          # ports in use (by anyone) skipped before the kernel chooses


class PortCycle:
    """Local ports for new sessions, each in turn through the ephemeral
    range: a port comes back only after every other one has been used, so
    a server's late reply to a closed session cannot reach another client."""

    def __init__(self, path=PORT_RANGE):
        try:
            with open(path) as f:
                low, high = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            low, high = 32768, 60999
        self.low, self.high = low, max(low, high)
        self.next = random.randint(self.low, self.high)   # two pens: not in step

    def bind(self, sock):
        """Bind `sock` to the next free port; if PORT_TRIES in a row are
        taken, leave it unbound (connect() lets the kernel choose)."""
        for _ in range(PORT_TRIES):
            port = self.next
            self.next = port + 1 if port < self.high else self.low
            try:
                sock.bind(("", port))
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise


class Session:
    __slots__ = ("relay", "addr", "ip", "sock", "server", "index", "last",
                 "on_reply", "sx", "rx", "answered")

    def __init__(self, relay, addr, sock, server, index, now):
        self.relay, self.addr, self.sock = relay, addr, sock
        self.ip = addr[0]
        self.server, self.index, self.last = server, index, now
        self.on_reply = self._on_reply
        self.sx = self.rx = 0
        self.answered = False     # the server replied at least once

    def abort(self):
        """A bug in this session's handler: drop the session."""
        self.relay.close_session(self)

    def _on_reply(self, mask):
        # One datagram per event: a session usually has just the one reply
        # waiting, and reading on until EAGAIN costs a system call and an
        # exception each time; if more are queued, epoll (level-triggered)
        # reports the socket again on the next turn.
        relay = self.relay
        sock = self.sock
        if sock is None:
            return                    # closed earlier in this batch of events
        try:
            data = sock.recv(DATAGRAM_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            relay.server_refused(self)
            return
        except OSError as e:
            log.debug("udp: session %s: %s", self.addr, e)
            relay.close_session(self)
            return
        n = len(data)
        if not self.answered:
            self.answered = True
            self.server.mark_ok(time.monotonic(), self.ip)   # lifts a blacklist
        self.rx += n
        self.server.rx += n
        self.last = time.monotonic()
        relay.sessions.move_to_end(self.addr)
        try:
            relay.listener.sendto(data, self.addr)
        except (BlockingIOError, InterruptedError):
            relay.state.counters.socket_errors += 1   # client queue full: dropped
        except OSError as e:
            log.debug("udp: reply to %s: %s", self.addr, e)


class UdpRelay:
    """The UDP side of a Service: sessions, admitted and placed by the
    Service's admit/choose_for/fallback like TCP clients."""

    def __init__(self, service, listener):
        self.service = service
        self.state = service.state
        self.reactor = service.reactor
        self.listener = None
        self.sessions = OrderedDict()
        self.ports = PortCycle()
        self.now = time.monotonic()   # the clock, read once per batch of datagrams
        self.on_datagram = self._on_datagram
        self.set_listener(listener)
        self.sweeper = self.reactor.call_later(SWEEP, self._sweep)

    def set_listener(self, listener):
        self.listener = listener
        self.reactor.register(listener, EVENT_READ, self.on_datagram)

    def close_listener(self):
        if self.listener is not None:
            self.reactor.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def _on_datagram(self, mask):
        recvfrom = self.listener.recvfrom
        self.now = time.monotonic()
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("udp: recvfrom: %s", e)
                return
            self.forward(data, addr)

    def forward(self, data, addr, attempts=0):
        now = self.now
        session = self.sessions.get(addr)
        if session is None:
            session = self._open(addr, now)
            if session is None:
                self.state.counters.refused += 1
                return
        else:
            self.sessions.move_to_end(addr)
            session.last = now
        try:
            session.sock.send(data)
        except ConnectionRefusedError:
            # An earlier datagram was refused: this server is down.
            self.server_refused(session)
            if attempts < len(self.state.servers):
                self.forward(data, addr, attempts + 1)
            return
        except (BlockingIOError, InterruptedError):
            self.state.counters.socket_errors += 1  # server queue full: dropped
            return
        except OSError as e:
            log.debug("udp: send to %s: %s", session.server, e)
            self.close_session(session)
            return
        session.sx += len(data)
        session.server.sx += len(data)

    def _open(self, addr, now):
        state = self.state
        st = state.settings
        ip = addr[0]
        service = self.service
        verdict, entry = service.admit(ip, now, live=False)
        if verdict == REFUSED:
            return None
        if verdict == ABUSE:
            server, index = state.abuse, "abuse"
        else:
            index = service.choose_for(ip, addr[1], now, entry)
            if index is None:
                chosen = service.fallback(now)
                if chosen is None:
                    return None
                server, index = chosen
            else:
                server = state.servers[index]
        limit = max(1, st.conn_max)
        while len(self.sessions) >= limit:
            _, oldest = self.sessions.popitem(last=False)
            self._close(oldest)
        sock = socket.socket(server.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            self.ports.bind(sock)
            sock.connect(server.sockaddr)
        except OSError as e:
            sock.close()
            log.debug("udp: connect to %s: %s", server, e)
            return None
        session = Session(self, addr, sock, server, index, now)
        self.sessions[addr] = session
        server.conn += 1
        self.reactor.register(sock, EVENT_READ, session.on_reply)
        return session

    def server_refused(self, session):
        server = session.server
        server.mark_failed(time.monotonic(), "port unreachable", self.state.settings,
                           session.ip)
        self.state.counters.connect_failures += 1
        log.debug("udp: blacklisting server %s: port unreachable", session.index)
        self.close_session(session)

    def close_session(self, session):
        if self.sessions.get(session.addr) is session:
            del self.sessions[session.addr]
        self._close(session)

    def _close(self, session):
        if session.sock is None:
            return
        self.reactor.unregister(session.sock)
        session.sock.close()
        session.sock = None
        session.on_reply = None       # the bound method points back: free it now
        session.server.conn -= 1

    def _sweep(self):
        st = self.state.settings
        idle = st.idle_timeout or UDP_IDLE
        now = time.monotonic()
        sessions = self.sessions
        while sessions:
            addr, session = next(iter(sessions.items()))
            if now - session.last < idle:
                break
            del sessions[addr]
            self._close(session)
        self.sweeper = self.reactor.call_later(SWEEP, self._sweep)

    def close(self):
        self.sweeper.cancel()
        for session in list(self.sessions.values()):
            self._close(session)
        self.sessions.clear()
        self.close_listener()
