"""The server state machine (pen/servers.py), transcript style: events in,
state and emitted events out.  No sockets."""

import pytest

from pen.servers import (BLACKLISTED, DISABLED, DOWN, DRAINING, UP, Server,
                         ServerEvents)
from pen.state import Settings

NOW = 1000.0


@pytest.fixture
def rec():
    events = ServerEvents()
    seen = []
    events.subscribe(lambda ev, s, reason, client: seen.append((ev, s.index, reason, client)))
    server = Server(1, "127.0.0.1", 80, sockaddr=("127.0.0.1", 80), events=events)
    return server, seen


def kinds(seen):
    return [e[0] for e in seen]


def test_a_failed_connect_blacklists_for_the_blacklist_time(rec):
    server, seen = rec
    st = Settings(blacklist_time=30)
    server.mark_failed(NOW, "refused", st, client="10.0.0.1")
    assert server.state(NOW) == BLACKLISTED and not server.available(NOW)
    assert server.state(NOW + 30.5) == UP and server.available(NOW + 30.5)
    assert seen == [("failure", 1, "refused", "10.0.0.1"), ("down", 1, "refused", "10.0.0.1")]
    assert server.auto_blacklisted(NOW) and not server.operator_blacklist


def test_server_retry_waits_for_n_failures_in_a_row_and_success_resets(rec):
    server, seen = rec
    st = Settings(server_retry=3)
    server.mark_failed(NOW, "timed out", st)
    server.mark_failed(NOW, "timed out", st)
    assert server.state(NOW) == UP
    server.mark_ok(NOW)
    server.mark_failed(NOW, "timed out", st)
    server.mark_failed(NOW, "timed out", st)
    assert server.state(NOW) == UP
    server.mark_failed(NOW, "timed out", st)
    assert server.state(NOW) == BLACKLISTED
    assert kinds(seen) == ["failure"] * 2 + ["success"] + ["failure"] * 3 + ["down"]


def test_autodisable_disables_instead_and_only_enable_brings_it_back(rec):
    server, seen = rec
    st = Settings(autodisable=True)
    server.mark_failed(NOW, "refused", st)
    assert server.state(NOW + 1e6) == DISABLED
    server.check_result(NOW, True, "", rise=1, fall=1)
    assert server.state(NOW) == DISABLED
    server.enable(NOW)
    assert server.state(NOW) == UP
    assert kinds(seen) == ["failure", "down", "up"]


def test_a_success_lifts_an_automatic_blacklist_but_not_the_operators(rec):
    server, seen = rec
    server.mark_failed(NOW, "refused", Settings())
    server.mark_ok(NOW + 1)
    assert server.state(NOW + 1) == UP
    server.blacklist(NOW, 60)
    server.mark_ok(NOW + 2)
    assert server.state(NOW + 2) == BLACKLISTED and not server.auto_blacklisted(NOW + 2)
    server.blacklist(NOW + 3, 0)
    assert server.state(NOW + 3) == UP
    assert kinds(seen) == ["failure", "down", "success", "up", "down", "success", "up"]


def test_checks_take_a_server_down_after_fall_and_up_after_rise(rec):
    server, seen = rec
    for i in range(2):
        server.check_result(NOW, False, "HTTP 500", rise=2, fall=3)
        assert server.state(NOW) == UP
    server.check_result(NOW, False, "HTTP 500", rise=2, fall=3)
    assert server.state(NOW) == DOWN and not server.available(NOW)
    server.check_result(NOW, True, "", rise=2, fall=3)
    assert server.state(NOW) == DOWN
    server.check_result(NOW, True, "", rise=2, fall=3)
    assert server.state(NOW) == UP
    assert seen == [("down", 1, "HTTP 500", None), ("up", 1, "check passed", None)]
    assert server.check.as_dict() == {"passed": 2, "failed": 3, "last": "ok"}


def test_a_passing_probe_revives_a_failure_blacklist_at_once(rec):
    server, _ = rec
    server.mark_failed(NOW, "refused", Settings())
    server.check_result(NOW + 1, True, "", rise=2, fall=3)
    assert server.state(NOW + 1) == UP


def test_probes_never_lift_an_operator_blacklist_or_disable(rec):
    server, _ = rec
    server.blacklist(NOW, 60)
    for _ in range(5):
        server.check_result(NOW + 1, True, "", rise=1, fall=1)
    assert server.state(NOW + 1) == BLACKLISTED
    server.disable(NOW + 1)
    server.blacklist(NOW + 1, 0)
    server.check_result(NOW + 2, True, "", rise=1, fall=1)
    assert server.state(NOW + 2) == DISABLED


def test_drain_takes_no_new_clients_until_enabled(rec):
    server, seen = rec
    server.drain(NOW)
    assert server.state(NOW) == DRAINING and not server.available(NOW)
    server.enable(NOW)
    assert server.available(NOW)
    assert seen == [("down", 1, "draining", None), ("up", 1, "enabled", None)]


def test_a_server_without_an_address_is_not_available():
    server = Server(0)
    assert server.state(NOW) == UP and not server.available(NOW)
