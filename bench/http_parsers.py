"""Per-request cost of HTTP/1 request parsers on a kept-alive stream of
small requests, one request per feed (what `ab -k` sends), to choose the
parser behind pen/http.py.

    python bench/http_parsers.py [N]

Prints microseconds per request, best of 5 runs, for:
  pen.http      RequestFramer (the hand-written head parser we ship), no rule
  pen.http+rule the same with one `header set server` rule (head rebuilt)
  pen -H        XForwardedFor (X-Forwarded-Proto and -For, head rebuilt)
  httptools     llhttp with callbacks collecting method, URL and headers
  httptools+ser the same, then the head serialized with one header set
  h11 reader    h11's head reader alone (internal API, no state machine)
  h11           h11.Connection: receive, events, a minimal reply, next cycle
"""

import sys
import time

import h11
import httptools
from h11._readers import maybe_read_from_IDLE_client
from h11._receivebuffer import ReceiveBuffer

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
from pen.http import RequestFramer, XForwardedFor  # noqa: E402
from pen.rewrite import Rewriter, Rule  # noqa: E402

REQUEST = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
RULE = Rule("set", "server", "X-Real-IP: %r")


def bench_pen(n):
    framer = RequestFramer()
    feed = framer.feed
    for _ in range(n):
        feed(REQUEST)
    assert framer.error is None


def bench_pen_rule(n):
    framer = RequestFramer(Rewriter("10.1.2.3", [RULE]).on_request)
    feed = framer.feed
    for _ in range(n):
        out = feed(REQUEST)
    assert b"X-Real-IP: 10.1.2.3\r\n" in out


def bench_pen_xff(n):
    feed = XForwardedFor("10.1.2.3").feed
    for _ in range(n):
        out = feed(REQUEST)
    assert b"X-Forwarded-For: 10.1.2.3\r\n" in out


class Collect:
    """httptools callbacks gathering what a rule needs."""

    def __init__(self):
        self.url = b""
        self.headers = []
        self.done = 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append([name, value])

    def on_message_complete(self):
        self.done += 1


def bench_httptools(n, serialize=False):
    proto = Collect()
    parser = httptools.HttpRequestParser(proto)
    for _ in range(n):
        proto.url = b""
        proto.headers = []
        parser.feed_data(REQUEST)
        if serialize:
            headers = [h for h in proto.headers if h[0].lower() != b"x-real-ip"]
            headers.append([b"X-Real-IP", b"10.1.2.3"])
            parts = [parser.get_method(), b" ", proto.url, b" HTTP/1.1\r\n"]
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            b"".join(parts)
    assert proto.done == n


def bench_httptools_ser(n):
    bench_httptools(n, serialize=True)


def bench_h11_reader(n):
    buf = ReceiveBuffer()
    for _ in range(n):
        buf += REQUEST
        event = maybe_read_from_IDLE_client(buf)
        assert event is not None


def bench_h11(n):
    conn = h11.Connection(h11.SERVER)
    reply = h11.Response(status_code=200, headers=[("Content-Length", "0")])
    for _ in range(n):
        conn.receive_data(REQUEST)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or type(event) is h11.EndOfMessage:
                break
        conn.send(reply)
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


CASES = [("pen.http", bench_pen), ("pen.http+rule", bench_pen_rule),
         ("pen -H", bench_pen_xff), ("httptools", bench_httptools),
         ("httptools+ser", bench_httptools_ser), ("h11 reader", bench_h11_reader),
         ("h11", bench_h11)]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print("%d requests of %d bytes, one per feed, best of 5" % (n, len(REQUEST)))
    for name, fn in CASES:
        best = None
        for _ in range(5):
            t0 = time.perf_counter()
            fn(n)
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None or elapsed < best else best
        print("%-14s %6.2f us/request" % (name, best / n * 1e6))


if __name__ == "__main__":
    main()
