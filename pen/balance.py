"""PURE server selection, as pen 0.34.1's server.c, plus the extensions.

No sockets here.  The shape follows pen: `initial()` picks a candidate
(the client's previous server, else prio > weight > hash > round robin, or
an extension algorithm), `can_try()` is pen's try_server checks (blacklist,
soft/hard limit, server ACL), and `failover()` walks the next indexes after
a failed one, wrapping round to the initial server, which is tried last.
`choose()` strings them together for a new connection.  All take `now`
(monotonic seconds) so tests drive time.

Where pen 0.34.1 is buggy we do the sensible thing (SPEC §3): an expired
-T entry is forgotten even when the same client returns alone; a client
refused by the client ACL never falls through to the emergency server.
"""

import ipaddress
import random as _random
import struct
from collections import OrderedDict, deque

WEIGHT_FACTOR = 256


class ClientEntry:
    """A tracked client: the server it used last, and its traffic."""

    __slots__ = ("server", "last", "connects", "sx", "rx")

    def __init__(self, server, last):
        self.server, self.last = server, last
        self.connects = self.sx = self.rx = 0


class ClientTable:
    """pen's client table: `size` slots keyed by client IP, LRU evicted."""

    def __init__(self, size):
        self.size = max(1, size)
        self.entries = OrderedDict()

    def __len__(self):
        return len(self.entries)

    def lookup(self, ip, now, expiry):
        """The live entry for `ip`, or None.  An expired one is forgotten."""
        entry = self.entries.get(ip)
        if entry is None:
            return None
        if expiry and now - entry.last > expiry:
            del self.entries[ip]
            return None
        return entry

    def touch(self, ip, now, expiry):
        """The entry for `ip`, refreshed (created if new or expired, evicting
        the least recently used when full), its connect count bumped."""
        entries = self.entries
        entry = self.lookup(ip, now, expiry)
        if entry is None:
            while len(entries) >= self.size:
                entries.popitem(last=False)
            entry = entries[ip] = ClientEntry(None, now)
        else:
            entries.move_to_end(ip)
            entry.last = now
        entry.connects += 1
        return entry

    def resize(self, size):
        self.size = max(1, size)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


# --- availability -------------------------------------------------------------------


def up(server, now):
    """Not blacklisted, not disabled or draining, has an address (pen's
    !server_is_unavailable, plus our disable/drain)."""
    return server.available(now)


def can_try(server, now, returning=False, permitted=None):
    """pen's try_server checks: up, below the soft limit (a returning client
    may go on to the hard limit), and the server's ACL lets the client in."""
    if not server.available(now):          # up(), without its frame
        return False
    if server.max and server.conn >= server.max and (
            not returning or server.conn >= server.hard):
        return False
    if permitted is not None and server.acl >= 0 and not permitted(server.acl):
        return False
    return True


# --- the algorithms (each returns an index or None) ------------------------------------


def hash_ip(ip, port=None):
    """pen_hash: IPv4 as the host-order (little-endian) uint32 of its bytes,
    XOR the byte-swapped port when given (-r); IPv6 its last byte; else 0."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return 0
    if addr.version == 6:
        return addr.packed[15]
    value = struct.unpack("<I", addr.packed)[0]
    if port is not None:
        value ^= struct.unpack("<H", struct.pack(">H", port))[0]
    return value


def by_roundrobin(state, now, permitted=None):
    """The next up server after the last one picked (the first pick is 1)."""
    servers = state.servers
    n = len(servers)
    last = state.last_server % n if n else 0
    for step in range(1, n + 1):
        i = (last + step) % n
        if servers[i].available(now):      # up(), without its frame
            state.last_server = i
            return i
    return None


def by_hash(state, ip, port, now, permitted=None):
    n = len(state.servers)
    return hash_ip(ip, port) % n if n else None


def by_weight(state, now, permitted=None):
    """Fewest connections per unit of weight (integer, as pen); ties to the
    lowest index; weight 0 is never chosen."""
    best = best_load = None
    for i, s in enumerate(state.servers):
        if s.weight <= 0 or not up(s, now):
            continue
        load = WEIGHT_FACTOR * s.conn // s.weight
        if best is None or load < best_load:
            best, best_load = i, load
    return best


def by_prio(state, now, permitted=None):
    """The lowest prio number among up servers; ties to the lowest index."""
    best = None
    for i, s in enumerate(state.servers):
        if up(s, now) and (best is None or s.prio < state.servers[best].prio):
            best = i
    return best


def _share(server):
    """A server's weight as a divisor: 0 (unweighted) counts as 1."""
    return server.weight if server.weight > 0 else 1


def by_leastconn(state, now, permitted=None):
    """Crossroads' byconnections: fewest current connections per unit of
    weight (weight 0 counts as 1); ties to the lowest index."""
    best = best_load = None
    for i, s in enumerate(state.servers):
        if can_try(s, now, permitted=permitted):
            load = s.conn / _share(s)
            if best is None or load < best_load:
                best, best_load = i, load
    return best


def by_order(state, now, permitted=None):
    """Crossroads' byorder: the first server that can take the client."""
    for i, s in enumerate(state.servers):
        if can_try(s, now, permitted=permitted):
            return i
    return None


def by_random(state, now, permitted=None, rng=_random):
    """Any server that can take the client; weight-proportional when any
    weight is set (weight 0 then counts as 1)."""
    candidates = [i for i, s in enumerate(state.servers)
                  if can_try(s, now, permitted=permitted)]
    if not candidates:
        return None
    servers = state.servers
    if any(servers[i].weight > 0 for i in candidates):
        return rng.choices(candidates, [_share(servers[i]) for i in candidates])[0]
    return rng.choice(candidates)


# --- bysize / byduration: per-server figures fed by finished connections ----------------

OVER_MAX = 100000       # `over N` ceiling (the window is kept in memory)


class Figures:
    """One server's usage figures (Crossroads' bysize/byduration): totals
    since start, and a window of the last `over` finished connections."""

    __slots__ = ("decay", "count", "bytes", "seconds", "window", "win_bytes",
                 "win_seconds", "win_size")

    def __init__(self, decay=0):
        self.decay = decay          # percent, `server N decay D`
        self.clear()

    def clear(self):
        """Forget every finished connection (`server N reset`); keep decay."""
        self.count = 0
        self.bytes = self.seconds = 0.0
        self.window = deque()       # (bytes, seconds) of the last win_size
        self.win_bytes = self.win_seconds = 0.0
        self.win_size = 0

    def record(self, nbytes, seconds, over):
        self.count += 1
        self.bytes += nbytes
        self.seconds += seconds
        if not over:
            return
        window = self.window
        if self.win_size != over:
            while len(window) > over:
                window.popleft()
            self.win_size = over
            self.win_bytes = sum(b for b, _ in window)
            self.win_seconds = sum(d for _, d in window)
        if len(window) == over:
            b, d = window.popleft()
            self.win_bytes -= b
            self.win_seconds -= d
        window.append((nbytes, seconds))
        self.win_bytes += nbytes
        self.win_seconds += seconds

    def figure(self, kind, over):
        """Average bytes (kind "bysize") or seconds ("byduration") per
        connection: over the window when `over`, else over all; 0 when
        nothing has finished yet."""
        if over and self.win_size == over:
            n = len(self.window)
            total = self.win_bytes if kind == "bysize" else self.win_seconds
        elif over and self.window:      # `over` just changed: the last ones kept
            last = list(self.window)[-over:]
            n = len(last)
            total = sum(b if kind == "bysize" else d for b, d in last)
        else:
            n = self.count
            total = self.bytes if kind == "bysize" else self.seconds
        return total / n if n else 0.0

    def shrink(self):
        """Another server was chosen: every figure shrinks by decay percent."""
        keep = 1.0 - self.decay / 100.0
        self.bytes *= keep
        self.seconds *= keep
        if self.window:
            self.window = deque((b * keep, d * keep) for b, d in self.window)
            self.win_bytes *= keep
            self.win_seconds *= keep


class Loads(dict):
    """server index -> Figures, made on first use.  `decaying` holds the
    indexes with a decay, so a choice costs nothing when none has one."""

    def __init__(self):
        super().__init__()
        self.decaying = set()

    def __missing__(self, index):
        figures = self[index] = Figures()
        return figures

    def set_decay(self, index, percent):
        self[index].decay = percent
        if percent:
            self.decaying.add(index)
        else:
            self.decaying.discard(index)

    def chosen(self, index):
        """Server `index` was chosen: decay every other one's figures."""
        for i in self.decaying:
            if i != index:
                self[i].shrink()


def record_finished(state, index, nbytes, seconds):
    """A connection to server `index` ended after moving `nbytes` (both
    directions) in `seconds`: feed that server's figures."""
    if isinstance(index, int):
        state.loads[index].record(nbytes, max(0.0, seconds),
                                  state.settings.algorithm_over)


def _by_figure(kind):
    def pick(state, now, permitted=None):
        """The lowest figure per unit of weight; ties to the fewest current
        connections per unit of weight, then to the lowest index."""
        over = state.settings.algorithm_over
        loads = state.loads
        best = best_key = None
        for i, s in enumerate(state.servers):
            if not can_try(s, now, permitted=permitted):
                continue
            share = _share(s)
            figures = loads.get(i)
            figure = figures.figure(kind, over) if figures is not None else 0.0
            key = (figure / share, s.conn / share)
            if best is None or key < best_key:
                best, best_key = i, key
        return best
    pick.__name__ = f"by_{kind[2:]}"
    return pick


by_size = _by_figure("bysize")
by_duration = _by_figure("byduration")


ALGORITHMS = {"leastconn": by_leastconn, "byorder": by_order, "random": by_random,
              "bysize": by_size, "byduration": by_duration}


def initial(state, ip, port, now, entry=None, permitted=None):
    """pen's initial_server: the client's previous server unless -r, else
    prio > weight > hash > extension algorithm > round robin."""
    st = state.settings
    if entry is not None and entry.server is not None and not st.roundrobin:
        if entry.server < len(state.servers):
            return entry.server
    if st.prio:
        return by_prio(state, now, permitted)
    if st.weight:
        return by_weight(state, now, permitted)
    if st.hash or st.hash_nosave:
        return by_hash(state, ip, port if st.roundrobin else None, now, permitted)
    extra = ALGORITHMS.get(st.algorithm)
    if extra is not None:
        return extra(state, now, permitted)
    return by_roundrobin(state, now, permitted)


def failover(state, first, failed, now, entry=None, permitted=None):
    """After `failed` could not be used: the next index that can take the
    client, walking round to `first` (the initial pick), tried last.
    None when stubborn or when nothing is left (then: emergency server)."""
    if state.settings.stubborn:
        return None
    servers = state.servers
    n = len(servers)
    if failed is None or n == 0:
        return None
    prev = entry.server if entry is not None else None
    i = failed
    for _ in range(n):
        i = (i + 1) % n
        if can_try(servers[i], now, returning=(i == prev), permitted=permitted):
            return _remember(state, entry, i)
        if i == first:
            break
    return None


def choose(state, ip, port, now, entry=None, permitted=None):
    """The server for a new connection, or None.  `entry` is the client's
    ClientEntry (from ClientTable.touch) or None when not tracked."""
    first = initial(state, ip, port, now, entry, permitted)
    if first is None:
        return None
    prev = entry.server if entry is not None else None
    if can_try(state.servers[first], now, returning=(first == prev), permitted=permitted):
        return _remember(state, entry, first)
    return failover(state, first, first, now, entry, permitted)


def _remember(state, entry, index):
    if entry is not None and not state.settings.hash_nosave:
        entry.server = index
    if state.loads.decaying:
        state.loads.chosen(index)
    return index
