"""Header rules, value expansion and sticky-cookie helpers (SPEC §10.3)."""

import re

import pytest

from pen import VERSION
from pen.errors import CommandError
from pen.http import Exchange, RequestFramer, ResponseFramer
from pen.rewrite import (Context, Rewriter, Rule, RuleError, check_cookie_name,
                         check_cookie_value, find_cookie, forwarded_rules, parse_rule,
                         set_cookie)

CTX = Context("10.0.0.7")


def request(data=b"GET / HTTP/1.1\r\nHost: a\r\nVia: x\r\nVia: y\r\nCookie: a=1\r\n\r\n"):
    heads = []
    RequestFramer(lambda h: heads.append(h) or h, Exchange()).feed(data)
    return heads[0]


def apply(rule, head=None):
    head = head or request()
    Rule(*rule).apply(head, CTX)
    return head.serialize().split(b"\r\n")[1:-2]


def test_add_always_adds():
    assert apply(("add", "server", "Via: pen")) == \
        [b"Host: a", b"Via: x", b"Via: y", b"Cookie: a=1", b"Via: pen"]


def test_append_adds_to_the_last_of_that_name_or_adds():
    assert apply(("append", "server", "via: pen")) == \
        [b"Host: a", b"Via: x", b"Via: y, pen", b"Cookie: a=1"]
    assert apply(("append", "server", "X-New: 1"))[-1] == b"X-New: 1"


def test_append_to_cookie_uses_a_semicolon():
    assert apply(("append", "server", "Cookie: b=2"))[-1] == b"Cookie: a=1; b=2"


def test_set_replaces_all_of_that_name_or_adds():
    assert apply(("set", "server", "VIA: only")) == [b"Host: a", b"Cookie: a=1", b"VIA: only"]
    assert apply(("set", "server", "X-Real-IP: %r"))[-1] == b"X-Real-IP: 10.0.0.7"


def test_delete_removes_every_one_and_takes_just_the_name():
    assert apply(("delete", "server", "via")) == [b"Host: a", b"Cookie: a=1"]
    assert apply(("delete", "server", "X-Absent")) == [b"Host: a", b"Via: x", b"Via: y",
                                                        b"Cookie: a=1"]


def test_rules_on_a_response():
    heads = []
    ex = Exchange()
    ex.seen = True
    ex.queue.append((b"GET", False, None))
    ResponseFramer(ex, lambda h: heads.append(h) or h).feed(
        b"HTTP/1.1 200 OK\r\nServer: Apache\r\nContent-Length: 0\r\n\r\n")
    Rule("set", "client", "Server: WWW-Server").apply(heads[0], CTX)
    assert heads[0].serialize() == \
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: WWW-Server\r\n\r\n"


@pytest.mark.parametrize("template,expected", [
    ("%r", b"10.0.0.7"), ("%v", VERSION.encode()), ("100%%", b"100%"), ("%x%y", b"xy"),
    ("a%", b"a%"), ("plain", b"plain"), ("[%r] %%r", b"[10.0.0.7] %r"), ("", b"")])
def test_value_expansion(template, expected):
    assert Rule("add", "server", "X: " + template).value(CTX) == expected


def test_time_expansions():
    gmt = Rule("add", "client", "X: %T").value(CTX)
    local = Rule("add", "client", "X: %t").value(CTX)
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", gmt)
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", local)


@pytest.mark.parametrize("words,message", [
    (("add", "server", "X: a\r\nSet-Cookie: evil=1"), "contains CR, LF or NUL"),
    (("set", "client", "X: a\nb"), "contains CR, LF or NUL"),
    (("add", "server", "X: a\x00"), "contains CR, LF or NUL"),
    (("add", "server", "X: a\x07"), "control characters"),
    (("add", "server", "NoColon"), "has no colon"),
    (("add", "server", "Bad Name: v"), "not a valid header name"),
    (("add", "server", ": v"), "not a valid header name"),
    (("delete", "server", "X: v"), "not a valid header name"),
    (("insert", "server", "X: v"), "is not one of add, append, set, delete"),
    (("add", "both", "X: v"), "is not server or client"),
    (("add", "server", "X: \u20ac"), "is not Latin-1"),
])
def test_bad_rules_are_refused_with_one_line(words, message):
    with pytest.raises(RuleError) as e:
        Rule(*words)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, CommandError)


def test_parse_rule_counts_words():
    assert parse_rule(["set", "server", "X-Real-IP: %r"]) == Rule("set", "server", "X-Real-IP:%r")
    with pytest.raises(RuleError, match="3 words|got 2 words"):
        parse_rule(["set", "server"])


def test_rule_line_is_what_header_lists():
    assert Rule("set", "server", "X-Real-IP:   %r ").line() == 'set server "X-Real-IP: %r"'
    assert Rule("delete", "client", " Server ").line() == 'delete client "Server"'


def test_forwarded_rules():
    head = request(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
    for rule in forwarded_rules("http"):
        rule.apply(head, CTX)
    assert head.serialize() == (b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.7\r\n"
                                b"X-Forwarded-Proto: http\r\n\r\n")


@pytest.mark.parametrize("header,value", [
    (b"Cookie: a=1; SRV=s1; b=2", b"s1"), (b"Cookie: SRV=s2", b"s2"),
    (b"Cookie: xSRV=s1", None), (b"Cookie: SRV", None), (b'Cookie: SRV="s3"', b"s3"),
    (b"Cookie: a=1\r\nCookie: SRV=s4", b"s4"), (b"X-Cookie: SRV=s1", None)])
def test_find_cookie(header, value):
    assert find_cookie(request(b"GET / HTTP/1.1\r\n" + header + b"\r\n\r\n"), "SRV") == value


def test_set_cookie():
    assert set_cookie("SRV", "s0") == (b"Set-Cookie", b"SRV=s0; Path=/; HttpOnly")


def test_cookie_checks():
    assert check_cookie_name("SRV") == "SRV" and check_cookie_value("s0") == "s0"
    for bad in ("a b", "a;b", "", "a=b"):
        with pytest.raises(RuleError):
            check_cookie_name(bad)
    for bad in ("a b", "a;b", "", 'q"', "a,b"):
        with pytest.raises(RuleError):
            check_cookie_value(bad)


def connection(rewriter):
    ex = Exchange()
    return RequestFramer(rewriter.on_request, ex), ResponseFramer(ex, rewriter.on_response)


def test_rewriter_sticky_cookie_is_set_only_for_requests_without_it():
    rw = Rewriter("10.0.0.7", cookie=("SRV", "s1"))
    req, resp = connection(rw)
    req.feed(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nCookie: SRV=s1\r\n\r\n"
             b"GET /3 HTTP/1.1\r\nCookie: SRV=s0\r\n\r\n")
    out = resp.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 3)
    assert out.count(b"Set-Cookie: SRV=s1; Path=/; HttpOnly\r\n") == 2
    first, second, third = out.split(b"HTTP/1.1 200 OK")[1:]
    assert b"Set-Cookie" in first and b"Set-Cookie" not in second and b"Set-Cookie" in third
    assert b"Set-Cookie" not in out.split(b"HTTP/1.1 200")[0]   # not on the 100


def test_rewriter_rules_in_order_forwarded_first():
    rw = Rewriter("10.0.0.7", server_rules=[Rule("set", "server", "X-Real-IP: %r"),
                                            Rule("delete", "server", "X-Forwarded-Proto")],
                  client_rules=[Rule("add", "client", "Via: pen")], forwarded=True,
                  proto="https")
    req, resp = connection(rw)
    assert req.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == \
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\n\r\n"
    assert resp.feed(b"HTTP/1.1 204 No Content\r\n\r\n") == \
        b"HTTP/1.1 204 No Content\r\nVia: pen\r\n\r\n"


def test_rewriter_without_rules_keeps_bytes():
    req, resp = connection(Rewriter("10.0.0.7"))
    data = b"GET / HTTP/1.1\r\nHost:   a\r\n\r\n"
    assert req.feed(data) == data


class FakeSettings:
    def __init__(self, **kw):
        self.sticky_cookie = kw.get("sticky_cookie")
        self.server_cookies = kw.get("server_cookies", {})


def test_server_for_cookie():
    from pen.rewrite import server_for_cookie
    st = FakeSettings(sticky_cookie="SRV", server_cookies={2: "blue"})
    head = request(b"GET / HTTP/1.1\r\nCookie: SRV=s1\r\n\r\n")
    assert server_for_cookie(st, head, 3) == 1
    assert server_for_cookie(st, head, 1) is None            # no server 1
    assert server_for_cookie(st, request(b"GET / HTTP/1.1\r\nCookie: SRV=blue\r\n\r\n"), 3) == 2
    assert server_for_cookie(st, request(b"GET / HTTP/1.1\r\nCookie: SRV=s2\r\n\r\n"), 3) is None
    assert server_for_cookie(st, request(), 3) is None
    assert server_for_cookie(FakeSettings(), head, 3) is None
