"""App: the running balancer.  Listeners, accept, server choice and
failover for each connection, the per-connection log, and the effects that
commands ask for.  It wires pure modules (balance, commands) to the fds
(relay, udp, control) on one Reactor.
"""

import logging
import os
import socket
import time

from .anchor import Anchored
from . import effects
from .errors import ConfigError, PenError
from .netlog import netlog_line
from .service import Service

log = logging.getLogger("pen")


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


def _service_attr(name):
    """An App attribute that lives on its Service (the listener, TLS
    context, ...): read and written through."""
    return property(lambda app: getattr(app.service, name),
                    lambda app, value: setattr(app.service, name, value))


class App:
    """The process: one Service (listener, admission, connections), the
    control socket, the effects that commands ask for, reloads, shutdown."""

    listener = _service_attr("listener")
    listen_anchor = _service_attr("listen_anchor")
    udp = _service_attr("udp")
    pools = _service_attr("pools")
    conn_log = _service_attr("conn_log")
    tls_context = _service_attr("tls_context")

    def __init__(self, state, reactor):
        self.state = state
        self.reactor = reactor
        self.service = Service(state, reactor)
        self.control = None
        self.cfg_anchor = self.web_anchor = None
        service = self.service
        # each effect of commands (pen/effects.py) -> the method doing it
        self.effects = {
            effects.Listen: service.rebind, effects.Exit: self.stop,
            effects.Close: service.close_conn, effects.Log: self.set_log,
            effects.Write: self.write_file, effects.Stages: self.update_stages,
            effects.Shutdown: self.graceful_stop, effects.Debug: self.set_debug,
            effects.ConnMax: service.conn_max_changed, effects.Source: self.set_source,
            effects.Tls: self.reload_tls, effects.SslInfo: self.ssl_info,
            effects.Admin: self.set_admin, effects.Dumps: self.set_dumps,
            effects.Idlers: service.idlers.configure,
            effects.DeferAccept: service.defer_accept,
        }

    # --- setup ------------------------------------------------------------------------
    handed_over = False     # a restart's new pen has our listening sockets

    def restart(self):
        """SIGUSR2: a new pen with the same command line takes over the
        listening sockets (pen/handover.py); it tells us (SIGQUIT) when it
        serves, and we drain."""
        from . import handover

        def failed():
            self.handed_over = False
        if handover.restart(self, self.state.settings.argv, failed) is not None:
            self.handed_over = True

    def bind(self, inherited=None):
        """Open the listening socket; raises ConfigError (before detaching)."""
        st = self.state.settings
        self.service.bind(inherited)
        try:
            if st.logfile and self.conn_log is None:
                self.conn_log = ConnLog(st.logfile)
            if st.cfgfile:
                self.cfg_anchor = Anchored(st.cfgfile)
            if st.webfile:
                self.web_anchor = Anchored(st.webfile)
        except OSError as e:
            raise ConfigError(f"{e.filename or 'file'}: {e.strerror}") from None

    def configure(self):
        """-o/-O commands, then the -F file, before binding.  Returns the
        error lines (all of them): as pen 0.34.1, a bad line is reported and
        skipped, and pen starts; only an -F file that cannot be read at all
        raises ConfigError.  The replies of -o commands go to stdout, as
        pen's do."""
        from .anchor import reach
        st = self.state.settings
        if st.cfgfile:
            try:
                os.close(reach.open(st.cfgfile, os.O_RDONLY))
            except OSError as e:
                raise ConfigError(f"-F {st.cfgfile}: cannot read: {e.strerror}") from None
        lines = [(f"-o {line!r}", line) for line in st.options]
        replies, errors = self.run_commands(lines, path=st.cfgfile)
        for reply in replies:
            print(reply)
        return errors

    def reload_config(self):
        """SIGHUP: run the -F file again.  Bad lines are logged as
        file:line: reason and change nothing; good lines apply."""
        st = self.state.settings
        if not st.cfgfile:
            return
        # SIGHUP reloads the TLS context once after this (daemon.handle_hup);
        # one rebuild per ssl_* line would only repeat it, and its errors.
        _, errors = self.run_commands(path=st.cfgfile, skip=(effects.Tls,))   # replies: nowhere
        for error in errors:
            log.error("%s", error)
        log.debug("reloaded %s: %d bad lines", st.cfgfile, len(errors))

    def run_commands(self, lines=(), path=None, skip=()):
        """The one command pipeline: every command pen runs -- the control
        socket, -o/-O, -F at startup and on SIGHUP, include -- goes through
        config.run_lines (parse, apply, includes) and then the effects here,
        in order.  `lines` are (label, text), then the config file `path`
        runs; effects named in `skip` are dropped.  Returns (replies,
        errors): the commands' replies, then what the effects answered; the
        bad lines and failed effects.  Paths resolve as at startup (reach)."""
        from .anchor import reach
        from .config import load_config, run_lines
        replies, todo, errors = run_lines(self.state, lines, opener=reach.opener)
        if path:
            more, errs = load_config(path, self.state, opener=reach.opener, replies=replies)
            todo += more
            errors += errs
        todo = [e for e in todo if type(e) not in skip]
        answered, failed = self.run_effects(todo, split=True)
        return replies + answered, errors + failed

    def execute(self, line):
        """One command from the control socket: its reply lines, errors
        included (pen answers everything on the same connection)."""
        replies, errors = self.run_commands([("", line)])
        return replies + errors

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

    def set_log(self, target, previous=None):
        """`log TARGET` / `no log`: the new log is opened first; when it
        cannot be, the old one stays open and the setting goes back to
        `previous` (OSError for the reply)."""
        st = self.state.settings
        try:
            new = ConnLog(target) if target else None
        except (OSError, PenError):
            st.logfile = previous
            raise
        if self.conn_log is not None:
            self.conn_log.release()
        self.conn_log = new
        st.logfile = target

    def reopen_log(self):
        if self.conn_log is not None:
            self.conn_log.reopen()
        if self.dumps is not None:      # issue 11: SIGHUP reopens the dump files
            self.dumps.reopen()

    # --- issue 11: traffic dumps (pen/dumps.py) ---------------------------------------
    dumps = None        # the Dumps while a trafficlog/throughputlog is set

    def set_dumps(self):
        """The ("dumps",) effect: open and close dump files as the settings
        now say; connections dump only while a file is open."""
        from .dumps import Dumps
        if self.dumps is None:
            self.dumps = Dumps(self.state, self.reactor)
        errors = self.dumps.configure()
        self.service.dumps = self.dumps if self.dumps.active else None
        return errors
    # --- end issue 11 ---

    def run_effects(self, todo, split=False):
        """Run commands' effects in order.  Returns reply lines: what a
        handler answers (ssl_info) and one line per effect that failed (the
        others still run); with `split`, the two as (answered, failed)."""
        answered, failed = [], []
        for effect in todo:
            handler = self.effects.get(type(effect))
            if handler is None:
                log.error("no handler for effect %r", effect)
                continue
            name, args = effect.name, effect.args
            try:
                answered.extend(handler(*args) or ())
            except PenError as e:
                failed.append(f"{name}: {e}")
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                failed.append(f"{name}: {where}{e.strerror or e}")
        for line in failed:
            log.debug("%s", line)
        return (answered, failed) if split else answered + failed

    def start_control(self, opened=None):
        """The control socket (-C): `opened` is control.open_socket()'s
        (socket, anchor), made before detaching."""
        from .control import ControlServer
        st = self.state.settings
        self.control = ControlServer(self.reactor, self.state, st.control,
                                     self.execute, opened=opened)

    def write_file(self, path, text=None):
        """`write` (and the -w page of `web_stats`): a temporary file beside
        `path`, renamed over it; `path` resolves as it would at startup.
        Without `text`, the running configuration (config.dump)."""
        from .anchor import reach
        from .config import dump
        if text is None:
            text = "\n".join(dump(self.state, path)) + "\n"
        try:
            reach.replace(path, text)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror}") from None

    def set_debug(self, level):
        log.setLevel(logging.DEBUG if level else logging.WARNING)

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

    def start(self):
        self.service.start()
        self.start_checks()         # issue 10

    def update_stages(self):
        """accept_proxy or client_timeout changed: the stages new
        connections run before a server is chosen (the TLS handshake is
        set by tlsrelay.enable)."""
        from .httprelay import StickyHead
        from .stages import FirstByte, ProxyHeaderIn
        st = self.state.settings
        self.service.set_stage("first_byte", FirstByte if st.client_timeout else None)
        self.service.set_stage("proxy", ProxyHeaderIn if st.accept_proxy else None)
        self.service.set_stage("http", StickyHead if st.sticky_cookie else None)

    def graceful_stop(self, seconds):
        """SIGQUIT, `shutdown [SECONDS]`: stop accepting, let the open
        connections finish, then exit as on SIGTERM.  After a restart the
        socket files belong to the new pen: they are left in place."""
        if self.handed_over:
            self.service.listen_anchor = None
            if self.control is not None:
                self.control.anchor = None
        if self.control is not None:
            self.control.close()
            self.control = None
        self.service.stop_accepting(seconds, self.stop)

    def set_source(self, ip):
        self.service.source_ip = ip

    def stop(self):
        self.reactor.stop()

    def shutdown(self):
        """Close everything (SIGTERM, exit)."""
        self.service.close()
        if self.dumps is not None:      # issue 11: what is buffered reaches the disk
            self.dumps.close()
        if self.control is not None:
            self.control.close()
        if self.admin is not None:      # its Unix socket file goes too
            self.admin.close()
            self.admin = None
        if self.conn_log is not None:
            self.conn_log.release()

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

    # --- issue 10: active health checks and hooks ---
    def start_checks(self):
        """Probe the servers (pen/health.py: idle while check_interval is 0)
        and run the hooks of every server event (pen/hooks.py)."""
        from .health import Checker
        from .hooks import Hooks
        self.hooks = Hooks(self.state, self.reactor)
        self.state.server_events.subscribe(self.hooks.on_event)
        self.checker = Checker(self.state, self.reactor)
        self.checker.start()
