"""PURE HTTP/1 framing, both directions (SPEC §10.3).

A `RequestFramer` (client -> server) and a `ResponseFramer` (server ->
client) share one `Exchange`: the queue of requests still waiting for
their response, so a response knows when it answers HEAD or CONNECT and
pipelined requests are answered in order.  Each framer is incremental:

    out = framer.feed(data)     # bytes to pass on (possibly b"")
    if framer.error: ...        # an HttpError: send framer.error.reply, close

A head is buffered up to MAX_HEAD; bodies (Content-Length, chunked with
trailers, close-delimited) stream through as they come.  Each head is
handed to the framer's `on_head(head)` callback, which may change its
headers; the head is then serialized (unchanged heads keep their bytes).

Strict where a lenient reading could frame a message differently from the
server: both Content-Length and Transfer-Encoding, differing
Content-Lengths, a bad chunk size, obsolete line folding, a bare LF or CR,
a space before the colon, or a head over MAX_HEAD make the framer stop
with an HttpError (400, 431 for the size; 502 for a bad response) and pass
nothing more.  Bytes whose first line is not an HTTP/1 request line pass
through untouched, as pen does; so does everything after a 101 or a 2xx
answering CONNECT (the tunnel).

`XForwardedFor` and `first_line` are the one-direction filters today's
relay uses for -H (feed(bytes) -> bytes).
"""

import re
from collections import deque

from .rewrite import Context, forwarded_rules

MAX_HEAD = 64 * 1024
MAX_LINE = 4096          # a chunk-size line
MAX_PIPELINE = 1024      # requests forwarded but not yet answered

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/(1\.[01])\r\n")
STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-9][0-9][0-9])(?: [^\r\n\x00]*)?\r\n")
FIELD_LINES = re.compile(rb"(?:" + TOKEN + rb":[^\r\n\x00]*\r\n)*")
FIELD_LINE = re.compile(TOKEN + rb":[^\r\n\x00]*")
# One header of a head FIELD_LINES accepted: name, value without its spaces.
FIELD = re.compile(rb"([^:]+):[ \t]*([^\r]*[^\r \t]|)[ \t]*\r\n")
# A whole head in one piece, checked as _parse checks it (for the fast paths).
REQUEST_HEAD = re.compile(REQUEST_LINE.pattern + FIELD_LINES.pattern + rb"\r\n")
STATUS_HEAD = re.compile(STATUS_LINE.pattern + FIELD_LINES.pattern + rb"\r\n")
ONE_LENGTH = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n\x00]*)?")
# What a client's first line looks like: HTTP/1 (strictly checked later),
# and what it may look like before its newline came.  Anything else is
# not HTTP and is passed through untouched.
LOOKS_HTTP = re.compile(rb"[A-Z][A-Z0-9_-]{0,31} [^\x00-\x20\x7f]+ HTTP/1\.[0-9]\r?\n")
HTTP_PREFIX = re.compile(rb"[A-Z][A-Z0-9_-]{0,31}(?: [^\x00-\x20\x7f]*(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.[0-9]?\r?)?)?)?)?)?)?)?)?)?")

# Framer states
START, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, EOF_BODY, \
    WAIT, TUNNEL, FAILED = range(11)

REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large",
           502: "Bad Gateway"}


class HttpError(Exception):
    """A message that must not be passed on.  `status` is the reply's code,
    `reply` the bytes to send to the client (b"" when part of a response
    already went out and only closing is left)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.reply = (b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                      % (status, REASONS[status].encode()))


class Head:
    """One parsed message head.  `headers` is the ordered list of
    (name, value) tuples (bytes, the name as sent, the value without its
    surrounding spaces); change it through the methods so the head knows to
    serialize itself anew.  Requests have method/target/version, responses
    version/status; `note` travels from a request to its response.

    The list is only built when a rule needs it: adding a header, or
    setting one the head does not have, appends a line to the bytes as
    received (the usual case for X-Forwarded-For, X-Real-IP, Set-Cookie)."""

    __slots__ = ("raw", "low", "start", "_headers", "added", "method", "target",
                 "version", "status", "dirty", "note", "request_method")

    def __init__(self, raw, start, low=None):
        self.raw = raw          # the whole head as received, blank line included
        self.low = raw.lower() if low is None else low
        self.start = start      # length of the start line with its CRLF
        self._headers = None    # parsed on demand
        self.added = None       # headers added before (or without) parsing
        self.method = self.target = self.version = None
        self.status = 0
        self.dirty = False
        self.note = None
        self.request_method = None

    @property
    def headers(self):
        """The ordered list of (name, value) tuples."""
        headers = self._headers
        if headers is None:
            headers = self._headers = FIELD.findall(self.raw, self.start)
            if self.added:
                headers += self.added
                self.added = None
        return headers

    @property
    def start_line(self):
        return self.raw[:self.start - 2]

    def _absent(self, lname):
        """True when the head surely has no header `lname`, known without
        building the list."""
        if self._headers is not None or b"\n" + lname + b":" in self.low:
            return False
        return not self.added or all(n.lower() != lname for n, _ in self.added)

    def get_all(self, name):
        name = name.lower()
        if self._absent(name):
            return []
        return [v for n, v in self.headers if n.lower() == name]

    def get(self, name, default=None):
        values = self.get_all(name)
        return values[-1] if values else default

    def add(self, name, value):
        self.dirty = True
        if self._headers is None:
            if self.added is None:
                self.added = [(name, value)]
            else:
                self.added.append((name, value))
        else:
            self._headers.append((name, value))

    def set(self, name, value):
        lname = name.lower()
        if self._absent(lname):
            self.add(name, value)
            return
        kept = [pair for pair in self.headers if pair[0].lower() != lname]
        kept.append((name, value))
        self._headers = kept
        self.dirty = True

    def append(self, name, value, sep=b", "):
        lname = name.lower()
        if self._absent(lname):
            self.add(name, value)
            return
        headers = self.headers
        for i in range(len(headers) - 1, -1, -1):
            old_name, old = headers[i]
            if old_name.lower() == lname:
                headers[i] = (old_name, old + sep + value if old else value)
                self.dirty = True
                return
        self.add(name, value)

    def delete(self, name):
        lname = name.lower()
        if self._absent(lname):
            return
        headers = self.headers
        kept = [pair for pair in headers if pair[0].lower() != lname]
        if len(kept) != len(headers):
            self._headers = kept
            self.dirty = True

    def serialize(self):
        if not self.dirty:
            return self.raw
        if self._headers is None:       # the lines as received, then the added ones
            parts = [self.raw[:-2]]
            pairs = self.added
        else:
            parts = [self.raw[:self.start]]
            pairs = self._headers
        for name, value in pairs:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


class Exchange:
    """What the two directions of one connection share: the requests
    (method, upgrade asked, note) still waiting for a response, in order."""

    __slots__ = ("queue", "seen", "raw", "tunnel", "waiting", "resume")

    def __init__(self):
        self.queue = deque()
        self.seen = False      # a request head was framed
        self.raw = False       # not HTTP: both directions pass through
        self.tunnel = False    # upgraded: both directions pass through
        self.waiting = False   # the request side holds bytes until an answer
        self.resume = False    # ... and that answer came: call req.feed(b"")

    @property
    def outstanding(self):
        return len(self.queue)


def content_length(values, status):
    """The one length a list of Content-Length values gives, or raise."""
    length = None
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item.isdigit() or len(item) > 18:
                raise HttpError(status, "invalid Content-Length %r" % item[:40])
            # Repeats must be the same text: "010" and "10" agree only in decimal.
            if length is not None and item != length:
                raise HttpError(status, "differing Content-Lengths")
            length = item
    return int(length)


def chunked_last(values, status):
    """True when Transfer-Encoding ends with chunked (applied once), False
    when it names other codings only; raise for chunked twice."""
    codings = [c.strip(b" \t").lower() for v in values for c in v.split(b",")]
    codings = [c for c in codings if c]
    if codings.count(b"chunked") > 1 or (b"chunked" in codings and codings[-1] != b"chunked"):
        raise HttpError(status, "chunked must be the last transfer coding, once")
    return bool(codings) and codings[-1] == b"chunked"


class Framer:
    """The body state machine both directions share."""

    __slots__ = ("state", "held", "remaining", "on_head", "quick", "exchange",
                 "error", "trailer_size", "sent_head")
    STATUS = 0      # the status of this direction's errors

    def __init__(self, on_head=None, exchange=None, quick=None):
        self.state = START
        self.held = b""         # an incomplete head or line
        self.remaining = 0
        self.on_head = on_head
        # quick(raw, low) -> the head as on_head would make it, or None when
        # that takes a parsed Head (see Rewriter.quick_request).
        self.quick = quick
        self.exchange = exchange
        self.error = None
        self.trailer_size = 0
        self.sent_head = False  # part of the current message went out

    @property
    def tunnel(self):
        """True once everything passes through untouched."""
        return self.state == TUNNEL

    @property
    def idle(self):
        """True between messages with nothing held (or before the first)."""
        return self.state in (START, HEAD) and not self.held

    def feed(self, data):
        return self._feed(data)

    def _feed(self, data):
        """feed() the general way, byte by byte through the states."""
        state = self.state
        if state == TUNNEL:
            return bytes(data)
        if state == FAILED:
            return b""
        held = self.held
        if held:
            data = held + data
            self.held = b""
        else:
            data = bytes(data)
        out = []
        try:
            self._run(data, out)
        except HttpError as e:
            if self.sent_head and self.STATUS == 502:
                e.reply = b""   # the client has part of this response already
            self.error = e
            self.state = FAILED
            self.held = b""
        return b"".join(out)

    def close(self):
        """The source sent EOF.  Returns the bytes still to pass on (an
        undecided first line: not HTTP after all).  Sets `error` when a
        message was cut short; that is for the log only, as the EOF is
        passed on and nothing can be misframed."""
        state, held = self.state, self.held
        self.held = b""
        if state == START:
            self.state = TUNNEL
            return held
        if self.error is None and (held or state in (BODY, CHUNK_SIZE, CHUNK_DATA,
                                                     CHUNK_END, TRAILER)):
            self.error = HttpError(self.STATUS, "connection closed inside a message")
            self.error.reply = b""
        if state != TUNNEL and state != EOF_BODY:
            self.state = FAILED
        return b""

    def _run(self, data, out):
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            if state == BODY or state == CHUNK_DATA:
                take = n - pos
                if take >= self.remaining:
                    take = self.remaining
                    self.state = CHUNK_END if state == CHUNK_DATA else self._message_done()
                self.remaining -= take
                out.append(data[pos:pos + take] if pos or take != n else data)
                pos += take
            elif state == HEAD:
                self.sent_head = False
                if data.startswith(b"\r\n", pos):
                    # Blank lines between messages are passed on as they are.
                    out.append(b"\r\n")
                    pos += 2
                    continue
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._hold_head(data, pos)
                    return
                out.append(self._head(data[pos:end + 4]))
                self.sent_head = True
                pos = end + 4
            elif state == CHUNK_SIZE or state == CHUNK_END or state == TRAILER:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    rest = data[pos:]
                    if len(rest) > MAX_LINE or b"\n" in rest:
                        raise HttpError(self.STATUS, "bad chunked framing")
                    self.held = rest
                    return
                self._line(data[pos:end])
                out.append(data[pos:end + 2])
                pos = end + 2
            elif state == START:
                pos = self._start(data, pos, out)
            elif state == EOF_BODY or state == TUNNEL:
                out.append(data[pos:] if pos else data)
                return
            elif state == WAIT:
                pos = self._wait(data, pos, out)
            else:
                raise AssertionError("feed in state %d" % state)

    def _parse(self, block, start_line):
        """The start line's match and the Head of a complete `block`."""
        if len(block) > MAX_HEAD:
            raise HttpError(431 if self.STATUS == 400 else 502,
                            "head larger than %d bytes" % MAX_HEAD)
        m = start_line.match(block)
        if m is None:
            raise HttpError(self.STATUS, "bad start line %r" % block[:block.find(b"\n")][:80])
        start = m.end()
        if FIELD_LINES.match(block, start).end() != len(block) - 2:
            raise HttpError(self.STATUS, "malformed header line (folded, bare LF or CR, "
                            "space before the colon)")
        return m, Head(block, start, block.lower())

    def _hold_head(self, data, pos):
        rest = data[pos:]
        if len(rest) > MAX_HEAD:
            raise HttpError(431 if self.STATUS == 400 else 502,
                            "head larger than %d bytes" % MAX_HEAD)
        if rest.count(b"\n") != rest.count(b"\r\n") or b"\r\n " in rest or b"\r\n\t" in rest:
            raise HttpError(self.STATUS, "bare LF or folded line in head")
        self.held = rest

    def _line(self, line):
        state = self.state
        if state == CHUNK_SIZE:
            m = CHUNK_LINE.fullmatch(line)
            if m is None:
                raise HttpError(self.STATUS, "invalid chunk size line %r" % line[:40])
            size = int(m.group(1), 16)
            if size:
                self.state, self.remaining = CHUNK_DATA, size
            else:
                self.state, self.trailer_size = TRAILER, 0
        elif state == CHUNK_END:
            if line:
                raise HttpError(self.STATUS, "chunk data longer than its size")
            self.state = CHUNK_SIZE
        elif not line:                  # TRAILER: the blank line ends it
            self.state = self._message_done()
        else:
            self.trailer_size += len(line) + 2
            if self.trailer_size > MAX_HEAD or FIELD_LINE.fullmatch(line) is None:
                raise HttpError(self.STATUS, "bad trailer line")

    def _body(self, head, lengths, codings):
        """The state after `head` from its Content-Length and
        Transfer-Encoding values (RFC 9112 §6.3)."""
        if codings:
            if lengths:
                raise HttpError(self.STATUS, "both Content-Length and Transfer-Encoding")
            if chunked_last(codings, self.STATUS):
                return CHUNK_SIZE
            if self.STATUS == 400:
                raise HttpError(400, "request body length unknown (not chunked)")
            return EOF_BODY
        if lengths:
            length = content_length(lengths, self.STATUS)
            if length:
                self.remaining = length
                return BODY
            return self._message_done()
        return None


def framing_values(head):
    """Content-Length and Transfer-Encoding values of a head, found without
    splitting it into headers when it has neither (the common case)."""
    low = head.low
    if b"\ncontent-length:" not in low and b"\ntransfer-encoding:" not in low:
        return (), ()
    lengths, codings = [], []
    for name, value in head.headers:
        name = name.lower()
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
    return lengths, codings


class RequestFramer(Framer):
    """Client -> server.  Without an Exchange (the one-direction -H filter)
    an upgrade or CONNECT turns into a tunnel at once."""

    __slots__ = ("upgrade", "first_line")
    STATUS = 400

    def __init__(self, on_head=None, exchange=None, quick=None):
        super().__init__(on_head, exchange, quick)
        self.upgrade = False
        self.first_line = None      # the first request line, for the -l log

    def feed(self, data):
        # The usual read between messages: one whole request head and no
        # body, nothing that changes the framing (a length, a coding, an
        # upgrade, CONNECT).  It is checked as _parse checks it, with one
        # regex over the head; everything else goes the general way.
        if self.state != HEAD or self.held or self.first_line is None:
            return self._feed(data)
        data = bytes(data)
        n = len(data)
        m = None
        if data.find(b"\r\n\r\n") == n - 4 and n <= MAX_HEAD:
            m = REQUEST_HEAD.fullmatch(data)
        if m is None:
            return self._feed(data)
        low = data.lower()
        method = m.group(1)
        ex = self.exchange
        if (b"\ncontent-length:" in low or b"\ntransfer-encoding:" in low
                or b"\nupgrade:" in low or method == b"CONNECT"
                or ex is not None and len(ex.queue) >= MAX_PIPELINE):
            return self._feed(data)
        self.sent_head = True
        note = None
        out = data
        if self.on_head is not None:
            quick = self.quick
            out = quick(data, low) if quick is not None else None
            if out is None:
                head = Head(data, m.end(3) + 2, low)
                head.method, head.target, head.version = m.groups()
                head = self.on_head(head) or head
                note = head.note
                out = head.serialize()
        if ex is not None:
            ex.queue.append((method, False, note))
            ex.seen = True
        return out

    def _start(self, data, pos, out):
        ex = self.exchange
        if ex is not None and (ex.raw or ex.tunnel):
            self.state = TUNNEL
            return pos
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            if HTTP_PREFIX.fullmatch(data, pos, min(len(data), pos + 1024)) is None:
                self._not_http()
                return pos
            if len(data) - pos > MAX_HEAD:
                raise HttpError(431, "request line longer than %d bytes" % MAX_HEAD)
            self.held = data[pos:]
            return len(data)
        if LOOKS_HTTP.match(data, pos, line_end + 1) is None:
            self._not_http()
            return pos
        self.state = HEAD
        return pos

    def _not_http(self):
        self.state = TUNNEL
        if self.exchange is not None:
            self.exchange.raw = True

    def _head(self, block):
        m, head = self._parse(block, REQUEST_LINE)
        head.method, head.target, head.version = m.groups()
        if self.first_line is None:
            self.first_line = head.start_line.decode("latin-1")
        lengths, codings = framing_values(head)
        if codings and head.version == b"1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        self.upgrade = head.method == b"CONNECT" or b"\nupgrade:" in head.low
        state = self._body(head, lengths, codings)
        if self.on_head is not None:
            head = self.on_head(head) or head
        ex = self.exchange
        if ex is not None:
            if len(ex.queue) >= MAX_PIPELINE:
                raise HttpError(400, "more than %d requests waiting for answers" % MAX_PIPELINE)
            ex.queue.append((head.method, self.upgrade, head.note))
            ex.seen = True
        if state is None:
            state = self._message_done()
        self.state = state
        return head.serialize()

    def _message_done(self):
        if not self.upgrade:
            return HEAD
        if self.exchange is None:
            return TUNNEL
        self.exchange.waiting = True
        return WAIT

    def _wait(self, data, pos, out):
        """After an upgrade or CONNECT request: hold what follows until the
        response says whether the connection became a tunnel."""
        ex = self.exchange
        if ex.tunnel:
            self.state = TUNNEL
            return pos
        if not ex.waiting:
            self.upgrade = False
            self.state = HEAD
            return pos
        rest = data[pos:]
        if len(rest) > MAX_HEAD:
            raise HttpError(400, "more than %d bytes sent before the upgrade answer" % MAX_HEAD)
        self.held = rest
        return len(data)


class ResponseFramer(Framer):
    """Server -> client, answering the requests queued in `exchange`."""

    __slots__ = ()
    STATUS = 502

    def __init__(self, exchange, on_head=None, quick=None):
        super().__init__(on_head, exchange, quick)

    def feed(self, data):
        # The usual read between messages: a whole head with a
        # Content-Length, and no more body than that (often all of it),
        # answering a request that was neither HEAD, CONNECT nor an
        # upgrade; checked as _parse checks it.  Everything else goes the
        # general way.
        if self.state != HEAD or self.held:
            return self._feed(data)
        data = bytes(data)
        end = data.find(b"\r\n\r\n") + 4
        queue = self.exchange.queue
        m = None
        if 4 <= end <= MAX_HEAD and queue:
            m = STATUS_HEAD.fullmatch(data, 0, end)
        if m is None:
            return self._feed(data)
        status = int(m.group(2))
        method, upgrade, note = queue[0]
        if (status < 200 or status == 204 or status == 304 or upgrade
                or method == b"HEAD" or method == b"CONNECT"):
            return self._feed(data)
        low = data[:end].lower()
        lengths = ONE_LENGTH.findall(low)
        if (len(lengths) != 1 or b"\ntransfer-encoding:" in low
                or low.count(b"\ncontent-length:") != 1):
            return self._feed(data)
        body = len(data) - end
        length = int(lengths[0])
        if body > length:
            return self._feed(data)     # the next response begins in it too
        queue.popleft()
        self.sent_head = True
        if body < length:
            self.state, self.remaining = BODY, length - body
        if self.on_head is None:
            return data
        quick = self.quick
        out = quick(data[:end], low) if quick is not None else None
        if out is None:
            head = Head(data[:end], data.find(b"\r\n") + 2, low)
            head.version, head.status = m.group(1), status
            head.request_method, head.note = method, note
            head = self.on_head(head) or head
            out = head.serialize()
        return out + data[end:] if body else out

    def _start(self, data, pos, out):
        ex = self.exchange
        if ex.raw or ex.tunnel or not ex.seen:
            # The server spoke first, or the client is not speaking HTTP.
            ex.raw = not ex.tunnel
            self.state = TUNNEL
        else:
            self.state = HEAD
        return pos

    def _head(self, block):
        m, head = self._parse(block, STATUS_LINE)
        head.version = m.group(1)
        status = head.status = int(m.group(2))
        ex = self.exchange
        interim = status < 200 and status != 101
        if not ex.queue:
            method, upgrade, note = b"GET", False, None   # an unasked-for 408, say
        elif interim:
            method, upgrade, note = ex.queue[0]
        else:
            method, upgrade, note = ex.queue.popleft()
        head.request_method, head.note = method, note
        if status == 101 and not upgrade:
            raise HttpError(502, "101 to a request that asked for no upgrade")
        lengths, codings = framing_values(head)
        if interim or status == 204 or status == 304 or method == b"HEAD":
            state = HEAD
        elif status == 101 or method == b"CONNECT" and status < 300:
            state = TUNNEL
        else:
            state = self._body(head, lengths, codings)
            if state is None:
                state = EOF_BODY
        if self.on_head is not None:
            head = self.on_head(head) or head
        if upgrade and not interim:
            ex.waiting = False
            if state == TUNNEL:
                ex.tunnel = True
            ex.resume = True
        self.state = state
        return head.serialize()

    def _message_done(self):
        return HEAD

    def _wait(self, data, pos, out):
        raise AssertionError("a response framer never waits")


class HttpRefused(ConnectionAbortedError):
    """Raised by a Filter for a message it must not pass on; the relay
    treats it as a socket error (close, count, log at debug with the
    client).  `error.reply` is what the client should get first (may be
    b""), `passed` the good bytes framed before the error in that feed."""

    def __init__(self, error, passed=b""):
        super().__init__(str(error))
        self.error = error
        self.passed = passed


class Filter:
    """A framer behind the relay's Pump.filter interface: feed(bytes) ->
    bytes, raising HttpRefused instead of setting `error`."""

    __slots__ = ("framer",)

    def __init__(self, framer):
        self.framer = framer

    @property
    def first_line(self):
        return self.framer.first_line

    def feed(self, data):
        framer = self.framer
        out = framer.feed(data)
        if framer.error is not None:
            raise HttpRefused(framer.error, out)
        return out

    def close(self):
        """EOF from the source: the bytes still to pass on."""
        return self.framer.close()


def filters(on_request=None, on_response=None):
    """(client -> server Filter, server -> client Filter, their Exchange)
    for one HTTP-mode connection; with a Rewriter: filters(rw.on_request,
    rw.on_response).  After the server side's feed, when exchange.resume
    is set, clear it and feed b"" to the client side: what it held after an
    upgrade or CONNECT request goes to the server now."""
    exchange = Exchange()
    return (Filter(RequestFramer(on_request, exchange)),
            Filter(ResponseFramer(exchange, on_response)), exchange)


class XForwardedFor(Filter):
    """The -H filter of today's relay, requests only: adds
    X-Forwarded-Proto and X-Forwarded-For to every request; an upgrade or
    CONNECT turns it into a tunnel at once (it cannot see the answer)."""

    __slots__ = ("rules", "context")

    def __init__(self, client_ip, proto="http"):
        super().__init__(RequestFramer(self._on_head))
        self.rules = forwarded_rules(proto)
        self.context = Context(client_ip)

    def _on_head(self, head):
        context = self.context
        for rule in self.rules:
            rule.apply(head, context)
        return head


def first_line(data):
    """The first line of a chunk of client data, for the -l log."""
    line = bytes(data[:1024]).split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("latin-1")
