"""Conn: one client relayed to one server, both directions, on the Reactor.

Each direction is a Pump that moves bytes from a source socket to a
destination socket, either through a kernel pipe with os.splice (plain TCP,
the bytes untouched) or through a pooled bytearray (TLS, header rewriting,
traffic dumps).  A pump holds at most one pipe-full or one buffer of data:
while it holds data it stops reading its source, so a peer that does not
drain stops the other side (backpressure) and memory stays bounded.
Pipes and buffers are taken from a pool when data arrives and given back
as soon as it has been sent, so an idle connection holds neither.

Phases: [PREPARING ->] CONNECTING -> RELAYING -> CLOSED (PREPARING while
the pre-dispatch stages of pen/stages.py run).  A half-close (EOF from one side)
is forwarded as shutdown(SHUT_WR) once everything before it was delivered;
the connection closes when both directions have finished, or at once on a
socket error.
"""

import _socket
import errno
import logging
import os
import socket
import struct
import time
from typing import Protocol

from . import proxyout
from .loop import EVENT_READ, EVENT_WRITE

log = logging.getLogger("pen")

BUF_SIZE = 64 * 1024
PIPE_SIZE = 64 * 1024
POOL_MAX = 64
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAVE_SPLICE = hasattr(os, "splice")
splice = getattr(os, "splice", None)

CONNECTING, RELAYING, CLOSED = "CONNECTING", "RELAYING", "CLOSED"
PREPARING = "PREPARING"   # pre-dispatch stages running (pen/stages.py)
TRANSITIONS = {PREPARING: (CONNECTING, CLOSED), CONNECTING: (RELAYING, CLOSED),
               RELAYING: (CLOSED,), CLOSED: ()}

SOFT_ERRORS = (BlockingIOError, InterruptedError)
STREAM_NONBLOCK = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
# Connection sockets are _socket.socket, the C type under socket.socket:
# the same methods, without socket.py's Python __init__ and close()/
# _real_close() frames (measured: ~3 us less per socket built and closed,
# timeit on this machine; 6 Python calls less per relayed connection).
new_socket = _socket.socket
TCP_INFO = getattr(socket, "TCP_INFO", None)   # Linux
TCP_ESTABLISHED = 1                  # tcpi_state, the first byte of struct tcp_info
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)
LINGER_RESET = struct.pack("ii", 1, 0)   # SO_LINGER on, 0 s: close() sends an RST


def established(sock):
    """True if this TCP socket's connect has completed (TCP_INFO's state is
    ESTABLISHED): one getsockopt, no exception either way."""
    if TCP_INFO is None:
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 1)[0] == TCP_ESTABLISHED
    except OSError:
        return False       # not TCP, or no TCP_INFO: wait for EVENT_WRITE


class ConnOwner(Protocol):
    """What a Conn needs from whoever accepted it (pen/service.py's Service).
    A Conn is handed its owner when it is built and touches nothing else."""

    reactor: object          # loop.Reactor
    pools: "Pools"
    settings: object         # state.Settings
    state: object            # state.State (counters)
    source_ip: object        # local IP for upstream connects, or None
    pending: int             # connects in progress, kept up to date by Conns

    def dispatch(self, conn): ...            # stages done: admit, choose, connect
    def connected(self, conn): ...           # the server connect completed
    def connect_failed(self, conn, reason): ...
    def closed(self, conn): ...              # the Conn is gone
    def pump_options(self, conn): ...        # (filter, dump_c, dump_s, first_line)


class Pools:
    """Idle pipes and buffers shared by all connections."""

    def __init__(self, splice=HAVE_SPLICE):
        self.splice = splice
        self.pipes = []
        self.buffers = []
        self.scratch = memoryview(bytearray(BUF_SIZE))   # read through a filter, copied at once
        self.holders = set()     # pumps holding a pipe with bytes in it (stalled)

    def reclaim(self):
        """Out of fds: every stalled pump moves its bytes into a buffer and
        gives its pipe back, idle pipes are closed.  Those connections go
        on through user-space buffers (2 fds each instead of 4), so new
        clients are not turned away for their sake.  Returns the fds freed."""
        freed = 0
        for pump in list(self.holders):
            pump.unsplice()
            freed += 2
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
            freed += 2
        self.pipes.clear()
        if freed:
            log.warning("out of file descriptors: %d freed by relaying stalled "
                        "connections through buffers", freed)
        return freed

    def get_pipe(self):
        if self.pipes:
            return self.pipes.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return r, w

    def put_pipe(self, pipe):
        if len(self.pipes) < POOL_MAX:
            self.pipes.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def get_buffer(self):
        if self.buffers:
            return self.buffers.pop()
        return memoryview(bytearray(BUF_SIZE))

    def put_buffer(self, view):
        if len(self.buffers) < POOL_MAX:
            self.buffers.append(view)

    def close(self):
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
        self.pipes.clear()
        self.buffers.clear()


class Pump:
    """Bytes from `src` to `dst`.  `pending` bytes are held (pipe or buffer)."""

    __slots__ = ("src", "dst", "srcfd", "dstfd", "pools", "splice", "pipe",
                 "buf", "out", "pending", "eof", "shut", "total", "filter",
                 "dump", "twin")

    can_splice = True    # TLS pumps cannot: their source or sink is not a socket
    direct = True        # dst is a socket (send), not a TLS link with a push of its own

    def __init__(self, src, dst, pools, splice, filter=None, dump=None, fds=None):
        self.src, self.dst = src, dst
        # `fds`: (src, dst) descriptors, when the caller has them (a Conn)
        self.srcfd, self.dstfd = fds if fds is not None else (src.fileno(), dst.fileno())
        self.pools = pools
        self.splice = self.can_splice and splice and filter is None and dump is None
        self.pipe = None
        self.buf = None      # pooled memoryview while data is held
        self.out = None      # memoryview of the bytes still to send
        self.pending = 0
        self.eof = False     # source said EOF
        self.shut = False    # EOF passed on to dst
        self.total = 0       # bytes delivered
        self.filter = filter  # object with feed(bytes) -> bytes, or None
        self.dump = dump      # callable(bytes) for traffic dumps, or None
        self.twin = None      # the other direction (plain Conns only)

    def pull(self):
        """Read what the source has and try to deliver it.  Returns bytes
        delivered; raises OSError on a socket error.  Only called while
        nothing is held (pending == 0): the Conn stops reading otherwise."""
        if not self.splice:
            filt = self.filter
            if filt is not None and self.direct:
                return self._pull_filtered(filt)
            return self._pull_buffer()
        # The hot path of plain TCP, written out: a pooled pipe, one splice
        # in, one splice out, and the pipe goes straight back to the pool
        # when everything went through (the usual case).  The flags go by
        # position: os.splice's keyword parsing costs ~250 instructions a
        # call (valgrind).
        pipes = self.pools.pipes
        if pipes:
            pipe = pipes.pop()
        else:
            try:
                pipe = self.pools.get_pipe()
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.splice = False      # no fd for a pipe: this one uses buffers
                return self._pull_buffer()
        # The pipe came from the pool or the pool was empty, and nothing
        # else ran since: it always fits back in (no put_pipe, no len()).
        try:
            n = splice(self.srcfd, pipe[1], PIPE_SIZE, None, None, SPLICE_FLAGS)
        except SOFT_ERRORS:
            pipes.append(pipe)
            return 0
        except OSError as e:
            pipes.append(pipe)
            if e.errno != errno.EINVAL:
                raise
            self.splice = False   # not spliceable here: use buffers
            return self._pull_buffer()
        if not n:
            pipes.append(pipe)
            return self._on_eof()
        try:
            sent = splice(pipe[0], self.dstfd, n, None, None, SPLICE_FLAGS)
        except SOFT_ERRORS:
            sent = 0
        except OSError as e:
            self.pipe, self.pending = pipe, n      # close() disposes of it
            self.pools.holders.add(self)
            if e.errno != errno.EINVAL:
                raise
            self._pipe_to_buffer()
            return self.push()
        self.total += sent
        if sent == n:
            pipes.append(pipe)
            return sent
        # The destination is full: hold the rest and stop reading; the
        # Conn asks for EVENT_WRITE and push() sends it.
        self.pipe, self.pending = pipe, n - sent
        self.pools.holders.add(self)
        return sent

    def _pull_buffer(self):
        buf = self.buf
        if buf is None:
            buf = self.buf = self.pools.get_buffer()
        try:
            n = self.src.recv_into(buf)
        except SOFT_ERRORS:
            self._release_buffer()
            return 0
        if not n:
            self._release_buffer()
            return self._on_eof()
        if self.dump is not None:
            self.dump(buf[:n])
        if self.filter is not None:
            data = self.filter.feed(buf[:n])
            self._release_buffer()
            if not data:
                return 0
            self.out = memoryview(data)
            self.pending = len(data)
        else:
            self.out = buf[:n]
            self.pending = n
        return self.push()

    def _pull_filtered(self, filt):
        """_pull_buffer through a filter (HTTP mode), written out: the filter
        copies what it keeps, so the read goes to the pools' one scratch
        buffer, and what the filter gives is sent at once; only what the
        destination does not take is held."""
        view = self.pools.scratch
        try:
            n = self.src.recv_into(view)
        except SOFT_ERRORS:
            return 0
        if not n:
            return self._on_eof()
        if self.dump is not None:
            self.dump(view[:n])
        data = filt.feed(view[:n])
        if not data:
            return 0
        try:
            sent = self.dst.send(data)
        except SOFT_ERRORS:
            sent = 0
        self.total += sent
        if sent < len(data):
            self.out = memoryview(data)[sent:]
            self.pending = len(data) - sent
        return sent

    def hold(self, data):
        """Deliver `data` (client bytes a pre-dispatch stage read) before
        anything read from the source; call while nothing is held."""
        if self.dump is not None:
            self.dump(memoryview(data))
        if self.filter is not None:
            data = self.filter.feed(memoryview(data))
        if data:
            self.out = memoryview(bytes(data))
            self.pending = len(data)
            return self.push()
        return 0

    def push(self):
        """Send held bytes to dst.  Returns how many went out."""
        sent = 0
        if self.pipe is not None:
            while self.pending:
                try:
                    n = splice(self.pipe[0], self.dstfd, self.pending, None, None,
                               SPLICE_FLAGS)
                except SOFT_ERRORS:
                    break
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self._pipe_to_buffer()
                    return sent + self.push()
                self.pending -= n
                sent += n
            if not self.pending:
                self._release_pipe()
        elif self.pending:
            out = self.out
            while self.pending:
                try:
                    n = self.dst.send(out)
                except SOFT_ERRORS:
                    break
                self.pending -= n
                sent += n
                out = out[n:]
            if self.pending:
                self.out = out
            else:
                self.out = None
                self._release_buffer()
        self.total += sent
        if self.eof and not self.pending and not self.shut:
            self._shutdown_dst()
        return sent

    def _on_eof(self):
        self.eof = True
        filt = self.filter
        if filt is not None:
            rest = filt.close()          # what a filter still held (a partial line)
            if rest:
                self.out = memoryview(rest)
                self.pending = len(rest)
                return self.push()       # shuts dst down once it is out
        if not self.pending:
            twin = self.twin
            if twin is not None and twin.shut:
                # The other direction is finished too, so the Conn closes
                # both sockets right now and close() sends this FIN: one
                # shutdown() less per connection (what pen does too).
                self.shut = True
            else:
                self._shutdown_dst()
        return 0

    def _shutdown_dst(self):
        self.shut = True
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pipe_to_buffer(self, close=False):
        """The held bytes out of the pipe into a buffer; the pipe goes back
        to the pool (or is closed); from now on this pump uses buffers."""
        pipe = self.pipe
        data = b""
        while len(data) < self.pending:
            chunk = os.read(pipe[0], self.pending - len(data))
            if not chunk:
                break
            data += chunk
        self.pipe = None
        self.pools.holders.discard(self)
        if close:
            os.close(pipe[0])
            os.close(pipe[1])
        else:
            self.pools.put_pipe(pipe)
        self.splice = False
        self.out = memoryview(data)
        self.pending = len(data)

    def unsplice(self):
        """Pools.reclaim: give the pipe back (closed), keep the bytes."""
        if self.pipe is not None and self.pending:
            self._pipe_to_buffer(close=True)

    def _release_pipe(self):
        if self.pipe is not None:
            if self.pending:
                return
            self.pools.holders.discard(self)
            self.pools.put_pipe(self.pipe)
            self.pipe = None

    def _release_buffer(self):
        if self.buf is not None:
            self.pools.put_buffer(self.buf)
            self.buf = None

    def close(self):
        """Drop whatever is held (the connection is going away)."""
        pipe = self.pipe
        if pipe is not None:
            self.pipe = None
            self.pools.holders.discard(self)
            if self.pending:
                # The pipe still holds bytes: it cannot be reused.
                os.close(pipe[0])
                os.close(pipe[1])
            else:
                self.pools.put_pipe(pipe)
        self.pending = 0
        self.out = None
        if self.buf is not None:
            self._release_buffer()
        self.filter = self.dump = None    # FirstLine and dumpers point back at the Conn
        self.twin = None                  # a cycle too: freed by refcount, not the GC


class Conn:
    """A client connection and its server connection."""

    __slots__ = ("id", "owner", "reactor", "settings", "client", "server", "cfd", "sfd",
                 "client_ip", "client_port", "target", "index", "tried", "phase",
                 "timer", "c2s", "s2c", "cmask", "smask", "on_client", "on_server",
                 "started", "entry", "first", "first_line", "http", "seen",
                 "idle_since", "stages", "stage", "preread", "facts", "tls", "plain",
                 "kicking")

    def __init__(self, conn_id, owner, client, client_addr, client_ip, client_port):
        self.id = conn_id
        self.owner = owner
        self.reactor = owner.reactor
        self.settings = owner.settings
        self.client = client
        self.server = None
        # The descriptors, looked up once: the Reactor and the pumps take
        # them (a registered int skips the selector's fileno() and checks).
        self.cfd = client.fileno()
        self.sfd = -1
        self.client_ip = client_ip
        self.client_port = client_port
        self.target = None       # the Server we connect/relay to
        self.index = None        # its index (or "emergency"/"abuse")
        self.tried = set()
        self.phase = CONNECTING
        self.timer = None
        self.c2s = self.s2c = None
        self.cmask = self.smask = 0
        self.on_client = self._on_client_event
        self.on_server = self._on_server_event
        self.started = time.time()
        self.entry = None        # ClientEntry, for `recent` counters
        self.first = None        # the initial pick, where failover wraps to
        self.first_line = None
        self.http = None
        self.seen = 0            # bytes moved at the last idle sweep
        self.idle_since = 0.0
        self.stages = ()         # pre-dispatch stages still to run (pen/stages.py)
        self.stage = None        # the one running
        self.preread = None      # client bytes a stage read: sent to the server first
        self.facts = None        # what stages learnt (dict), or None
        self.tls = None          # tlsrelay.TlsLink when the client speaks TLS
        self.plain = True        # both sides are sockets: the lean handlers and twins apply
        self.kicking = False     # a read is due on the next loop turn (TLS)

    def attach_tls(self, link):
        """The client speaks TLS through `link` (tlsrelay.TlsLink): the
        pumps read and write the link, and the general handlers apply."""
        self.tls = link
        self.plain = False


    # --- phase bookkeeping ---------------------------------------------------------
    def _enter(self, phase):
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"conn {self.id}: {self.phase} -> {phase}")
        self.phase = phase

    @property
    def sx(self):
        return self.c2s.total if self.c2s else 0

    @property
    def rx(self):
        return self.s2c.total if self.s2c else 0

    # --- connecting ---------------------------------------------------------------
    def start(self, stages=()):
        """Just accepted: run the pre-dispatch stages (TLS handshake, PROXY
        header, first HTTP head), then have the owner choose a server."""
        if stages:
            self.phase = PREPARING
        self.stages = stages
        self.next_stage()

    def next_stage(self):
        """Start the next stage, or dispatch when none is left."""
        stages = self.stages
        if not stages:
            self.stage = None
            if self.phase is PREPARING:
                self._enter(CONNECTING)
            self.owner.dispatch(self)
            return
        self.stages = stages[1:]
        self.stage = stages[0](self)
        self.stage.begin()

    def stage_done(self, leftover=b""):
        """The running stage is finished; `leftover` are client bytes it
        read past what it needed: they reach the server before anything
        else.  The client socket is unregistered for the next one."""
        if leftover:
            self.preread = (self.preread or b"") + bytes(leftover)
        self._unwatch_client()
        if self.phase is CLOSED:
            return
        self.next_stage()

    def _unwatch_client(self):
        """The client socket out of the selector, the stage's timer off."""
        if self.cmask:
            self.reactor.unregister(self.client)
            self.cmask = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def learn(self, key, value):
        """A stage's finding (the PROXY header's client, ...)."""
        if self.facts is None:
            self.facts = {}
        self.facts[key] = value

    def connect(self, server, index):
        """Start a non-blocking connect to `server`.  Returns False if it
        failed at once (the caller fails over)."""
        self.target, self.index = server, index
        self.tried.add(index)
        sock = new_socket(server.family, STREAM_NONBLOCK)   # no ioctl to set it
        if STREAM_NONBLOCK == socket.SOCK_STREAM:
            sock.setblocking(False)                            # no SOCK_NONBLOCK here
        owner = self.owner
        st = self.settings
        if st.keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if st.tcp_nodelay and server.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if st.transparent:
            self._bind_transparent(sock, server.family)
        elif owner.source_ip is not None and server.family != socket.AF_UNIX:
            try:
                sock.bind((owner.source_ip, 0))
            except OSError as e:
                log.debug("conn %d: bind to source %s failed: %s", self.id, owner.source_ip, e)
        err = sock.connect_ex(server.sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            log.debug("conn %d: connect to %s failed at once: %s", self.id, server, os.strerror(err))
            return False
        self.server = sock
        self.sfd = sock.fileno()
        server.conn += 1
        owner.pending += 1
        if not err or (err == errno.EINPROGRESS and established(sock)):
            # Done already (a backend on this host: the kernel runs the whole
            # handshake inside connect()), so no EVENT_WRITE round trip, no
            # connect timer, no SO_ERROR check: relay now.
            self._connected()
            return True
        self.smask = EVENT_WRITE
        self.reactor.register(self.sfd, EVENT_WRITE, self.on_server)
        self.timer = self.reactor.call_later(st.connect_timeout, self._connect_timed_out)
        return True

    def use(self, server, index, sock):
        """Relay to `server` over `sock`, a connection already open and
        registered for reading (an idler, pen/idlers.py): no connect,
        straight to RELAYING."""
        self.target, self.index = server, index
        self.tried.add(index)
        self.server = sock
        self.sfd = sock.fileno()
        server.conn += 1
        self.owner.pending += 1        # as connect() does; _connected() takes it off
        self.smask = EVENT_READ        # registered: _connected() only swaps the handler
        self._connected()

    def _bind_transparent(self, sock, family):
        """`transparent`: connect from the client's own address (needs
        CAP_NET_ADMIN and policy routing for the replies)."""
        if family == socket.AF_INET:
            level, opt = socket.SOL_IP, IP_TRANSPARENT
        elif family == socket.AF_INET6:
            level, opt = socket.SOL_IPV6, IPV6_TRANSPARENT
        else:
            return
        try:
            sock.setsockopt(level, opt, 1)
            sock.bind((self.client_ip, 0))
        except OSError as e:
            log.debug("conn %d: transparent bind to %s failed: %s", self.id, self.client_ip, e)

    def _connect_timed_out(self):
        self.timer = None
        if self.phase == CONNECTING:
            self._connect_failed("timed out")

    def _connect_failed(self, reason):
        log.debug("conn %d: connect to %s: %s", self.id, self.target, reason)
        self._drop_server()
        self.owner.connect_failed(self, reason)

    def _drop_server(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.server is not None:
            if self.smask:
                self.reactor.forget(self.sfd)
            self.server.close()
            self.server = None
            self.sfd = -1
            self.target.conn -= 1
            self.owner.pending -= 1
        self.smask = 0

    def _connect_done(self):
        err = self.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(os.strerror(err))
        else:
            self._connected()

    def _connected(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.phase is not CONNECTING:
            self._enter(RELAYING)          # raises: RELAYING comes from CONNECTING only
        self.phase = RELAYING
        owner = self.owner
        owner.pending -= 1
        self.target.connects += 1
        if self.settings.tcp_nodelay:
            try:
                self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (a Unix socket client)
        pools = owner.pools
        splice = pools.splice
        self.http, response, dump_c, dump_s, first_line = owner.pump_options(self)
        # The first client bytes go through a buffer when the log needs the
        # request line; after that the pump may splice.
        tls = self.tls
        cfd, sfd = self.cfd, self.sfd
        if tls is None:
            c2s = self.c2s = Pump(self.client, self.server, pools, splice, self.http, dump_c,
                                  (cfd, sfd))
        else:
            c2s = self.c2s = tls.read_pump(self.server, pools, self.http, dump_c)
        if first_line and c2s.filter is None:
            c2s.splice = False
            c2s.filter = FirstLine(self)
        if tls is None:
            self.s2c = Pump(self.server, self.client, pools, splice, response, dump_s,
                            (sfd, cfd))
        else:
            self.s2c = tls.write_pump(self.server, pools, response, dump_s)
        if self.plain:
            # Plain pumps (TLS ones keep the general handlers, and shut
            # down with a close_notify: no twins).
            self.on_client, self.on_server = self._on_client_plain, self._on_server_plain
            c2s.twin, self.s2c.twin = self.s2c, c2s
        preread = self.preread
        reactor = self.reactor
        self.cmask = EVENT_READ
        reactor.register(cfd, EVENT_READ, self.on_client)
        if self.smask:
            reactor.modify(sfd, EVENT_READ, self.on_server)
        else:                          # connected at once: not registered yet
            reactor.register(sfd, EVENT_READ, self.on_server)
        self.smask = EVENT_READ
        owner.connected(self)
        st = self.settings
        if st.proxy_protocol != "off" or st.server_proxy_protocol:   # issue 14: PROXY out
            try:
                preread = self.preread = proxyout.send_header(self, c2s, preread)
            except OSError as e:
                self._error("server", e)
                return
            if c2s.pending:
                self._update()
        if preread:
            # What the stages read goes out first, through the filter like
            # any other client bytes.
            self.preread = None
            try:
                c2s.hold(preread)
            except OSError as e:
                self._error("server", e)
                return
            self._update()
        elif self.tls is not None and self.phase is RELAYING:
            self._update()             # handshake leftovers: ciphertext, early data

    # --- events ---------------------------------------------------------------------
    # The plain handlers take the usual event -- one side sent something
    # and all of it went on to the other -- without looking at the masks:
    # a pump only reads while it holds nothing, so if it still holds
    # nothing and saw no EOF, neither mask changed.  Anything else goes
    # through the general handler.
    def _on_server_plain(self, mask):
        if mask == EVENT_READ and self.phase is RELAYING:
            s2c = self.s2c
            try:
                n = s2c.pull()
            except OSError as e:
                self._error("server", e)
                return
            if n:
                self.target.rx += n
            if s2c.pending or s2c.eof:
                self._update()
        else:
            self._on_server_event(mask)

    def _on_client_plain(self, mask):
        if mask == EVENT_READ and self.phase is RELAYING:
            c2s = self.c2s
            try:
                n = c2s.pull()
            except OSError as e:
                self._error("client", e)
                return
            if n:
                self.target.sx += n
            if c2s.pending or c2s.eof:
                self._update()
        else:
            self._on_client_event(mask)

    def _on_server_event(self, mask):
        # A connection closed earlier in the same select() batch: its fds
        # may already be reused, so its stale events are ignored.
        if self.phase is not RELAYING:
            if self.phase is CONNECTING:
                self._connect_done()
            return
        c2s, s2c = self.c2s, self.s2c
        try:
            if mask & EVENT_READ:
                n = s2c.pull()
                if n:
                    self.target.rx += n
            if mask & EVENT_WRITE and c2s.pending:
                n = c2s.push()
                if n:
                    self.target.sx += n
        except OSError as e:
            self._error("server", e)
            return
        self._update()

    def _on_client_event(self, mask):
        if self.phase is not RELAYING:
            return
        c2s, s2c = self.c2s, self.s2c
        try:
            if mask & EVENT_READ:
                n = c2s.pull()
                if n:
                    self.target.sx += n
            if mask & EVENT_WRITE and s2c.pending:
                n = s2c.push()
                if n:
                    self.target.rx += n
        except OSError as e:
            self._error("client", e)
            return
        self._update()

    def _update(self):
        """Recompute both event masks from the pumps; touch the selector only
        on change.  Close when both directions are finished."""
        c2s, s2c = self.c2s, self.s2c
        tls = self.tls
        if tls is not None and s2c.eof and not s2c.shut and not s2c.pending:
            try:
                s2c._shutdown_dst()      # close_notify waited for a record to be read
            except OSError as e:
                self._error("client", e)
                return
        if c2s.eof or s2c.eof:
            if c2s.shut and s2c.shut or (self.settings.tcp_fastclose != "off"
                                         and self._fast_close()):
                self.close()
                return
        cmask = (0 if (c2s.pending or c2s.eof) else EVENT_READ) | (EVENT_WRITE if s2c.pending else 0)
        smask = (0 if (s2c.pending or s2c.eof) else EVENT_READ) | (EVENT_WRITE if c2s.pending else 0)
        if cmask != self.cmask:
            self._set_mask(self.cfd, self.cmask, cmask, self.on_client)
            self.cmask = cmask
        if smask != self.smask:
            self._set_mask(self.sfd, self.smask, smask, self.on_server)
            self.smask = smask
        if (tls is not None and tls.more and self.phase is RELAYING
                and not (c2s.pending or c2s.eof)):
            self._kick()

    def _kick(self):
        """Read again on the next loop turn: epoll cannot see the plaintext
        that is already inside the TLS link's BIO or SSL object."""
        if not self.kicking:
            self.kicking = True
            self.reactor.call_later(0, self._kicked)

    def _kicked(self):
        self.kicking = False
        # The pump may have read (and now hold) in between: never read then.
        c2s = self.c2s
        if self.phase is RELAYING and not (c2s.pending or c2s.eof):
            self._on_client_event(EVENT_READ)

    def _fast_close(self):
        """pen's tcp_fastclose: once the named side (up: the server, down:
        the client, or both) sent EOF and nothing is left to deliver,
        close both sides instead of waiting for the other EOF."""
        mode = self.settings.tcp_fastclose
        if mode == "off" or self.c2s.pending or self.s2c.pending:
            return False
        return ((self.s2c.eof and mode in ("up", "both"))
                or (self.c2s.eof and mode in ("down", "both")))

    def _set_mask(self, fd, old, new, handler):
        reactor = self.reactor
        if not new:
            reactor.unregister(fd)
        elif not old:
            reactor.register(fd, new, handler)
        else:
            reactor.modify(fd, new, handler)

    def _error(self, side, exc):
        """A socket error on `side`: what it was sending may be cut short,
        so the other side is reset, not closed with a FIN -- the peer must
        not mistake a truncated stream for a whole one (SPEC 9)."""
        log.debug("conn %d: %s %s: %s", self.id, side, self.client_ip, exc)
        self.owner.state.counters.socket_errors += 1
        peer = self.client if side == "server" else self.server
        if peer is not None:
            try:
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass            # already gone: close() below is all there is to do
        self.close()

    # --- closing ----------------------------------------------------------------------
    def close(self):
        if self.phase is CLOSED:
            return
        self.phase = CLOSED            # allowed from every other phase
        self.on_client = self.on_server = None     # _unlink(), written out
        reactor = self.reactor
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # Only sockets in the selector are forgotten (mask 0 = not in it);
        # closing them takes them out of epoll (Reactor.forget).
        if self.cmask:
            reactor.forget(self.cfd)
        self.client.close()
        if self.server is not None:
            if self.smask:
                reactor.forget(self.sfd)
            self.server.close()
            self.target.conn -= 1
            if self.c2s is None:       # closed while still connecting
                self.owner.pending -= 1
        for pump in (self.c2s, self.s2c):
            if pump is not None:
                pump.close()
        self.stage = None
        self.owner.closed(self)

    def abort(self):
        """A bug in one of this connection's handlers (the Reactor logged
        it): close the connection, whatever phase it is in."""
        if self.phase is CLOSED:
            return
        if self.server is None and self.c2s is None:
            self.close_client_only()
        else:
            self.close()

    def _unlink(self):
        """Drop the bound handlers: they point back at the Conn, and that
        cycle would leave every closed Conn to the cyclic garbage collector
        instead of freeing it at once (costly under many short connections:
        -4 to -9 us of CPU per Connection: close request here).  Events
        already fetched in this select() batch hold their own reference."""
        self.on_client = self.on_server = None

    def close_client_only(self):
        """Close a client that never got a server."""
        if self.phase == CLOSED:
            return
        self._enter(CLOSED)
        self._unlink()
        self._unwatch_client()
        self.client.close()
        self.stage = None
        self.owner.closed(self)


class Dummy:
    """pen's `dummy` mode: answer every client ourselves after its first
    data, with no backend at all, then close."""

    __slots__ = ("conn", "on_event")

    REPLY = (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n"
             b"Content-Type: text/html\r\n\r\nUlric was here.")

    def __init__(self, conn):
        self.conn = conn
        self.on_event = self._on_event
        conn.cmask = EVENT_READ
        conn.reactor.register(conn.client, EVENT_READ, self.on_event)

    def _on_event(self, mask):
        conn = self.conn
        if conn.phase is CLOSED:
            return
        try:
            if conn.client.recv(65536):
                conn.client.send(self.REPLY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        conn.close_client_only()


class FirstLine:
    """A pass-through filter that records the first request line for -l."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def close(self):
        return b""

    def feed(self, data):
        conn = self.conn
        if conn.first_line is None:
            from .http import first_line
            conn.first_line = first_line(data)
            # Seen it: the rest of the stream may be spliced.
            pump = conn.c2s
            pump.filter = None
            pump.splice = pump.can_splice and conn.owner.pools.splice and pump.dump is None
        return bytes(data)
