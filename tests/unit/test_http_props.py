"""Property tests of the framers: well-formed streams keep their bytes
whatever the cuts; arbitrary bytes never raise anything but an HttpError
reported on the framer."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pen.http import Exchange, HttpError, RequestFramer, ResponseFramer

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(TOKEN_CHARS, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "upgrade"))
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20)
headers = st.lists(st.tuples(names, values), max_size=6)
bodies = st.binary(max_size=40)


def field_block(pairs):
    return "".join("%s: %s\r\n" % (n, v) for n, v in pairs).encode()


@st.composite
def body_part(draw):
    """Framing headers and the body bytes that go with them."""
    body = draw(bodies)
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if kind == "none" or (kind == "length" and not body and draw(st.booleans())):
        return b"", b""
    if kind == "length":
        return b"Content-Length: %d\r\n" % len(body), body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks, last = [], 0
    for cut in cuts + [len(body)]:
        if cut > last:
            ext = b";x=1" if draw(st.booleans()) else b""
            chunks.append(b"%x%s\r\n%s\r\n" % (cut - last, ext, body[last:cut]))
            last = cut
    trailer = field_block(draw(st.lists(st.tuples(names, values), max_size=2)))
    return b"Transfer-Encoding: chunked\r\n", b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"


@st.composite
def request_streams(draw):
    out, count = [], draw(st.integers(1, 4))
    for _ in range(count):
        method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]))
        target = draw(st.sampled_from([b"/", b"/a?b=c", b"*", b"http://x/y"]))
        framing, body = draw(body_part())
        out.append(b"%s %s HTTP/1.1\r\n" % (method, target) + field_block(draw(headers))
                   + framing + b"\r\n" + body)
    return b"".join(out), count


@st.composite
def response_streams(draw):
    out, methods = [], []
    for _ in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from([b"GET", b"HEAD"]))
        status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
        if draw(st.booleans()):
            out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
        framing, body = draw(body_part())
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif not framing:
            framing = b"Content-Length: 0\r\n"
        out.append(b"HTTP/1.1 %d X\r\n" % status + field_block(draw(headers)) + framing
                   + b"\r\n" + body)
        methods.append(method)
    return b"".join(out), methods


def cut(data, points):
    points = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


cuts = st.lists(st.integers(0, 10_000), max_size=6)


@SETTINGS
@given(request_streams(), cuts)
def test_requests_without_rules_keep_their_bytes(stream, points):
    data, count = stream
    heads = []
    ex = Exchange()
    framer = RequestFramer(lambda h: heads.append(h) or h, ex)
    out = b"".join(framer.feed(p) for p in cut(data, points))
    assert framer.error is None
    assert out == data
    assert len(heads) == count and framer.idle and len(ex.queue) == count


@SETTINGS
@given(response_streams(), cuts)
def test_responses_without_rules_keep_their_bytes(stream, points):
    data, methods = stream
    ex = Exchange()
    ex.seen = True
    ex.queue.extend((m, False, None) for m in methods)
    framer = ResponseFramer(ex)
    out = b"".join(framer.feed(p) for p in cut(data, points))
    assert framer.error is None
    assert out == data
    assert framer.idle and not ex.queue


def feed_noise(framer, pieces):
    out = []
    for piece in pieces:
        out.append(framer.feed(piece))      # must not raise
    assert framer.error is None or isinstance(framer.error, HttpError)
    if framer.error is not None:
        assert framer.error.status in (400, 431, 502)
        assert framer.feed(b"GET / HTTP/1.1\r\n\r\n") == b""
    framer.close()
    return b"".join(out)


prefixes = st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\n",
                            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                            b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n"])
noise = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b":", b" ", b"0", b"a", b"Content-Length: 3",
                     b"Transfer-Encoding: chunked", b"HTTP/1.1 ", b"GET / HTTP/1.1", b";",
                     b"\t", b"\x00", b"ff"]), max_size=30).map(b"".join)


@SETTINGS
@given(prefixes, noise, cuts)
def test_random_bytes_to_a_request_framer(prefix, data, points):
    data = prefix + data
    for framer in (RequestFramer(None, Exchange()), RequestFramer()):
        out = feed_noise(framer, cut(data, points))
        assert len(out) <= len(data)


@SETTINGS
@given(st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 101 S\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]),
       noise, cuts, st.sampled_from([b"GET", b"HEAD", b"CONNECT"]), st.booleans())
def test_random_bytes_to_a_response_framer(prefix, data, points, method, upgrade):
    ex = Exchange()
    ex.seen = True
    ex.queue.append((method, upgrade, None))
    feed_noise(ResponseFramer(ex), cut(prefix + data, points))


def h11_requests(data):
    """(target, body) of each request h11 finds in `data`, or None when h11
    refuses the stream (a refusal is no disagreement)."""
    import h11
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    found, body = [], b""
    try:
        for _ in range(100):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return found
            if isinstance(event, h11.Request):
                target, body = event.target, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                found.append((target, body))
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
    except h11.RemoteProtocolError:
        return None
    return found


tricky_headers = st.lists(st.sampled_from([
    b"Content-Length: 3\r\n", b"Content-Length: 03\r\n", b"Content-Length: 3, 3\r\n",
    b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: Chunked\r\n", b"Transfer-Encoding: identity\r\n",
    b"X: a\r\n", b"X:  spaced  \r\n"]), max_size=3)
tricky_bodies = st.lists(st.sampled_from([
    b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"1;e=1\r\nx\r\n0\r\nT: 1\r\n\r\n",
    b"\r\n", b"abcd"]), max_size=2).map(b"".join)


@SETTINGS
@given(st.lists(st.tuples(tricky_headers, tricky_bodies), min_size=1, max_size=3))
def test_what_we_forward_h11_frames_the_same_way(messages):
    """No request smuggling: whenever our framer passes a stream on whole,
    h11 (an independent, strict parser) either refuses it or finds the
    same requests with the same bodies."""
    data = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\n%s\r\n%s" % (i, b"".join(h), body)
                    for i, (h, body) in enumerate(messages))
    bodies = []
    framer = RequestFramer(lambda h: bodies.append(h.target) or h, Exchange())
    out = framer.feed(data)
    if framer.error is not None or not framer.idle:
        return
    theirs = h11_requests(out)
    if theirs is None:
        return
    assert [t for t, _ in theirs] == bodies
