"""Build listening sockets from a ListenAddr: TCP (v4/v6), UDP, Unix stream."""

import errno
import os
import socket
import stat

from .addr import resolve
from .errors import ConfigError

TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", None)    # Linux


def bind_listener(addr, udp=False, backlog=500, defer_accept=0):
    """A bound, listening (or, for UDP, bound) non-blocking socket;
    `defer_accept`: seconds of TCP_DEFER_ACCEPT (set_defer_accept).

    Errors become a one-line ConfigError naming the address and the reason,
    so they print before pen detaches."""
    if addr.kind == "unix":
        if udp:
            raise ConfigError(f"listen address {addr}: UDP (-U) cannot use a Unix socket path")
        return _bind_unix(addr.path, backlog)
    socktype = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    family, sockaddr = resolve(addr.host, addr.port, socktype, passive=True)
    if addr.host is None:
        # pen listens on all IPv4 addresses unless told :::port / [::]:port.
        family, sockaddr = socket.AF_INET, ("0.0.0.0", addr.port)
    sock = socket.socket(family, socktype)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        if not udp:
            sock.listen(backlog)
        sock.setblocking(False)
        if defer_accept:
            set_defer_accept(sock, defer_accept)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {addr}: {e.strerror or e}") from None
    return sock


def set_defer_accept(sock, seconds):
    """TCP_DEFER_ACCEPT on a TCP listener: the kernel completes the
    handshake but hands a connection to accept() only once the client has
    sent data (or after about `seconds`); 0 turns it off.  Right for
    protocols where the client speaks first (HTTP, TLS), wrong where the
    server does (SMTP, SSH, FTP): their clients wait for a greeting that
    cannot come before they are accepted.  A no-op for UDP and Unix
    listeners, and where the system has no TCP_DEFER_ACCEPT."""
    if (TCP_DEFER_ACCEPT is None or sock.type != socket.SOCK_STREAM
            or sock.family not in (socket.AF_INET, socket.AF_INET6)):
        return
    sock.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, seconds)


def _bind_unix(path, backlog):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot listen on {path}: {e.strerror}") from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"cannot listen on {path}: it exists and is not a socket")
        if _socket_alive(path):
            raise ConfigError(f"cannot listen on {path}: another process is listening there")
        os.unlink(path)  # a stale socket left by a killed pen
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {e.strerror or e}") from None
    return sock


def _socket_alive(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(path)
        return True
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
