"""pen/importer: the Crossroads reader, the mapping to pen commands, the
balance command line, and pen-import's exit codes (SPEC §10.6)."""

import pytest

from pen import importer
from pen.commands import split
from pen.importer import balance, crossroads
from pen.importer.common import IGNORED, NOTE, UNSUPPORTED, ImportSyntaxError, quote, word
from pen.importer.crossroads_parse import parse


def one(text):
    """The single service of `text`: (config lines without comments,
    command line, [(where, kind, text)])."""
    (svc,) = crossroads.convert(text, "x.conf")
    lines = [ln for ln in svc.lines if not ln.startswith("#")]
    return lines, svc.command, [(f.where, f.kind, f.text) for f in svc.findings]


def service(body, backends="backend b { server 10.0.0.1:80; }"):
    return one(f"service s {{ port 8000; {body} {backends} }}")


def syntax_error(text):
    with pytest.raises(ImportSyntaxError) as info:
        crossroads.convert(text, "x.conf")
    return str(info.value)


BASE = ["roundrobin"]
SERVER0 = "server 0 address 10.0.0.1 port 80 max 0 hard 0 weight 1"


# --- the reader ------------------------------------------------------------------------


def test_three_comment_styles_and_quoted_semicolons():
    (block,) = parse("""\
/* C comment
   over lines */ service www { // C++ comment
    # shell comment
    onsuccess "echo a; echo b";   # the quotes protect the ;
    onfailure wget -q http://h/x?a=1;
    addclientheader 'X-A: 1; 2';
    backend b { server h:1; /* inline */ port 2; }
}
""")
    assert block.name == "www" and block.line == 2 and block.col == 18
    stmts = [(s.keyword, s.arg, s.where) for s in block.statements]
    assert stmts == [("onsuccess", "echo a; echo b", "4:5"),
                     ("onfailure", "wget -q http://h/x?a=1", "5:5"),
                     ("addclientheader", "X-A: 1; 2", "6:5")]
    (backend,) = block.backends
    assert [(s.keyword, s.arg) for s in backend.statements] == [("server", "h:1"),
                                                                ("port", "2")]


def test_inner_quotes_of_a_command_are_kept():
    (block,) = parse("service a { onsuccess echo 'up' | mail root; }")
    assert block.statements[0].arg == "echo 'up' | mail root"


def test_argument_position():
    (block,) = parse("service a {\n   port   80;\n}")
    stmt = block.statements[0]
    assert (stmt.where, stmt.arg_where) == ("2:4", "2:11")


@pytest.mark.parametrize("text, message", [
    ("service a {\n  port 80\n  backend b { server h:1; }\n}",
     "2:10: port: missing ';' at end of line"),
    ("service a { port 80; backend b { server h:1 } }", "1:45: server: missing ';' before '}'"),
    ("service a { onsuccess \"echo;\n}", "1:23: onsuccess: unterminated \" quote"),
    ("service a { /* never closed\n port 1; }", "1:13: unterminated /* comment"),
    ("service a {\n port 1;\n", "1:1: service a: missing '}'"),
    ("port 80;", "1:1: expected 'service NAME {', found 'port'"),
    ("service 9a { }", "1:9: expected a service name"),
    ("service a port 1;", "1:11: expected '{' after service a"),
    ("service a { port 1; backend b { backend c { } } }", "1:33: backend inside a backend"),
    ("service a { port 1; backend b { server h:1; } }\nservice a { }",
     "2:1: service 'a' defined twice (first at line 1)"),
    ("service a { backend b { server h:1; } backend b { server h:2; } }",
     "1:39: backend 'b' defined twice"),
    ("service a { port 80 ", "1:18: port: missing ';' at end of file"),
])
def test_syntax_errors_name_line_and_column(text, message):
    assert syntax_error(text).startswith(message)


@pytest.mark.parametrize("statement, message", [
    ("port x;", "1:18: port: expected a port number 1-65535, got 'x'"),
    ("port 70000;", "1:18: port: expected a port number"),
    ("verbosity maybe;", "1:23: verbosity: expected true, yes, on, false, no, off"),
    ("dispatchmode fastest;", "1:26: dispatchmode: expected roundrobin, random"),
    ("dispatchmode byorder over 3;", "1:26: dispatchmode: unexpected 'over 3'"),
    ("dispatchmode bysize over x;", "1:26: dispatchmode: unexpected 'over x'"),
    ("type ftp;", "1:18: type: expected any, http, stickyhttp"),
    ("bindto localhost;", "1:20: bindto: expected a numeric IP address or any"),
    ("maxconnections -1;", "1:28: maxconnections: expected a non-negative whole number"),
    ("frobnicate 1;", "1:13: unknown statement 'frobnicate' in a service"),
    ("decay 10;", "1:13: unknown statement 'decay' in a service (decay belongs in a backend)"),
    ("addclientheader NoColon;", "1:29: addclientheader: expected \"Name: value\""),
])
def test_bad_arguments_are_syntax_errors_at_the_argument(statement, message):
    text = "service a { " + statement + " port 1; backend b { server h:1; } }"
    assert syntax_error(text).startswith(message)


@pytest.mark.parametrize("backend, message", [
    ("backend b { decay 101; }", "decay: 101 is out of range (expected 0-100)"),
    ("backend b { dispatchmode random; }", "unknown statement 'dispatchmode' in a backend "
                                           "(dispatchmode belongs in a service)"),
    ("backend b { port 80; }", "backend b: no server statement"),
    ("backend b { server h; }", "backend b: no port"),
    ("backend b { server h:1; stickycookie Plain; }", "stickycookie: expected NAME=VALUE"),
])
def test_bad_backends(backend, message):
    assert message in syntax_error("service a { port 1; " + backend + " }")


def test_service_needs_port_and_backend():
    assert "service a: no port statement" in syntax_error(
        "service a { backend b { server h:1; } }")
    assert "service a: no backend" in syntax_error("service a { port 1; }")


# --- the mapping -------------------------------------------------------------------------


def test_minimal_service_and_command_line():
    (svc,) = crossroads.convert("service www { port 80; backend one { server 10.0.0.1:80; } }",
                                "cr.conf", "/etc/pen")
    assert svc.filename == "www.cfg"
    assert svc.command == "pen -F /etc/pen/www.cfg 80"
    assert svc.lines == [
        "# Crossroads service www (cr.conf line 1), imported by pen-import",
        "# run: pen -F /etc/pen/www.cfg 80",
        "# Crossroads does not remember clients: plain round robin, no tracking",
        "roundrobin",
        "# backend one (line 1)",
        "server 0 address 10.0.0.1 port 80 max 0 hard 0 weight 1"]
    assert svc.findings == []


@pytest.mark.parametrize("mode, line", [
    ("roundrobin", None), ("random", "random"), ("byconnections", "leastconn"),
    ("byorder", "byorder"), ("bysize", "bysize"), ("bysize over 10", "bysize over 10"),
    ("byduration", "byduration"), ("byduration over 3", "byduration over 3"),
])
def test_dispatch_modes(mode, line):
    lines, _, _ = service(f"dispatchmode {mode};")
    assert lines == BASE + ([line] if line else []) + [SERVER0]


def test_service_settings():
    lines, command, findings = service(
        "revivinginterval 15; maxconnections 300; connectiontimeout 600; backlog 5; "
        "verbosity on; bindto 127.0.0.1; type http;")
    assert lines == ["roundrobin", "debug 1", "http", "check_interval 15", "conn_max 300", "idle_timeout 600", SERVER0]
    assert command == "pen -q 5 -F s.cfg 127.0.0.1:8000"
    assert findings == []


def test_defaults_write_nothing():
    lines, command, _ = service("revivinginterval 0; maxconnections 0; connectiontimeout 0; "
                                "backlog 0; verbose off; bindto any; type any;")
    assert lines == BASE + [SERVER0]
    assert command == "pen -F s.cfg 8000"


def test_ipv6_bind():
    _, command, _ = service("bindto ::1;")
    assert command == "pen -F s.cfg '[::1]:8000'"


def test_backend_settings():
    lines, _, _ = service("", "backend b { server web.example:81; maxconnections 10; "
                          "decay 10; trafficlog /tmp/b 3.log; }")
    assert lines == BASE + ["server 0 address web.example port 81 max 10 hard 10 weight 1",
                            "server 0 decay 10", 'server 0 trafficlog "/tmp/b 3.log"']


def test_server_and_port_statements():
    lines, _, _ = service("", "backend b { port 9000; server 10.0.0.2; } "
                              "backend c { server [::1]:9001; }")
    assert lines[1:] == ["server 0 address 10.0.0.2 port 9000 max 0 hard 0 weight 1",
                         "server 1 address ::1 port 9001 max 0 hard 0 weight 1"]


def test_weights_are_inverted():
    lines, _, _ = service("", "backend a { server h:1; } backend b { server h:2; weight 2; } "
                              "backend c { server h:3; weight 4; }")
    assert [ln.split()[-1] for ln in lines if ln.startswith("server")] == ["4", "2", "1"]
    lines, _, _ = service("", "backend a { server h:1; weight 2; } "
                              "backend b { server h:2; weight 3; }")
    assert [ln.split()[-1] for ln in lines if ln.startswith("server")] == ["3", "2"]


def test_weights_rounded_when_their_lcm_is_huge():
    backends = " ".join(f"backend b{w} {{ server h:{w}; weight {w}; }}"
                        for w in (7, 11, 13, 17))
    lines, _, findings = service("", backends)
    assert [ln.split()[-1] for ln in lines if ln.startswith("server")] == ["2", "2", "1", "1"]
    assert findings[0][1] == NOTE and "least common multiple 17017" in findings[0][2]


def test_weight_zero_is_unsupported():
    _, _, findings = service("", "backend a { server h:1; weight 0; } "
                                 "backend b { server h:2; weight 2; }")
    assert findings[0][:2] == ("1:49", UNSUPPORTED)


def test_hooks_are_quoted_for_pen():
    lines, _, _ = service('onfailure logger "pen down";',
                          'backend b { server 10.0.0.1:80; onsuccess echo \\ok; }')
    assert lines == BASE + ['on_failure "logger \\"pen down\\""', SERVER0,
                            'server 0 on_success "echo \\\\ok"']
    # pen's own reader gets the command back
    assert split(lines[1]) == ["on_failure", 'logger "pen down"']
    assert split(lines[3])[-1] == "echo \\ok"


@pytest.mark.parametrize("directive, line", [
    ("addclientheader", 'header add client "X-By: Crossroads"'),
    ("setclientheader", 'header set client "X-By: Crossroads"'),
    ("appendclientheader", 'header append client "X-By: Crossroads"'),
    ("addserverheader", 'header add server "X-By: Crossroads"'),
    ("setserverheader", 'header set server "X-By: Crossroads"'),
    ("appendserverheader", 'header append server "X-By: Crossroads"'),
])
def test_header_directives(directive, line):
    lines, _, _ = service("", f'backend b {{ server 10.0.0.1:80; '
                              f'{directive} "X-By: Crossroads"; }}')
    assert lines == BASE + [SERVER0, f"server 0 {line}"]
    lines, _, _ = service(f"{directive} X-By:Crossroads;")
    assert lines == BASE + [line, SERVER0]


def test_header_values_keep_their_format_directives():
    lines, _, _ = service("", 'backend b { server 10.0.0.1:80; setserverheader "X-Real-IP: %r"; '
                              'setclientheader "Connection: close"; }')
    assert lines[-2:] == ['server 0 header set server "X-Real-IP: %r"',
                          'server 0 header set client "Connection: close"']


def test_sticky_cookie_and_its_set_cookie_header():
    lines, _, findings = service("type stickyhttp;", """
        backend one { server 10.0.0.1:80; stickycookie XRID=100;
                      addclientheader "Set-Cookie: XRID=100; Path=/"; }
        backend two { server 10.0.0.2:80; stickycookie XRID=101;
                      addclientheader "Set-Cookie: Other=1"; }""")
    assert lines == BASE + ["http", "sticky_cookie XRID",
                            "server 0 address 10.0.0.1 port 80 max 0 hard 0 weight 1",
                            "server 0 cookie 100",
                            "server 1 address 10.0.0.2 port 80 max 0 hard 0 weight 1",
                            "server 1 cookie 101",
                            'server 1 header add client "Set-Cookie: Other=1"']
    assert [(w, k) for w, k, _ in findings] == [("1:24", NOTE), ("3:23", NOTE)]
    assert "type stickyhttp is read as type http" in findings[0][2]
    assert "sticky_cookie sets XRID=100 itself" in findings[1][2]


def test_two_cookie_names_are_unsupported():
    lines, _, findings = service("", "backend a { server h:1; stickycookie A=1; } "
                                     "backend b { server h:2; stickycookie B=2; }")
    assert "sticky_cookie A" in lines and "server 0 cookie 1" in lines
    assert not any("cookie 2" in ln for ln in lines)
    assert findings == [("1:93", UNSUPPORTED, "stickycookie B=...: pen has one sticky cookie "
                         "name per pen, already A (line 1); this server gets none")]


def test_throughputlog():
    lines, _, findings = service("", "backend a { server h:1; throughputlog /tmp/t; } "
                                     "backend b { server h:2; throughputlog /tmp/t; } "
                                     "backend c { server h:3; throughputlog /tmp/u; }")
    assert lines[1] == "throughputlog /tmp/t"
    assert [k for _, k, _ in findings] == [NOTE, UNSUPPORTED]
    assert findings[1][0] == "1:145" and "already /tmp/t" in findings[1][2]


def test_backend_verbosity_is_a_note_once():
    lines, _, findings = service("", "backend a { server h:1; verbosity on; } "
                                     "backend b { server h:2; verbose yes; }")
    assert "debug 1" in lines
    assert findings == [("1:49", NOTE, "verbosity on in backend a, b: pen's debug level is "
                         "for the whole pen; written as debug 1")]
    _, _, findings = service("verbosity on;", "backend a { server h:1; verbosity on; }")
    assert findings == []


def test_shmkey_is_ignored_with_its_line():
    text = "service s {\n  port 1;\n  shmkey 123456;\n  backend b { server h:1; }\n}"
    lines, _, findings = one(text)
    assert findings == [("3:3", IGNORED, "shmkey 123456: Crossroads' shared memory key "
                         "means nothing in pen (status is on the control port, -C)")]
    assert not any("shmkey" in ln or "123456" in ln for ln in lines)


def test_pre_1_08_statements_are_read_as_their_replacements():
    lines, _, findings = service("maxclients 5; sessiontimeout 9;",
                                 "backend b { server 10.0.0.1:80; "
                                 "insertstickycookie \"XRID=1; Path=/\"; insertrealip on; }")
    assert lines == BASE + ["conn_max 5", "idle_timeout 9", SERVER0,
                            'server 0 header add client "Set-Cookie: XRID=1; Path=/"',
                            'server 0 header set server "XR-Real-IP: %r"']
    assert [k for _, k, _ in findings] == [NOTE] * 4


def test_several_services():
    services = crossroads.convert("service a { port 1; backend x { server h:2; } }\n"
                                  "service b { port 3; backend y { server h:4; } }")
    assert [(s.filename, s.command) for s in services] == [
        ("a.cfg", "pen -F a.cfg 1"), ("b.cfg", "pen -F b.cfg 3")]


def test_quoting_helpers():
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert word("plain") == "plain"
    assert word("#x") == '"#x"' and word("") == '""' and word("a b") == '"a b"'
    assert split(f"cmd {word('a b')} {quote('x#y')}") == ["cmd", "a b", "x#y"]


# --- balance -----------------------------------------------------------------------------


def bal(*args):
    words, findings = balance.convert(args)
    return " ".join(words), [(f.where, f.kind) for f in findings]


@pytest.mark.parametrize("args, expected", [
    (("smtp", "host1.test.net", "host2.test.net"), "pen -r smtp host1.test.net host2.test.net"),
    (("-fp", "imap", "mailserver"), "pen -f -r -a -o trafficlog /dev/stdout imap mailserver"),
    (("-f", "8888", "host1", "10.1.1.1:8000"), "pen -f -r 8888 host1 10.1.1.1:8000"),
    (("imap", "mailserver1::16", "!", "mailserver2"),
     "pen -r -o prio imap mailserver1::16:0:0:0 mailserver2::0:0:0:1"),
    (("pop3", "host1", "host2", "host3", "!", "failover1"),
     "pen -r -o prio pop3 host1::0:0:0:0 host2::0:0:0:0 host3::0:0:0:0 failover1::0:0:0:1"),
    (("telnet", "target.munich.net::1"), "pen -r telnet target.munich.net::1"),
    (("8888", "localhost::12", "!", "localhost::4", "!", "localhost::2", "localhost::2", "!",
      "localhost:25"),
     "pen -r -o prio 8888 localhost::12:0:0:0 localhost::4:0:0:1 localhost::2:0:0:2 "
     "localhost::2:0:0:2 localhost:25:0:0:0:3"),
])
def test_balance_manual_examples(args, expected):
    assert bal(*args)[0] == expected


def test_balance_options():
    assert bal("-a", "-b", "10.0.0.1", "-B", "10.0.0.2", "-t", "7", "-d", "80", "h")[0] == (
        "pen -d -r -t 7 -o autodisable -o source 10.0.0.2 10.0.0.1:80 h")
    assert bal("-t7", "-b", "::1", "80", "h")[0] == "pen -r -t 7 [::1]:80 h"


def test_balance_hash_group():
    assert bal("80", "a", "b", "%") == ("pen -h -s 80 a b", [])
    assert bal("-H", "80", "a", "b", "%") == ("pen -h 80 a b", [])
    assert bal("-H", "80", "a") == ("pen -r 80 a", [("argument 1", IGNORED)])


def test_balance_hash_inside_groups_is_unsupported():
    text, findings = bal("80", "a", "%", "b")
    assert text == "pen -r -o prio 80 a::0:0:0:0 b::0:0:0:1"
    assert findings == [("argument 3", UNSUPPORTED)]


def test_balance_ignored_options():
    text, findings = bal("-M", "-T", "5", "80", "a")
    assert text == "pen -r 80 a"
    assert findings == [("argument 2", IGNORED), ("argument 1", IGNORED)]


@pytest.mark.parametrize("args, message", [
    ((), "argument 1: missing the port"),
    (("80",), "argument 2: no channel"),
    (("-x", "80", "a"), "argument 1: unknown balance option -x"),
    (("-t",), "argument 1: option -t needs a value"),
    (("-t", "0", "80", "a"), "argument 1: -t '0': expected a whole number"),
    (("80", "!", "a"), "argument 2: ! after an empty channel group"),
    (("80", "a", "!"), "argument 3: ! at the end"),
    (("80", "a:b:c:d"), "argument 2: channel 'a:b:c:d': expected host[:port[:maxc]]"),
    (("80", "a:1:x"), "argument 2: channel 'a:1:x': maxc 'x'"),
    (("8 0", "a"), "argument 1: port '8 0'"),
    (("-c", "show", "80"), "argument 1: balance -c talks to a running balance"),
])
def test_balance_errors(args, message):
    with pytest.raises(ImportSyntaxError) as info:
        balance.convert(args)
    assert str(info.value).startswith(message)


# --- pen-import ------------------------------------------------------------------------


def test_main_writes_and_prints(tmp_path, capsys):
    conf = tmp_path / "c.conf"
    conf.write_text("service a { port 1; shmkey 5; backend x { server h:2; } }")
    assert importer.main(["crossroads", str(conf), "-o", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert out == f"pen -F {tmp_path}/out/a.cfg 1\n"
    assert err == f"{conf}:1:21: ignored: shmkey 5: Crossroads' shared memory key means " \
                  "nothing in pen (status is on the control port, -C)\n"
    assert (tmp_path / "out" / "a.cfg").read_text().endswith(
        "server 0 address h port 2 max 0 hard 0 weight 1\n")


def test_main_exit_codes(tmp_path, capsys):
    conf = tmp_path / "c.conf"
    conf.write_text("service a { port 1; backend x { server h:2; weight 0; } }")
    assert importer.main(["crossroads", str(conf), "-o", str(tmp_path)]) == 2
    assert (tmp_path / "a.cfg").exists()
    assert importer.main(["crossroads", "--force", str(conf), "-o", str(tmp_path)]) == 0
    conf.write_text("service a { port 1 }")
    assert importer.main(["crossroads", str(conf), "-o", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()
    assert importer.main(["crossroads", str(tmp_path / "missing")]) == 1
    assert importer.main(["crossroads"]) == 1
    assert importer.main(["haproxy", "x"]) == 1
    assert importer.main([]) == 1
    assert importer.main(["balance", "80", "a", "%", "b"]) == 2
    assert importer.main(["balance", "--force", "80", "a", "%", "b"]) == 0
    assert importer.main(["balance", "--", "-x"]) == 1
    err = capsys.readouterr().err
    assert f"{conf}:1:20: syntax error: port: missing ';' before '}}'; nothing written" in err
    assert "balance argument 1: unknown balance option -x" in err
    assert importer.main(["--help"]) == 0
    assert "pen-import crossroads FILE" in capsys.readouterr().out


def test_main_reads_stdin(tmp_path, capsys, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("service a { port 1; backend x { server h:2; } }"))
    monkeypatch.chdir(tmp_path)
    assert importer.main(["crossroads", "-"]) == 0
    assert capsys.readouterr().out == "pen -F a.cfg 1\n"
    assert (tmp_path / "a.cfg").read_text().startswith("# Crossroads service a (<stdin> line 1)")
