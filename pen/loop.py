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
import os
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
# and back: selectors' mask (1..3) -> epoll's bits, as EpollSelector.register
EPOLL_EVENTS = ((0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT)
                if hasattr(select, "EPOLLIN") else None)


# A SelectorKey (a namedtuple) built by tuple.__new__, as its generated
# __new__ does after a Python frame of its own: one call per register
# instead of two.
SelectorKey = selectors.SelectorKey
new_key = tuple.__new__


def epoll_internals(selector):
    """(epoll object, fd -> SelectorKey dict) of an EpollSelector, or
    (None, None).  These are CPython's selectors.py internals (`_selector`,
    `_fd_to_key`, unchanged from 3.4 to 3.13); the Reactor reads them on the
    hot path (its run loop and register/modify/unregister) to skip the
    generic layers, and falls back to the selector's public methods for any
    other selector or if they are not there."""
    if type(selector) is not selectors.EpollSelector:
        return None, None
    epoll = getattr(selector, "_selector", None)
    keys = getattr(selector, "_fd_to_key", None)
    if not isinstance(keys, dict) or not hasattr(epoll, "poll") or EPOLL_MASKS is None:
        return None, None
    return epoll, keys


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
        self.epoll, self.keys = epoll_internals(self.selector)
        if self.epoll is not None:
            self.register = self._register_epoll
            self.modify = self._modify_epoll
            self.unregister = self._unregister_epoll
        self.timers = []
        self.seq = 0
        self.running = False
        self.signal_handlers = {}
        self.pending_signals = []
        self.wake_r = self.wake_w = None
        self.children = {}          # pid -> callback(returncode): watch_child

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

    # On epoll the three above are replaced by these, which do what the
    # EpollSelector's own methods do -- the same SelectorKey in the same
    # fd -> key table, the same epoll_ctl -- in one Python frame instead of
    # four or five (selector.register: ~2.4 -> ~1.0 us; measured below in
    # the commit that added them).  The selector stays usable as such
    # (get_key, get_map, select, close).
    def _fd(self, fileobj):
        if type(fileobj) is int:
            fd = fileobj
        else:
            fd = fileobj.fileno()
        if fd < 0:
            raise ValueError(f"invalid file descriptor: {fileobj!r}")
        return fd

    def _register_epoll(self, fileobj, events, handler):
        fd = fileobj if type(fileobj) is int else self._fd(fileobj)
        keys = self.keys
        if fd in keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        if not 0 < events < 4:
            raise ValueError(f"invalid events: {events!r}")
        keys[fd] = new_key(SelectorKey, (fileobj, fd, events, handler))
        try:
            self.epoll.register(fd, EPOLL_EVENTS[events])
        except BaseException:
            del keys[fd]
            raise

    def _modify_epoll(self, fileobj, events, handler):
        fd = fileobj if type(fileobj) is int else self._fd(fileobj)
        key = self.keys.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if events != key.events:
            if not 0 < events < 4:
                raise ValueError(f"invalid events: {events!r}")
            self.epoll.modify(fd, EPOLL_EVENTS[events])
        elif handler == key.data:
            return
        self.keys[fd] = new_key(SelectorKey, (key.fileobj, fd, events, handler))

    def _unregister_epoll(self, fileobj):
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        if fd < 0:               # closed already: find it by identity, as selectors does
            fd = next((k.fd for k in self.keys.values() if k.fileobj is fileobj), -1)
        key = self.keys.pop(fd, None)
        if key is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass

    def forget(self, fileobj):
        """`fileobj` is about to be closed: take it out of the table.  On
        epoll without an epoll_ctl -- closing a descriptor takes it out of
        every epoll set, once no other descriptor refers to the same open
        file (ours are close-on-exec and never duplicated; hooks start by
        posix_spawn, whose child shares nothing until exec).  One system
        call less per socket closed while registered: with ~4 epoll_ctl
        per relayed connection, 1-2 of them."""
        if self.epoll is None:
            self.unregister(fileobj)
        else:
            self.keys.pop(fileobj if type(fileobj) is int else fileobj.fileno(), None)

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

    # --- child processes (pen/hooks.py) -------------------------------------------
    def watch_child(self, pid, callback):
        """`callback(returncode)` runs on the loop once child `pid` has
        exited; the Reactor reaps it (SIGCHLD).  Only watched pids are
        waited for, one by one, so a child someone else waits for is never
        taken from them (waitpid(-1) would)."""
        if signal.SIGCHLD not in self.signal_handlers:
            self.add_signal_handler(signal.SIGCHLD, self._reap_children)
        self.children[pid] = callback
        self._reap_children()       # it may have exited before the handler was there

    def _reap_children(self):
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:       # reaped by someone else
                done, status = pid, 0
            if done:
                callback = self.children.pop(pid)
                try:
                    callback(os.waitstatus_to_exitcode(status))
                except Exception:
                    log.error("child %d callback failed", pid, exc_info=True)

    # --- the loop -----------------------------------------------------------------
    def stop(self):
        self.running = False

    def run(self):
        self.running = True
        if self.epoll is not None:
            self._run_epoll(self.epoll.poll, self.keys)
            return
        select = self.selector.select
        monotonic = time.monotonic
        while self.running:
            events = select(self._timeout())
            for key, mask in events:
                try:
                    key.data(mask)
                except Exception:
                    self._handler_failed(key)
            if self.pending_signals:
                self._run_signals()
            if self.timers:
                self._run_timers(monotonic())

    def _run_epoll(self, poll, fd_to_key):
        """run() on epoll, reading the EpollSelector's epoll object and its
        fd -> SelectorKey table (see epoll_internals()).  Per loop turn
        this saves select()'s wrapper -- a (key,
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
                # must go to the old key's handler (which ignores it).  One
                # event (a light load's usual turn) skips the list
                # comprehension's frame.
                if len(ready) == 1:
                    fd, event = ready[0]
                    batch = ((fd_to_key.get(fd), event),)
                else:
                    batch = [(fd_to_key.get(fd), event) for fd, event in ready]
                for key, event in batch:
                    if key is None:
                        continue
                    try:
                        key.data((EPOLL_MASKS[event] if event <= EPOLL_BITS
                                  else epoll_mask(event)) & key.events)
                    except Exception:
                        self._handler_failed(key)
            if self.pending_signals:
                self._run_signals()
            now = monotonic()
            if timers and timers[0][0] <= now:
                self._run_timers(now)
                now = monotonic()

    def _handler_failed(self, key):
        """A handler raised something other than what it handles itself: a
        bug.  Log it with its traceback, then stop that one piece of work
        (asyncio's _fatal_error): the handler's object aborts (a Conn
        closes), or, if it has no abort(), its socket leaves the loop, so
        the failure does not repeat on every turn."""
        handler = key.data
        log.error("handler %r failed", handler, exc_info=True)
        abort = getattr(getattr(handler, "__self__", None), "abort", None)
        try:
            if abort is not None:
                abort()
            else:
                self.unregister(key.fileobj)
        except Exception:
            log.error("cleaning up after %r failed too", handler, exc_info=True)

    def close(self):
        if self.wake_r is not None:
            signal.set_wakeup_fd(-1)
            self.unregister(self.wake_r)
            self.wake_r.close()
            self.wake_w.close()
            self.wake_r = self.wake_w = None
        self.selector.close()


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



