"""pen/health.py's pure half: check arguments, escapes, response matching,
jitter; and the check commands (parse, refuse, write/-F round trip)."""

import pytest

from pen import commands, config, health
from pen.errors import CommandError
from pen.health import CheckSpec, http_passes, http_status, parse_check, unescape
from pen.servers import Server
from pen.state import Settings, State


def make_state():
    servers = []
    for i in range(2):
        s = Server(i, "127.0.0.1", 9000 + i)
        s.sockaddr = ("127.0.0.1", 9000 + i)
        servers.append(s)
    return State(Settings(), servers)


# --- parse_check --------------------------------------------------------------------


def test_tcp_is_the_default_and_takes_no_arguments():
    assert Settings().check == health.TCP == parse_check(["tcp"])
    with pytest.raises(CommandError, match="unexpected 'x' after tcp"):
        parse_check(["tcp", "x"])


def test_http_path_and_codes():
    assert parse_check(["http", "/health"]) == CheckSpec("http", path="/health")
    spec = parse_check(["http", "/h?x=1", "200", "204", "200"])
    assert spec.codes == (200, 204)
    for bad, why in ((["http"], "needs a PATH"), (["http", "health"], "must start with /"),
                     (["http", "/a b"], "must start with /"),
                     (["http", "/", "99"], "not a number 100-599"),
                     (["http", "/", "2xx"], "not a number 100-599")):
        with pytest.raises(CommandError, match=why):
            parse_check(bad)


def test_expect_and_send():
    assert parse_check(["expect", "220"]) == CheckSpec("expect", expect="220")
    spec = parse_check(["expect", "+PONG", "send", "PING\\r\\n"])
    assert (spec.expect, spec.send) == ("+PONG", "PING\\r\\n")
    for bad, why in ((["expect"], "needs a TEXT"), (["expect", ""], "must not be empty"),
                     (["expect", "a", "send"], "only 'send TEXT'"),
                     (["expect", "a", "sned", "b"], "only 'send TEXT'"),
                     (["expect", "a\\q"], "unknown escape")):
        with pytest.raises(CommandError, match=why):
            parse_check(bad)


def test_udp_payload_and_expect():
    assert parse_check(["udp", ""]) == CheckSpec("udp", send="")
    assert parse_check(["udp", "ping", "expect", "pong"]).expect == "pong"
    with pytest.raises(CommandError, match="needs a PAYLOAD"):
        parse_check(["udp"])
    with pytest.raises(CommandError, match="only 'expect TEXT'"):
        parse_check(["udp", "p", "send", "x"])
    with pytest.raises(CommandError, match="unknown probe kind 'icmp'"):
        parse_check(["icmp"])


@pytest.mark.parametrize("text, raw", [
    ("PING\\r\\n", b"PING\r\n"), ("\\x00\\xff", b"\x00\xff"), ("a\\\\b", b"a\\b"),
    ("tab\\t", b"tab\t"), ("plain", b"plain"), ("é", "é".encode())])
def test_unescape(text, raw):
    assert unescape(text) == raw


def test_unescape_refuses_unknown_and_short_escapes():
    for text in ("\\q", "\\x4", "end\\"):
        with pytest.raises(CommandError, match="unknown escape"):
            unescape(text)


# --- response matching ------------------------------------------------------------


def test_http_status_line():
    assert http_status(b"HTTP/1.1 200 OK\r\n") == 200
    assert http_status(b"HTTP/1.0 503 Service Unavailable\r\nX: y\r\n") == 503
    assert http_status(b"HTTP/1.1 20") is None          # not complete yet
    for junk in (b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 abc\r\n", b"\r\n"):
        with pytest.raises(ValueError):
            http_status(junk)
    with pytest.raises(ValueError, match="no status line"):
        http_status(b"x" * health.RESPONSE_MAX)


def test_http_passes_default_2xx_3xx_or_the_listed_codes():
    assert [http_passes(c, ()) for c in (199, 200, 302, 399, 400, 500)] == [
        False, True, True, True, False, False]
    assert http_passes(500, (500,)) and not http_passes(200, (500,))


def test_http_request_has_host_and_port():
    assert health.http_request("/h", "example.org", 80).startswith(
        b"GET /h HTTP/1.0\r\nHost: example.org\r\n")
    assert b"Host: [::1]:8080\r\n" in health.http_request("/", "::1", 8080)
    assert health.http_request("/", "a", 81).endswith(b"\r\n\r\n")


def test_jitter_stays_within_ten_percent():
    assert health.next_delay(10, lambda: 0.0) == pytest.approx(9.0)
    assert health.next_delay(10, lambda: 1.0) == pytest.approx(11.0)
    delays = {round(health.next_delay(1), 3) for _ in range(50)}
    assert len(delays) > 10 and all(0.9 <= d <= 1.1 for d in delays)


def test_interval_words():
    assert health.parse_interval("check_interval", "5") == 5
    assert health.parse_interval("check_interval", "0.5") == 0.5
    assert health.parse_interval("check_interval", "0") == 0
    for bad in ("-1", "x", "1e3", "0.01", "90000", ""):
        with pytest.raises(CommandError):
            health.parse_interval("check_interval", bad)


# --- the commands ------------------------------------------------------------------


def run(state, line):
    return commands.execute(state, line, now=100.0, wall=0.0)


def test_check_commands_set_and_reply():
    st = make_state()
    assert run(st, "check") == (["check tcp"], [])
    assert run(st, "check http /health 200") == ([], [])
    assert run(st, "check") == (["check http /health 200"], [])
    assert run(st, 'check expect "+PONG" send "PING\\r\\n"') == ([], [])
    assert run(st, "check") == (['check expect "+PONG" send "PING\\r\\n"'], [])
    assert st.settings.check.send == "PING\\r\\n"
    assert run(st, "check_interval 5") == (["5"], [])
    assert run(st, "check_interval") == (["5"], [])
    assert run(st, "check_rise 4") == (["4"], [])
    assert run(st, "check_fall 1") == (["1"], [])
    assert run(st, "server_retry 3") == (["3"], [])
    run(st, "autodisable")
    assert st.settings.autodisable
    run(st, "no autodisable")
    assert not st.settings.autodisable
    run(st, "no check")
    assert st.settings.check == health.TCP
    run(st, "no check_interval")
    assert st.settings.check_interval == 0


def test_server_check_port():
    st = make_state()
    assert run(st, "server 1 check_port 8081") == ([], [])
    assert st.servers[1].extra["check_port"] == 8081
    run(st, "server 1 check_port 0")
    assert "check_port" not in st.servers[1].extra


@pytest.mark.parametrize("line, message", [
    ("check_interval -1", "check_interval: seconds must be a number"),
    ("check_interval 5 6", "unexpected '6'"),
    ("check_rise 0", "check_rise: count 0 out of range (1-1000)"),
    ("check_fall x", "check_fall: count must be a whole number"),
    ("server_retry 0", "server_retry: count 0 out of range"),
    ("autodisable now", "autodisable: unexpected 'now'"),
    ("check http", "check: http needs a PATH"),
    ('check expect "unterminated', "unterminated quote"),
    ("server 2 check_port 80", "server: index 2 out of range (0-1)"),
    ("server 0 check_port 70000", "server: check_port"),
    ("server 0 check_port", "server: missing argument"),
    ("server x check_port 80", "server: index must be a whole number"),
])
def test_bad_arguments_get_one_line_and_change_nothing(line, message):
    st = make_state()
    before = (repr(st.settings), [dict(s.extra) for s in st.servers])
    replies, effects = run(st, line)
    assert len(replies) == 1 and message in replies[0], replies
    assert effects == []
    assert (repr(st.settings), [dict(s.extra) for s in st.servers]) == before


def test_write_then_load_restores_every_check_setting(tmp_path):
    st = make_state()
    for line in ("check_interval 2.5", 'check udp "hello\\x00" expect "ok \\"x\\""',
                 "check_rise 5", "check_fall 4", "server_retry 2", "autodisable",
                 "hooks_max 3", "hook_timeout 7", 'on_down "logger -t pen \\"down $PEN_SERVER\\""',
                 'on_failure "echo fail"', "server 1 check_port 8081",
                 'server 0 on_up "touch /tmp/up; echo \\\\"'):
        assert run(st, line)[0] in ([], [line.split()[-1]]), line
    lines = config.dump(st, str(tmp_path / "pen.cfg"), 0.0)
    assert "check_interval 2.5" in lines
    assert "server 1 check_port 8081" in lines
    path = tmp_path / "pen.cfg"
    path.write_text("\n".join(lines) + "\n")
    fresh = make_state()
    effects, errors = config.load_config(str(path), fresh, now=100.0, wall=0.0)
    assert errors == []
    assert fresh.settings == st.settings
    assert [s.extra for s in fresh.servers] == [s.extra for s in st.servers]
    assert fresh.servers[0].extra["on_up"] == "touch /tmp/up; echo \\"
    assert fresh.settings.on_down == 'logger -t pen "down $PEN_SERVER"'


def test_defaults_write_nothing_new():
    st = make_state()
    lines = config.dump(st, "/x.cfg", 0.0)
    assert not [line for line in lines if line.split()[0] in (
        "check", "check_interval", "check_rise", "check_fall", "server_retry",
        "autodisable", "hooks_max", "hook_timeout", "on_down", "on_up")]


def test_status_json_shows_the_check_settings_and_each_servers_figures():
    import json
    from pen import stats
    st = make_state()
    run(st, "check_interval 2")
    run(st, "check http /health 200")
    run(st, "server 1 check_port 8081")
    st.servers[0].check_result(100.0, False, "http status 500", 2, 1)
    doc = json.loads(stats.status_json(st, 100.0, 0.0))
    assert doc["check"] == {"interval": 2, "probe": "http /health 200", "rise": 2,
                            "fall": 3, "ports": {"1": 8081}}
    assert doc["servers"][0]["check"] == {"passed": 0, "failed": 1, "last": "http status 500"}
    assert doc["servers"][0]["state"] == "down"
