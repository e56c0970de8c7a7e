"""PURE-ish address parsing: listen addresses, host:port, backend specs.

Name resolution (getaddrinfo) happens here, once, when the configuration is
read; nothing on the event loop resolves names.
"""

import os
import socket

from .errors import ConfigError

UNIX_PATH_MAX = 107       # sun_path holds 108 bytes with the terminating NUL
UNIX_PORT = 1             # the port pen shows for a Unix-socket server


def parse_port(text, what="port"):
    """A port number 1-65535 or a service name from /etc/services."""
    if text.isascii() and text.isdigit():
        if len(text) <= 5 and 0 < int(text) < 65536:      # int() of 5000 digits raises
            return int(text)
        raise ConfigError(f"{what} {text[:12]!r} out of range (expected 1-65535)")
    try:
        return socket.getservbyname(text)
    except (OSError, UnicodeError, ValueError):     # not a name, not ASCII, a NUL in it
        raise ConfigError(f"{what} {text[:40]!r} is not a number or a known service name") from None


def split_host(text):
    """Split 'host:rest', '[v6]:rest', 'host' -> (host, rest or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"address {text!r}: missing ']' after IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"address {text!r}: expected ':' after ']'")
        return host, (rest[1:] if rest else None)
    host, sep, rest = text.partition(":")
    return host, (rest if sep else None)


def parse_hostport(text, default_port=None, what="address"):
    """'host:port', '[v6]:port', or 'host' when a default port is given."""
    host, rest = split_host(text)
    if not host:
        raise ConfigError(f"{what} {text!r}: missing host (expected host:port)")
    if rest is None:
        if default_port is None:
            raise ConfigError(f"{what} {text!r}: missing port (expected host:port)")
        return host, default_port
    return host, parse_port(rest, f"{what} {text!r}: port")


class ListenAddr:
    """Where pen listens: ('unix', path) or ('inet', host or None, port)."""

    __slots__ = ("kind", "host", "port", "path")

    def __init__(self, kind, host=None, port=None, path=None):
        self.kind, self.host, self.port, self.path = kind, host, port, path

    def __str__(self):
        if self.kind == "unix":
            return self.path
        if self.host is None:
            return str(self.port)
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __eq__(self, other):
        return isinstance(other, ListenAddr) and str(self) == str(other)


def parse_listen(text):
    """pen's listen forms: port, addr:port, [v6]:port, :::port, /path."""
    if not text:
        raise ConfigError("listen address is empty (expected [host:]port or /path/to/socket)")
    if "/" in text:
        return ListenAddr("unix", path=text)
    if text.startswith(":::"):  # pen's spelling of "all IPv6 addresses"
        return ListenAddr("inet", "::", parse_port(text[3:], f"listen address {text!r}: port"))
    if text.startswith("["):
        host, rest = split_host(text)
        if rest is None:
            raise ConfigError(f"listen address {text!r}: missing port after ']'")
        return ListenAddr("inet", host, parse_port(rest, f"listen address {text!r}: port"))
    # As pen does, the last colon separates the port: `::1:8080` is [::1]:8080.
    host, sep, rest = text.rpartition(":")
    if not sep:
        return ListenAddr("inet", None, parse_port(text, f"listen address {text!r}: port"))
    if ":" in host and not is_ipv6(host):
        raise ConfigError(f"listen address {text!r}: {host!r} is not an IPv6 address "
                          "(expected ADDR:PORT, [ADDR]:PORT or PORT)")
    return ListenAddr("inet", host or None, parse_port(rest, f"listen address {text!r}: port"))


def is_ipv6(text):
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return True


def is_unix_path(host):
    """pen's rule: an address containing '/' is a Unix-domain socket path."""
    return host is not None and "/" in host


def resolve(host, port, socktype=socket.SOCK_STREAM, passive=False):
    """(family, sockaddr) for host:port; a clear ConfigError if it fails.
    A host containing '/' is a Unix-domain socket path (the port is unused)."""
    if is_unix_path(host):
        if len(os.fsencode(host)) > UNIX_PATH_MAX:
            raise ConfigError(f"Unix socket path {host!r} is too long "
                              f"(at most {UNIX_PATH_MAX} bytes)")
        return socket.AF_UNIX, host
    flags = socket.AI_NUMERICSERV | (socket.AI_PASSIVE if passive else 0)
    try:
        infos = socket.getaddrinfo(host, port, 0, socktype, 0, flags)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot resolve host {host!r}: {getattr(e, 'strerror', None) or e}") from None
    # Prefer IPv4 when a name has both, as pen (gethostbyname) does.
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr[:2] if family == socket.AF_INET6 else sockaddr
