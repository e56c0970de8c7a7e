"""Active health checks (SPEC §10.2; Crossroads' revival, PLB's cleanup).

    check_interval S          0 = off (the default); jittered per server
    check tcp                 a connect within the connect timeout (default)
    check http PATH [CODE..]  GET PATH HTTP/1.0 + Host:; listed codes, or 2xx/3xx
    check expect "TEXT" [send "TEXT"]    the first bytes must contain TEXT
    check udp "PAYLOAD" [expect "TEXT"]  a datagram; any reply (or TEXT)
    check_rise R, check_fall F; server N check_port P

The pure half (CheckSpec, parse_check, unescape, http_status, the matching
rules) is tested without sockets.  The other half, Checker and Probe, runs
on the Reactor: each server has its own timer, at most one probe in flight,
every probe ends within the connect timeout, and probe sockets are not
client connections (they never count against -x, pending_max or -c).
Each result goes to `server.check_result(now, ok, reason, rise, fall)`,
which owns the state machine (pen/servers.py).
"""

import errno
import logging
import os
import random
import re
import socket
import time
from dataclasses import dataclass

from .errors import CommandError
from .loop import EVENT_READ, EVENT_WRITE, close_quietly

log = logging.getLogger("pen")

KINDS = ("tcp", "http", "expect", "udp")
INTERVAL_MAX = 86400
JITTER = 0.1              # each period is the interval +-10%
SUPERVISE = 0.5           # seconds between looks at check_interval and the server list
RESPONSE_MAX = 4096       # bytes of a reply a probe looks at
ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt\\])")
PATH_RE = re.compile(r"/[\x21-\x7e]*")


@dataclass(frozen=True)
class CheckSpec:
    """What a probe does.  Texts are kept as the user wrote them (escapes
    and all), so `write` gives back the same words."""

    kind: str = "tcp"
    path: str = "/"
    codes: tuple = ()           # http: passing status codes; () = 2xx/3xx
    expect: str = None          # expect/udp: the reply must contain this
    send: str = None            # expect: sent first; udp: the payload

    def words(self):
        """The `check ...` arguments that rebuild this spec."""
        from .hooks import quote
        if self.kind == "http":
            return ["http", self.path] + [str(c) for c in self.codes]
        if self.kind == "expect":
            words = ["expect", quote(self.expect)]
            if self.send is not None:
                words += ["send", quote(self.send)]
            return words
        if self.kind == "udp":
            words = ["udp", quote(self.send or "")]
            if self.expect is not None:
                words += ["expect", quote(self.expect)]
            return words
        return ["tcp"]


TCP = CheckSpec()
USAGE = ('check tcp | check http PATH [CODE ...] | check expect "TEXT" [send "TEXT"] '
         '| check udp "PAYLOAD" [expect "TEXT"]')


def unescape(text, word="check"):
    """`\\r`, `\\n`, `\\t`, `\\\\` and `\\xHH` -> bytes; any other backslash
    is an error (it is most likely a typing mistake)."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")   # the bytes a control line had
            i += 1
            continue
        m = ESCAPE_RE.match(text, i)
        if m is None:
            raise CommandError(f"{word}: unknown escape {text[i:i + 2]!r} in {text!r} "
                               "(expected \\r, \\n, \\t, \\\\ or \\xHH)")
        esc = m.group(1)
        out += bytes([int(esc[1:], 16)]) if esc[0] == "x" else {
            "r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[esc]
        i = m.end()
    return bytes(out)


def _texts(word, rest, what, keyword, example):
    """`expect`'s and `udp`'s arguments: TEXT [KEYWORD TEXT], both checked
    for escapes.  Returns (first, second or None)."""
    kind = "expect" if keyword == "send" else "udp"
    if not rest:
        raise CommandError(f"{word}: {kind} needs a {what} ({example})")
    first, second = rest[0], None
    if len(rest) > 1:
        if rest[1] != keyword or len(rest) != 3:
            raise CommandError(f"{word}: after {kind} {what} only '{keyword} TEXT' may "
                               f"follow, got {' '.join(rest[1:])!r}")
        second = rest[2]
        unescape(second, word)
    unescape(first, word)
    return first, second


def _not_empty(word, text):
    if not unescape(text, word):
        raise CommandError(f"{word}: expect TEXT must not be empty")


def parse_check(args, word="check"):
    """`check` arguments -> CheckSpec; CommandError naming what is wrong."""
    if not args:
        raise CommandError(f"{word}: missing probe kind (usage: {USAGE})")
    kind, rest = args[0], args[1:]
    if kind == "tcp":
        if rest:
            raise CommandError(f"{word}: unexpected {rest[0]!r} after tcp (usage: {USAGE})")
        return TCP
    if kind == "http":
        if not rest:
            raise CommandError(f"{word}: http needs a PATH (like check http /health)")
        path = rest[0]
        if not PATH_RE.fullmatch(path):
            raise CommandError(f"{word}: http path {path!r} must start with / and "
                               "have no blanks or control characters")
        codes = []
        for text in rest[1:]:
            if not (text.isascii() and text.isdigit() and len(text) == 3) \
                    or not 100 <= int(text) <= 599:
                raise CommandError(f"{word}: http status code {text!r} is not a "
                                   "number 100-599")
            if int(text) not in codes:
                codes.append(int(text))
        return CheckSpec("http", path=path, codes=tuple(codes))
    if kind == "expect":
        expect, send = _texts(word, rest, "TEXT", "send",
                              'like check expect "+PONG" send "PING\\r\\n"')
        _not_empty(word, expect)
        return CheckSpec("expect", expect=expect, send=send)
    if kind == "udp":
        payload, expect = _texts(word, rest, "PAYLOAD", "expect",
                                 'like check udp "ping"; "" sends an empty datagram')
        if expect is not None:
            _not_empty(word, expect)
        return CheckSpec("udp", send=payload, expect=expect)
    raise CommandError(f"{word}: unknown probe kind {kind!r} (expected tcp, http, "
                       "expect or udp)")


def parse_interval(word, text):
    """Seconds: 0 (off) or 0.1-86400, decimals allowed."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        raise CommandError(f"{word}: seconds must be a number like 5 or 0.5, got {text!r}")
    if value and not 0.1 <= value <= INTERVAL_MAX:
        raise CommandError(f"{word}: {text} out of range (0 = off, or 0.1-{INTERVAL_MAX})")
    return int(value) if value.is_integer() else value


def http_request(path, host, port):
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hostport = host if port == 80 else f"{host}:{port}"
    return (f"GET {path} HTTP/1.0\r\nHost: {hostport}\r\n"
            "User-Agent: pen-check\r\nConnection: close\r\n\r\n").encode("latin-1")


def http_status(data):
    """The status code of a response's first line, None while the line is
    incomplete; raises ValueError when it is not an HTTP status line."""
    end = data.find(b"\n")
    if end < 0:
        if len(data) >= RESPONSE_MAX:
            raise ValueError("no status line")
        return None
    parts = data[:end].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError("not an HTTP response")
    return int(parts[1])


def http_passes(code, codes):
    return code in codes if codes else 200 <= code < 400


def describe_error(err):
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.ETIMEDOUT:
        return "timeout"
    return os.strerror(err).lower()


def next_delay(interval, rand=random.random):
    """One period: the interval +-JITTER, so that servers drift apart."""
    return interval * (1 - JITTER + 2 * JITTER * rand())


# --- on the reactor ------------------------------------------------------------------


class Probe:
    """One probe of one server: connect (TCP or UDP), maybe send, maybe
    read; `done(ok, reason)` exactly once, within `timeout`."""

    __slots__ = ("checker", "server", "spec", "sock", "timer", "buf", "out",
                 "on_event", "registered", "finished")

    def __init__(self, checker, server, spec):
        self.checker, self.server, self.spec = checker, server, spec
        self.sock = self.timer = None
        self.buf = b""
        self.out = b""
        self.on_event = self._on_event
        self.registered = 0
        self.finished = False

    def start(self, sockaddr, timeout, source):
        spec = self.spec
        udp = spec.kind == "udp"
        family = self.server.family
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        except OSError as e:
            self.done(False, f"socket: {e.strerror}")
            return
        self.sock = sock
        sock.setblocking(False)
        self.timer = self.checker.reactor.call_later(timeout, self._timed_out)
        try:
            if source and family != socket.AF_UNIX and (":" in source) == (
                    family == socket.AF_INET6):
                sock.bind((source, 0))
            if udp:
                sock.connect(sockaddr)
                sock.send(unescape(spec.send or ""))
                self._watch(EVENT_READ)
                return
            err = sock.connect_ex(sockaddr)
        except OSError as e:
            self.done(False, describe_error(e.errno) if e.errno else str(e))
            return
        if err in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._watch(EVENT_WRITE)
        else:
            self.done(False, describe_error(err))

    def _watch(self, events):
        reactor = self.checker.reactor
        if not self.registered:
            reactor.register(self.sock, events, self.on_event)
        elif events != self.registered:
            reactor.modify(self.sock, events, self.on_event)
        self.registered = events

    def _on_event(self, mask):
        if self.finished:
            return
        try:
            if self.spec.kind == "udp":
                self._read_udp()
            elif mask & EVENT_WRITE:
                self._writable()
            elif mask & EVENT_READ:
                self._readable()
        except OSError as e:
            self.done(False, describe_error(e.errno) if e.errno else str(e))

    def _writable(self):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.done(False, describe_error(err))
            return
        spec = self.spec
        if self.out:                       # finishing a partial send
            self._send()
            return
        if spec.kind == "tcp":
            self.done(True, "ok")
            return
        if spec.kind == "http":
            server = self.server
            self.out = http_request(spec.path, server.host, self.checker.port_of(server))
        elif spec.send is not None:
            self.out = unescape(spec.send)
        if self.out:
            self._send()
        else:
            self._watch(EVENT_READ)

    def _send(self):
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        self.out = self.out[n:]
        self._watch(EVENT_WRITE if self.out else EVENT_READ)

    def _readable(self):
        try:
            data = self.sock.recv(RESPONSE_MAX)
        except (BlockingIOError, InterruptedError):
            return
        self.buf += data
        spec = self.spec
        if spec.kind == "http":
            try:
                code = http_status(self.buf)
            except ValueError as e:
                self.done(False, str(e))
                return
            if code is not None:
                ok = http_passes(code, spec.codes)
                self.done(ok, "ok" if ok else f"http status {code}")
            elif not data:
                self.done(False, "closed before the status line")
            return
        wanted = unescape(spec.expect)
        if wanted in self.buf:
            self.done(True, "ok")
        elif not data:
            self.done(False, "closed without the expected reply")
        elif len(self.buf) >= RESPONSE_MAX:
            self.done(False, "the expected reply is not in the first "
                             f"{RESPONSE_MAX} bytes")

    def _read_udp(self):
        try:
            data = self.sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        expect = self.spec.expect
        if expect is None or unescape(expect) in data:
            self.done(True, "ok")
        else:
            self.done(False, "unexpected reply")

    def _timed_out(self):
        self.timer = None
        self.done(False, "timeout")

    def done(self, ok, reason):
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            if self.registered:
                self.checker.reactor.unregister(self.sock)
            close_quietly(self.sock)
            self.sock = None
        self.checker.result(self, ok, reason)


class Checker:
    """Probes every server that is not disabled, every check_interval
    seconds (each server on its own jittered timer), while check_interval
    is not 0.  Looks at the settings twice a second, so `check_interval`
    and new servers take effect without telling anyone."""

    def __init__(self, state, reactor):
        self.state = state
        self.reactor = reactor
        self.timers = {}             # server index -> Timer of its next probe
        self.in_flight = {}          # server index -> Probe
        self.interval = 0
        self.probes = 0              # started, ever
        self.supervisor = None

    def start(self):
        self._supervise()

    def close(self):
        if self.supervisor is not None:
            self.supervisor.cancel()
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for probe in list(self.in_flight.values()):
            probe.finished = True
            if probe.timer is not None:
                probe.timer.cancel()
            if probe.sock is not None:
                if probe.registered:
                    self.reactor.unregister(probe.sock)
                close_quietly(probe.sock)
        self.in_flight.clear()

    def _supervise(self):
        self.supervisor = self.reactor.call_later(SUPERVISE, self._supervise)
        interval = self.state.settings.check_interval
        if interval != self.interval:
            for timer in self.timers.values():
                timer.cancel()
            self.timers.clear()
            if not interval and self.interval:
                self._checks_off()
            self.interval = interval
        if not interval:
            return
        for index in range(len(self.state.servers)):
            if index not in self.timers:
                # the first probe somewhere in the first period: spread out
                self.timers[index] = self.reactor.call_later(
                    interval * random.random(), self._due, index)

    def _checks_off(self):
        """Without checks nothing could ever bring a `down` server back."""
        now = time.monotonic()
        for server in self.state.servers:
            if server.down:
                log.warning("server %d: health checks are off; no longer down", server.index)
                server.check_result(now, True, "checks off", 1, self.state.settings.check_fall)

    def port_of(self, server):
        return server.extra.get("check_port") or server.port

    def _due(self, index):
        interval = self.interval
        if not interval or index >= len(self.state.servers):
            self.timers.pop(index, None)
            return
        self.timers[index] = self.reactor.call_later(next_delay(interval), self._due, index)
        server = self.state.servers[index]
        if index in self.in_flight or server.disabled or not server.sockaddr:
            return
        st = self.state.settings
        sockaddr = server.sockaddr
        if isinstance(sockaddr, tuple):       # a Unix socket's path has no port
            sockaddr = (sockaddr[0], self.port_of(server)) + tuple(sockaddr[2:])
        probe = Probe(self, server, st.check)
        self.in_flight[index] = probe
        self.probes += 1
        probe.start(sockaddr, st.connect_timeout, st.source)

    def result(self, probe, ok, reason):
        server = probe.server
        if self.in_flight.get(server.index) is probe:
            del self.in_flight[server.index]
        st = self.state.settings
        before = server.state(time.monotonic())
        now = time.monotonic()
        server.check_result(now, ok, reason, st.check_rise, st.check_fall)
        after = server.state(now)
        if after != before:
            log.warning("server %d: %s -> %s (check %s: %s)", server.index, before,
                        after, probe.spec.kind, reason)
        else:
            log.debug("server %d: check %s: %s", server.index, probe.spec.kind, reason)
