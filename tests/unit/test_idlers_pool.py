"""pen/idlers.py's pure parts: the back-off, the room under maxc, and the
readiness check on a socketpair (no network, no pen process)."""

import socket

from pen import commands, effects
from pen.idlers import RETRY_MAX, RETRY_MIN, Backoff, room, usable
from pen.servers import Server
from pen.state import Settings, State


def test_backoff_doubles_to_its_cap_and_resets_when_healthy():
    b = Backoff()
    assert b.allows(0.0)
    b.failed(10.0)
    assert b.delay == RETRY_MIN and not b.allows(10.0) and b.allows(10.0 + RETRY_MIN)
    b.failed(20.0)
    assert b.delay == 2 * RETRY_MIN
    for _ in range(20):
        b.failed(30.0)
    assert b.delay == RETRY_MAX and not b.allows(30.0 + RETRY_MAX - 0.01)
    b.healthy()
    assert b.delay == 0 and b.allows(30.0)


def test_room_is_n_or_what_the_clients_leave_under_maxc():
    s = Server(0)
    assert room(s, 4) == 4
    s.max = 3
    assert room(s, 4) == 3
    s.conn = 2
    assert room(s, 4) == 1
    s.conn = 5                  # over maxc on returning clients (hard)
    assert room(s, 4) == 0
    s.max, s.conn = 10, 0
    assert room(s, 4) == 4


def test_usable_on_a_unix_socketpair():
    a, b = socket.socketpair()
    try:
        assert usable(a, socket.AF_UNIX)
        b.sendall(b"greeting")
        assert usable(a, socket.AF_UNIX)          # data is no reason to drop it
        b.shutdown(socket.SHUT_WR)
        assert not usable(a, socket.AF_UNIX)      # a FIN behind the data is
    finally:
        a.close()
        b.close()


def test_idlers_command_asks_for_the_pool_and_replies_as_pen():
    state = State(Settings(), [])
    state.idlers_open = 3
    replies, todo = commands.apply(state, commands.parse("idlers 2", state))
    assert replies == ["Idlers: 3/2"] and todo == [effects.Idlers()]
    assert state.settings.idlers == 2
    assert commands.apply(state, commands.parse("idlers", state)) == (["Idlers: 3/2"], [])
