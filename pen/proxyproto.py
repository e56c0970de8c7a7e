"""PURE PROXY protocol v1/v2 (HAProxy's doc/proxy-protocol.txt): build and parse.

Building: `build_v1(src, dst)` and `build_v2(src, dst)` take the addresses as
`socket.getpeername()` / `getsockname()` return them: an (host, port[, flow,
scope]) tuple for IPv4/IPv6, a path (str or bytes) for AF_UNIX, or None when
there is nothing to say (v1 then sends "PROXY UNKNOWN", v2 a LOCAL header).

Parsing: a `Parser` is fed bytes as they arrive.  `feed()` answers NEED_MORE,
or a `ProxyHeader` (addresses, the header's length, the bytes after it), or
raises `ProxyError` naming what was wrong.  It never returns a partial header,
rejects a stream as soon as a byte cannot start a valid header, and never
holds more than the largest header the specification allows (107 bytes for
v1, 16 + the 16-bit length field for v2) while it waits.

A header whose `src` is None (v1 UNKNOWN, v2 LOCAL, or an unspecified family
or transport) tells the receiver to use the connection's real addresses.
"""

import re
import socket
import struct
from dataclasses import dataclass

V1_MAX = 107                     # "PROXY UNKNOWN <v6> <v6> 65535 65535\r\n"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEAD = 16                     # signature, ver_cmd, fam, 16-bit length
V2_MAX = V2_HEAD + 0xFFFF
UNIX_LEN = 108

CMD_LOCAL, CMD_PROXY = 0x0, 0x1
FAMILIES = {0x0: None, 0x1: socket.AF_INET, 0x2: socket.AF_INET6, 0x3: socket.AF_UNIX}
TRANSPORTS = {0x0: None, 0x1: socket.SOCK_STREAM, 0x2: socket.SOCK_DGRAM}
ADDR_LEN = {socket.AF_INET: 12, socket.AF_INET6: 36, socket.AF_UNIX: 2 * UNIX_LEN}

TLV_ALPN, TLV_AUTHORITY, TLV_CRC32C, TLV_NOOP, TLV_UNIQUE_ID = 0x01, 0x02, 0x03, 0x04, 0x05

V1_PREFIX = b"PROXY "
V1_WORDS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
# Characters allowed after "TCP4 " / "TCP6 " up to the CR; checked as bytes
# arrive so that garbage is refused at once, not after 107 bytes.
V1_BODY = {b"TCP4 ": re.compile(rb"[0-9. ]*"), b"TCP6 ": re.compile(rb"[0-9A-Fa-f:. ]*")}
IPV4 = re.compile(rb"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                  rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyError(ValueError):
    """A byte stream that is not a valid PROXY header; the message says why."""


class NeedMore:
    """The header is not complete yet: feed more bytes."""

    __slots__ = ()

    def __repr__(self):
        return "NEED_MORE"


NEED_MORE = NeedMore()


@dataclass(frozen=True)
class ProxyHeader:
    version: int          # 1 or 2
    command: str          # "PROXY" or "LOCAL"
    family: object        # socket.AF_INET / AF_INET6 / AF_UNIX, or None
    transport: object     # socket.SOCK_STREAM / SOCK_DGRAM, or None
    src: object           # (host, port), a unix path (bytes), or None
    dst: object
    length: int           # bytes of the stream the header took
    rest: bytes           # bytes fed after the header (the client's data)
    tlvs: tuple = ()      # v2: ((type, value), ...) in order


# ---------------------------------------------------------------- building
# Written for the per-connection cost: plain ints, prebuilt structs.

AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
MAPPED = b"\0" * 10 + b"\xff\xff"           # ::ffff:a.b.c.d
PORTS = struct.Struct("!HH")
V2_FIXED = struct.Struct("!BBH")
TLV_HEAD = struct.Struct("!BH")
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"


def _packed(six, host):
    if six and "%" in host:
        host = host.partition("%")[0]   # a scope id is not part of the address
    try:
        return socket.inet_pton(AF_INET6 if six else AF_INET, host)
    except OSError:
        raise ValueError(f"PROXY: {host!r} is not a numeric IP address") from None


def _ip_pair(src, dst):
    """(IPv6?, packed src, packed dst, ports) of two (host, port, ...) tuples;
    an IPv4 address is mapped into IPv6 when the other one is IPv6."""
    shost, dhost = src[0], dst[0]
    six_s, six_d = ":" in shost, ":" in dhost
    s, d = _packed(six_s, shost), _packed(six_d, dhost)
    if six_s != six_d:
        if six_s:
            d = MAPPED + d
        else:
            s = MAPPED + s
    sport, dport = src[1], dst[1]
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError(f"PROXY: ports {sport}, {dport}: out of range (0-65535)")
    return six_s or six_d, s, d, sport, dport


def _is_unix(addr):
    return isinstance(addr, (str, bytes))


def _unix_path(path):
    raw = path.encode() if isinstance(path, str) else bytes(path)
    if len(raw) > UNIX_LEN:
        raise ValueError(f"PROXY: unix path of {len(raw)} bytes is longer than {UNIX_LEN}")
    return raw.ljust(UNIX_LEN, b"\0")


def build_v1(src, dst):
    """The v1 line for a TCP connection from src to dst (UNKNOWN if not IP)."""
    if not (isinstance(src, tuple) and isinstance(dst, tuple)):
        return V1_UNKNOWN
    six, s, d, sport, dport = _ip_pair(src, dst)
    if six:
        ntop = socket.inet_ntop
        return b"PROXY TCP6 %s %s %d %d\r\n" % (ntop(AF_INET6, s).encode(),
                                                 ntop(AF_INET6, d).encode(), sport, dport)
    # inet_pton took them, so they are dotted quads without leading zeros
    return b"PROXY TCP4 %s %s %d %d\r\n" % (src[0].encode(), dst[0].encode(), sport, dport)


def build_v2(src, dst, *, local=False, dgram=False, tlvs=(), crc=False):
    """The v2 header; LOCAL when `local` or when there is no address to tell.

    `tlvs` is a sequence of (type, value bytes); `crc` appends a CRC32C TLV
    computed over the whole header, as section 2.2.3 describes.
    """
    proto = 0x2 if dgram else 0x1
    ver_cmd = 0x20 | CMD_PROXY
    if local:
        ver_cmd, fam, body = 0x20 | CMD_LOCAL, 0x00, b""
    elif isinstance(src, tuple) and isinstance(dst, tuple):
        six, s, d, sport, dport = _ip_pair(src, dst)
        fam = (0x20 if six else 0x10) | proto
        body = s + d + PORTS.pack(sport, dport)
    elif _is_unix(src) and _is_unix(dst):
        fam = 0x30 | proto
        body = _unix_path(src) + _unix_path(dst)
    else:
        ver_cmd, fam, body = 0x20 | CMD_LOCAL, 0x00, b""
    if not tlvs and not crc:
        return V2_SIG + V2_FIXED.pack(ver_cmd, fam, len(body)) + body
    parts = [body]
    for kind, value in tlvs:
        parts.append(TLV_HEAD.pack(kind, len(value)) + bytes(value))
    if crc:
        parts.append(TLV_HEAD.pack(TLV_CRC32C, 4) + b"\0\0\0\0")
    body = b"".join(parts)
    if len(body) > 0xFFFF:
        raise ValueError(f"PROXY: v2 header body of {len(body)} bytes exceeds 65535")
    header = bytearray(V2_SIG + V2_FIXED.pack(ver_cmd, fam, len(body)) + body)
    if crc:
        header[-4:] = struct.pack("!I", crc32c(header))
    return bytes(header)


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32C (Castagnoli, RFC 4960 appendix B) of data."""
    crc = 0xFFFFFFFF
    table = CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ----------------------------------------------------------------- parsing

class Parser:
    """Incremental, strict reader of one PROXY header at a stream's start.

    `versions` says which versions this receiver is configured for (the
    specification forbids guessing whether a header is there at all).
    """

    __slots__ = ("versions", "max_v2", "buf", "result")

    def __init__(self, versions=(1, 2), max_v2=V2_MAX):
        self.versions = tuple(versions)
        self.max_v2 = max_v2
        self.buf = bytearray()
        self.result = None

    def feed(self, data):
        if self.result is not None:
            raise RuntimeError("PROXY parser fed after the header was complete")
        buf = self.buf
        buf += data
        if not buf:
            return NEED_MORE
        first = buf[0]
        if first == 0x50 and 1 in self.versions:        # "P"
            header = _feed_v1(buf)
        elif first == 0x0D and 2 in self.versions:      # "\r"
            header = _feed_v2(buf, self.max_v2)
        else:
            want = " or ".join(f"v{v}" for v in self.versions)
            raise ProxyError(f"PROXY: stream does not start with a PROXY {want} header "
                             f"(first byte 0x{first:02x})")
        if header is NEED_MORE:
            return NEED_MORE
        self.result = header
        self.buf = None
        return header


def parse(data, versions=(1, 2), max_v2=V2_MAX):
    """One-shot: the header at the start of data, or NEED_MORE, or ProxyError."""
    return Parser(versions, max_v2).feed(data)


def _feed_v1(buf):
    n = len(buf)
    head = bytes(buf[:V1_MAX])
    if not V1_PREFIX.startswith(head[:6]):
        raise ProxyError(f"PROXY v1: header must start with 'PROXY ', got {head[:6]!r}")
    end = _v1_line_end(head)
    line = head[:end] if end is not None else head.rstrip(b"\r")
    word = line[6:]
    matches = [w for w in V1_WORDS if w.startswith(word[:len(w)])]
    if word and not matches:
        raise ProxyError(f"PROXY v1: unknown protocol {word.split(b' ')[0][:8]!r} "
                         "(expected TCP4, TCP6 or UNKNOWN)")
    if len(matches) == 1 and matches[0] in V1_BODY and len(word) >= 5:
        body = word[5:]
        if not V1_BODY[matches[0]].fullmatch(body):
            bad = V1_BODY[matches[0]].match(body).end()
            raise ProxyError(f"PROXY v1: unexpected byte 0x{body[bad]:02x} in a "
                             f"{matches[0][:4].decode()} line")
    if end is None:
        if n >= V1_MAX:
            raise ProxyError(f"PROXY v1: no CRLF within the first {V1_MAX} bytes")
        return NEED_MORE
    header = _parse_v1_line(line)
    length = end + 2
    return ProxyHeader(1, "PROXY", *header, length=length, rest=bytes(buf[length:]))


def _v1_line_end(head):
    """Index of the CR of the CRLF in head, None if not there yet."""
    for i, byte in enumerate(head):
        if byte == 0x0A:
            raise ProxyError("PROXY v1: LF without CR (the line must end with CRLF)")
        if byte == 0x0D:
            if i + 1 == len(head):
                return None
            if head[i + 1] != 0x0A:
                raise ProxyError("PROXY v1: CR not followed by LF")
            return i
    return None


def _parse_v1_line(line):
    """(family, transport, src, dst) of a complete v1 line without its CRLF."""
    rest = line[6:]
    if rest == b"UNKNOWN" or rest.startswith(b"UNKNOWN "):
        return None, None, None, None
    fields = rest.split(b" ")
    if len(fields) != 5:
        raise ProxyError(f"PROXY v1: {len(fields)} fields after 'PROXY' separated by single "
                         "spaces, expected 5 (protocol, source, destination, two ports)")
    word, src, dst, sport, dport = fields
    family = socket.AF_INET if word == b"TCP4" else socket.AF_INET6
    hosts = [_v1_host(family, text, what) for text, what in ((src, "source"),
                                                              (dst, "destination"))]
    ports = [_v1_port(text, what) for text, what in ((sport, "source"),
                                                     (dport, "destination"))]
    return family, socket.SOCK_STREAM, (hosts[0], ports[0]), (hosts[1], ports[1])


def _v1_host(family, text, what):
    if family == socket.AF_INET:
        if not IPV4.fullmatch(text):
            raise ProxyError(f"PROXY v1: bad {what} address {text.decode('ascii', 'replace')!r}"
                             " (expected a dotted quad without leading zeros)")
        return text.decode("ascii")
    try:
        packed = socket.inet_pton(socket.AF_INET6, text.decode("ascii"))
    except (OSError, UnicodeDecodeError):
        raise ProxyError(f"PROXY v1: bad {what} address {text.decode('ascii', 'replace')!r}"
                         " (expected an IPv6 address)") from None
    return socket.inet_ntop(socket.AF_INET6, packed)


def _v1_port(text, what):
    if not PORT.fullmatch(text) or int(text) > 0xFFFF:
        raise ProxyError(f"PROXY v1: bad {what} port {text.decode('ascii', 'replace')!r}"
                         " (expected 0-65535 without leading zeros)")
    return int(text)


def _feed_v2(buf, max_v2):
    n = len(buf)
    sig = bytes(buf[:12])
    if not V2_SIG.startswith(sig):
        raise ProxyError("PROXY v2: bad signature (expected \\r\\n\\r\\n\\0\\r\\nQUIT\\n)")
    if n < 13:
        return NEED_MORE
    ver_cmd = buf[12]
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2: version {ver_cmd >> 4} (expected 2)")
    command = ver_cmd & 0xF
    if command not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyError(f"PROXY v2: command 0x{command:x} (expected 0 LOCAL or 1 PROXY)")
    if n < 14:
        return NEED_MORE
    fam = buf[13]
    if fam >> 4 not in FAMILIES or fam & 0xF not in TRANSPORTS:
        raise ProxyError(f"PROXY v2: address family/protocol byte 0x{fam:02x} "
                         "(expected family 0-3 and protocol 0-2)")
    if n < V2_HEAD:
        return NEED_MORE
    size = V2_HEAD + (buf[14] << 8 | buf[15])
    if size > max_v2:
        raise ProxyError(f"PROXY v2: header of {size} bytes exceeds the limit of {max_v2}")
    family, transport = FAMILIES[fam >> 4], TRANSPORTS[fam & 0xF]
    if command == CMD_PROXY and family is not None and transport is not None \
            and size - V2_HEAD < ADDR_LEN[family]:
        raise ProxyError(f"PROXY v2: length {size - V2_HEAD} is too short for the "
                         f"{ADDR_LEN[family]}-byte address block of family 0x{fam:02x}")
    if n < size:
        return NEED_MORE
    header = bytes(buf[:size])
    rest = bytes(buf[size:])
    if command == CMD_LOCAL:
        # The receiver uses the real endpoints and skips the whole block.
        return ProxyHeader(2, "LOCAL", None, None, None, None, size, rest)
    if family is None or transport is None:
        return ProxyHeader(2, "PROXY", family, transport, None, None, size, rest)
    src, dst = _v2_addresses(family, header[V2_HEAD:V2_HEAD + ADDR_LEN[family]])
    tlvs = _v2_tlvs(header, V2_HEAD + ADDR_LEN[family])
    return ProxyHeader(2, "PROXY", family, transport, src, dst, size, rest, tlvs)


def _v2_addresses(family, block):
    if family == socket.AF_UNIX:
        return (block[:UNIX_LEN].rstrip(b"\0"), block[UNIX_LEN:].rstrip(b"\0"))
    alen = 4 if family == socket.AF_INET else 16
    sport, dport = struct.unpack_from("!HH", block, 2 * alen)
    return ((socket.inet_ntop(family, block[:alen]), sport),
            (socket.inet_ntop(family, block[alen:2 * alen]), dport))


def _v2_tlvs(header, pos):
    """The TLVs from pos to the header's end; they must fill it exactly."""
    tlvs = []
    end = len(header)
    while pos < end:
        if end - pos < 3:
            raise ProxyError(f"PROXY v2: {end - pos} stray bytes after the last TLV "
                             "(a TLV needs at least 3)")
        kind, length = header[pos], header[pos + 1] << 8 | header[pos + 2]
        if pos + 3 + length > end:
            raise ProxyError(f"PROXY v2: TLV 0x{kind:02x} of {length} bytes runs past the "
                             "header's end")
        value = header[pos + 3:pos + 3 + length]
        if kind == TLV_CRC32C:
            _check_crc(header, pos + 3, value)
        tlvs.append((kind, value))
        pos += 3 + length
    return tuple(tlvs)


def _check_crc(header, at, value):
    if len(value) != 4:
        raise ProxyError(f"PROXY v2: CRC32C TLV of {len(value)} bytes (expected 4)")
    zeroed = header[:at] + b"\0\0\0\0" + header[at + 4:]
    want = struct.unpack("!I", value)[0]
    got = crc32c(zeroed)
    if got != want:
        raise ProxyError(f"PROXY v2: CRC32C mismatch (header says 0x{want:08x}, "
                         f"computed 0x{got:08x})")
