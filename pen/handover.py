"""Restart without dropping a connection, and systemd socket activation.

SIGUSR2 (`restart`): the running pen starts a new pen with the same
command line, handing it the listening socket and the control socket as
inherited file descriptors named in the environment (PEN_INHERIT, as nginx
and gunicorn do).  The new pen adopts them instead of binding -- the
kernel's accept queue is shared, so no connect is refused while both run --
and once it serves it tells the old one (SIGQUIT), which stops accepting
and drains (Service.stop_accepting).  If the new pen fails to start (a bad
config), it exits, the old one logs why and goes on serving.

systemd socket activation: LISTEN_FDS=1 and LISTEN_PID=<our pid> hand pen
its listening socket as fd 3 (contrib/pen.socket).

A restart needs the Python that runs pen: under -j (chroot) it is not
there, and under -u the new pen could not open root-only files again; pen
says so instead of trying.
"""

import logging
import os
import signal
import socket
import subprocess
import sys

log = logging.getLogger("pen")

ENV = "PEN_INHERIT"          # "listen=FD,control=FD,old=PID"
SD_LISTEN_FDS_START = 3


def inherited(environ=None):
    """{"listen": fd, "control": fd, "old": pid}: what a restarting pen
    handed us, or what systemd did (listen only); {} when started plainly.
    The variables are removed, so children of ours do not see them."""
    environ = os.environ if environ is None else environ
    found = {}
    text = environ.pop(ENV, "")
    for item in filter(None, text.split(",")):
        role, _, value = item.partition("=")
        if role in ("listen", "control", "old") and value.isascii() and value.isdigit() \
                and len(value) <= 9:
            found[role] = int(value)
    listen_pid = environ.pop("LISTEN_PID", None)
    listen_fds = environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if "listen" not in found and listen_pid == str(os.getpid()) and listen_fds == "1":
        found["listen"] = SD_LISTEN_FDS_START
    return found


def adopt(fd, what):
    """The socket object for an inherited listening fd (non-blocking, not
    inherited further); ConfigError-free: an fd that is not a listening
    socket raises OSError, which the caller reports."""
    sock = socket.socket(fileno=fd)
    if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        sock.detach()
        raise OSError(f"inherited fd {fd} for the {what} is not a stream or datagram socket")
    sock.setblocking(False)
    sock.set_inheritable(False)
    return sock


def tell_old(found):
    """We serve: the pen that started us may stop accepting and drain."""
    old = found.get("old")
    if old:
        try:
            os.kill(old, signal.SIGQUIT)
        except OSError as e:
            log.warning("restart: cannot tell the old pen %d to stop: %s", old, e.strerror)


def restart(app, argv, failed=None):
    """SIGUSR2: start the new pen with the same command line and our
    listening sockets.  Returns the child's pid, or None (logged why);
    failed() runs if the new pen exits with an error."""
    st = app.state.settings
    if st.chroot or (st.user and os.getuid() != 0):
        log.error("restart (SIGUSR2): not possible after chroot or setuid (-j/-u); "
                  "restart the service instead")
        return None
    if app.listener is None:
        log.error("restart (SIGUSR2): not listening (already stopping?)")
        return None
    fds = {"listen": app.listener.fileno()}
    if app.control is not None and app.control.sock is not None:
        fds["control"] = app.control.sock.fileno()
    env = dict(os.environ)
    env[ENV] = ",".join(f"{k}={v}" for k, v in fds.items()) + f",old={os.getpid()}"
    try:
        child = subprocess.Popen([sys.executable, "-m", "pen", *argv], env=env,
                                 pass_fds=tuple(fds.values()), stdin=subprocess.DEVNULL)
    except OSError as e:
        log.error("restart (SIGUSR2): cannot start a new pen: %s", e)
        return None
    log.warning("restart (SIGUSR2): new pen %d started; this one drains once it serves",
                child.pid)

    def exited(code):
        child.returncode = code      # reaped by the reactor, not by Popen
        if code:
            log.error("restart: the new pen %d exited with status %d; this one "
                      "goes on serving", child.pid, code)
            if failed is not None:
                failed()
    app.reactor.watch_child(child.pid, exited)
    return child.pid
