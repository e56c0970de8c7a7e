"""PURE HTTP request-stream rewriting for -H / `http`: add X-Forwarded-For
(and X-Forwarded-Proto) to every request on a connection.

`XForwardedFor.feed(data) -> bytes` takes whatever the client sent and
returns what to send to the server.  It follows request boundaries
(Content-Length and chunked bodies) so each kept-alive request gets the
header once; anything that does not parse as an HTTP/1.x request, or an
upgrade (CONNECT, Upgrade: websocket), switches it to pass-through for the
rest of the connection.  Nothing is ever dropped: on any doubt, bytes pass
untouched.
"""

import re

MAX_HEAD = 64 * 1024
REQUEST_LINE = re.compile(rb"^[A-Z][A-Z0-9_-]{0,31} \S+ HTTP/\d\.\d\r?$")
# What the start of a request line may look like before its newline came.
REQUEST_PREFIX = re.compile(rb"[A-Z][A-Z0-9_-]{0,31}(?: \S*(?: [HTP/0-9.]{0,8}\r?)?)?")

HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, PASS = range(7)


class XForwardedFor:
    __slots__ = ("client_ip", "proto", "state", "head", "remaining",
                 "first_line")

    def __init__(self, client_ip, proto="http"):
        self.client_ip = client_ip.encode("ascii", "replace")
        self.proto = proto.encode("ascii")
        self.state = HEAD
        self.head = bytearray()
        self.remaining = 0
        self.first_line = None   # first request line seen, for the -l log

    def feed(self, data):
        if self.state == PASS:
            return bytes(data)
        out = bytearray()
        data = bytes(data)
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            if state == PASS:
                out += data[pos:]
                break
            if state == HEAD:
                data = self._feed_head(data[pos:], out)
                pos, n = 0, len(data)
            elif state == BODY:
                take = min(self.remaining, n - pos)
                out += data[pos:pos + take]
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = HEAD
            elif state == CHUNK_DATA:
                take = min(self.remaining, n - pos)
                out += data[pos:pos + take]
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = CHUNK_CRLF
            else:  # CHUNK_SIZE, CHUNK_CRLF, TRAILER: line-oriented
                pos = self._feed_line(data, pos, out)
        return bytes(out)

    def _feed_line(self, data, pos, out):
        end = data.find(b"\n", pos)
        if end < 0:
            self.head += data[pos:]
            if len(self.head) > MAX_HEAD:
                self._give_up(out)
            return len(data)
        line = bytes(self.head) + data[pos:end + 1]
        self.head.clear()
        out += line
        text = line.strip()
        if self.state == CHUNK_SIZE:
            try:
                size = int(text.split(b";", 1)[0], 16)
            except ValueError:
                self.state = PASS
                return end + 1
            if size:
                self.state, self.remaining = CHUNK_DATA, size
            else:
                self.state = TRAILER
        elif self.state == CHUNK_CRLF:
            self.state = CHUNK_SIZE
        elif not text:  # TRAILER ends with an empty line
            self.state = HEAD
        return end + 1

    def _give_up(self, out):
        out += self.head
        self.head.clear()
        self.state = PASS

    def _feed_head(self, data, out):
        """Collect a request head; returns the bytes that follow it."""
        head = self.head
        head += data
        # Blank lines are allowed between requests.
        while head[:1] == b"\n" or head[:2] == b"\r\n":
            cut = 1 if head[:1] == b"\n" else 2
            out += head[:cut]
            del head[:cut]
        line_end = head.find(b"\n")
        if line_end >= 0:
            if not REQUEST_LINE.match(bytes(head[:line_end])):
                self._give_up(out)
                return b""
        elif head and not REQUEST_PREFIX.fullmatch(bytes(head[:256])):
            self._give_up(out)   # not HTTP: never hold a binary protocol back
            return b""
        end, sep = head.find(b"\r\n\r\n"), 4
        if end < 0:
            end, sep = head.find(b"\n\n"), 2
        if end < 0:
            if len(head) > MAX_HEAD:
                self._give_up(out)
            return b""
        block, rest = bytes(head[:end + sep]), bytes(head[end + sep:])
        head.clear()
        out += self._rewrite(block, sep)
        return rest

    def _rewrite(self, block, sep):
        eol = b"\r\n" if sep == 4 else b"\n"
        lines = block[:-sep].split(eol)
        if self.first_line is None:
            self.first_line = lines[0].decode("latin-1")
        method = lines[0].split(b" ", 1)[0]
        length, chunked, upgrade = 0, False, method == b"CONNECT"
        has_proto = has_xff = False
        out = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"x-forwarded-for":
                line = line.rstrip() + b", " + self.client_ip
                has_xff = True
            elif key == b"x-forwarded-proto":
                has_proto = True
            elif key == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    upgrade = True
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"upgrade":
                upgrade = True
            out.append(line)
        # pen's order: X-Forwarded-Proto, then X-Forwarded-For.  Unlike pen,
        # a client-sent X-Forwarded-For gets the real client appended rather
        # than being passed on as the only (spoofable) answer.
        if not has_proto:
            out.append(b"X-Forwarded-Proto: " + self.proto)
        if not has_xff:
            out.append(b"X-Forwarded-For: " + self.client_ip)
        if upgrade:
            self.state = PASS
        elif chunked:
            self.state = CHUNK_SIZE
        elif length > 0:
            self.state, self.remaining = BODY, length
        else:
            self.state = HEAD
        return eol.join(out) + eol + eol


def first_line(data):
    """The first line of a chunk of client data, for the -l log."""
    line = bytes(data[:1024]).split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("latin-1")
