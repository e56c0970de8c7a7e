"""Command line, listen addresses and backend specs (no sockets)."""

import socket

import pytest

from pen.__main__ import build_state, parse_args
from pen.addr import parse_listen
from pen.errors import ConfigError
from pen.servers import parse_backend


def test_defaults_are_pens():
    st = parse_args(["8080", "127.0.0.1:80"])
    assert (st.blacklist_time, st.clients_max, st.connect_timeout, st.conn_max,
            st.tracking, st.multi_accept, st.backlog) == (30, 2048, 3, 500, 0, 100, 500)
    assert not st.foreground and st.debug == 0


def test_flags_numbers_and_repeats():
    st = parse_args(["-fddrsHW", "-b", "5", "-T10", "-x", "7", "-o", "prio",
                     "-O", "hash", "-e", "127.0.0.1:99", "127.0.0.1:8080", "a"])
    assert st.foreground and st.debug == 2 and st.roundrobin and st.stubborn
    assert st.http and st.weight
    assert (st.blacklist_time, st.tracking, st.conn_max) == (5, 10, 7)
    assert st.options == ["prio", "hash"]
    assert st.emergency == "127.0.0.1:99"
    assert str(st.listen) == "127.0.0.1:8080" and st.backends == ["a"]


def test_h_means_hash_not_help():
    assert parse_args(["-h", "80"]).hash


@pytest.mark.parametrize("argv,message", [
    (["-z", "80"], "unknown option -z"),
    (["-b"], "option -b requires an argument"),
    (["-b", "x", "80"], "option -b: 'x' is not a number"),
    (["-x", "0", "80"], "option -x: 0 is too small"),
    (["-c", "-3", "80"], "option -c"),
    (["-f"], "missing listen address"),
    (["99999"], "out of range"),
    (["fe::zz:80"], "'fe::zz' is not an IPv6 address"),
])
def test_bad_command_lines(argv, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_args(argv)


@pytest.mark.parametrize("text,expect", [
    ("80", "80"), ("127.0.0.1:80", "127.0.0.1:80"), ("[::1]:80", "[::1]:80"),
    (":::80", "[::]:80"), ("[::]:80", "[::]:80"), ("/tmp/pen.sock", "/tmp/pen.sock"),
    ("smtp", "25"), ("::1:80", "[::1]:80"), ("::ffff:127.0.0.1:80", "[::ffff:127.0.0.1]:80"),
])
def test_listen_forms(text, expect):
    assert str(parse_listen(text)) == expect


def test_backend_spec_fields():
    s = parse_backend("127.0.0.1:81:10:20:3:4", 80)
    assert (s.addr, s.port, s.max, s.hard, s.weight, s.prio) == ("127.0.0.1", 81, 10, 20, 3, 4)
    assert parse_backend("127.0.0.1", 8080).port == 8080
    v6 = parse_backend("[::1]:90:1", 80)
    assert v6.family == socket.AF_INET6 and v6.addr == "::1" and v6.max == 1
    assert parse_backend("localhost:80", 1).addr == "127.0.0.1"


def test_backend_with_a_slash_is_a_unix_socket():
    s = parse_backend("/run/app.sock", 80)
    assert (s.family, s.sockaddr, s.host, s.port) == (socket.AF_UNIX, "/run/app.sock",
                                                      "/run/app.sock", 1)   # pen shows port 1
    s = parse_backend("/run/b.sock:81:5:6:7", None)      # the port is ignored, as pen does
    assert (s.sockaddr, s.port, s.max, s.hard, s.weight) == ("/run/b.sock", 1, 5, 6, 7)


@pytest.mark.parametrize("text,message", [
    ("/" + "x" * 200, "Unix socket path .* is too long"),
    ("127.0.0.1:80:x", "max 'x'"), ("127.0.0.1:80:1:2:3:4:5", "too many fields"),
    (":80", "missing host"), ("[::1", "missing ']'"), ("127.0.0.1:0", "out of range"),
    ("127.0.0.1:nosuchservice", "not a number or a known service"),
])
def test_bad_backend_specs(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_backend(text, 80)


def test_unix_listen_needs_backend_ports():
    st = parse_args(["/tmp/x.sock", "127.0.0.1"])
    with pytest.raises(ConfigError, match="no port given"):
        build_state(st)


def test_emergency_and_abuse_servers_are_resolved():
    state = build_state(parse_args(["-e", "127.0.0.1:9", "-B", "127.0.0.2", "80", "127.0.0.1"]))
    assert state.emergency.sockaddr == ("127.0.0.1", 9)
    assert state.abuse.sockaddr == ("127.0.0.2", 80)
