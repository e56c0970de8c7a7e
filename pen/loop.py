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
import selectors
import signal
import socket
import time

log = logging.getLogger("pen")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
MAX_WAIT = 1.0   # wake at least this often, so a missed wake-up costs little


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
        select = self.selector.select
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



