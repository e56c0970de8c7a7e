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
