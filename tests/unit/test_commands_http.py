"""The HTTP-mode commands of SPEC §10.3: header rules, per-server rules,
sticky_cookie and server cookies; `write` keeps them in order."""

import pytest

from pen.addr import parse_listen
from pen.commands import execute
from pen.config import dump
from pen.rewrite import Rule, RuleError, http_mode, rewriter_for, rules_for, server_cookie
from pen.servers import parse_backend
from pen.state import Settings, State

NOW, WALL = 1000.0, 1_700_000_000.0


def make_state():
    st = Settings(listen=parse_listen("127.0.0.1:8000"), control="127.0.0.1:9000")
    return State(st, [parse_backend("127.0.0.1:9001", 8000, 0),
                      parse_backend("127.0.0.1:9002", 8000, 1)])


def run(state, line):
    return execute(state, line, now=NOW, wall=WALL)[0]


def test_header_adds_lists_and_removes_rules_in_order():
    state = make_state()
    assert run(state, 'header set server "X-Real-IP: %r"') == []
    assert run(state, 'header add client "Via: pen %v"') == []
    assert run(state, 'header delete client "Server"') == []
    assert run(state, "header") == ['0 set server "X-Real-IP: %r"',
                                    '1 add client "Via: pen %v"',
                                    '2 delete client "Server"']
    assert run(state, "no header 1") == []
    assert run(state, "header") == ['0 set server "X-Real-IP: %r"', '1 delete client "Server"']
    assert run(state, "no header") == [] and run(state, "header") == []
    assert state.settings.header_rules == ()


@pytest.mark.parametrize("line,message", [
    ('header set server "X: a\\"', "unterminated quote"),
    ('header insert server "X: a"', "is not one of add, append, set, delete"),
    ('header set both "X: a"', "is not server or client"),
    ('header set server "X a"', "has no colon"),
    ("header set server", "expected add|append|set|delete"),
    ('header delete server "X" extra', "expected add|append|set|delete"),
    ("no header 5", "rule 5 out of range (0-0)"),
    ("no header x", "rule must be a whole number"),
    ('server 5 header set server "X: a"', "index 5 out of range"),
    ('server 0 header set server "Bad Name: a"', "server 0 header:"),
    ("sticky_cookie a;b", "not a valid cookie name"),
    ("server 0 cookie a;b", "not a valid cookie value"),
    ("server 0 cookie a b", "unexpected 'b'"),
    ("server 0 no header 0", "server 0 has no header rules"),
    ("server 5 no header", "index 5 out of range"),
    ("server 0 no header 0 1", "unexpected '1'"),
    ("server 0 no heder", "expected 'no trafficlog' or 'no header [M]'"),
])
def test_bad_lines_change_nothing(line, message):
    state = make_state()
    run(state, 'header set server "X-Keep: 1"')
    before = dump(state)
    reply = run(state, line)
    assert len(reply) == 1 and message in reply[0], reply
    assert dump(state) == before


def test_no_header_n_without_rules():
    assert "there are no header rules" in run(make_state(), "no header 0")[0]


def test_a_value_with_cr_lf_is_refused():
    state = make_state()
    # A command line ends at CR or LF (as pen's), leaving the quote open.
    assert "unterminated quote" in run(state, 'header add client "X: a\rSet-Cookie: x=1"')[0]
    assert state.settings.header_rules == ()
    with pytest.raises(RuleError, match="CR, LF or NUL"):
        Rule("add", "client", "X: a\r\nSet-Cookie: x=1")


def test_per_server_rules_and_cookies():
    state = make_state()
    run(state, 'header set server "X-Global: 1"')
    assert run(state, 'server 1 header set server "X-Which: one"') == []
    assert run(state, 'server 1 header add client "X-Served-By: one"') == []
    assert run(state, "server 1 header") == ['0 set server "X-Which: one"',
                                             '1 add client "X-Served-By: one"']
    assert run(state, "server 0 header") == []
    assert run(state, "server 0 cookie") == ["s0"]
    assert run(state, "server 1 cookie blue") == [] and run(state, "server 1 cookie") == ["blue"]
    server_rules, client_rules = rules_for(state.settings, 1)
    assert [r.text for r in server_rules] == ["X-Global: 1", "X-Which: one"]
    assert [r.text for r in client_rules] == ["X-Served-By: one"]
    assert [r.text for r in rules_for(state.settings, 0)[0]] == ["X-Global: 1"]
    assert server_cookie(state.settings, 1) == "blue" and server_cookie(state.settings, 0) == "s0"


def test_server_no_header_removes_one_rule_or_all_of_that_server():
    state = make_state()
    run(state, 'header set server "X-Global: 1"')
    for line in ('server 1 header set server "X-A: 1"', 'server 1 header set server "X-B: 2"',
                 'server 1 header add client "X-C: 3"', 'server 0 header set server "X-D: 4"'):
        assert run(state, line) == [], line
    assert "rule 3 out of range (0-2)" in run(state, "server 1 no header 3")[0]
    assert run(state, "server 1 no header 1") == []
    assert run(state, "server 1 header") == ['0 set server "X-A: 1"', '1 add client "X-C: 3"']
    lines = dump(state)
    assert [l for l in lines if "header" in l] == [
        'header set server "X-Global: 1"', 'server 0 header set server "X-D: 4"',
        'server 1 header set server "X-A: 1"', 'server 1 header add client "X-C: 3"']
    again = make_state()
    for line in lines:
        run(again, line)
    assert again.settings.server_header_rules == state.settings.server_header_rules
    assert run(state, "server 1 no header") == [] and run(state, "server 1 header") == []
    assert run(state, "server 1 no header") == []          # none left: nothing to do
    assert 1 not in state.settings.server_header_rules
    assert run(state, "header") == ['0 set server "X-Global: 1"']      # the others stay
    assert run(state, "server 0 header") == ['0 set server "X-D: 4"']
    assert [l for l in dump(state) if "header" in l] == [
        'header set server "X-Global: 1"', 'server 0 header set server "X-D: 4"']


def test_sticky_cookie_and_http_mode():
    state = make_state()
    assert not http_mode(state.settings)
    assert run(state, "sticky_cookie SRV") == [] and run(state, "sticky_cookie") == ["SRV"]
    assert http_mode(state.settings)
    assert run(state, "no sticky_cookie") == [] and run(state, "sticky_cookie") == []
    assert not http_mode(state.settings)
    run(state, 'server 0 header delete client "Server"')
    assert http_mode(state.settings)


def test_other_server_lines_still_work():
    state = make_state()
    assert run(state, "server 1 weight 3") == []
    assert state.servers[1].weight == 3


def test_write_keeps_the_rules_in_order_and_reads_back():
    state = make_state()
    for line in ('header set server "X-Real-IP: %r"', 'header append server "Via: pen"',
                 'header add client "X-Q: say \\"hi\\" \\\\o/"',
                 'server 1 header delete server "Cookie"', "sticky_cookie SRV",
                 "server 1 cookie blue"):
        assert run(state, line) == [], line
    lines = dump(state)
    ours = [l for l in lines if "header" in l or "cookie" in l]
    assert ours == ['header set server "X-Real-IP: %r"', 'header append server "Via: pen"',
                    'header add client "X-Q: say \\"hi\\" \\\\o/"',
                    'server 1 header delete server "Cookie"', "sticky_cookie SRV",
                    "server 1 cookie blue"]
    again = make_state()
    for line in lines:
        run(again, line)
    for key in ("header_rules", "server_header_rules", "sticky_cookie", "server_cookies"):
        assert getattr(again.settings, key) == getattr(state.settings, key)
    assert state.settings.header_rules[2].text == 'X-Q: say "hi" \\o/'


def test_rewriter_for_a_connection():
    state = make_state()
    run(state, "http")
    run(state, 'server 1 header set server "X-Which: one"')
    run(state, "sticky_cookie SRV")
    rw = rewriter_for(state.settings, 1, "10.0.0.1", tls=True)
    assert [r.text for r in rw.server_rules] == ["X-Forwarded-Proto: https",
                                                 "X-Forwarded-For: %r", "X-Which: one"]
    assert rw.cookie == (b"SRV", b"s1")
