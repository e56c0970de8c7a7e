"""The framers' fast paths (a whole head in one read) against the general
way (the same bytes one at a time): the same bytes out, the same answers
queued, the same refusals, with and without rules -- hostile heads
included, so that none slips through the fast path."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pen import http, httprelay
from pen.http import TUNNEL
from pen.rewrite import Rewriter, Rule

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

NAMES = ["Host", "Accept", "X-Real-IP", "x-real-ip", "Via", "Cookie", "X-Forwarded-For"]
HOSTILE = [b"Content-Length : 5", b"Content-Length: 5, 6", b"X: a\nY: b", b"X: a\rb",
           b" folded", b"\tfolded", b"Bad Name: x", b"X: a\x00b", b"Upgrade: websocket",
           b"Transfer-Encoding: chunked", b"Content-Length: 2", b"Content-Length: 00",
           b"Transfer-Encoding: gzip"]
RULES = [Rule("set", "server", "X-Real-IP: %r"), Rule("append", "server", "Via: pen"),
         Rule("add", "server", "X-Real-IP: again"), Rule("delete", "server", "Accept"),
         Rule("set", "server", "Date: %T"), Rule("set", "client", "Server: pen"),
         Rule("append", "client", "Via: pen %v"), Rule("delete", "client", "Etag"),
         Rule("add", "client", "X-Real-IP: %r")]

good_lines = st.tuples(st.sampled_from(NAMES), st.sampled_from(["a", "b c", "1.2.3.4", ""])).map(
    lambda nv: ("%s: %s" % nv).encode())
# Mostly good heads, so that the fast paths get their turn.
header_lines = st.lists(st.one_of(good_lines, good_lines, good_lines, good_lines,
                                  st.sampled_from(HOSTILE)), max_size=4)


@st.composite
def requests(draw):
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"CONNECT", b"get"]))
    version = draw(st.sampled_from([b"1.1", b"1.0", b"1.2"]))
    lines = draw(header_lines)
    return b"%s /x HTTP/%s\r\n" % (method, version) + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n"


@st.composite
def responses(draw):
    status = draw(st.sampled_from([200, 200, 404, 204, 304, 100, 101]))
    lines = draw(header_lines)
    body = draw(st.binary(max_size=8))
    length = draw(st.sampled_from([len(body), len(body) + 3, max(len(body) - 1, 0), None]))
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"HTTP/1.1 %d X\r\n" % status + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n" + body


def run(pieces, rules, asked=()):
    """Feed `pieces` to one side of a fresh pair: the request side, or with
    `asked` (methods) the response side after those requests; returns what came out, what is queued,
    the state and whether it refused."""
    server_rules = [r for r in rules if r.direction == "server"]
    client_rules = [r for r in rules if r.direction == "client"]
    pair = httprelay.Pair(None, Rewriter("10.0.0.1", server_rules, client_rules))
    side = pair.response if asked else pair.request
    for method in asked:
        pair.request.framer.feed(method + b" / HTTP/1.1\r\n\r\n")
    out, refused = [], False
    for piece in pieces:
        try:
            out.append(side.framer.feed(piece))
        except Exception as e:        # noqa: BLE001 -- compared, not hidden
            out.append(repr(e))
        if side.framer.error is not None:
            refused = side.framer.error.status
            break
        if side.framer.state == TUNNEL:
            break
    return b"".join(o for o in out if isinstance(o, bytes)), list(pair.exchange.queue), \
        side.framer.state, refused


def bytewise(messages):
    return [bytes([c]) for m in messages for c in m]


@SETTINGS
@given(st.lists(requests(), min_size=1, max_size=4),
       st.lists(st.sampled_from(RULES), max_size=3))
def test_requests_fast_and_bytewise_agree(messages, rules):
    first = [b"GET /first HTTP/1.1\r\n\r\n"]     # the first head goes the general way
    assert run(first + messages, rules) == run(bytewise(first + messages), rules)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([b"GET", b"HEAD"]), responses()), min_size=1,
                max_size=4),
       st.lists(st.sampled_from(RULES), max_size=3))
def test_responses_fast_and_bytewise_agree(exchanges, rules):
    # the first response goes the general way
    exchanges = [(b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")] + exchanges
    asked = [method for method, _ in exchanges]
    messages = [response for _, response in exchanges]
    assert run(messages, rules, asked) == run(bytewise(messages), rules, asked)


def test_fast_paths_are_taken(monkeypatch):
    """The usual reads do go the fast way: a head with the rule's line
    appended, a response with its own."""
    pair = httprelay.Pair(None, Rewriter("10.0.0.1", [RULES[0]], [RULES[5]]))
    req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    pair.request.feed(req)                      # the first ones: the general way
    pair.response.feed(resp)

    def general(self, data):
        raise AssertionError("went the general way")
    monkeypatch.setattr(http.Framer, "_feed", general)
    assert pair.request.feed(req) == req[:-2] + b"X-Real-IP: 10.0.0.1\r\n\r\n"
    pair.request.feed(req)
    for _ in range(2):
        assert pair.response.feed(resp) == resp[:-4] + b"Server: pen\r\n\r\nok"
    assert not pair.exchange.queue
