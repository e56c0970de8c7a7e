"""Service: one listener and its pool of servers.

Accepting clients (with the EMFILE back-off), admitting them (client ACL,
abuse server, tracking: `admit`, the same for TCP and UDP), choosing a
server and failing over (`choose_for`, `fallback`), connection ids, and the
calls a Conn makes to its owner (relay.ConnOwner: dispatch, connected,
connect_failed, closed, pump_options).  Every connect failure and success
goes to the server's state machine (pen/servers.py).

App (pen/app.py) is the process around it: control socket, effects,
reloads, shutdown.
"""

import errno
import logging
import time
from collections import OrderedDict

from . import balance
from .acl import ACLS_MAX
from .anchor import Anchored
from .errors import ConfigError
from .handover import adopt
from .httprelay import filters_for
from .idlers import IdlerPool
from .rewrite import http_mode
from .listen import bind_listener, set_defer_accept
from .loop import EVENT_READ
from .relay import HAVE_SPLICE, Conn, Dummy, Pools, new_socket
from .tlsrelay import TlsLink

log = logging.getLogger("pen")

ACCEPT_BACKOFF = 0.1     # seconds a listener rests after EMFILE/ENFILE
WARN_EVERY = 10.0        # seconds between repeated resource warnings
IDLE_SWEEP = 1.0         # seconds between idle_timeout checks
EMFILE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

# The pre-dispatch stages, in the order they run (pen/stages.py).
STAGE_ORDER = ("first_byte", "proxy", "tls", "http")

FIGURE_ALGORITHMS = ("bysize", "byduration")   # fed by each finished connection
RATE_TABLE_MAX = 65536   # client addresses client_rate remembers (LRU)

# admit()'s verdicts
ADMITTED, ABUSE, REFUSED = "admitted", "abuse", "refused"


class Service:
    """The client listener, admission, selection and the live connections."""

    def __init__(self, state, reactor, pools=None):
        self.state = state
        self.settings = state.settings
        self.reactor = reactor
        self.pools = pools if pools is not None else Pools()
        self.listener = None
        self.listen_anchor = None   # the Unix socket file we bound, removed on exit
        self.listening = False      # registered for accept
        self.backoff = None         # Timer while paused after EMFILE
        self.last_warning = -WARN_EVERY
        self.udp = None
        self.conn_log = None        # app.ConnLog, set by App.set_log
        self.dumps = None           # traffic dumps (pen/dumps.py), or None
        self.source_ip = None
        self.tls_context = None
        self.stages = ()            # factories of pre-dispatch stages (pen/stages.py)
        self.stage_factories = {}   # STAGE_ORDER name -> factory
        self.next_id = 0
        self.free_ids = []
        self.active = 0
        self.pending = 0            # connects in progress (pending_max)
        self.live = {}              # client IP -> open connections (client_conn_max)
        self.rates = OrderedDict()  # client IP -> [window start, connections] (client_rate)
        self.stopping = None        # graceful stop: the callback to run once drained
        self.on_accept = self._on_accept
        self.idlers = IdlerPool(self)   # idle server connections (`idlers N`)

    # --- the listener -------------------------------------------------------------
    def bind(self, inherited=None):
        """Open the listening socket, or adopt the `inherited` fd (a
        restart's, or systemd's); raises ConfigError (before detaching)."""
        st = self.settings
        if st.listen is None:
            raise ConfigError("no listen address (give [host:]port on the "
                              "command line or `listen` in the config)")
        if inherited is not None:
            try:
                self.listener = adopt(inherited, "listener")
            except OSError as e:
                raise ConfigError(f"cannot adopt the inherited listener: {e}") from None
        else:
            self.listener = bind_listener(st.listen, udp=st.udp, backlog=st.backlog)
        if st.defer_accept:             # an inherited listener keeps its own otherwise
            self.defer_accept(st.defer_accept)
        self.listen_anchor = self._claim(st.listen)

    @staticmethod
    def _claim(addr):
        """The Unix socket file we just bound, to remove on exit."""
        return Anchored(addr.path, claim=True) if addr.kind == "unix" else None

    def start(self):
        self.pools.splice = self.settings.splice and HAVE_SPLICE
        if self.settings.udp:
            from .udp import UdpRelay
            self.udp = UdpRelay(self, self.listener)
        else:
            self._listen()
        self.reactor.call_later(IDLE_SWEEP, self._idle_sweep)
        self.idlers.start()

    def _idle_sweep(self):
        """idle_timeout: close relayed connections that moved no byte for
        that many seconds.  Compares byte totals once a second, so nothing
        is timestamped per event."""
        self.reactor.call_later(IDLE_SWEEP, self._idle_sweep)
        idle = self.settings.idle_timeout
        if not idle:
            return
        now = time.monotonic()
        for conn in list(self.state.conns.values()):
            if conn.c2s is None:
                continue
            moved = conn.c2s.total + conn.s2c.total
            if moved != conn.seen or not conn.idle_since:
                conn.seen, conn.idle_since = moved, now
            elif now - conn.idle_since >= idle:
                log.debug("conn %d: idle for %ds, closing", conn.id, idle)
                conn.close()

    def _listen(self):
        if not self.listening and self.listener is not None:
            self.reactor.register(self.listener, EVENT_READ, self.on_accept)
            self.listening = True

    def _pause(self):
        if self.listening:
            self.reactor.unregister(self.listener)
            self.listening = False

    def _resume(self):
        self.backoff = None
        if not self._full():
            self._listen()

    def _full(self):
        st = self.settings
        return self.active >= st.conn_max or self.pending >= st.pending_max

    def rebind(self, addr):
        """`listen [addr:]port`: open the new listener first; only if that
        worked, close the old one (raises ConfigError otherwise)."""
        st = self.settings
        if self.listener is None:
            st.listen = addr        # at startup (-o/-F): bind() opens it
            return
        new = bind_listener(addr, udp=st.udp, backlog=st.backlog,
                            defer_accept=st.defer_accept)
        self._pause()
        if self.udp is not None:
            self.udp.close_listener()
        elif self.listener is not None:
            self.listener.close()
        if self.listen_anchor is not None:
            self.listen_anchor.unlink()
            self.listen_anchor.close()
        self.listen_anchor = self._claim(addr)
        self.listener, st.listen = new, addr
        if st.udp:
            self.udp.set_listener(new)
        else:
            self._listen()

    def defer_accept(self, seconds):
        """`defer_accept SECONDS` (effects.DeferAccept): on the listener now,
        and on every listener bound from here on (bind, rebind)."""
        if self.listener is None:
            return                  # at startup: bind() sets it
        try:
            set_defer_accept(self.listener, seconds)
        except OSError as e:
            raise ConfigError(f"defer_accept: {e.strerror or e}") from None

    def set_stage(self, name, factory):
        """Turn a pre-dispatch stage on (a factory: Stage(conn)) or off
        (None); new connections run the stages in STAGE_ORDER."""
        if name not in STAGE_ORDER:
            raise ValueError(f"unknown stage {name!r}")
        if factory is None:
            self.stage_factories.pop(name, None)
        else:
            self.stage_factories[name] = factory
        self.stages = tuple(self.stage_factories[n] for n in STAGE_ORDER
                            if n in self.stage_factories)

    def conn_max_changed(self, n):
        if not self.listening and self.backoff is None and self.active < n:
            self._resume()

    def stop_accepting(self, seconds, done):
        """Graceful stop (SIGQUIT, `shutdown`): close the listener -- new
        connects are refused -- let open connections finish, and call
        done() when the last one has, or after `seconds`."""
        if self.stopping is not None:
            return
        self.stopping = done
        self._pause()
        self.idlers.stop()
        if self.udp is not None:
            self.udp.close_listener()
        elif self.listener is not None:
            self.listener.close()
        self.listener = None
        log.warning("graceful stop: %d connections to finish, %ds at most",
                    self.active, seconds)
        if not self.active or self.udp is not None:
            done()                  # UDP: no connections, replies need the listener
        else:
            self.reactor.call_later(seconds, done)

    def close(self):
        """Close the listener and every connection (SIGTERM, exit)."""
        self._pause()
        self.idlers.stop()
        for conn in list(self.state.conns.values()):
            conn.close()
        if self.udp is not None:
            self.udp.close()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.pools.close()
        if self.listen_anchor is not None:
            self.listen_anchor.unlink()

    # --- accept ---------------------------------------------------------------------
    def _on_accept(self, mask):
        st = self.settings
        listener = self.listener
        # socket.accept() is _accept() plus a socket built from the listener's
        # family and type, each converted to an enum on every call (~1.9 us
        # per connection); the raw call with both looked up once per batch
        # does the same, and builds the C _socket.socket (relay.new_socket).
        raw_accept = getattr(listener, "_accept", None)
        family, kind = listener.family, listener.type
        conn_max, pending_max = st.conn_max, st.pending_max      # _full()
        for _ in range(max(1, st.multi_accept)):
            if self.active >= conn_max or self.pending >= pending_max:
                self._pause()   # resumed by connected()/closed()
                return
            try:
                if raw_accept is not None:
                    fd, addr = raw_accept()
                    sock = new_socket(family, kind, 0, fd)
                else:
                    sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.state.counters.accept_errors += 1
                if e.errno in EMFILE_ERRORS:
                    self._out_of_resources("accept", e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            self._accepted(sock, addr)

    def _out_of_resources(self, what, exc):
        """EMFILE and friends: first take the pipes of stalled connections
        back (they go on through buffers); if there were none, rest the
        listener instead of spinning."""
        if exc.errno not in EMFILE_ERRORS:
            raise exc
        if self.pools.reclaim() or self.idlers.shed():
            return          # the listener stays: the next turn accepts again
        now = time.monotonic()
        if now - self.last_warning > WARN_EVERY:
            self.last_warning = now
            log.warning("%s: %s; pausing the listener for %.1fs",
                        what, exc.strerror, ACCEPT_BACKOFF)
        self._pause()
        if self.backoff is None:
            self.backoff = self.reactor.call_later(ACCEPT_BACKOFF, self._resume)

    def _new_id(self):
        """A connection number never used yet (freed ones are reused first)."""
        self.next_id += 1
        return self.next_id - 1

    def _accepted(self, sock, addr):
        sock.setblocking(False)
        state = self.state
        state.counters.accepted += 1
        if isinstance(addr, tuple):
            ip, port = addr[0], addr[1]
        else:
            ip, port = "", 0  # Unix socket client
        conn_id = self.free_ids.pop() if self.free_ids else self._new_id()
        conn = Conn(conn_id, self, sock, addr, ip, port)
        if self.tls_context is not None:
            conn.attach_tls(TlsLink(self.tls_context, sock, self.pools))
        state.conns[conn.id] = conn
        self.active += 1
        if self.stages:
            conn.start(self.stages)
        else:
            self.dispatch(conn)         # what start() comes to with no stages

    # --- admission and choice (TCP and UDP alike) ------------------------------------------
    def permitted(self, ip):
        """The ACL test for this client: permitted(acl_number) -> bool."""
        if not ip:
            return None      # Unix socket clients: ACLs do not apply
        acls = self.state.acls
        return lambda n: acls.match(n, ip)

    def client_allowed(self, ip):
        acls = self.state.acls
        n = self.settings.client_acl
        if n < 0 or not ip:
            return True
        if n < ACLS_MAX and not acls.tables[n]:
            return True     # an empty ACL lets everyone in: match()'s answer,
                            # without parsing the address (once per connection)
        return acls.match(n, ip)

    def admit(self, ip, now, live=True):
        """(verdict, entry): ADMITTED with the client's tracking entry, or
        ABUSE (send it to the abuse server -B), or REFUSED: the client ACL,
        then the per-client limits.  `live`: the caller holds a connection
        for it until closed() (TCP; UDP sessions count only against the
        rate)."""
        state = self.state
        st = self.settings
        if not self.client_allowed(ip):
            return (ABUSE if state.abuse is not None else REFUSED), None
        if ip and (st.client_conn_max or st.client_rate) and self._over_limit(ip, now, live):
            state.counters.client_limited += 1
            log.debug("client %s over its connection limits", ip)
            return (ABUSE if state.abuse is not None else REFUSED), None
        return ADMITTED, state.clients.touch(ip or "unix", now, st.tracking)

    def _over_limit(self, ip, now, live):
        """client_conn_max and client_rate; counts the connection if not."""
        st = self.settings
        if live and st.client_conn_max and self.live.get(ip, 0) >= st.client_conn_max:
            return True
        if st.client_rate:
            rates = self.rates
            slot = rates.get(ip)
            if slot is None or now - slot[0] >= st.client_rate_window:
                slot = rates[ip] = [now, 0]
                while len(rates) > RATE_TABLE_MAX:
                    rates.popitem(last=False)
            rates.move_to_end(ip)
            if slot[1] >= st.client_rate:
                return True
            slot[1] += 1
        if live and st.client_conn_max:
            self.live[ip] = self.live.get(ip, 0) + 1
        return False

    def choose_for(self, ip, port, now, entry):
        """The index of the server for a newly admitted client, or None."""
        return balance.choose(self.state, ip, port, now, entry, self.permitted(ip))

    def fallback(self, now, tried=()):
        """(server, index) when choice and failover found nothing: the
        emergency server (-e), else the last resort -- when every server is
        out only because of automatic blacklists, the one blacklisted
        longest ago -- else None."""
        state = self.state
        if state.emergency is not None:
            if self.settings.stubborn or "emergency" in tried:
                return None
            return state.emergency, "emergency"
        candidates = [s for s in state.servers if s.sockaddr is not None]
        if not candidates or not all(s.auto_blacklisted(now) for s in candidates):
            return None
        left = [s for s in candidates if s.index not in tried]
        if not left:
            return None
        server = min(left, key=lambda s: s.blacklisted_until)
        log.debug("last resort: trying server %d, blacklisted longest ago", server.index)
        return server, server.index

    # --- ConnOwner: the calls a Conn makes ----------------------------------------------
    def dispatch(self, conn):
        """The pre-dispatch stages are done: admit the client and connect."""
        state = self.state
        now = time.monotonic()
        ip = conn.client_ip
        verdict, entry = self.admit(ip, now)
        if verdict is not ADMITTED:
            state.counters.refused += 1
            if verdict is ABUSE and self._connect(conn, state.abuse, "abuse") is not False:
                return
            log.debug("conn %d: client %s refused by the client ACL", conn.id, ip)
            conn.close_client_only()
            return
        conn.entry = entry
        if self.settings.dummy:
            Dummy(conn)
            return
        index = self._sticky(conn, now) if conn.facts is not None else None
        if index is None:
            index = self.choose_for(ip, conn.client_port, now, entry)
        conn.first = index
        self._try(conn, index, now)

    def _sticky(self, conn, now):
        """The server a sticky cookie names (StickyHead), while it can take
        the client; else None (balanced as usual, and a new cookie)."""
        facts = conn.facts
        if facts is None or "sticky" not in facts:
            return None
        index = facts["sticky"]
        servers = self.state.servers
        if index < len(servers) and balance.can_try(servers[index], now, True,
                                                    self.permitted(conn.client_ip)):
            return index
        return None

    def _try(self, conn, index, now):
        """Connect to `index`, failing over synchronously on immediate errors;
        then the emergency server or the last resort; then close the client."""
        state = self.state
        servers = state.servers
        while index is not None and len(conn.tried) <= len(servers):
            started = self._connect(conn, servers[index], index)
            if started is not False:
                return
            servers[index].mark_failed(now, "connect failed at once", self.settings,
                                       conn.client_ip)
            state.counters.connect_failures += 1
            index = balance.failover(state, conn.first, index, now, conn.entry,
                                     self.permitted(conn.client_ip))
        while True:
            chosen = self.fallback(now, conn.tried)
            if chosen is None:
                break
            server, index = chosen
            started = self._connect(conn, server, index)
            if started is not False:
                return
            server.mark_failed(now, "connect failed at once", self.settings, conn.client_ip)
        log.debug("conn %d: no server available for %s", conn.id, conn.client_ip)
        conn.close_client_only()

    def _connect(self, conn, server, index):
        """Start connecting: True if under way, False if it failed at once
        (fail over), None if we are out of fds (client closed, listener
        resting: not the server's fault).  An idler to that server, if
        `idlers` keeps some, saves the connect (pen/idlers.py)."""
        if self.settings.idlers:
            sock = self.idlers.take(server, index)
            if sock is not None:
                conn.use(server, index, sock)
                return True
        try:
            return conn.connect(server, index)
        except OSError as e:
            self._out_of_resources("connect", e)
            conn.close_client_only()
            return None

    def connect_failed(self, conn, reason):
        """The relay's connect to conn.target failed or timed out."""
        now = time.monotonic()
        index = conn.index
        conn.target.mark_failed(now, reason, self.settings, conn.client_ip)
        self.state.counters.connect_failures += 1
        if not isinstance(index, int):      # emergency or abuse server
            conn.close_client_only()
            return
        log.debug("server %d: connect failed: %s", index, reason)
        nxt = balance.failover(self.state, conn.first, index, now, conn.entry,
                               self.permitted(conn.client_ip))
        self._try(conn, nxt, now)

    def pump_options(self, conn):
        """(request filter, response filter, client dump, server dump, wants
        the first line): what this connection's pumps need beyond plain
        relaying.  All None and False for plain TCP, which then splices."""
        st = self.settings
        request = response = None
        if http_mode(st):
            request, response = filters_for(conn, st, tls=not conn.plain)
        dump_c = dump_s = None
        if st.debug >= 2:
            dump_c, dump_s = self._debug_dumper(conn, "C"), self._debug_dumper(conn, "B")
        if self.dumps is not None:
            dump_c, dump_s = self.dumps.for_conn(conn, dump_c, dump_s)
        return request, response, dump_c, dump_s, self.conn_log is not None

    def _debug_dumper(self, conn, tag):
        ascii_ = self.settings.ascii

        def dump(data):
            if ascii_:
                text = bytes(data).decode("latin-1")
                text = "".join(c if 32 <= ord(c) < 127 else "." for c in text)
            else:
                text = bytes(data).hex(" ")
            log.debug("%s %d %d: %s", tag, conn.id, len(data), text)
        return dump

    def connected(self, conn):
        if self.settings.debug:         # the logger's level follows it (App.set_debug)
            log.debug("conn %d: %s -> server %s", conn.id, conn.client_ip, conn.index)
        target = conn.target
        # A clean server with no on_success hook has nothing to record: skip
        # the state machine's call (a few us per new connection).
        if target.failures or target.blacklisted_until or target.extra or self.settings.on_success:
            target.mark_ok(time.monotonic(), conn.client_ip)
        if not self.listening and self.backoff is None:
            self._resume()

    def closed(self, conn):
        state = self.state
        state.conns.pop(conn.id, None)
        self.free_ids.append(conn.id)
        self.active -= 1
        state.counters.conns_closed += 1
        entry = conn.entry
        if entry is not None and conn.c2s is not None:
            entry.sx += conn.s2c.total        # sent to the client, as pen counts
            entry.rx += conn.c2s.total        # received from it
        if conn.c2s is not None and self.settings.algorithm in FIGURE_ALGORITHMS:
            balance.record_finished(state, conn.index, conn.c2s.total + conn.s2c.total,
                                    time.time() - conn.started)
        if self.conn_log is not None and conn.target is not None:
            line = conn.first_line
            if line is None and conn.http is not None:
                line = conn.http.first_line
            self.conn_log.write("%s %d %s %s" % (
                conn.client_ip or "unix", int(conn.started), conn.target.addr, line or ""))
        live = self.live
        if live and conn.entry is not None:
            ip = conn.client_ip
            n = live.get(ip, 0) - 1
            if n > 0:
                live[ip] = n
            else:
                live.pop(ip, None)
        if self.stopping is not None:
            if not self.active:
                self.stopping()
        elif not self.listening and self.backoff is None:
            self._resume()

    def close_conn(self, conn_id):
        conn = self.state.conns.get(conn_id)
        if conn is not None:
            conn.close()
