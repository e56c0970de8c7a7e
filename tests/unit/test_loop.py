"""Reactor: timers and the event dispatch, without the network (a socketpair)."""

import socket
import time

import pytest

from pen.loop import EVENT_READ, EVENT_WRITE, Reactor


@pytest.fixture(params=["epoll", "poll"])
def reactor(request):
    """The epoll Reactor (its own register/modify/unregister and loop on
    the EpollSelector's internals) and the generic one (PollSelector)."""
    r = Reactor(request.param)
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
    with pytest.raises(KeyError):
        reactor.selector.get_key(a)
    reactor.register(a, EVENT_READ, print)      # and it can come back
    assert reactor.selector.get_key(a).events == EVENT_READ
    reactor.unregister(a)
    a.close()
    b.close()


class Buggy:
    """A handler object whose handler raises a bug (not an OSError)."""

    def __init__(self, reactor, sock, with_abort):
        self.reactor, self.sock = reactor, sock
        self.calls = self.aborted = 0
        if with_abort:
            self.abort = self._abort

    def on_event(self, mask):
        self.calls += 1
        raise ValueError("bug")

    def _abort(self):
        self.aborted += 1
        self.reactor.unregister(self.sock)


@pytest.mark.parametrize("with_abort", [True, False])
def test_a_buggy_handler_is_logged_with_traceback_and_stopped(reactor, caplog, with_abort):
    a, b = socket.socketpair()
    b.setblocking(False)
    buggy = Buggy(reactor, b, with_abort)
    reactor.register(b, EVENT_READ, buggy.on_event)
    a.send(b"x")                        # stays readable: a live handler would spin
    for _ in range(3):
        reactor.call_later(0.05, lambda: None)
    deadline = reactor.call_later(0.3, reactor.stop)
    reactor.run()
    deadline.cancel()
    assert buggy.calls == 1             # once, not on every turn
    assert buggy.aborted == (1 if with_abort else 0)
    with pytest.raises(KeyError):
        reactor.selector.get_key(b)
    record = next(r for r in caplog.records if "failed" in r.getMessage())
    assert record.exc_info and record.exc_info[0] is ValueError
    a.close()
    b.close()


def test_registrations_keep_the_selector_consistent(reactor):
    a, b = socket.socketpair()
    sel = reactor.selector
    reactor.register(a, EVENT_READ, print)
    key = sel.get_key(a)
    assert (key.fileobj, key.fd, key.events, key.data) == (a, a.fileno(), EVENT_READ, print)
    with pytest.raises(KeyError):
        reactor.register(a, EVENT_WRITE, print)
    reactor.modify(a, EVENT_READ | EVENT_WRITE, repr)
    key = sel.get_key(a)
    assert (key.events, key.data) == (EVENT_READ | EVENT_WRITE, repr)
    reactor.modify(a, EVENT_READ | EVENT_WRITE, str)       # handler only
    assert sel.get_key(a).data is str
    assert len(sel.get_map()) >= 1
    reactor.unregister(a)
    with pytest.raises(KeyError):
        sel.get_key(a)
    with pytest.raises(KeyError):
        reactor.modify(a, EVENT_READ, print)
    with pytest.raises(ValueError):
        reactor.register(b, 0, print)
    with pytest.raises(KeyError):
        sel.get_key(b)                  # a refused registration leaves nothing
    reactor.register(b.fileno(), EVENT_WRITE, print)        # by fd works too
    assert sel.get_key(b.fileno()).events == EVENT_WRITE
    reactor.unregister(b.fileno())
    a.close()
    b.close()


def test_unregister_after_close_finds_the_socket(reactor):
    a, b = socket.socketpair()
    reactor.register(a, EVENT_READ, print)
    a.close()                           # its fileno() is now -1
    reactor.unregister(a)
    assert not any(k.fileobj is a for k in reactor.selector.get_map().values())
    b.close()


def test_error_and_hangup_reach_the_handler_as_read(reactor):
    a, b = socket.socketpair()
    b.setblocking(False)
    seen = []

    def on_b(mask):
        seen.append(mask)
        reactor.unregister(b)
        reactor.stop()
    reactor.register(b, EVENT_READ, on_b)
    a.close()                           # EOF/HUP on b
    deadline = reactor.call_later(5.0, reactor.stop)
    reactor.run()
    deadline.cancel()
    assert seen and seen[0] & EVENT_READ
    b.close()
