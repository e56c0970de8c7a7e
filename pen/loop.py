"""Reactor: a selector, a timer heap and signal wake-up.  No pen logic here.

Handlers are registered once per socket as the selector key's `data`: a
callable taking the ready event mask.  Timers sit on a heap as
(when, seq, Timer) tuples, so the heap compares floats and ints in C rather
than calling a Python __lt__ (a connect timeout per new connection makes
that heap tens of thousands deep); a cancelled timer stays on the heap with
its callback cleared, and is skipped when it comes due.
"""

import heapq
import logging
import select
import selectors
import signal
import socket
import time

log = logging.getLogger("pen")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
MAX_WAIT = 1.0   # wake at least this often, so a missed wake-up costs little
MAX_EVENTS = 1024  # events taken per epoll wait (level-triggered: the rest wait)


def epoll_mask(event):
    """epoll event bits -> selectors' mask, as EpollSelector.select() has it:
    anything but EPOLLIN means writable, anything but EPOLLOUT readable (so
    EPOLLERR and EPOLLHUP wake both directions and the handler meets the
    error)."""
    return ((EVENT_WRITE if event & ~select.EPOLLIN else 0)
            | (EVENT_READ if event & ~select.EPOLLOUT else 0))


EPOLL_BITS = 0x3f       # IN PRI OUT ERR HUP NVAL: looked up; others computed
EPOLL_MASKS = ([epoll_mask(ev) for ev in range(EPOLL_BITS + 1)]
               if hasattr(select, "EPOLLIN") else None)


class Timer:
    """A pending call; `cancel()` makes it a no-op."""

    __slots__ = ("when", "callback", "args")

    def __init__(self, when, callback, args):
        self.when, self.callback, self.args = when, callback, args

    def cancel(self):
        self.callback = None
        self.args = ()


class Reactor:
    """The event loop: `run()` until `stop()`."""

    def __init__(self, backend="epoll"):
        if backend == "poll" and hasattr(selectors, "PollSelector"):
            self.selector = selectors.PollSelector()
        elif backend == "kqueue" and hasattr(selectors, "KqueueSelector"):
            self.selector = selectors.KqueueSelector()
        else:
            self.selector = selectors.DefaultSelector()
        self.timers = []
        self.seq = 0
        self.running = False
        self.signal_handlers = {}
        self.pending_signals = []
        self.wake_r = self.wake_w = None

    # --- file descriptors -------------------------------------------------
    def register(self, fileobj, events, handler):
        self.selector.register(fileobj, events, handler)

    def modify(self, fileobj, events, handler):
        self.selector.modify(fileobj, events, handler)

    def unregister(self, fileobj):
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    # --- timers -------------------------------------------------------------
    def call_later(self, delay, callback, *args):
        self.seq += 1
        when = time.monotonic() + delay
        timer = Timer(when, callback, args)
        heapq.heappush(self.timers, (when, self.seq, timer))
        return timer

    def _run_timers(self, now):
        timers = self.timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            callback = timer.callback
            if callback is not None:
                timer.callback = None
                try:
                    callback(*timer.args)
                except Exception:
                    log.error("timer callback %r failed", callback, exc_info=True)

    def _timeout(self):
        timers = self.timers
        while timers and timers[0][2].callback is None:
            heapq.heappop(timers)
        if not timers:
            return MAX_WAIT
        return min(MAX_WAIT, max(0.0, timers[0][0] - time.monotonic()))

    # --- signals -------------------------------------------------------------
    def add_signal_handler(self, signum, callback):
        """`callback()` runs on the loop after `signum` arrives."""
        if self.wake_r is None:
            self.wake_r, self.wake_w = socket.socketpair()
            self.wake_r.setblocking(False)
            self.wake_w.setblocking(False)
            signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            self.register(self.wake_r, EVENT_READ, self._on_wakeup)
        self.signal_handlers[signum] = callback
        signal.signal(signum, self._record_signal)

    def _record_signal(self, signum, frame):
        # Only record it: the loop does the work (STYLE: signal handlers).
        self.pending_signals.append(signum)

    def _on_wakeup(self, mask):
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run_signals(self):
        pending, self.pending_signals = self.pending_signals, []
        for signum in pending:
            callback = self.signal_handlers.get(signum)
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.error("signal %d handler failed", signum, exc_info=True)

    # --- the loop -----------------------------------------------------------------
    def stop(self):
        self.running = False

    def run(self):
        self.running = True
        selector = self.selector
        if (type(selector) is selectors.EpollSelector
                and isinstance(getattr(selector, "_fd_to_key", None), dict)
                and hasattr(getattr(selector, "_selector", None), "poll")):
            self._run_epoll(selector._selector.poll, selector._fd_to_key)
            return
        select = selector.select
        monotonic = time.monotonic
        while self.running:
            events = select(self._timeout())
            for key, mask in events:
                try:
                    key.data(mask)
                except Exception:
                    log.error("handler %r failed", key.data, exc_info=True)
            if self.pending_signals:
                self._run_signals()
            if self.timers:
                self._run_timers(monotonic())

    def _run_epoll(self, poll, fd_to_key):
        """run() on epoll, reading the EpollSelector's epoll object and its
        fd -> SelectorKey table (`_selector`, `_fd_to_key`: CPython's
        selectors.py internals, checked for in run(); any other selector
        takes the loop above).  Registration still goes through the
        selector.  Per loop turn this saves select()'s wrapper -- a (key,
        mask) list, timeout rounding (epoll.poll rounds up itself), module
        lookups per event -- and a second clock read and two calls for the
        timers: ~1.5 us per turn, which at one event per turn (a single
        request/response connection) is a tenth of the latency we add.
        A bounded `maxevents`: selectors asks for one slot per registered
        fd, and CPython allocates that buffer on every poll."""
        timers = self.timers
        monotonic = time.monotonic
        heappop = heapq.heappop
        now = monotonic()
        while self.running:
            while timers and timers[0][2].callback is None:
                heappop(timers)
            if timers:
                timeout = timers[0][0] - now
                timeout = 0 if timeout <= 0 else MAX_WAIT if timeout > MAX_WAIT else timeout
            else:
                timeout = MAX_WAIT
            try:
                ready = poll(timeout, MAX_EVENTS)
            except InterruptedError:
                ready = ()
            if ready:
                # Every key is looked up before any handler runs, as
                # select() does: a handler may close a socket whose fd a
                # later accept in this batch reuses, and the stale event
                # must go to the old key's handler (which ignores it).
                for key, event in [(fd_to_key.get(fd), event) for fd, event in ready]:
                    if key is None:
                        continue
                    try:
                        key.data((EPOLL_MASKS[event] if event <= EPOLL_BITS
                                  else epoll_mask(event)) & key.events)
                    except Exception:
                        log.error("handler %r failed", key.data, exc_info=True)
            if self.pending_signals:
                self._run_signals()
            now = monotonic()
            if timers and timers[0][0] <= now:
                self._run_timers(now)
                now = monotonic()

    def close(self):
        if self.wake_r is not None:
            signal.set_wakeup_fd(-1)
            self.unregister(self.wake_r)
            self.wake_r.close()
            self.wake_w.close()
            self.wake_r = self.wake_w = None
        self.selector.close()


def restore_default_signals(signums):
    for signum in signums:
        signal.signal(signum, signal.SIG_DFL)


def close_quietly(sock):
    try:
        sock.close()
    except OSError:
        pass


def fd_limit():
    """The soft RLIMIT_NOFILE, raised to the hard limit where allowed."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft



