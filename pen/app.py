"""App: the running balancer.  Listeners, accept, server choice and
failover for each connection, the per-connection log, and the effects that
commands ask for.  It wires pure modules (balance, commands) to the fds
(relay, udp, control) on one Reactor.
"""

import errno
import logging
import os
import socket
import time

from . import balance
from .acl import ACLS_MAX
from .anchor import Anchored
from .errors import CommandError, ConfigError, PenError
from .netlog import netlog_line
from .http import XForwardedFor
from .listen import bind_listener
from .loop import EVENT_READ
from .relay import Conn, Dummy, Pools

log = logging.getLogger("pen")

ACCEPT_BACKOFF = 0.1     # seconds a listener rests after EMFILE/ENFILE
WARN_EVERY = 10.0        # seconds between repeated resource warnings
IDLE_SWEEP = 1.0         # seconds between idle_timeout checks
EMFILE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ConnLog:
    """pen's -l log: one line per connection, to a file or over UDP.

    A file log keeps its directory open (Anchored), so SIGHUP reopens it by
    name after chroot too; a file pen creates as root is handed to the -u
    user, so that user can still reopen it after logrotate renamed it.  A
    reopen that fails keeps the file already open (and raises, for the
    caller to log)."""

    def __init__(self, target):
        self.target = target
        self.file = self.sock = None
        self.anchor = None
        if not self.is_udp(target):
            self.anchor = Anchored(target)   # reopened after chroot too
        self.file, self.sock = self._open()

    @staticmethod
    def is_udp(target):
        return "/" not in target and ":" in target

    def _open(self):
        """(file, sock): a new handle on the target."""
        from .addr import parse_hostport, resolve
        from .anchor import reach
        if self.anchor is None:
            host, port = parse_hostport(self.target, what="log address")
            family, self.addr = resolve(host, port, socket.SOCK_DGRAM)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            return None, sock
        f = self.anchor.open("a", buffering=1)
        try:
            reach.give_away(f.fileno())
        except OSError as e:
            log.warning("log %s: cannot hand it to the -u user: %s", self.target, e.strerror)
        return f, None

    def reopen(self):
        new = self._open()           # raises with the old file still open
        self.close()
        self.file, self.sock = new

    def write(self, line):
        try:
            if self.file is not None:
                self.file.write(line + "\n")
            elif self.sock is not None:
                self.sock.sendto(netlog_line(line), self.addr)   # pen's `+ ...` line
        except OSError as e:
            log.debug("log write failed: %s", e)

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def release(self):
        """Close for good (the log target changed, or pen exits)."""
        self.close()
        if self.anchor is not None:
            self.anchor.close()


class App:
    """One balancer: state + reactor + listener(s) + connections."""

    def __init__(self, state, reactor):
        self.state = state
        self.reactor = reactor
        self.pools = Pools()
        self.listener = None
        self.listening = False      # registered for accept
        self.backoff = None         # Timer while paused after EMFILE
        self.last_warning = -WARN_EVERY
        self.udp = None
        self.conn_log = None
        self.source_ip = None
        self.tls_context = None
        self.conn_class = Conn      # tlsrelay.TlsConn when terminating TLS
        self.next_id = 0
        self.free_ids = []
        self.active = 0
        self.pending = 0            # connects in progress (pending_max)
        self.control = None
        self.cfg_anchor = self.web_anchor = self.listen_anchor = None
        self.on_accept = self._on_accept
        # commands.py's effects (documented there) -> the method doing each
        self.effects = {"listen": self.rebind, "exit": self.stop,
                        "close": self.close_conn, "log": self.set_log,
                        "write": self.write_file, "include": self.include,
                        "debug": self.set_debug, "conn_max": self.conn_max_changed,
                        "source": self.set_source, "tls": self.reload_tls,
                        "ssl_info": self.ssl_info, "admin": self.set_admin}

    # --- setup ------------------------------------------------------------------------
    def bind(self):
        """Open the listening socket; raises ConfigError (before detaching)."""
        st = self.state.settings
        if st.listen is None:
            raise ConfigError("no listen address (give [host:]port on the "
                              "command line or `listen` in the config)")
        self.listener = bind_listener(st.listen, udp=st.udp, backlog=st.backlog)
        self.listen_anchor = self._claim(st.listen)
        try:
            if st.logfile and self.conn_log is None:
                self.conn_log = ConnLog(st.logfile)
            if st.cfgfile:
                self.cfg_anchor = Anchored(st.cfgfile)
            if st.webfile:
                self.web_anchor = Anchored(st.webfile)
        except OSError as e:
            raise ConfigError(f"{e.filename or 'file'}: {e.strerror}") from None

    @staticmethod
    def _claim(addr):
        """The Unix socket file we just bound, to remove on exit."""
        return Anchored(addr.path, claim=True) if addr.kind == "unix" else None

    def configure(self):
        """-o/-O commands, then the -F file, before binding.  Returns the
        error lines (all of them): as pen 0.34.1, a bad line is reported and
        skipped, and pen starts; only an -F file that cannot be read at all
        raises ConfigError.  The replies of -o commands go to stdout, as
        pen's do."""
        from . import commands
        from .anchor import reach
        from .config import load_config
        st = self.state.settings
        errors, effects = [], []
        if st.cfgfile:
            try:
                os.close(reach.open(st.cfgfile, os.O_RDONLY))
            except OSError as e:
                raise ConfigError(f"-F {st.cfgfile}: cannot read: {e.strerror}") from None
        for line in st.options:
            try:
                cmd = commands.parse(line, self.state)
            except CommandError as e:
                errors.append(f"-o {line!r}: {e}")
                continue
            if cmd is not None:
                replies, more = commands.apply(self.state, cmd)
                for reply in replies:
                    print(reply)
                effects.extend(more)
        if st.cfgfile:
            more, errs = load_config(st.cfgfile, self.state, opener=reach.opener)
            errors.extend(errs)
            effects.extend(more)
        errors.extend(self.run_effects(effects))
        return errors

    def reload_config(self):
        """SIGHUP: run the -F file again.  Bad lines are logged as
        file:line: reason and change nothing; good lines apply."""
        from .anchor import reach
        from .config import load_config
        st = self.state.settings
        if not st.cfgfile:
            return
        # reach: the path as given at startup, after detaching and chroot
        effects, errors = load_config(st.cfgfile, self.state, opener=reach.opener)
        # SIGHUP reloads the TLS context once after this (daemon.handle_hup);
        # one rebuild per ssl_* line would only repeat it, and its errors.
        effects = [e for e in effects if e[0] != "tls"]
        for error in errors:
            log.error("%s", error)
        for line in self.run_effects(effects):
            log.error("%s", line)
        log.debug("reloaded %s: %d bad lines", st.cfgfile, len(errors))

    def write_stats(self):
        """SIGUSR1: statistics to the log (stderr or syslog), and the -w
        file in HTML."""
        from . import stats
        now, wall = time.monotonic(), time.time()
        for line in stats.text_stats(self.state, now, wall):
            log.warning("%s", line)
        if self.web_anchor is not None:
            try:
                self.web_anchor.replace_with(stats.status_html(self.state, now, wall))
            except OSError as e:
                log.error("cannot write %s: %s", self.web_anchor, e.strerror)

    def start(self):
        st = self.state.settings
        if st.udp:
            from .udp import UdpRelay
            self.udp = UdpRelay(self, self.listener)
        else:
            self._listen()
        self.reactor.call_later(IDLE_SWEEP, self._idle_sweep)

    def _idle_sweep(self):
        """idle_timeout: close relayed connections that moved no byte for
        that many seconds.  Compares byte totals once a second, so nothing
        is timestamped per event."""
        self.reactor.call_later(IDLE_SWEEP, self._idle_sweep)
        idle = self.state.settings.idle_timeout
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
        st = self.state.settings
        return self.active >= st.conn_max or self.pending >= st.pending_max

    def rebind(self, addr):
        """`listen [addr:]port`: open the new listener first; only if that
        worked, close the old one (raises ConfigError otherwise)."""
        st = self.state.settings
        if self.listener is None:
            st.listen = addr        # at startup (-o/-F): bind() opens it
            return
        new = bind_listener(addr, udp=st.udp, backlog=st.backlog)
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

    def set_log(self, target):
        if self.conn_log is not None:
            self.conn_log.release()
            self.conn_log = None
        self.state.settings.logfile = target
        if target:
            self.conn_log = ConnLog(target)

    def reopen_log(self):
        if self.conn_log is not None:
            self.conn_log.reopen()

    def run_effects(self, effects):
        """Run commands' effects in order.  Returns reply lines: what a
        handler answers (ssl_info, include errors) and one line per effect
        that failed (the others still run)."""
        lines = []
        for name, *args in effects:
            handler = self.effects.get(name)
            if handler is None:
                log.error("no handler for effect %r", name)
                continue
            try:
                lines.extend(handler(*args) or ())
            except PenError as e:
                lines.append(f"{name}: {e}")
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                lines.append(f"{name}: {where}{e.strerror or e}")
        for line in lines:
            log.debug("%s", line)
        return lines

    def start_control(self, opened=None):
        """The control socket (-C): `opened` is control.open_socket()'s
        (socket, anchor), made before detaching."""
        from .control import ControlServer
        st = self.state.settings
        self.control = ControlServer(self.reactor, self.state, st.control,
                                     self.run_effects, opened=opened)

    def write_file(self, path, text):
        """`write` (and the -w page of `web_stats`): a temporary file beside
        `path`, renamed over it; `path` resolves as it would at startup."""
        from .anchor import reach
        try:
            reach.replace(path, text)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror}") from None

    def include(self, path):
        from .anchor import reach
        from .config import load_config
        effects, errors = load_config(path, self.state, opener=reach.opener)
        for error in errors:
            log.warning("%s", error)
        return errors + self.run_effects(effects)

    def set_debug(self, level):
        log.setLevel(logging.DEBUG if level else logging.WARNING)

    def conn_max_changed(self, n):
        if not self.listening and self.backoff is None and self.active < n:
            self._resume()

    def set_source(self, ip):
        self.source_ip = ip

    def reload_tls(self):
        """An ssl_* setting changed.  At startup (-o/-F) there is no context
        yet: tlsrelay.setup() builds it after them, and may ask for a key's
        passphrase, which a reload never does."""
        if self.tls_context is not None:
            from . import tls
            self.tls_context = tls.reload(self.state.settings, self.tls_context)

    def ssl_info(self):
        from . import tls
        return tls.cert_info(self.state.settings, self.tls_context)

    def stop(self):
        self.reactor.stop()

    def shutdown(self):
        """Close everything (SIGTERM, exit)."""
        self._pause()
        for conn in list(self.state.conns.values()):
            conn.close()
        if self.udp is not None:
            self.udp.close()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.control is not None:
            self.control.close()
        if self.conn_log is not None:
            self.conn_log.release()
        self.pools.close()
        if self.listen_anchor is not None:
            self.listen_anchor.unlink()

    # --- accept --------------------------------------------------------------------
    def _on_accept(self, mask):
        st = self.state.settings
        listener = self.listener
        # socket.accept() is _accept() plus a socket built from the listener's
        # family and type, each converted to an enum on every call (~1.9 us
        # per connection); the raw call with both looked up once per batch
        # does the same.  Both are CPython's own socket.py.
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
                    sock = socket.socket(family, kind, 0, fd)
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
        """EMFILE and friends: rest the listener instead of spinning."""
        if exc.errno not in EMFILE_ERRORS:
            raise exc
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
        conn = self.conn_class(conn_id, self, sock, addr, ip, port)
        state.conns[conn.id] = conn
        self.active += 1
        conn.start()

    # --- choosing a server --------------------------------------------------------------
    def permitted(self, ip):
        """The ACL test for this client: permitted(acl_number) -> bool."""
        if not ip:
            return None      # Unix socket clients: ACLs do not apply
        acls = self.state.acls
        return lambda n: acls.match(n, ip)

    def client_allowed(self, ip):
        acls = self.state.acls
        n = self.state.settings.client_acl
        if n < 0 or not ip:
            return True
        if n < ACLS_MAX and not acls.tables[n]:
            return True     # an empty ACL lets everyone in: match()'s answer,
                            # without parsing the address (once per connection)
        return acls.match(n, ip)

    def dispatch(self, conn):
        state = self.state
        now = time.monotonic()
        ip = conn.client_ip
        if not self.client_allowed(ip):
            state.counters.refused += 1
            if state.abuse is not None and self._connect(conn, state.abuse, "abuse") is not False:
                return
            log.debug("conn %d: client %s refused by the client ACL", conn.id, ip)
            conn.close_client_only()
            return
        st = state.settings
        entry = state.clients.touch(ip or "unix", now, st.tracking)
        if st.dummy:
            conn.entry = entry
            Dummy(conn)
            return
        conn.entry = entry
        permitted = self.permitted(ip)
        index = balance.choose(state, ip, conn.client_port, now, entry, permitted)
        conn.first = index
        self._try(conn, index, now)

    def _try(self, conn, index, now):
        """Connect to `index`, failing over synchronously on immediate errors;
        then the emergency server; then close the client."""
        state = self.state
        servers = state.servers
        while index is not None and len(conn.tried) <= len(servers):
            started = self._connect(conn, servers[index], index)
            if started is not False:
                return
            self._blacklist(servers[index], now)
            index = balance.failover(state, conn.first, index, now, conn.entry,
                                     self.permitted(conn.client_ip))
        self._last_resort(conn)

    def _connect(self, conn, server, index):
        """Start connecting: True if under way, False if it failed at once
        (fail over), None if we are out of fds (client closed, listener
        resting: not the server's fault)."""
        try:
            return conn.connect(server, index)
        except OSError as e:
            self._out_of_resources("connect", e)
            conn.close_client_only()
            return None

    def _last_resort(self, conn):
        state = self.state
        if (state.emergency is not None and not state.settings.stubborn
                and "emergency" not in conn.tried
                and self._connect(conn, state.emergency, "emergency") is not False):
            return
        log.debug("conn %d: no server available for %s", conn.id, conn.client_ip)
        conn.close_client_only()

    def _blacklist(self, server, now):
        server.status = now + self.state.settings.blacklist_time
        self.state.counters.connect_failures += 1

    def connect_failed(self, conn, reason):
        """The relay's connect to conn.target failed or timed out."""
        now = time.monotonic()
        index = conn.index
        self._blacklist(conn.target, now)
        if not isinstance(index, int):      # emergency or abuse server
            conn.close_client_only()
            return
        log.debug("blacklisting server %d because of connect failure: %s", index, reason)
        nxt = balance.failover(self.state, conn.first, index, now, conn.entry,
                               self.permitted(conn.client_ip))
        self._try(conn, nxt, now)

    # --- relay callbacks --------------------------------------------------------------
    def make_http_filter(self, conn):
        if not self.state.settings.http:
            return None
        return XForwardedFor(conn.client_ip or "unix",
                             "https" if self.tls_context is not None else "http")

    @property
    def dumping(self):
        return self.state.settings.debug >= 2

    def dumper(self, conn, tag):
        ascii_ = self.state.settings.ascii

        def dump(data):
            if ascii_:
                text = bytes(data).decode("latin-1")
                text = "".join(c if 32 <= ord(c) < 127 else "." for c in text)
            else:
                text = bytes(data).hex(" ")
            log.debug("%s %d %d: %s", tag, conn.id, len(data), text)
        return dump

    def connected(self, conn):
        log.debug("conn %d: %s -> server %s", conn.id, conn.client_ip, conn.index)
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
            entry.sx += conn.c2s.total        # conn.sx, conn.rx
            entry.rx += conn.s2c.total
        if conn.c2s is not None:      # issue 11: feed bysize/byduration figures
            balance.record_finished(state, conn.index, conn.c2s.total + conn.s2c.total,
                                    time.time() - conn.started)
        if self.conn_log is not None and conn.target is not None:
            line = conn.first_line
            if line is None and conn.http is not None:
                line = conn.http.first_line
            self.conn_log.write("%s %d %s %s" % (
                conn.client_ip or "unix", int(conn.started), conn.target.addr, line or ""))
        if not self.listening and self.backoff is None:
            self._resume()

    def close_conn(self, conn_id):
        conn = self.state.conns.get(conn_id)
        if conn is not None:
            conn.close()

    # --- admin web listener (pen/admin.py) -------------------------------------------
    admin = None        # the AdminServer while admin_listen is set

    def set_admin(self, addr):
        """`admin_listen ADDR`: open the new listener first, then close the
        old one (raises ConfigError, and the old one stays); None closes it.
        The same address again (SIGHUP re-reads the config) changes nothing."""
        from .admin import AdminServer
        st = self.state.settings
        if addr is not None and self.admin is not None and self.admin.addr == addr:
            return
        new = AdminServer(self.reactor, self.state, addr, self.run_effects) if addr else None
        if self.admin is not None:
            self.admin.close()
        self.admin, st.admin_listen = new, addr
