"""Server records: one per backend, as pen's server table."""

import socket

from .addr import UNIX_PORT, is_unix_path, parse_port, resolve, split_host
from .errors import ConfigError

SPEC_FIELDS = ("port", "max", "hard", "weight", "prio")
DIGITS_MAX = 18          # int() of a longer field only costs time (past 4300 digits it raises)


UP, BLACKLISTED, DOWN, DISABLED, DRAINING = "up", "blacklisted", "down", "disabled", "draining"
STATES = (UP, BLACKLISTED, DOWN, DISABLED, DRAINING)
# Events a transition emits (hooks and logs subscribe to them): a connect
# failed or succeeded; the server left service or came back.
FAILURE, SUCCESS, WENT_DOWN, CAME_UP = "failure", "success", "down", "up"


class ServerEvents:
    """One per State: whoever cares about servers changing (hooks, logs)
    subscribes; every transition of every Server is emitted here."""

    __slots__ = ("listeners",)

    def __init__(self):
        self.listeners = []

    def subscribe(self, fn):
        """fn(event, server, reason, client) for every event."""
        self.listeners.append(fn)

    def unsubscribe(self, fn):
        if fn in self.listeners:
            self.listeners.remove(fn)

    def emit(self, event, server, reason="", client=None):
        for fn in list(self.listeners):
            fn(event, server, reason, client)


class CheckFigures:
    """What the health checks saw of one server."""

    __slots__ = ("passed", "failed", "last", "rise", "fall")

    def __init__(self):
        self.passed = self.failed = 0     # totals
        self.last = None                  # "ok" or the last failure's reason
        self.rise = self.fall = 0         # passes / failures in a row

    def as_dict(self):
        return {"passed": self.passed, "failed": self.failed, "last": self.last}


class Server:
    """A backend: where it is, its limits, its live counters, and its state.

    The state is one of STATES.  Every change goes through the methods
    below (mark_failed, mark_ok, blacklist, disable, enable, drain,
    check_result); each transition in or out of service is emitted on
    `events`.  A blacklist is timed: it ends by itself when
    `blacklisted_until` passes, so state() takes the clock.
    """

    __slots__ = ("index", "host", "port", "family", "sockaddr", "max", "hard",
                 "weight", "prio", "acl", "conn", "blacklisted_until",
                 "operator_blacklist", "sx", "rx", "disabled", "draining", "down",
                 "failures", "check", "events", "connects", "extra")

    def __init__(self, index, host="0.0.0.0", port=0, max=0, hard=0, weight=0,
                 prio=0, acl=-1, family=socket.AF_INET, sockaddr=None, events=None):
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
        self.blacklisted_until = 0.0   # monotonic time the blacklist ends
        self.operator_blacklist = False  # set by `server N blacklist T`
        self.sx = 0               # bytes sent to the server
        self.rx = 0               # bytes received from the server
        self.disabled = False     # administrative: only `enable` brings it back
        self.draining = False     # no new clients; open connections finish
        self.down = False         # failed its health checks
        self.failures = 0         # consecutive failed connects (server_retry)
        self.check = CheckFigures()
        self.events = events if events is not None else ServerEvents()
        self.connects = 0         # connections made to it, ever (MRTG, stats)
        self.extra = {}           # per-server settings of the round-2 features

    @property
    def addr(self):
        """The server's IP as pen prints it."""
        return self.sockaddr[0] if isinstance(self.sockaddr, tuple) else (
            self.sockaddr or self.host)

    def set_address(self, host, port, socktype=socket.SOCK_STREAM):
        """A host containing '/' is a Unix-domain socket; pen shows its port as 1."""
        self.family, self.sockaddr = resolve(host, port, socktype)
        if self.family == socket.AF_UNIX:
            port = UNIX_PORT
        self.host, self.port = host, port

    # --- state ------------------------------------------------------------------------
    def state(self, now):
        if self.disabled:
            return DISABLED
        if self.draining:
            return DRAINING
        if self.down:
            return DOWN
        if self.blacklisted_until > now:
            return BLACKLISTED
        return UP

    def available(self, now):
        """Takes new clients: up, and has an address."""
        return (self.blacklisted_until <= now and not self.disabled
                and not self.draining and not self.down and self.sockaddr is not None)

    def in_service(self, now):
        return self.state(now) == UP

    def auto_blacklisted(self, now):
        """Out only because of failures (the last-resort rule may try it)."""
        return (self.blacklisted_until > now and not self.operator_blacklist
                and not self.disabled and not self.draining and not self.down)

    # --- transitions --------------------------------------------------------------
    def mark_failed(self, now, reason, settings, client=None):
        """A connect to this server failed (or a UDP datagram was refused)."""
        self.failures += 1
        self.events.emit(FAILURE, self, reason, client)
        if self.failures < max(1, settings.server_retry):
            return
        was = self.in_service(now)
        if settings.autodisable:
            self.disabled = True
        else:
            self.blacklisted_until = now + settings.blacklist_time
            self.operator_blacklist = False
        if was:
            self.events.emit(WENT_DOWN, self, reason, client)

    def mark_ok(self, now, client=None):
        """A connect to this server completed."""
        self.failures = 0
        self.events.emit(SUCCESS, self, "", client)
        if self.blacklisted_until > now and not self.operator_blacklist:
            self.blacklisted_until = 0.0
            if self.in_service(now):
                self.events.emit(CAME_UP, self, "connect succeeded", client)
        elif self.blacklisted_until <= now:
            self.blacklisted_until = 0.0      # expired: a clean server again

    def blacklist(self, now, seconds, operator=True, reason="operator"):
        """pen's timed blacklist; 0 seconds lifts it."""
        was = self.in_service(now)
        self.blacklisted_until = now + seconds if seconds > 0 else 0.0
        self.operator_blacklist = operator and seconds > 0
        self._changed(now, was, reason)

    def disable(self, now, reason="operator"):
        was = self.in_service(now)
        self.disabled = True
        self._changed(now, was, reason)

    def enable(self, now):
        was = self.in_service(now)
        self.disabled = self.draining = False
        self.failures = 0
        self._changed(now, was, "enabled")

    def drain(self, now):
        was = self.in_service(now)
        self.draining = True
        self._changed(now, was, "draining")

    def check_result(self, now, ok, reason, rise, fall):
        """One health probe's result."""
        check = self.check
        was = self.in_service(now)
        if ok:
            check.passed += 1
            check.last = "ok"
            check.rise += 1
            check.fall = 0
            if self.down and check.rise >= rise:
                self.down = False
            if self.blacklisted_until > now and not self.operator_blacklist:
                self.blacklisted_until = 0.0      # Crossroads' revival
                self.failures = 0
        else:
            check.failed += 1
            check.last = reason or "failed"
            check.fall += 1
            check.rise = 0
            if not self.down and check.fall >= fall:
                self.down = True
        self._changed(now, was, "check passed" if ok else (reason or "check failed"))

    def _changed(self, now, was, reason):
        now_in = self.in_service(now)
        if was and not now_in:
            self.events.emit(WENT_DOWN, self, reason)
        elif now_in and not was:
            self.events.emit(CAME_UP, self, reason)

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
        elif not (part.isascii() and part.isdigit()) or len(part) > DIGITS_MAX:
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
