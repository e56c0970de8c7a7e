"""X-Forwarded-For rewriting (-H), fed in every possible split."""

import pytest

from pen.http import HttpRefused, XForwardedFor

STREAM = (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
          b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
          b"GET /x HTTP/1.1\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n"
          b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
          b"GET /z HTTP/1.0\r\n\r\n")


def run(data, step):
    x = XForwardedFor("1.2.3.4")
    return b"".join(x.feed(data[i:i + step]) for i in range(0, len(data), step)), x


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, len(STREAM)])
def test_every_request_gets_the_header_once(step):
    out, x = run(STREAM, step)
    assert out.count(b"X-Forwarded-For: 1.2.3.4\r\n") == 4
    assert b"X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\n" in out
    assert out.count(b"X-Forwarded-Proto: http\r\n") == 5
    assert b"\r\n\r\nhelloGET /x" in out       # the body was not touched
    assert b"3\r\nabc\r\n0\r\n\r\nGET /z" in out
    assert x.first_line == "GET / HTTP/1.1"


def test_body_that_looks_like_headers_is_not_rewritten():
    body = b"GET /fake HTTP/1.1\r\n\r\n"
    data = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    out, _ = run(data, 5)
    assert out.count(b"X-Forwarded-For") == 1
    assert out.endswith(body)


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n", b"\x16\x03\x01\x02\x00",
                                  b"HELLO world\n\nmore"])
def test_non_http_passes_untouched(data):
    out, _ = run(data, 3)
    assert out == data


def test_upgrade_switches_to_pass_through():
    data = (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
            b"GET /not-a-request HTTP/1.1\r\n\r\n")
    out, _ = run(data, 4)
    assert out.count(b"X-Forwarded-For") == 1


def test_oversized_head_is_refused_with_431():
    data = b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n"
    with pytest.raises(HttpRefused) as e:
        run(data, 4096)
    assert e.value.error.status == 431


# --- the framers, both directions ------------------------------------------------

from pen.http import (MAX_HEAD, Exchange, HttpError, RequestFramer,  # noqa: E402
                      ResponseFramer)


class Heads:
    """A head callback that records start lines and changes nothing."""

    def __init__(self):
        self.lines = []

    def __call__(self, head):
        self.lines.append(head.start_line)
        return head


def splits(data):
    """Every way of cutting `data` in two, and byte by byte."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]


def feed_all(framer, pieces):
    out = b"".join(framer.feed(p) for p in pieces)
    return out, framer.error


REQUESTS = {
    "get": (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [b"GET / HTTP/1.1"]),
    "no-headers": (b"GET / HTTP/1.0\r\n\r\n", [b"GET / HTTP/1.0"]),
    "length": (b"POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nxy"
               b"GET /n HTTP/1.1\r\n\r\n", [b"POST /p HTTP/1.1", b"GET /n HTTP/1.1"]),
    "chunked": (b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Two: 2\r\n\r\n"
                b"GET /after HTTP/1.1\r\n\r\n", [b"POST /c HTTP/1.1", b"GET /after HTTP/1.1"]),
    "chunked-no-trailer": (b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                           [b"PUT /c HTTP/1.1"]),
    "same-lengths": (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                     [b"POST / HTTP/1.1"]),
    "blank-lines-between": (b"GET /1 HTTP/1.1\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
                            [b"GET /1 HTTP/1.1", b"GET /2 HTTP/1.1"]),
    "expect-100": (b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
                   [b"PUT /e HTTP/1.1"]),
    "body-looks-like-a-request": (b"POST / HTTP/1.1\r\nContent-Length: 19\r\n\r\n"
                                  b"GET /x HTTP/1.1\r\n\r\n", [b"POST / HTTP/1.1"]),
}


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_request_framing_at_every_split(kind):
    data, lines = REQUESTS[kind]
    for pieces in splits(data):
        heads = Heads()
        framer = RequestFramer(heads, Exchange())
        out, error = feed_all(framer, pieces)
        assert error is None
        assert out == data
        assert heads.lines == lines
        assert framer.idle
        assert len(framer.exchange.queue) == len(lines)


RESPONSES = {
    "length": ([b"GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", [200]),
    "chunked": ([b"GET", b"GET"],
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", [200, 404]),
    "head": ([b"HEAD", b"GET"],
             b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", [200, 200]),
    "continue": ([b"PUT"],
                 b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
                 b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", [100, 102, 201]),
    "no-content": ([b"DELETE", b"GET", b"GET"],
                   b"HTTP/1.1 204 No Content\r\n\r\n"
                   b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
                   b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n!", [204, 304, 200]),
    "empty-reason": ([b"GET"], b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", [200]),
    "unasked-408": ([], b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", [408]),
}


def exchange_with(methods, upgrade=False):
    ex = Exchange()
    ex.seen = True
    for m in methods:
        ex.queue.append((m, upgrade, None))
    return ex


@pytest.mark.parametrize("kind", sorted(RESPONSES))
def test_response_framing_at_every_split(kind):
    methods, data, statuses = RESPONSES[kind]
    for pieces in splits(data):
        seen = []
        ex = exchange_with(methods)
        framer = ResponseFramer(ex, lambda h: seen.append(h.status))
        out, error = feed_all(framer, pieces)
        assert error is None
        assert out == data
        assert seen == statuses
        assert framer.idle and not ex.queue


def test_close_delimited_response_passes_everything_until_eof():
    data = b"HTTP/1.0 200 OK\r\n\r\nanything\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    for pieces in splits(data):
        seen = []
        framer = ResponseFramer(exchange_with([b"GET"]), lambda h: seen.append(h.status))
        out, error = feed_all(framer, pieces)
        assert (out, error, seen) == (data, None, [200])
        assert framer.close() == b"" and framer.error is None


def test_response_to_head_knows_its_request_method():
    methods = []
    ex = Exchange()
    req = RequestFramer(None, ex)
    resp = ResponseFramer(ex, lambda h: methods.append(h.request_method))
    req.feed(b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    out = resp.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert out.endswith(b"hello") and methods == [b"HEAD", b"GET"]
    assert resp.idle and not ex.queue


def upgrade_pair():
    ex = Exchange()
    return ex, RequestFramer(None, ex), ResponseFramer(ex)


@pytest.mark.parametrize("request_head,answer", [
    (b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    (b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
     b"HTTP/1.1 200 Connection established\r\n\r\n"),
])
def test_upgrade_becomes_a_tunnel_at_every_split(request_head, answer):
    early = b"\x81\x05hello"          # sent before the answer: held, then released
    for pieces in splits(answer + b"\x00server bytes\r\n\r\n"):
        ex, req, resp = upgrade_pair()
        assert req.feed(request_head + early) == request_head
        assert ex.waiting and not req.tunnel
        out, error = feed_all(resp, pieces)
        assert error is None and out == answer + b"\x00server bytes\r\n\r\n"
        assert ex.tunnel and ex.resume and resp.tunnel
        assert req.feed(b"") == early
        assert req.tunnel and req.feed(b"GET junk\n") == b"GET junk\n"


def test_refused_upgrade_goes_on_framing_what_was_held():
    ex, req, resp = upgrade_pair()
    heads = []
    req.on_head = lambda h: heads.append(h.target)
    assert req.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n\r\n") \
        == b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    resp.feed(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    assert ex.resume and not ex.tunnel and not resp.tunnel
    assert req.feed(b"") == b"GET /next HTTP/1.1\r\n\r\n"
    assert heads == [b"/ws", b"/next"] and req.idle


def test_connect_refused_is_not_a_tunnel():
    ex, req, resp = upgrade_pair()
    req.feed(b"CONNECT a:1 HTTP/1.1\r\n\r\n")
    out = resp.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\n")
    assert out.endswith(b"no") and not resp.tunnel and not ex.tunnel
    assert resp.error is None


def test_101_without_an_upgrade_request_is_a_bad_gateway():
    ex, req, resp = upgrade_pair()
    req.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert resp.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n") == b""
    assert resp.error.status == 502


def test_one_direction_filter_tunnels_at_once_on_upgrade():
    req = RequestFramer()
    data = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x00GET\n"
    assert req.feed(data) == data and req.tunnel


def test_server_speaking_first_makes_both_directions_raw():
    ex, req, resp = upgrade_pair()
    assert resp.feed(b"220 smtp ready\r\n") == b"220 smtp ready\r\n"
    assert ex.raw and resp.tunnel
    assert req.feed(b"HELO x\r\n") == b"HELO x\r\n" and req.tunnel


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n", b"\x16\x03\x01\x02\x00",
                                  b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/2.0\r\n\r\n",
                                  b"get / HTTP/1.1\r\n\r\n", b"GET /\r\n"])
def test_non_http_first_line_passes_untouched_at_every_split(data):
    for pieces in splits(data + b"\x00tail"):
        ex = Exchange()
        framer = RequestFramer(None, ex)
        out, error = feed_all(framer, pieces)
        assert (out, error) == (data + b"\x00tail", None)
        assert ex.raw and ResponseFramer(ex).feed(b"x\r\n\r\n") == b"x\r\n\r\n"


def test_undecided_first_bytes_go_out_at_eof():
    framer = RequestFramer(None, Exchange())
    assert framer.feed(b"GE") == b""
    assert framer.close() == b"GE"


def test_eof_inside_a_body_is_reported_for_the_log():
    framer = RequestFramer(None, Exchange())
    framer.feed(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc")
    assert framer.close() == b""
    assert framer.error.status == 400 and framer.error.reply == b""


HOSTILE = {
    "cl-and-te": b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
    "length-list": b"POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n",
    "length-sign": b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\nabcd",
    "length-hex": b"POST / HTTP/1.1\r\nContent-Length: 0x4\r\n\r\nabcd",
    "length-empty": b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    "te-not-chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-chunked-twice": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    "te-chunked-not-last": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "te-in-1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-size-space": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n",
    "chunk-size-huge": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
    "chunk-too-long": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
    "chunk-bare-lf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
    "chunk-end-bare-lf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    "trailer-folded": (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"0\r\nX: 1\r\n folded\r\n\r\n"),
    "obs-fold": b"GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nX-A: 1\r\n\tcontinued\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare-lf-in-header": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
    "nul-in-value": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nJustAName\r\n\r\n",
    "bad-second-request": b"GET / HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n",
    "http-1.2": b"GET / HTTP/1.2\r\n\r\n",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_requests_are_refused_at_every_split(kind):
    data = HOSTILE[kind]
    for pieces in splits(data):
        framer = RequestFramer(None, Exchange())
        out, error = feed_all(framer, pieces + [b"GET /smuggled HTTP/1.1\r\n\r\n"])
        assert isinstance(error, HttpError), pieces
        assert error.status == 400
        assert b"smuggled" not in out
        # Nothing of the bad head went out; a body, if any, only after a good head.
        assert not out or out.startswith(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") \
            or out == b"GET / HTTP/1.1\r\n\r\n"
        assert error.reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
    b"GET /" + b"a" * (MAX_HEAD + 1),
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 1) + b"\r\n"])
@pytest.mark.parametrize("step", [1000, 70000])
def test_a_head_over_64k_gets_431(data, step):
    framer = RequestFramer(None, Exchange())
    out, error = feed_all(framer, [data[i:i + step] for i in range(0, len(data), step)])
    assert out == b"" and error.status == 431
    assert error.reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert framer.feed(b"GET / HTTP/1.1\r\n\r\n") == b""


def test_a_head_just_under_64k_passes():
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD - 100) + b"\r\n\r\n"
    framer = RequestFramer(None, Exchange())
    assert feed_all(framer, [data[i:i + 4096] for i in range(0, len(data), 4096)]) == (data, None)


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n"])
def test_hostile_responses_are_a_bad_gateway(data):
    framer = ResponseFramer(exchange_with([b"GET"]))
    out, error = feed_all(framer, [data])
    assert error.status == 502 and not out.startswith(data)


def test_an_error_after_part_of_a_response_went_out_has_no_reply():
    framer = ResponseFramer(exchange_with([b"GET"]))
    out = framer.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert out.endswith(b"abc\r\n")
    assert framer.feed(b"x\r\n") == b""
    assert framer.error.status == 502 and framer.error.reply == b""


def test_response_not_chunked_transfer_coding_reads_until_close():
    framer = ResponseFramer(exchange_with([b"GET"]))
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b..."
    assert framer.feed(data) == data and framer.error is None and not framer.idle


def test_bodies_stream_without_being_held():
    framer = ResponseFramer(exchange_with([b"GET"]))
    framer.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
    piece = b"x" * 65536
    for _ in range(20):
        assert framer.feed(piece) == piece
        assert framer.held == b""
    chunked = ResponseFramer(exchange_with([b"GET"]))
    chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n")
    for _ in range(16):
        assert chunked.feed(piece) == piece and chunked.held == b""
    assert chunked.feed(b"\r\n0\r\n\r\n") == b"\r\n0\r\n\r\n" and chunked.idle


def test_unchanged_heads_keep_their_bytes_changed_ones_are_rebuilt():
    def hook(head):
        if head.target == b"/change":
            head.set(b"Host", b"b")
        return head
    framer = RequestFramer(hook, Exchange())
    out = framer.feed(b"GET /keep HTTP/1.1\r\nHost:a  \r\nX:  y\r\n\r\n"
                      b"GET /change HTTP/1.1\r\nHost:a\r\nX:  y\r\n\r\n")
    assert out == (b"GET /keep HTTP/1.1\r\nHost:a  \r\nX:  y\r\n\r\n"
                   b"GET /change HTTP/1.1\r\nX: y\r\nHost: b\r\n\r\n")


def test_head_methods():
    framer = RequestFramer(None, Exchange())
    heads = []
    framer.on_head = heads.append
    framer.feed(b"GET / HTTP/1.1\r\nVia: a\r\nvia: b\r\nHost: h\r\n\r\n")
    head = heads[0]
    assert head.headers == [(b"Via", b"a"), (b"via", b"b"), (b"Host", b"h")]
    assert head.get_all(b"VIA") == [b"a", b"b"] and head.get(b"host") == b"h"
    assert head.get(b"nope") is None
    head.append(b"Via", b"c")
    head.delete(b"host")
    head.add(b"X", b"1")
    assert head.serialize() == b"GET / HTTP/1.1\r\nVia: a\r\nvia: b, c\r\nX: 1\r\n\r\n"


def test_pipelined_requests_are_answered_in_order_with_their_notes():
    ex = Exchange()
    count = iter(range(10))

    def note(head):
        head.note = next(count)
        return head
    notes = []
    req = RequestFramer(note, ex)
    resp = ResponseFramer(ex, lambda h: notes.append((h.status, h.note)))
    req.feed(b"GET /0 HTTP/1.1\r\n\r\nHEAD /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert ex.outstanding == 3
    resp.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
              b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc")
    assert notes == [(100, 0), (200, 0), (200, 1), (200, 2)]
    assert ex.outstanding == 0


def test_a_bad_second_response_still_gets_a_reply():
    framer = ResponseFramer(exchange_with([b"GET", b"GET"]))
    assert framer.feed(b"HTTP/1.1 204 No Content\r\n\r\n") == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert framer.feed(b"HTTP/1.1 200 OK\nX: y\n\n") == b""
    assert framer.error.reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_repeated_content_lengths_must_be_the_same_text():
    framer = RequestFramer(None, Exchange())
    framer.feed(b"POST / HTTP/1.1\r\nContent-Length: 010\r\nContent-Length: 10\r\n\r\n")
    assert framer.error.status == 400


def test_filters_for_the_relay():
    from pen.http import filters
    from pen.rewrite import Rewriter
    rw = Rewriter("10.0.0.1", forwarded=True)
    c2s, s2c, ex = filters(rw.on_request, rw.on_response)
    assert c2s.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nearly").endswith(
        b"X-Forwarded-For: 10.0.0.1\r\n\r\n")
    assert s2c.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\nhi") == \
        b"HTTP/1.1 101 Switching Protocols\r\n\r\nhi"
    assert ex.resume and c2s.feed(b"") == b"early" and c2s.framer.tunnel
    assert c2s.first_line == "GET /ws HTTP/1.1"
    c2s, s2c, ex = filters()
    with pytest.raises(HttpRefused) as e:
        c2s.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\nX: y\n\n")
    assert e.value.passed == b"GET /a HTTP/1.1\r\n\r\n"
    assert e.value.error.reply.startswith(b"HTTP/1.1 400 ")
    assert isinstance(e.value, OSError)


def head_of(data):
    heads = []
    RequestFramer(heads.append, Exchange()).feed(data)
    return heads[0]


def test_adding_to_a_head_keeps_the_lines_as_received():
    head = head_of(b"GET / HTTP/1.1\r\nHost:a  \r\nVia:x\r\n\r\n")
    head.add(b"X-A", b"1")
    head.set(b"X-B", b"2")          # absent: added
    head.append(b"X-C", b"3")       # absent: added
    head.delete(b"X-D")             # absent: nothing
    assert head._headers is None    # no list was built
    assert head.serialize() == b"GET / HTTP/1.1\r\nHost:a  \r\nVia:x\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n"


def test_rules_see_headers_other_rules_added():
    head = head_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head.add(b"X-A", b"1")
    head.set(b"x-a", b"2")
    head.append(b"X-A", b"3")
    assert head.get_all(b"X-A") == [b"2, 3"]
    head.add(b"X-B", b"1")
    head.delete(b"X-B")
    assert head.serialize() == b"GET / HTTP/1.1\r\nHost: a\r\nx-a: 2, 3\r\n\r\n"


def test_a_value_that_mentions_a_name_is_not_that_header():
    head = head_of(b"GET / HTTP/1.1\r\nX-Note: via: no\r\n\r\n")
    head.set(b"Via", b"pen")
    assert head.serialize() == b"GET / HTTP/1.1\r\nX-Note: via: no\r\nVia: pen\r\n\r\n"
