"""Server records: one per backend, as pen's server table."""

import socket

from .addr import UNIX_PORT, is_unix_path, parse_port, resolve, split_host
from .errors import ConfigError

SPEC_FIELDS = ("port", "max", "hard", "weight", "prio")


class Server:
    """A backend: where it is, its limits, and its live counters."""

    __slots__ = ("index", "host", "port", "family", "sockaddr", "max", "hard",
                 "weight", "prio", "acl", "conn", "status", "sx", "rx",
                 "disabled", "connects")

    def __init__(self, index, host="0.0.0.0", port=0, max=0, hard=0, weight=0,
                 prio=0, acl=-1, family=socket.AF_INET, sockaddr=None):
        self.index = index
        self.host = host          # as the user wrote it
        self.port = port
        self.family = family
        self.sockaddr = sockaddr  # resolved, ready for connect()
        self.max = max            # soft limit for new clients, 0 = none
        self.hard = hard          # hard limit for returning clients, 0 = none
        self.weight = weight
        self.prio = prio
        self.acl = acl            # -1: no ACL
        self.conn = 0             # current connections
        self.status = 0.0         # blacklisted until this monotonic time
        self.sx = 0               # bytes sent to the server
        self.rx = 0               # bytes received from the server
        self.disabled = False     # out of rotation until enabled
        self.connects = 0         # connections made to it, ever (MRTG, stats)

    @property
    def addr(self):
        """The server's IP as pen prints it."""
        return self.sockaddr[0] if self.sockaddr else self.host

    def set_address(self, host, port, socktype=socket.SOCK_STREAM):
        """A host containing '/' is a Unix-domain socket; pen shows its port as 1."""
        self.family, self.sockaddr = resolve(host, port, socktype)
        if self.family == socket.AF_UNIX:
            port = UNIX_PORT
        self.host, self.port = host, port

    def __repr__(self):
        return f"Server({self.index}, {self.addr}:{self.port})"


def parse_backend(text, default_port, index=0, socktype=socket.SOCK_STREAM):
    """'host[:port[:maxc[:hard[:weight[:prio]]]]]' -> a resolved Server.
    A host containing '/' is a Unix-domain socket path (the port is ignored)."""
    host, rest = split_host(text)
    if not host:
        raise ConfigError(f"backend {text!r}: missing host "
                          "(expected host[:port[:maxc[:hard[:weight[:prio]]]]])")
    parts = rest.split(":") if rest is not None else []
    if len(parts) > len(SPEC_FIELDS):
        raise ConfigError(f"backend {text!r}: too many fields "
                          "(expected host[:port[:maxc[:hard[:weight[:prio]]]]])")
    values = {}
    for name, part in zip(SPEC_FIELDS, parts):
        if name == "port":
            values[name] = parse_port(part, f"backend {text!r}: port") if part else default_port
        elif not part.isdigit():
            raise ConfigError(f"backend {text!r}: {name} {part!r} is not a "
                              "non-negative number")
        else:
            values[name] = int(part)
    port = values.pop("port", default_port)
    if is_unix_path(host):
        port = UNIX_PORT
    if not port:
        raise ConfigError(f"backend {text!r}: no port given and the listen "
                          "address has none to default to")
    server = Server(index, **values)
    server.set_address(host, port, socktype)
    return server
