"""bysize / byduration with over N and decay, and weights in leastconn and
random (SPEC §10.1).  Pure: sequences of finished connections, each pick
checked."""

import random

import pytest

from pen import balance, commands, config, stats
from pen.balance import Figures, choose, record_finished
from pen.servers import Server
from pen.state import Settings, State


def make(n=2, weights=None, algorithm="bysize", over=0):
    servers = []
    for i in range(n):
        s = Server(i, "127.0.0.1", 9000 + i)
        s.sockaddr = ("127.0.0.1", 9000 + i)
        if weights:
            s.weight = weights[i]
        servers.append(s)
    st = State(Settings(roundrobin=True, algorithm=algorithm, algorithm_over=over), servers)
    return st


def pick(st, now=100.0):
    return choose(st, "127.0.0.1", 40000, now, None)


def finish(st, index, nbytes=0, seconds=0.0):
    record_finished(st, index, nbytes, seconds)


def test_bysize_sends_the_next_client_to_the_lightest_server():
    st = make(3)
    # Nothing finished yet: all figures 0, ties to the fewest connections,
    # then the lowest index.
    assert pick(st) == 0
    st.servers[0].conn = 1
    assert pick(st) == 1
    st.servers[0].conn = 0
    finish(st, 0, 1000)
    finish(st, 1, 10)
    finish(st, 2, 500)
    assert pick(st) == 1
    finish(st, 1, 2000)          # server 1: (10 + 2000) / 2 = 1005
    assert pick(st) == 2          # 500 is now the least
    finish(st, 2, 3000)           # server 2: 1750
    assert pick(st) == 0          # 1000


def test_bysize_over_n_is_a_moving_average():
    st = make(2, over=2)
    finish(st, 0, 100)
    finish(st, 0, 100)
    finish(st, 0, 100)
    finish(st, 1, 10000)          # server 1 had one huge connection
    assert pick(st) == 0
    finish(st, 1, 10)             # window (10000, 10): 5005
    assert pick(st) == 0
    finish(st, 1, 10)             # window (10, 10): 10 < 100
    assert pick(st) == 1


def test_without_over_the_average_is_over_all_connections():
    st = make(2, over=0)
    for _ in range(3):
        finish(st, 0, 100)
    finish(st, 1, 10000)
    finish(st, 1, 10)
    finish(st, 1, 10)
    assert st.loads[1].figure("bysize", 0) == pytest.approx(10020 / 3)
    assert pick(st) == 0


def test_byduration_uses_seconds_not_bytes():
    st = make(2, algorithm="byduration", over=3)
    finish(st, 0, nbytes=10, seconds=2.0)
    finish(st, 1, nbytes=10 ** 6, seconds=0.5)
    assert pick(st) == 1
    st.settings.algorithm = "bysize"
    assert pick(st) == 0


def test_weight_divides_the_figure_bigger_weight_takes_more():
    st = make(2, weights=[1, 4])
    finish(st, 0, 100)
    finish(st, 1, 300)            # 300 / 4 = 75 < 100
    assert pick(st) == 1
    finish(st, 1, 500)            # (300 + 500) / 2 / 4 = 100: tie on figure
    assert pick(st) == 0          # ties: fewest connections, then lowest index
    st.servers[0].conn = 2
    st.servers[1].conn = 4        # 2/1 > 4/4: server 1 has fewer per weight
    assert pick(st) == 1


def test_weight_zero_counts_as_one():
    st = make(2, weights=[0, 2])
    finish(st, 0, 100)
    finish(st, 1, 150)            # 75 < 100
    assert pick(st) == 1


def test_decay_shrinks_the_others_figures_when_another_is_chosen():
    st = make(2, over=3)
    st.loads.set_decay(0, 50)
    finish(st, 0, 1000)           # spike on server 0
    finish(st, 1, 300)
    picks = []
    for _ in range(3):
        picks.append(pick(st))
    # Each pick of server 1 halves server 0's figure: 1000 -> 500 -> 250.
    assert picks == [1, 1, 0]
    assert st.loads[0].figure("bysize", 3) == pytest.approx(250)
    # Server 1 has no decay: its figure is untouched by choosing server 0.
    assert st.loads[1].figure("bysize", 3) == pytest.approx(300)


def test_decay_applies_to_the_window_and_to_new_entries_after_it():
    st = make(2, over=2)
    st.loads.set_decay(0, 10)
    finish(st, 0, 100)
    finish(st, 0, 300)            # window 100, 300: 200
    st.servers[0].disabled = True
    pick(st)                      # server 1 chosen: server 0 shrinks by 10 %
    assert st.loads[0].figure("bysize", 2) == pytest.approx(180)
    finish(st, 0, 0)              # window 270, 0 (the 90 fell out): 135
    assert st.loads[0].figure("bysize", 2) == pytest.approx(135)


def test_decay_zero_costs_nothing_and_changes_nothing():
    st = make(2)
    st.loads.set_decay(0, 20)
    st.loads.set_decay(0, 0)
    assert not st.loads.decaying
    finish(st, 0, 100)
    pick(st)
    assert st.loads[0].figure("bysize", 0) == 100


def test_changing_over_rebuilds_the_window():
    f = Figures()
    for n in (10, 20, 30, 40):
        f.record(n, 0, 4)
    assert f.figure("bysize", 4) == 25
    assert f.figure("bysize", 2) == 35   # asked before the next record: 30, 40
    f.record(50, 0, 2)            # window shrinks to the last 2: 40, 50
    assert f.figure("bysize", 2) == 45
    assert f.figure("bysize", 0) == 30   # all since start


def test_unavailable_servers_are_skipped_and_failover_still_works():
    st = make(3)
    finish(st, 0, 1)
    finish(st, 1, 50)
    finish(st, 2, 100)
    st.servers[0].disabled = True
    assert pick(st) == 1
    st.servers[1].disabled = True
    assert pick(st) == 2
    st.servers[2].disabled = True
    assert pick(st) is None


def test_record_finished_ignores_the_emergency_server():
    st = make(1)
    record_finished(st, "emergency", 100, 1.0)
    assert not st.loads


def test_reset_clears_counters_and_figures_but_keeps_decay():
    st = make(2)
    s = st.servers[0]
    s.sx, s.rx, s.connects = 5, 6, 7
    st.loads.set_decay(0, 30)
    finish(st, 0, 100, 1.0)
    assert commands.execute(st, "server 0 reset") == ([], [])
    assert (s.sx, s.rx, s.connects) == (0, 0, 0)
    assert st.loads[0].count == 0 and st.loads[0].decay == 30


# --- weights in the older algorithms ---------------------------------------------------


def test_leastconn_splits_by_weight_1_to_3():
    st = make(2, weights=[1, 3], algorithm="leastconn")
    picks = []
    for _ in range(8):
        i = pick(st)
        picks.append(i)
        st.servers[i].conn += 1      # held open
    assert (st.servers[0].conn, st.servers[1].conn) == (2, 6)
    assert picks == [0, 1, 1, 1, 0, 1, 1, 1]


def test_leastconn_without_weights_is_fewest_connections():
    st = make(3, algorithm="leastconn")
    st.servers[0].conn, st.servers[1].conn, st.servers[2].conn = 3, 1, 1
    assert pick(st) == 1


@pytest.mark.parametrize("weights,low,high", [([1, 3], 0.70, 0.80),   # proportional
                                              (None, 0.45, 0.55)])    # uniform
def test_random_share_of_server_1(weights, low, high):
    st = make(2, weights=weights, algorithm="random")
    rng = random.Random(7)
    picks = [balance.by_random(st, 100.0, rng=rng) for _ in range(4000)]
    assert low < picks.count(1) / 4000 < high


# --- the commands ---------------------------------------------------------------------


def test_mode_shows_over_and_write_keeps_it():
    st = make(2, algorithm=None)
    assert commands.execute(st, "bysize over 10") == ([], [])
    assert stats.mode_line(st.settings).endswith("no prio bysize over 10")
    commands.execute(st, "server 1 decay 25")
    lines = config.dump(st, "/tmp/x.cfg", wall=0)
    assert "bysize over 10" in lines and "server 1 decay 25" in lines
    fresh = make(2, algorithm=None)
    for line in lines:
        commands.execute(fresh, line)
    assert (fresh.settings.algorithm, fresh.settings.algorithm_over) == ("bysize", 10)
    assert fresh.loads[1].decay == 25
    commands.execute(fresh, "byduration")
    assert stats.mode_line(fresh.settings).endswith("no prio byduration")
    commands.execute(fresh, "no byduration")
    assert fresh.settings.algorithm is None


def test_bare_server_n_shows_figures_decay_and_dump_file():
    st = make(2, over=2)
    commands.execute(st, "server 1 decay 20")
    commands.execute(st, "server 1 trafficlog /tmp/one.log")
    for nbytes, seconds in ((100, 1.0), (300, 2.0), (500, 0.5)):
        finish(st, 1, nbytes, seconds)
    assert commands.execute(st, "server 1")[0][-1] == (
        "finished 3 avg_bytes 400 avg_seconds 1.250000 decay 20 trafficlog /tmp/one.log")
    assert commands.execute(st, "server 0")[0][-1] == (
        "finished 0 avg_bytes 0 avg_seconds 0.000000 decay 0")


@pytest.mark.parametrize("line,message", [
    ("bysize over", "expected 'over N'"),
    ("bysize under 3", "expected 'over N'"),
    ("bysize over 0", "out of range"),
    ("byduration over x", "whole number"),
    ("leastconn over 3", "unexpected"),
    ("server 0 decay 101", "out of range (0-100)"),
    ("server 0 decay", "missing argument"),
    ("server 0 reset now", "unexpected"),
])
def test_bad_mode_arguments_change_nothing(line, message):
    st = make(2, algorithm="random")
    reply, effects = commands.execute(st, line)
    assert len(reply) == 1 and message in reply[0] and not effects
    assert st.settings.algorithm == "random" and not st.loads
