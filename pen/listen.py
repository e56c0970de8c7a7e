"""Build listening sockets from a ListenAddr: TCP (v4/v6), UDP, Unix stream."""

import errno
import os
import socket
import stat

from .addr import resolve
from .errors import ConfigError


def bind_listener(addr, udp=False, backlog=500):
    """A bound, listening (or, for UDP, bound) non-blocking socket.

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
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {addr}: {e.strerror or e}") from None
    return sock


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
