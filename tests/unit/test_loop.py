"""Reactor: timers and the event dispatch, without the network (a socketpair)."""

import socket
import time

import pytest

from pen.loop import EVENT_READ, EVENT_WRITE, Reactor


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.close()


def test_timers_run_in_time_order_then_creation_order(reactor):
    ran = []
    reactor.call_later(0.0, ran.append, "b")
    reactor.call_later(-1.0, ran.append, "a")
    reactor.call_later(0.0, ran.append, "c")
    reactor.call_later(60.0, ran.append, "later")
    reactor._run_timers(time.monotonic())
    assert ran == ["a", "b", "c"]


def test_cancelled_timer_does_not_run(reactor):
    ran = []
    t = reactor.call_later(0.0, ran.append, "x")
    reactor.call_later(0.0, ran.append, "y")
    t.cancel()
    reactor._run_timers(time.monotonic())
    assert ran == ["y"]
    assert reactor._timeout() == pytest.approx(1.0)   # nothing left: MAX_WAIT


def test_timeout_is_the_next_live_timer(reactor):
    dead = reactor.call_later(0.01, print)
    reactor.call_later(0.5, print)
    dead.cancel()
    assert 0.3 < reactor._timeout() <= 0.5


def test_failing_timer_callback_does_not_stop_the_others(reactor):
    ran = []

    def boom():
        raise ValueError("bug")
    reactor.call_later(0.0, boom)
    reactor.call_later(0.0, ran.append, "after")
    reactor._run_timers(time.monotonic())
    assert ran == ["after"]


def test_run_dispatches_masks_and_stops(reactor):
    a, b = socket.socketpair()
    a.settimeout(5)
    b.setblocking(False)
    seen = []

    def on_b(mask):
        seen.append(mask)
        if mask & EVENT_READ:
            assert b.recv(100) == b"hi"
            reactor.modify(b, EVENT_WRITE, on_b)
        else:
            reactor.unregister(b)
            reactor.stop()
    reactor.register(b, EVENT_READ, on_b)
    a.send(b"hi")
    deadline = reactor.call_later(5.0, reactor.stop)   # bound the test
    reactor.run()
    deadline.cancel()
    assert seen == [EVENT_READ, EVENT_WRITE]
    a.close()
    b.close()


def test_unregister_twice_is_harmless(reactor):
    a, b = socket.socketpair()
    reactor.register(a, EVENT_READ, print)
    reactor.unregister(a)
    reactor.unregister(a)
    a.close()
    b.close()
