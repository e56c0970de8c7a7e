"""Process lifecycle: daemonize, pid file, privilege drop, signal wiring."""

import logging
import logging.handlers
import os
import signal
import sys

from .errors import ConfigError, PenError

log = logging.getLogger("pen")


def setup_logging(debug, foreground, logger=log, prefix=""):
    """Debug output to stderr in the foreground, to syslog once detached
    (`logger`: penlogd has its own, its lines on stderr start with `prefix`)."""
    logger.handlers.clear()
    if foreground or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    else:
        handler = logging.handlers.SysLogHandler("/dev/log", facility="user")
        handler.setFormatter(logging.Formatter(logger.name + "[%(process)d]: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False


def check_pidfile(path, handing_over=None):
    """Refuse to start over a live pen's pid file; a stale one is fine, and
    so is the one of the pen handing its sockets over to us (a restart)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        return
    if pid > 0 and pid != os.getpid() and pid != handing_over:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        raise ConfigError(f"pid file {path} names process {pid}, which is running")


def write_pidfile(anchor):
    """Write our pid (an Anchored path: set up before detaching)."""
    try:
        anchor.replace_with(f"{os.getpid()}\n")
    except OSError as e:
        raise ConfigError(f"cannot write pid file {anchor}: {e.strerror}") from None


def remove_pidfile(anchor, pid=None):
    try:
        with anchor.open() as f:
            if f.read().strip() != str(pid or os.getpid()):
                return  # not ours any more
    except OSError:
        return
    anchor.unlink()


def anchor_or_fail(path, what):
    """An Anchored path, or a one-line ConfigError naming what it is for."""
    from .anchor import Anchored
    try:
        return Anchored(path)
    except OSError as e:
        raise ConfigError(f"{what} {path}: directory not usable: {e.strerror}") from None


def daemonize(devnull=None):
    """Double fork, setsid, stdio to /dev/null.  The parent exits 0 only
    after every startup check passed (they ran before this call).
    `devnull`: an fd of /dev/null opened before a chroot (penlogd)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    if devnull is None:
        devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def resolve_user(name):
    """(uid, gid, name) for -u, checked before detaching."""
    import pwd
    try:
        numeric = name.isascii() and name.isdigit()
        pw = pwd.getpwuid(int(name)) if numeric and len(name) <= 10 else pwd.getpwnam(name)
    except (KeyError, OverflowError, ValueError):   # ValueError: a NUL in the name
        raise ConfigError(f"-u {name}: no such user") from None
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def check_chroot(path):
    if not os.path.isdir(path):
        raise ConfigError(f"-j {path}: not a directory")


def drop_privileges(chroot_dir, user):
    """chroot (-j), then setgid/initgroups/setuid (-u), after binding."""
    if chroot_dir:
        try:
            os.chroot(chroot_dir)
            os.chdir("/")
        except OSError as e:
            raise ConfigError(f"-j {chroot_dir}: cannot chroot: {e.strerror}") from None
    if user:
        uid, gid, name = user
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except OSError as e:
            raise ConfigError(f"-u {name}: cannot switch user: {e.strerror}") from None


def preload_modules():
    """Import every pen module (and the codecs name lookups need) now:
    after chroot the package's files are out of reach."""
    import encodings.idna  # noqa: F401
    import importlib
    import pkgutil
    import pen
    for info in pkgutil.iter_modules(pen.__path__):
        if info.name != "__main__":
            importlib.import_module(f"pen.{info.name}")


STARTUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGUSR1, signal.SIGUSR2)


def wire_signals(reactor, handlers):
    """handlers: {signum: callback}; run on the loop, not in the handler."""
    for signum, callback in handlers.items():
        reactor.add_signal_handler(signum, callback)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def open_control(st, check=False, inherited=None):
    """The -C socket, opened before detaching (errors print, exit 1), or
    the `inherited` fd a restart handed us.  As pen's manual says, pen
    refuses to run as root with a control port unless -u is given: one
    line, exit 1."""
    if not st.control:
        return None
    from .addr import parse_listen
    from .control import adopt_socket, open_socket, root_refusal
    refusal = root_refusal(st)
    if refusal:
        raise ConfigError(refusal)
    addr = parse_listen(st.control)
    if check:
        return None
    return adopt_socket(addr, inherited) if inherited is not None else open_socket(addr)


FIXED_FDS = 32      # listener, control, log, epoll, pipes, anchors, stdio...
FDS_PER_CONN = 4    # client, server, and a splice pipe's two ends
SHUTDOWN_SECONDS = 30  # SIGQUIT: how long open connections may take to finish


def fd_warning(st, hard):
    """The line to warn with when -x connections cannot all get their fds."""
    import resource
    if hard == resource.RLIM_INFINITY:
        return None
    need = st.conn_max * FDS_PER_CONN + FIXED_FDS
    if need <= hard:
        return None
    return (f"-x {st.conn_max} connections may need {need} file descriptors "
            f"({FDS_PER_CONN} each + {FIXED_FDS}), but the hard limit "
            f"(RLIMIT_NOFILE) is {hard}: raise it (ulimit -Hn, LimitNOFILE=) "
            f"or lower -x to {max(1, (hard - FIXED_FDS) // FDS_PER_CONN)}")


def start_reaper(pid, pidfile, sockets):
    """With -u, the directories of the pid file and of a Unix control
    socket usually belong to root, and a process that dropped privileges
    cannot remove a name there.  A small process forked before the drop
    stays root, does nothing but wait for pen to exit (EOF on a pipe), then
    removes the pid file (if it still names pen) and the sockets (if they
    are still the ones pen bound).  Returns the pipe's write end, which pen
    holds until it exits."""
    r, w = os.pipe()
    child = os.fork()
    if child:
        os.close(r)
        return w
    try:
        os.close(w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                       signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        keep = {r} | {a.dirfd for a in [pidfile, *sockets] if a is not None}
        for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
            fd = int(name)
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        while True:
            try:
                if not os.read(r, 64):
                    break
            except InterruptedError:
                continue
        if pidfile is not None:
            remove_pidfile(pidfile, pid)
        for anchor in sockets:
            if anchor is not None:
                anchor.unlink()
    finally:
        os._exit(0)


def check(state):
    """pen --check-config: everything a start reads and checks, nothing
    bound, nothing started.  Every problem is printed; exit 1 if any."""
    from .app import App
    from .loop import Reactor
    st = state.settings
    setup_logging(st.debug, True)
    problems = []

    def step(fn, *args):
        try:
            return fn(*args)
        except ConfigError as e:
            problems.append(str(e))
        except OSError as e:
            problems.append(f"{e.filename or 'file'}: {e.strerror or e}")
        return None

    app = App(state, Reactor(st.event_backend))
    if st.user:
        step(resolve_user, st.user)
    if st.chroot:
        step(check_chroot, st.chroot)
    if st.pidfile:
        step(anchor_or_fail, st.pidfile, "pid file")
    problems.extend(step(app.configure) or ())
    if st.listen is None:
        problems.append("no listen address (give [host:]port on the command line "
                        "or `listen` in the config)")
    if tls_wanted(st):
        from . import tls
        step(tls.check_certificates, st)
    from .app import ConnLog
    for path, what in ((st.logfile, "log file"), (st.webfile, "-w file")):
        if path and not (what == "log file" and ConnLog.is_udp(path)):
            step(anchor_or_fail, path, what)
    step(open_control, st, True)
    for problem in problems:
        print(f"pen: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"pen: configuration OK{' (' + st.cfgfile + ')' if st.cfgfile else ''}")
    return 0


def tls_wanted(st):
    return bool(st.ssl_cert or st.ssl_key or st.ssl_cafile or st.ssl_cadir
                or st.ssl_require_cert or st.ssl_sni_path)


def run(state):
    """Start checks (printed, exit 1), detach, then serve until a signal."""
    import resource
    from . import handover, tlsrelay
    from .anchor import reach
    from .app import App
    from .loop import Reactor, fd_limit

    st = state.settings
    # Until the handlers are wired, a signal would kill pen by its default
    # action, yet the listener is already open (a SIGUSR2 or SIGHUP sent as
    # soon as pen listens did): held back, they are handled once wired.
    signal.pthread_sigmask(signal.SIG_BLOCK, STARTUP_SIGNALS)
    inherited = handover.inherited()     # a restart's sockets, or systemd's
    setup_logging(st.debug, True)
    fd_limit()
    reactor = Reactor(st.event_backend)
    app = App(state, reactor)
    pid_anchor = None
    try:
        user = resolve_user(st.user) if st.user else None
        reach.pin(chroot=bool(st.chroot), run_as=user[:2] if user else None)
        if st.chroot:
            check_chroot(st.chroot)
        if st.pidfile:
            check_pidfile(st.pidfile, inherited.get("old"))
            pid_anchor = anchor_or_fail(st.pidfile, "pid file")
        # -o/-O, then -F: as pen 0.34.1, a bad line is reported and skipped
        config_errors = app.configure()
        for error in config_errors:
            print(f"pen: {error}", file=sys.stderr)
        control = open_control(st, inherited=inherited.get("control"))
        tlsrelay.setup(app)          # -E: certificates checked before detaching
        app.bind(inherited.get("listen"))
    except ConfigError as e:
        print(f"pen: {e}", file=sys.stderr)
        return 1
    warning = fd_warning(st, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    if warning:
        print(f"pen: warning: {warning}", file=sys.stderr)
    if not st.foreground:
        daemonize()
        setup_logging(st.debug, False)
        for line in config_errors + ([f"warning: {warning}"] if warning else []):
            log.warning("%s", line)  # the log gets what stderr showed
    reaper = None
    try:
        if st.pidfile:
            write_pidfile(pid_anchor)
        if user is not None and user[0] != os.getuid():
            sockets = [control[1] if control else None, app.listen_anchor]
            if pid_anchor is not None or any(sockets):
                reaper = start_reaper(os.getpid(), pid_anchor, sockets)
        if st.chroot:
            preload_modules()        # nothing can be imported in the jail
        drop_privileges(st.chroot, user)
    except ConfigError as e:
        log.error("%s", e)
        print(f"pen: {e}", file=sys.stderr)
        return 1

    def handle_term():
        log.debug("exiting on signal")
        reactor.stop()

    def handle_hup():
        """Each step runs whatever the others did; a failure is logged
        with its reason and never stops the rest."""
        steps = (("reopening the log", app.reopen_log),
                 (f"re-reading {st.cfgfile}", app.reload_config),
                 ("reloading the certificates", lambda: tlsrelay.reload(app)))
        for what, fn in steps:
            try:
                fn()
            except (PenError, OSError) as e:
                where = f"{e.filename}: " if getattr(e, "filename", None) else ""
                reason = getattr(e, "strerror", None) or e
                log.error("SIGHUP: %s failed: %s%s", what, where, reason)
            except Exception:
                log.exception("SIGHUP: %s failed", what)

    wire_signals(reactor, {signal.SIGTERM: handle_term, signal.SIGINT: handle_term,
                           signal.SIGQUIT: lambda: app.graceful_stop(SHUTDOWN_SECONDS),
                           signal.SIGUSR2: app.restart,
                           signal.SIGHUP: handle_hup, signal.SIGUSR1: app.write_stats})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTUP_SIGNALS)
    app.start()
    if control is not None:
        app.start_control(control)
    handover.tell_old(inherited)     # we serve: the old pen may drain
    try:
        reactor.run()
    finally:
        app.shutdown()
        reactor.close()
        if pid_anchor is not None:
            remove_pidfile(pid_anchor)
        if reaper is not None:
            os.close(reaper)         # the reaper removes what we no longer may
    return 0
