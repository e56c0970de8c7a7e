"""The control socket (-C port | addr:port | /path/to/socket): I/O only.

As pen does, a control connection carries ONE command: the client sends a
line, pen runs it (pen/commands.py) and sends the reply, then closes.
Unlike pen (which did a blocking read on the event loop), everything here
is non-blocking on the Reactor, so a slow or silent control client never
stalls traffic:

- a client has CLIENT_TIMEOUT seconds in all to send its line and read the
  reply; at most MAX_CLIENTS are served at once (a new one closes the oldest,
  so silent clients cannot lock out a user with a command);
- a line longer than MAX_LINE bytes is refused with an error reply and never
  buffered further, so a 1 MB line costs at most MAX_LINE bytes;
- after the reply, our side is shut down and anything else the client sends
  (a second line, the rest of a long one) is read and dropped until it
  closes, so the reply is not lost to a connection reset;
- control_acl is checked on accept; a refused client gets one line saying so.

ControlServer(reactor, state, listen_addr, run, opened=None):
`opened` is what open_socket() returned when the daemon opened it before
detaching; run(line) is the daemon's command pipeline (App.execute), which
answers the reply lines, errors included.
"""

import errno
import logging
import os
import socket

from .anchor import Anchored
from .addr import ListenAddr, parse_listen
from .errors import ConfigError
from .listen import bind_listener
from .loop import EVENT_READ, EVENT_WRITE

log = logging.getLogger("pen")

MAX_LINE = 4096           # pen's own control buffer
CLIENT_TIMEOUT = 10.0     # seconds for one control conversation
MAX_CLIENTS = 64
ACCEPT_BATCH = 128        # accepts per wakeup: a burst drains in a few turns
RECV_SIZE = 4096
BACKLOG = 500             # as the data listener's (-q): a burst of connects fits
ACCEPT_BACKOFF = 0.1       # seconds the listener rests when out of fds
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ROOT_REFUSAL = ("Won't open control port running as root; "
                "use -u to run as different user (-u root to insist)")


def root_refusal(settings):
    """pen's rule: no control port as root unless -u is given.  The message
    to show when refusing, or None when the port may be opened."""
    if os.getuid() == 0 and not settings.user:
        return ROOT_REFUSAL
    return None


def open_socket(addr):
    """(socket, anchor): a listening, non-blocking socket for ListenAddr
    `addr` (the same rules as the client listener: a stale Unix socket is
    replaced, nothing else is), and for a Unix path the Anchored file to
    remove on exit, claimed now, before any chroot; ConfigError naming the
    control address and the reason."""
    try:
        sock = bind_listener(addr, backlog=BACKLOG)
    except ConfigError as e:
        raise ConfigError(f"control port {addr}: {e}") from None
    return sock, (Anchored(addr.path, claim=True) if addr.kind == "unix" else None)


def adopt_socket(addr, fd):
    """(socket, anchor) for the control socket a restarting pen handed us."""
    from .handover import adopt
    try:
        sock = adopt(fd, "control socket")
    except OSError as e:
        raise ConfigError(f"control port {addr}: cannot adopt the inherited socket: {e}") from None
    return sock, (Anchored(addr.path, claim=True) if addr.kind == "unix" else None)


class ControlServer:
    """The listening control socket and the conversations on it."""

    name = "control"
    max_clients = MAX_CLIENTS
    accept_batch = ACCEPT_BATCH

    def __init__(self, reactor, state, listen_addr, run, opened=None):
        if not isinstance(listen_addr, ListenAddr):
            listen_addr = parse_listen(str(listen_addr))
        self.reactor = reactor
        self.state = state
        self.addr = listen_addr
        self.run = run
        self.clients = {}        # oldest first
        self.sock, self.anchor = opened if opened is not None else open_socket(listen_addr)
        reactor.register(self.sock, EVENT_READ, self.on_readable)

    def on_readable(self, mask):
        for _ in range(self.accept_batch):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("%s: accept failed: %s", self.name, e)
                if e.errno in OUT_OF_FDS:
                    # Level-triggered: returning would wake us again at
                    # once.  Rest the listener instead of spinning.
                    self.reactor.unregister(self.sock)
                    self.reactor.call_later(ACCEPT_BACKOFF, self._resume)
                    return
                continue
            ip = peer[0] if isinstance(peer, tuple) else ""
            if len(self.clients) >= self.max_clients:
                # The newest is the one likely to send its command now; the
                # oldest has had its time (silent or slow clients would
                # otherwise lock everyone out until they time out).
                oldest = next(iter(self.clients))
                log.debug("%s: too many %s connections; closing the oldest, from %s",
                          self.name, self.name, oldest.ip)
                oldest.close()
            sock.setblocking(False)
            self.accepted(sock, ip)

    def accepted(self, sock, ip):
        client = ControlClient(self, sock, ip)
        self.clients[client] = None
        st = self.state.settings
        if not self.state.acls.match(st.control_acl, ip):
            log.info("control: connection from %s refused by control_acl %d",
                     ip, st.control_acl)
            client.reply([f"control: access from {ip} denied by control_acl "
                          f"{st.control_acl}"])

    def _resume(self):
        if self.sock is not None:
            self.reactor.register(self.sock, EVENT_READ, self.on_readable)

    def execute(self, line):
        """Run one command; the reply lines (effects included)."""
        try:
            return self.run(line)
        except Exception as e:
            log.error("control: %r failed", line, exc_info=True)
            return [f"control: internal error: {e}"]

    def close(self):
        for client in list(self.clients):
            client.close()
        if self.sock is not None:
            self.reactor.unregister(self.sock)
            self.sock.close()
            self.sock = None
            if self.anchor is not None:
                self.anchor.unlink()
                self.anchor.close()


READING, WRITING, DRAINING, CLOSED = "READING", "WRITING", "DRAINING", "CLOSED"


class ControlClient:
    """One control conversation: read a line, reply, drain, close."""

    __slots__ = ("server", "sock", "ip", "buf", "out", "phase", "timer", "mask",
                 "handler")

    def __init__(self, server, sock, ip):
        self.server = server
        self.sock = sock
        self.ip = ip
        self.buf = bytearray()
        self.out = b""
        self.phase = READING
        self.mask = EVENT_READ
        self.handler = self.on_event
        server.reactor.register(sock, EVENT_READ, self.handler)
        self.timer = server.reactor.call_later(CLIENT_TIMEOUT, self.on_timeout)

    def on_event(self, mask):
        if self.phase == WRITING:
            if mask & EVENT_WRITE:
                self.flush()
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("control: recv from %s: %s", self.ip, e)
            self.close()
            return
        if self.phase == DRAINING:
            if not data:
                self.close()
            return
        if data:
            self.buf += data
            end = self._line_end()
            if end < 0:
                if len(self.buf) > MAX_LINE:
                    self.reply([f"control: command longer than {MAX_LINE} bytes; ignored"])
                return
        else:
            end = len(self.buf)
            if not end:
                self.close()
                return
        if end > MAX_LINE:
            self.reply([f"control: command longer than {MAX_LINE} bytes; ignored"])
            return
        line = bytes(self.buf[:end]).decode("utf-8", "surrogateescape")
        self.buf = bytearray()
        try:
            lines = self.server.execute(line)
        except Exception as e:     # a bug: keep serving, say so
            log.error("control: command %r failed", line, exc_info=True)
            lines = [f"control: internal error: {e}"]
        self.reply(lines)

    def _line_end(self):
        ends = [i for i in (self.buf.find(b"\n"), self.buf.find(b"\r")) if i >= 0]
        return min(ends) if ends else -1

    def reply(self, lines):
        """Queue the reply, then shut down our side once it is sent."""
        self.buf = bytearray()
        self.out = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        self.phase = WRITING
        self.flush()

    def flush(self):
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                self._want(EVENT_WRITE)
                return
            except OSError as e:
                log.debug("control: send to %s: %s", self.ip, e)
                self.close()
                return
            self.out = self.out[n:]
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.phase = DRAINING
        self._want(EVENT_READ)

    def _want(self, mask):
        if mask != self.mask:
            self.mask = mask
            self.server.reactor.modify(self.sock, mask, self.handler)

    def on_timeout(self):
        self.timer = None
        if self.phase == READING:
            log.debug("control: %s sent no complete command in %.0fs", self.ip,
                      CLIENT_TIMEOUT)
        self.close()

    def close(self):
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.reactor.unregister(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        self.server.clients.pop(self, None)
