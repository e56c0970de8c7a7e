"""proxy_protocol and server N proxy_protocol: checks, replies, write round trip."""

import pytest

from pen.addr import parse_listen
from pen.commands import execute
from pen.config import dump
from pen.proxyout import version_for as proxy_protocol_version
from pen.servers import parse_backend
from pen.state import Settings, State

WALL = 1_700_000_000.0


@pytest.fixture
def state():
    st = Settings(listen=parse_listen("127.0.0.1:8000"))
    return State(st, [parse_backend("127.0.0.1:9001", 8000, 0),
                      parse_backend("127.0.0.1:9002", 8000, 1)])


def reply(state, line):
    return execute(state, line, now=1.0, wall=WALL)[0]


def test_global_and_per_server_versions(state):
    assert reply(state, "proxy_protocol") == ["off"]
    assert proxy_protocol_version(state.settings, 0) is None
    assert reply(state, "proxy_protocol v2") == []
    assert reply(state, "proxy_protocol") == ["v2"]
    assert reply(state, "server 1 proxy_protocol v1") == []
    assert reply(state, "server 1 proxy_protocol") == ["v1"]
    assert reply(state, "server 0 proxy_protocol") == ["default"]
    assert [proxy_protocol_version(state.settings, i) for i in (0, 1, "emergency")] == \
        ["v2", "v1", "v2"]
    assert reply(state, "server 0 proxy_protocol off") == []
    assert proxy_protocol_version(state.settings, 0) is None
    assert reply(state, "server 0 proxy_protocol default") == []
    assert proxy_protocol_version(state.settings, 0) == "v2"
    assert reply(state, "no proxy_protocol") == []
    assert proxy_protocol_version(state.settings, 0) is None
    assert proxy_protocol_version(state.settings, 1) == "v1"


@pytest.mark.parametrize("line, error", [
    ("proxy_protocol v3", "proxy_protocol: unknown version 'v3' (expected v1, v2, off)"),
    ("proxy_protocol v1 v2", "proxy_protocol: unexpected 'v2' (usage: proxy_protocol [v1|v2|off])"),
    ("proxy_protocol default", "proxy_protocol: unknown version 'default'"),
    ("server 2 proxy_protocol v1", "server: index 2 out of range (0-1)"),
    ("server x proxy_protocol v1", "server: index must be a whole number, got 'x'"),
    ("server 0 proxy_protocol V2", "server 0 proxy_protocol: unknown version 'V2' "
                                   "(expected v1, v2, off, default)"),
])
def test_bad_lines_say_why_and_change_nothing(state, line, error):
    before = (state.settings.proxy_protocol, dict(state.settings.server_proxy_protocol))
    assert reply(state, line)[0].startswith(error)
    assert (state.settings.proxy_protocol, state.settings.server_proxy_protocol) == \
        (before[0], before[1])


def test_other_server_lines_still_work(state):
    assert reply(state, "server 1 weight 3") == []
    assert state.servers[1].weight == 3


def test_write_round_trip(state):
    reply(state, "proxy_protocol v1")
    reply(state, "server 1 proxy_protocol v2")
    reply(state, "server 0 proxy_protocol off")
    first = dump(state, "/x", WALL)
    assert "proxy_protocol v1" in first
    assert first.index("server 0 proxy_protocol off") > first.index(
        next(line for line in first if line.startswith("server 1 acl")))
    fresh = State(Settings(listen=parse_listen("127.0.0.1:8000")), [])
    for line in first:
        execute(fresh, line, now=1.0, wall=WALL)
    assert fresh.settings.proxy_protocol == "v1"
    assert fresh.settings.server_proxy_protocol == {0: "off", 1: "v2"}
    assert dump(fresh, "/x", WALL) == first


def test_defaults_write_nothing(state):
    assert not [line for line in dump(state, "/x", WALL) if "proxy_protocol" in line]
