"""Process lifecycle: daemonize, pid file, privilege drop, signal wiring."""

import logging
import logging.handlers
import os
import signal
import sys

from .errors import ConfigError

log = logging.getLogger("pen")


def setup_logging(debug, foreground):
    """Debug output to stderr in the foreground, to syslog once detached."""
    log.handlers.clear()
    if foreground or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.handlers.SysLogHandler("/dev/log", facility="user")
        handler.setFormatter(logging.Formatter("pen[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False


def check_pidfile(path):
    """Refuse to start over a live pen's pid file; a stale one is fine."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        return
    if pid > 0 and pid != os.getpid():
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


def remove_pidfile(anchor):
    try:
        with anchor.open() as f:
            if f.read().strip() != str(os.getpid()):
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


def daemonize():
    """Double fork, setsid, stdio to /dev/null.  The parent exits 0 only
    after every startup check passed (they ran before this call)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def resolve_user(name):
    """(uid, gid, name) for -u, checked before detaching."""
    import pwd
    try:
        pw = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
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


def wire_signals(reactor, handlers):
    """handlers: {signum: callback}; run on the loop, not in the handler."""
    for signum, callback in handlers.items():
        reactor.add_signal_handler(signum, callback)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def open_control(st):
    """The -C socket, opened before detaching (errors print, exit 1).  As
    pen: none when running as root without -u, and we say so."""
    if not st.control:
        return None
    from .addr import parse_listen
    from .control import open_socket, root_refusal
    refusal = root_refusal(st)
    if refusal:
        print(f"pen: {refusal}", file=sys.stderr)
        log.warning("%s", refusal)
        return None
    return open_socket(parse_listen(st.control))


def run(state):
    """Start checks (printed, exit 1), detach, then serve until a signal."""
    from . import tlsrelay
    from .app import App
    from .loop import Reactor, fd_limit

    st = state.settings
    setup_logging(st.debug, True)
    fd_limit()
    reactor = Reactor(st.event_backend)
    app = App(state, reactor)
    try:
        user = resolve_user(st.user) if st.user else None
        if st.chroot:
            check_chroot(st.chroot)
        if st.pidfile:
            check_pidfile(st.pidfile)
            pid_anchor = anchor_or_fail(st.pidfile, "pid file")
        errors = app.configure()     # -o/-O, then -F: every bad line shown
        if errors:
            for error in errors:
                print(f"pen: {error}", file=sys.stderr)
            return 1
        tlsrelay.setup(app)          # -E: certificates checked before detaching
        app.bind()
        control = open_control(st)
    except ConfigError as e:
        print(f"pen: {e}", file=sys.stderr)
        return 1
    if not st.foreground:
        daemonize()
        setup_logging(st.debug, False)
    try:
        if st.pidfile:
            write_pidfile(pid_anchor)
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
        app.reopen_log()
        app.reload_config()
        tlsrelay.reload(app)         # renewed certificates; a broken one is logged

    wire_signals(reactor, {signal.SIGTERM: handle_term, signal.SIGINT: handle_term,
                           signal.SIGHUP: handle_hup, signal.SIGUSR1: app.write_stats})
    app.start()
    if control is not None:
        app.start_control(control)
    try:
        reactor.run()
    finally:
        app.shutdown()
        reactor.close()
        if st.pidfile:
            remove_pidfile(pid_anchor)
    return 0
