"""Server selection, as pen 0.34.1 (server.c) plus SPEC's corrections."""

import pytest

from pen import balance
from pen.balance import ClientTable, choose, failover, hash_ip
from pen.servers import Server
from pen.state import Settings, State


def make(n=3, **settings):
    servers = []
    for i in range(n):
        s = Server(i, "127.0.0.1", 9000 + i)
        s.sockaddr = ("127.0.0.1", 9000 + i)
        servers.append(s)
    return State(Settings(**settings), servers)


def pick(state, ip="127.0.0.1", port=40000, now=100.0, track=True):
    entry = state.clients.touch(ip, now, state.settings.tracking) if track else None
    return choose(state, ip, port, now, entry)


def test_roundrobin_first_pick_is_server_1_and_wraps():
    st = make(3, roundrobin=True)
    assert [pick(st) for _ in range(5)] == [1, 2, 0, 1, 2]


def test_tracking_sends_a_returning_client_back():
    st = make(3)
    assert [pick(st, "10.0.0.1") for _ in range(3)] == [1, 1, 1]
    assert pick(st, "10.0.0.2") == 2


def test_tracking_expiry_forgets_the_client():
    st = make(3, tracking=10)
    assert pick(st, "10.0.0.1", now=0) == 1
    assert pick(st, "10.0.0.1", now=5) == 1
    # Expired: forgotten even though the same client returns alone (SPEC).
    assert pick(st, "10.0.0.1", now=16) == 2


def test_client_table_evicts_least_recently_used():
    table = ClientTable(2)
    table.touch("a", 1, 0)
    table.touch("b", 2, 0)
    table.touch("a", 3, 0)
    table.touch("c", 4, 0)
    assert list(table.entries) == ["a", "c"]
    assert table.touch("a", 5, 0).connects == 3


def test_blacklisted_server_is_skipped_and_returns_after_its_time():
    st = make(3, roundrobin=True)
    st.servers[1].blacklisted_until = 130.0       # blacklisted until t=130
    assert pick(st, now=100) == 2
    assert pick(st, now=100) == 0
    assert pick(st, now=131) == 1


def test_soft_limit_pushes_a_new_client_on():
    st = make(2)
    st.servers[1].max = 1
    st.servers[1].conn = 1
    assert pick(st, "10.0.0.9") == 0


def test_hard_limit_lets_a_returning_client_past_the_soft_one():
    st = make(2)
    s1 = st.servers[1]
    s1.max, s1.hard = 1, 2
    assert pick(st, "10.0.0.1") == 1
    s1.conn = 1
    assert pick(st, "10.0.0.1") == 1     # returning: allowed up to hard
    assert pick(st, "10.0.0.2") == 0     # new: refused at soft
    s1.conn = 2
    assert pick(st, "10.0.0.1") == 0     # at hard: fails over


def test_hash_is_pens():
    assert hash_ip("127.0.0.1") % 3 == 2
    assert hash_ip("127.0.0.2") % 3 == 0
    assert hash_ip("127.0.0.3") % 3 == 1
    # With -r the byte-swapped port is mixed in (verified on pen 0.34.1).
    assert [hash_ip("127.0.0.1", p) % 3 for p in range(23011, 23017)] == [2, 0, 1, 2, 0, 1]
    assert hash_ip("::1") == 1
    assert hash_ip("") == 0


def test_hash_selection_and_unavailable_hash_target_fails_over():
    st = make(3, hash=True)
    assert pick(st, "127.0.0.1") == 2
    st2 = make(3, hash=True)
    st2.servers[2].blacklisted_until = 1e9
    assert pick(st2, "127.0.0.1") == 0   # next index after the hashed one


def test_hash_nosave_does_not_remember():
    st = make(3, hash_nosave=True)
    entry = st.clients.touch("127.0.0.1", 0, 0)
    assert choose(st, "127.0.0.1", 1, 0, entry) == 2
    assert entry.server is None


def test_weight_fewest_conns_per_weight_ties_low_index_zero_never():
    st = make(3, weight=True, roundrobin=True)
    for s, w in zip(st.servers, (1, 2, 0)):
        s.weight = w
    got = []
    for _ in range(6):
        i = pick(st)
        got.append(i)
        st.servers[i].conn += 1
    assert got == [0, 1, 1, 0, 1, 1]
    assert 2 not in got


def test_weight_all_zero_means_no_server():
    st = make(2, weight=True)
    assert pick(st) is None


def test_prio_lowest_number_wins_then_next_index_when_full():
    st = make(3, prio=True, roundrobin=True)
    for s, p in zip(st.servers, (3, 1, 2)):
        s.prio = p
    assert pick(st) == 1
    st.servers[1].max, st.servers[1].conn = 2, 2
    assert pick(st) == 2            # pen: failover walks by index, 1 -> 2
    st.servers[1].blacklisted_until = 1e9
    assert pick(st) == 2            # blacklisted: next best prio


def test_failover_walks_next_indexes_each_failure_blacklisted():
    st = make(3, roundrobin=True)
    order, index, now = [], 1, 100.0
    while index is not None and len(order) < 10:
        order.append(index)
        st.servers[index].blacklisted_until = now + 30      # the connect failed
        index = failover(st, 1, index, now)
    assert order == [1, 2, 0]


def test_failover_tries_the_initial_pick_last():
    st = make(3)
    st.servers[0].blacklisted_until = 1e9
    # Initial 1 was full (not blacklisted), 2 failed: 0 is down, so the
    # walk ends on the initial pick again, as pen's do/while does.
    assert failover(st, 1, 2, 100.0) == 1
    st.servers[1].blacklisted_until = 1e9
    assert failover(st, 1, 2, 100.0) is None


def test_failover_skips_blacklisted_and_stubborn_never_fails_over():
    st = make(3)
    st.servers[2].blacklisted_until = 1e9
    assert failover(st, 1, 1, 100.0) == 0
    st.settings.stubborn = True
    assert failover(st, 1, 1, 100.0) is None


def test_stubborn_with_unavailable_choice_gives_none():
    st = make(2, stubborn=True, roundrobin=True)
    st.servers[1].blacklisted_until = 1e9
    # Round robin skips blacklisted servers (pen: server_is_unavailable).
    assert pick(st) == 0
    st.servers[0].max = st.servers[0].conn = 1
    assert pick(st) is None


def test_server_acl_excludes_a_client():
    st = make(2, roundrobin=True)
    st.servers[1].acl = 3
    entry = st.clients.touch("10.0.0.1", 0, 0)
    assert choose(st, "10.0.0.1", 1, 0, entry, permitted=lambda n: n != 3) == 0


def test_disabled_server_is_never_picked():
    st = make(2, roundrobin=True)
    st.servers[1].disabled = True
    assert {pick(st) for _ in range(4)} == {0}


@pytest.mark.parametrize("algorithm,expect", [("byorder", [0, 0, 0]),
                                              ("leastconn", [0, 1, 2])])
def test_extension_algorithms(algorithm, expect):
    st = make(3, roundrobin=True)
    st.settings.algorithm = algorithm
    got = []
    for _ in range(3):
        i = pick(st)
        got.append(i)
        st.servers[i].conn += 1 if algorithm == "leastconn" else 0
    assert got == expect


def test_random_only_picks_available():
    st = make(3, roundrobin=True)
    st.settings.algorithm = "random"
    st.servers[0].blacklisted_until = st.servers[2].blacklisted_until = 1e9
    assert {pick(st) for _ in range(20)} == {1}


def test_no_servers_at_all():
    st = make(0)
    assert pick(st) is None
