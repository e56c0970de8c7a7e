"""PROXY protocol v1/v2 build and parse, against doc/proxy-protocol.txt."""

import dataclasses
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pen.proxyproto import (NEED_MORE, V1_MAX, V2_SIG, Parser, ProxyError, ProxyHeader,
                            build_v1, build_v2, crc32c, parse)

SPEC_V1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
HTTP = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
V6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def v2_ipv4(cmd=0x21, fam=0x11, extra=b""):
    """The spec's struct proxy_hdr_v2 + ipv4_addr, written out field by field."""
    body = (socket.inet_aton("192.168.0.1") + socket.inet_aton("192.168.0.11")
            + struct.pack("!HH", 56324, 443) + extra)
    return V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def feed_bytewise(data, **kw):
    """Feed one byte at a time; (index of the byte that completed it, result)."""
    p = Parser(**kw)
    for i in range(len(data)):
        r = p.feed(data[i:i + 1])
        if r is not NEED_MORE:
            return i, r
    return None, NEED_MORE


# ------------------------------------------------------------------ v1

def test_v1_spec_example_is_built_byte_for_byte():
    assert build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == SPEC_V1


def test_v1_spec_example_parses_and_leaves_the_request():
    h = parse(SPEC_V1 + HTTP)
    assert h == ProxyHeader(1, "PROXY", socket.AF_INET, socket.SOCK_STREAM,
                            ("192.168.0.1", 56324), ("192.168.0.11", 443),
                            len(SPEC_V1), HTTP)


def test_v1_completes_exactly_on_the_lf():
    i, h = feed_bytewise(SPEC_V1 + HTTP)
    assert i == len(SPEC_V1) - 1
    assert h.rest == b"" and h.length == len(SPEC_V1)


@pytest.mark.parametrize("line, length", [
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 56),
    (f"PROXY TCP6 {V6_MAX} {V6_MAX} 65535 65535\r\n".encode(), 104),
    (b"PROXY UNKNOWN\r\n", 15),
    (f"PROXY UNKNOWN {V6_MAX} {V6_MAX} 65535 65535\r\n".encode(), 107),
])
def test_v1_maximum_lengths_of_section_2_1(line, length):
    assert len(line) == length
    assert parse(line).length == length


def test_v1_tcp6_is_normalised_and_unknown_carries_no_address():
    h = parse(b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 0\r\n")
    assert (h.family, h.src, h.dst) == (socket.AF_INET6, ("2001:db8::1", 1), ("::1", 0))
    u = parse(b"PROXY UNKNOWN whatever the sender wants\r\nDATA")
    assert (u.src, u.dst, u.family, u.rest) == (None, None, None, b"DATA")


def test_v1_line_of_108_bytes_is_refused_at_byte_107():
    line = f"PROXY UNKNOWN {V6_MAX} {V6_MAX} 65535 655350\r\n".encode()
    assert len(line) == 108
    p = Parser()
    assert p.feed(line[:106]) is NEED_MORE
    with pytest.raises(ProxyError, match="no CRLF within the first 107"):
        p.feed(line[106:107])


@pytest.mark.parametrize("data, why", [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "fields"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad source address"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad source address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n", "bad destination address"),
    (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "unexpected byte 0x3a"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad source address"),
    (b"PROXY TCP6 ::1 ::g 1 2\r\n", "unexpected byte 0x67"),
    (b"PROXY TCP6 ::1 1::2::3 1 2\r\n", "bad destination address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad source port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "bad destination port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fields"),
    (b"PROXY \r\n", "fields"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "first byte 0x70"),
    (b"PROXY UNKNOWN\n", "LF without CR"),
    (b"GET / HTTP/1.1\r\n", "does not start with a PROXY"),
])
def test_v1_malformed_lines_are_refused_with_the_reason(data, why):
    with pytest.raises(ProxyError, match=why):
        parse(data)
    with pytest.raises(ProxyError, match=why):   # also when it trickles in
        feed_bytewise(data)


def test_v1_garbage_is_refused_at_the_first_wrong_byte():
    p = Parser()
    assert p.feed(b"PROXY TCP4 1.2.3.4") is NEED_MORE
    with pytest.raises(ProxyError, match="unexpected byte 0x78"):
        p.feed(b"x")
    with pytest.raises(ProxyError, match="must start with 'PROXY '"):
        Parser().feed(b"PRXY")


def test_v1_not_accepted_by_a_v2_only_receiver_and_v2_not_by_v1_only():
    with pytest.raises(ProxyError, match="PROXY v2 header"):
        parse(SPEC_V1, versions=(2,))
    with pytest.raises(ProxyError, match="PROXY v1 header"):
        parse(v2_ipv4(), versions=(1,))


def test_build_v1_non_ip_is_unknown_and_mixed_families_map_to_tcp6():
    assert build_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert build_v1("/tmp/a.sock", "/tmp/b.sock") == b"PROXY UNKNOWN\r\n"
    assert build_v1(("1.2.3.4", 5), ("::1", 6)) == b"PROXY TCP6 ::ffff:1.2.3.4 ::1 5 6\r\n"
    assert build_v1(("fe80::1%eth0", 5, 0, 2), ("fe80::2", 6, 0, 2)) == \
        b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n"
    with pytest.raises(ValueError, match="not a numeric IP"):
        build_v1(("localhost", 1), ("1.2.3.4", 2))


# ------------------------------------------------------------------ v2

def test_v2_ipv4_matches_the_spec_struct_byte_for_byte():
    built = build_v2(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert built == v2_ipv4()
    assert built[:13] == b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x21"
    assert built[13] == 0x11 and built[14:16] == b"\x00\x0c" and len(built) == 28


def test_v2_ipv6_unix_udp_and_local_families_and_lengths():
    v6 = build_v2(("2001:db8::1", 1), ("::1", 2))
    assert (v6[13], v6[14:16], len(v6)) == (0x21, b"\x00\x24", 16 + 36)
    assert v6[16:32] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    ux = build_v2("/run/a", b"/run/b")
    assert (ux[13], ux[14:16], len(ux)) == (0x31, b"\x00\xd8", 16 + 216)
    assert ux[16:124] == b"/run/a".ljust(108, b"\0")
    udp = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2), dgram=True)
    assert udp[13] == 0x12
    assert build_v2(None, None) == V2_SIG + b"\x20\x00\x00\x00"
    assert build_v2(("1.2.3.4", 1), ("5.6.7.8", 2), local=True) == V2_SIG + b"\x20\x00\x00\x00"


def test_v2_parses_each_family():
    h = parse(v2_ipv4() + HTTP)
    assert (h.version, h.command, h.family, h.transport) == (2, "PROXY", socket.AF_INET,
                                                             socket.SOCK_STREAM)
    assert (h.src, h.dst, h.length, h.rest) == (("192.168.0.1", 56324),
                                                ("192.168.0.11", 443), 28, HTTP)
    u = parse(build_v2("/run/a", "/run/b", dgram=True))
    assert (u.family, u.transport, u.src, u.dst) == (socket.AF_UNIX, socket.SOCK_DGRAM,
                                                     b"/run/a", b"/run/b")
    local = parse(V2_SIG + b"\x20\x11\x00\x0c" + b"\x01" * 12 + b"x")
    assert (local.command, local.src, local.length, local.rest) == ("LOCAL", None, 28, b"x")


def test_v2_completes_exactly_on_its_last_byte():
    data = v2_ipv4() + HTTP
    i, h = feed_bytewise(data)
    assert i == 27 and h.src == ("192.168.0.1", 56324)


def test_v2_tlvs_and_crc32c():
    assert crc32c(b"123456789") == 0xE3069283     # RFC 4960 / iSCSI check value
    built = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=[(0x02, b"example.com")], crc=True)
    h = parse(built)
    assert h.tlvs[0] == (0x02, b"example.com") and h.tlvs[1][0] == 0x03
    bad = bytearray(built)
    bad[-1] ^= 1
    with pytest.raises(ProxyError, match="CRC32C mismatch"):
        parse(bytes(bad))


@pytest.mark.parametrize("data, why", [
    (V2_SIG[:5] + b"\x01", "bad signature"),
    (V2_SIG + b"\x11", "version 1"),
    (V2_SIG + b"\x22", "command 0x2"),
    (V2_SIG + b"\x21\x41", "family/protocol byte 0x41"),
    (V2_SIG + b"\x21\x13", "family/protocol byte 0x13"),
    (V2_SIG + b"\x21\x11\x00\x0b", "too short for the 12-byte"),
    (V2_SIG + b"\x21\x21\x00\x23", "too short for the 36-byte"),
    (V2_SIG + b"\x21\x31\x00\xd7", "too short for the 216-byte"),
    (v2_ipv4(extra=b"\x04\x00"), "2 stray bytes"),
    (v2_ipv4(extra=b"\x04\x00\x05ab"), "runs past"),
    (v2_ipv4(extra=b"\x03\x00\x02ab"), "CRC32C TLV of 2 bytes"),
])
def test_v2_malformed_headers_are_refused_with_the_reason(data, why):
    with pytest.raises(ProxyError, match=why):
        parse(data)
    with pytest.raises(ProxyError, match=why):
        feed_bytewise(data)


def test_v2_length_limit_is_checked_before_waiting_for_the_body():
    with pytest.raises(ProxyError, match="exceeds the limit of 1040"):
        parse(V2_SIG + b"\x21\x11\x04\x01", max_v2=1040)
    assert parse(V2_SIG + b"\x21\x11\xff\xff") is NEED_MORE   # 65551 is allowed


def test_v2_unspec_family_or_transport_keeps_the_real_addresses():
    h = parse(V2_SIG + b"\x21\x01\x00\x03abc")
    assert (h.command, h.family, h.transport, h.src, h.length) == ("PROXY", None,
                                                                   socket.SOCK_STREAM, None, 19)


def test_parser_refuses_to_be_fed_after_the_header():
    p = Parser()
    p.feed(SPEC_V1)
    with pytest.raises(RuntimeError):
        p.feed(b"x")


def test_empty_feed_needs_more():
    assert Parser().feed(b"") is NEED_MORE


# ------------------------------------------------------ property tests

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
ip_pair = st.one_of(st.tuples(st.tuples(ipv4, port), st.tuples(ipv4, port)),
                    st.tuples(st.tuples(ipv6, port), st.tuples(ipv6, port)))
unix_path = st.binary(min_size=1, max_size=108).map(lambda b: b.rstrip(b"\0")).filter(bool)
payload = st.binary(max_size=64)


def canonical(addr):
    host, p = addr
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_ntop(fam, socket.inet_pton(fam, host)), p


@given(ip_pair, payload)
def test_round_trip_v1(pair, data):
    src, dst = pair
    line = build_v1(src, dst)
    assert len(line) <= V1_MAX
    h = parse(line + data)
    assert (h.src, h.dst, h.length, h.rest) == (canonical(src), canonical(dst), len(line), data)


@given(st.one_of(ip_pair, st.tuples(unix_path, unix_path)), payload, st.booleans(),
       st.lists(st.tuples(st.integers(0, 255).filter(lambda t: t != 0x03),
                          st.binary(max_size=20)), max_size=3), st.booleans())
def test_round_trip_v2(pair, data, dgram, tlvs, crc):
    src, dst = pair
    header = build_v2(src, dst, dgram=dgram, tlvs=tlvs, crc=crc)
    h = parse(header + data)
    if isinstance(src, bytes):
        assert (h.src, h.dst, h.family) == (src, dst, socket.AF_UNIX)
    else:
        assert (h.src, h.dst) == (canonical(src), canonical(dst))
    assert h.transport == (socket.SOCK_DGRAM if dgram else socket.SOCK_STREAM)
    assert (h.length, h.rest) == (len(header), data)
    assert list(h.tlvs[:len(tlvs)]) == [(t, bytes(v)) for t, v in tlvs]


def parse_split(data, cut):
    p = Parser()
    r = p.feed(data[:cut])
    if r is NEED_MORE:
        return p.feed(data[cut:])
    return dataclasses.replace(r, rest=r.rest + data[cut:])   # what the caller does


def outcome(fn):
    try:
        return fn()
    except ProxyError:
        return "error"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(ip_pair.map(lambda p: build_v1(*p)), ip_pair.map(lambda p: build_v2(*p)),
                 st.just(b"PROXY UNKNOWN\r\n"), st.just(build_v2(None, None))), payload)
def test_every_split_position_gives_the_same_header(header, data):
    whole = parse(header + data)
    for cut in range(len(header) + len(data) + 1):
        assert parse_split(header + data, cut) == whole
    for cut in range(len(header)):        # a partial header is never accepted
        assert parse(header[:cut]) is NEED_MORE


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    r = outcome(lambda: parse(data))
    assert r == "error" or r is NEED_MORE or isinstance(r, ProxyHeader)


@given(st.sampled_from([b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN",
                        V2_SIG + b"\x21", V2_SIG + b"\x21\x11"]),
       st.binary(max_size=300))
def test_random_tails_after_a_valid_start_never_crash(start, tail):
    r = outcome(lambda: parse(start + tail))
    assert r == "error" or r is NEED_MORE or isinstance(r, ProxyHeader)
    if r is NEED_MORE:
        assert len(start + tail) < (V1_MAX if start[0] == 0x50 else 16 + 0xFFFF)


def check_consistent(data):
    """Whatever happens, it happens the same way however the bytes arrive."""
    whole = outcome(lambda: parse(data))
    for cut in range(0, len(data) + 1, 3):
        assert outcome(lambda: parse_split(data, cut)) == whole
    if isinstance(whole, ProxyHeader):
        assert whole.length <= len(data) and whole.rest == data[whole.length:]
        assert parse(data[:whole.length]) == ProxyHeader(**{**whole.__dict__, "rest": b""})
        if whole.src is not None and whole.version == 1:
            assert parse(build_v1(whole.src, whole.dst)).src == whole.src
        if whole.src is not None and whole.version == 2:
            again = parse(build_v2(whole.src, whole.dst,
                                   dgram=whole.transport == socket.SOCK_DGRAM))
            assert (again.src, again.dst) == (whole.src, whole.dst)


valid = st.one_of(ip_pair.map(lambda p: build_v1(*p)),
                  ip_pair.map(lambda p: build_v2(*p, crc=True)),
                  ip_pair.map(lambda p: build_v2(*p)),
                  st.tuples(unix_path, unix_path).map(lambda p: build_v2(*p)))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(valid, st.data())
def test_mutated_valid_headers_are_refused_or_parsed_consistently(header, draw):
    i = draw.draw(st.integers(0, len(header) - 1))
    how = draw.draw(st.sampled_from(["flip", "set", "delete", "insert"]))
    byte = draw.draw(st.integers(0, 255))
    b = bytearray(header)
    if how == "flip":
        b[i] ^= 1 << (byte % 8)
    elif how == "set":
        b[i] = byte
    elif how == "delete":
        del b[i]
    else:
        b.insert(i, byte)
    check_consistent(bytes(b) + b"after")


@given(ip_pair, st.integers(0, 35), st.integers(0, 7))
def test_crc_protected_header_refuses_a_flipped_address_bit(pair, at, bit):
    header = bytearray(build_v2(*pair, crc=True))
    at = 16 + at % (len(header) - 16 - 7)      # inside the address block
    header[at] ^= 1 << bit
    with pytest.raises(ProxyError, match="CRC32C mismatch"):
        parse(bytes(header))
