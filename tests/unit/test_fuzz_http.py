"""Fuzzing the HTTP framing and the PROXY parser at every split position
(issue 15 part 4): valid streams, one byte mutated, are framed the same
however the bytes are split -- in two at every position, or byte by byte
-- and nothing but the documented error comes out (HttpError on the
framer, ProxyError from the parser)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pen.http import Exchange, HttpError, RequestFramer, ResponseFramer
from pen.proxyproto import NEED_MORE, Parser, ProxyError, build_v1, build_v2
from test_http_props import request_streams, response_streams

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, streams):
    data = draw(streams)[0]
    if draw(st.booleans()) and data:
        b = bytearray(data)
        i = draw(st.integers(0, len(b) - 1))
        how = draw(st.sampled_from(["set", "delete", "insert"]))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 44, 48, 58, 59, 70, 102, 255]))
        if how == "set":
            b[i] = byte
        elif how == "delete":
            del b[i]
        else:
            b.insert(i, byte)
        data = bytes(b)
    return data[:600]


def frame(make, pieces):
    """(bytes passed on, error status or None, idle) after feeding pieces."""
    framer = make()
    out = b"".join(framer.feed(p) for p in pieces)       # must not raise
    error = framer.error
    assert error is None or isinstance(error, HttpError)
    return out, error and error.status, framer.idle


def requests():
    return RequestFramer(lambda head: head, Exchange())


def responses():
    ex = Exchange()
    ex.seen = True
    ex.queue.extend((b"GET", False, None) for _ in range(4))
    return ResponseFramer(ex)


def same_at_every_split(make, data):
    whole = frame(make, [data])
    for cut in range(len(data) + 1):
        assert frame(make, [data[:cut], data[cut:]]) == whole, cut
    assert frame(make, [data[i:i + 1] for i in range(len(data))]) == whole


@SETTINGS
@given(mutated(request_streams()))
def test_requests_frame_the_same_at_every_split(data):
    same_at_every_split(requests, data)


@SETTINGS
@given(mutated(response_streams()))
def test_responses_frame_the_same_at_every_split(data):
    same_at_every_split(responses, data)


ADDRS = st.sampled_from([(("192.168.0.1", 56324), ("10.0.0.1", 443)),
                         (("::1", 1), ("2001:db8::5", 65535))])
headers = st.one_of(ADDRS.map(lambda a: build_v1(*a)), ADDRS.map(lambda a: build_v2(*a)),
                    st.just(build_v1(None, None)), st.just(build_v2(None, None)))


def proxy_outcome(pieces):
    parser = Parser()
    try:
        for piece in pieces:
            result = parser.feed(piece)
            if result is not NEED_MORE:
                return result.length, result.src, result.dst
        return "more"
    except ProxyError:
        return "refused"


@SETTINGS
@given(headers, st.data())
def test_proxy_headers_parse_the_same_at_every_split(header, draw):
    b = bytearray(header + b"GET / HTTP/1.0\r\n\r\n")
    if draw.draw(st.booleans()):
        b[draw.draw(st.integers(0, len(header) - 1))] = draw.draw(st.integers(0, 255))
    data = bytes(b)
    whole = proxy_outcome([data])
    for cut in range(1, len(data)):
        assert proxy_outcome([data[:cut], data[cut:]]) == whole, cut
    assert proxy_outcome([data[i:i + 1] for i in range(len(data))]) == whole
