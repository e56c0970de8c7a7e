"""Admission and the last resort (pen/service.py), without sockets: the
Service is driven with States and the clock, as TCP and UDP both use it."""

import pytest

from pen.commands import execute
from pen.servers import Server
from pen.service import ABUSE, ADMITTED, REFUSED, Service
from pen.state import Settings, State

NOW = 1000.0


def make(n=2, abuse=False, emergency=False, **settings):
    servers = []
    for i in range(n):
        servers.append(Server(i, "127.0.0.1", 9000 + i, sockaddr=("127.0.0.1", 9000 + i)))
    extra = {}
    if abuse:
        extra["abuse"] = Server(-1, "127.0.0.1", 9100, sockaddr=("127.0.0.1", 9100))
    if emergency:
        extra["emergency"] = Server(-1, "127.0.0.1", 9200, sockaddr=("127.0.0.1", 9200))
    return Service(State(Settings(**settings), servers, **extra), reactor=None)


def deny(service, ip):
    assert execute(service.state, f"acl 1 deny {ip}") == ([], [])
    assert execute(service.state, "client_acl 1") == (["1"], [])


def test_an_allowed_client_is_admitted_and_tracked():
    service = make()
    verdict, entry = service.admit("10.0.0.1", NOW)
    assert verdict == ADMITTED and entry.connects == 1
    assert service.admit("10.0.0.1", NOW + 1)[1] is entry        # the same client table slot
    assert service.choose_for("10.0.0.1", 5000, NOW, entry) == 1  # pen's first pick


def test_a_client_the_acl_refuses_goes_to_abuse_or_nowhere():
    service = make()
    deny(service, "10.0.0.2")
    assert service.admit("10.0.0.2", NOW) == (REFUSED, None)
    assert service.admit("10.0.0.3", NOW)[0] == ADMITTED
    with_abuse = make(abuse=True)
    deny(with_abuse, "10.0.0.2")
    assert with_abuse.admit("10.0.0.2", NOW) == (ABUSE, None)
    assert len(with_abuse.state.clients) == 0    # never tracked


def test_unix_socket_clients_pass_the_acl():
    service = make()
    deny(service, "0.0.0.0 0.0.0.0")
    assert service.admit("", NOW)[0] == ADMITTED


def fail(service, index, now=NOW):
    service.state.servers[index].mark_failed(now, "refused", service.settings)


def test_last_resort_is_the_server_blacklisted_longest_ago():
    service = make(3)
    fail(service, 2, NOW - 5)
    fail(service, 0, NOW - 3)
    fail(service, 1, NOW - 1)
    server, index = service.fallback(NOW)
    assert index == 2
    assert service.fallback(NOW, tried={2})[1] == 0
    assert service.fallback(NOW, tried={0, 1, 2}) is None


def test_no_last_resort_while_any_server_is_out_for_another_reason():
    service = make(2)
    fail(service, 0)
    assert service.fallback(NOW) is None             # server 1 is up: choice finds it
    service.state.servers[1].blacklist(NOW, 60)      # the operator's
    assert service.fallback(NOW) is None
    service.state.servers[1].blacklist(NOW, 0)
    service.state.servers[1].disable(NOW)
    assert service.fallback(NOW) is None
    service.state.servers[1].enable(NOW)
    fail(service, 1)
    assert service.fallback(NOW)[1] == 0


def test_the_emergency_server_comes_before_the_last_resort():
    service = make(1, emergency=True)
    fail(service, 0)
    server, index = service.fallback(NOW)
    assert index == "emergency" and server is service.state.emergency
    assert service.fallback(NOW, tried={"emergency"}) is None
    stubborn = make(1, emergency=True, stubborn=True)
    fail(stubborn, 0)
    assert stubborn.fallback(NOW) is None


def test_stages_run_in_a_fixed_order_whatever_order_they_are_set():
    service = make()
    service.set_stage("http", "H")
    service.set_stage("tls", "T")
    service.set_stage("proxy", "P")
    assert service.stages == ("P", "T", "H")
    service.set_stage("tls", None)
    assert service.stages == ("P", "H")
    with pytest.raises(ValueError):
        service.set_stage("bogus", "X")
