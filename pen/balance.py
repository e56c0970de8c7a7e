"""PURE server selection, as pen 0.34.1's server.c, plus the extensions.

No sockets here.  `choose()` picks a server for a new connection,
`failover()` the next one after a failed connect.  Both return a server
index, or None when nothing is available (the caller then tries the
emergency server or closes the client).  Both take `now` (monotonic seconds)
so tests can drive time.
"""

import ipaddress
import random as _random
from collections import OrderedDict


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

    def store(self, ip, server, now):
        """Record that `ip` uses `server` now; evicts the LRU entry if full."""
        entries = self.entries
        entry = entries.get(ip)
        if entry is None:
            while len(entries) >= self.size:
                entries.popitem(last=False)
            entry = entries[ip] = ClientEntry(server, now)
        else:
            entries.move_to_end(ip)
            entry.server, entry.last = server, now
        entry.connects += 1
        return entry

    def resize(self, size):
        self.size = max(1, size)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def forget_server(self, index):
        """Drop clients of a removed server."""
        for ip in [ip for ip, e in self.entries.items() if e.server == index]:
            del self.entries[ip]


def usable(server, now):
    """Up at all: not blacklisted, not disabled, has an address."""
    return server.status <= now and not server.disabled and server.sockaddr is not None


def available(server, now, returning=False, permitted=None):
    """pen's server_is_available: up, under its limit, and the ACL allows."""
    if not usable(server, now):
        return False
    limit = server.hard if returning else server.max
    if limit and server.conn >= limit:
        return False
    if permitted is not None and server.acl >= 0 and not permitted(server.acl):
        return False
    return True


def hash_ip(ip, port=0):
    """pen's hash of a client address: the IPv4 address as a number (IPv6:
    its low 32 bits), plus the port when given."""
    try:
        value = int(ipaddress.ip_address(ip)) & 0xFFFFFFFF
    except ValueError:  # Unix socket clients have no IP
        value = sum(ip.encode()) if ip else 0
    return value + port


def by_roundrobin(state, now, permitted=None):
    """The next available server after the last one used."""
    servers = state.servers
    n = len(servers)
    for step in range(1, n + 1):
        i = (state.last_server + step) % n
        if available(servers[i], now, permitted=permitted):
            state.last_server = i
            return i
    return None


def by_hash(state, ip, port, now, permitted=None):
    servers = state.servers
    n = len(servers)
    if not n:
        return None
    start = hash_ip(ip, port) % n
    for step in range(n):
        i = (start + step) % n
        if available(servers[i], now, permitted=permitted):
            return i
    return None


def by_weight(state, now, permitted=None):
    """Fewest connections per unit of weight; ties to the lowest index;
    weight 0 is never chosen."""
    best, best_load = None, None
    for i, s in enumerate(state.servers):
        if s.weight <= 0 or not available(s, now, permitted=permitted):
            continue
        load = s.conn / s.weight
        if best_load is None or load < best_load:
            best, best_load = i, load
    return best


def by_prio(state, now, permitted=None):
    """The lowest prio number among available servers; ties by round robin."""
    servers = state.servers
    candidates = [i for i, s in enumerate(servers)
                  if available(s, now, permitted=permitted)]
    if not candidates:
        return None
    top = min(servers[i].prio for i in candidates)
    n = len(servers)
    for step in range(1, n + 1):
        i = (state.last_server + step) % n
        if i in candidates and servers[i].prio == top:
            state.last_server = i
            return i
    return None


def by_leastconn(state, now, permitted=None):
    best = None
    for i, s in enumerate(state.servers):
        if available(s, now, permitted=permitted) and (
                best is None or s.conn < state.servers[best].conn):
            best = i
    return best


def by_order(state, now, permitted=None):
    for i, s in enumerate(state.servers):
        if available(s, now, permitted=permitted):
            return i
    return None


def by_random(state, now, permitted=None, rng=_random):
    candidates = [i for i, s in enumerate(state.servers)
                  if available(s, now, permitted=permitted)]
    return rng.choice(candidates) if candidates else None


ALGORITHMS = {"leastconn": by_leastconn, "byorder": by_order, "random": by_random}


def initial(state, ip, port, now, permitted=None):
    """The first pick for a new connection by the configured algorithm."""
    st = state.settings
    if st.prio:
        return by_prio(state, now, permitted)
    if st.weight:
        return by_weight(state, now, permitted)
    if st.hash or st.hash_nosave:
        return by_hash(state, ip, port if st.roundrobin else 0, now, permitted)
    extra = ALGORITHMS.get(getattr(st, "algorithm", None))
    if extra is not None:
        return extra(state, now, permitted)
    return by_roundrobin(state, now, permitted)


def choose(state, ip, port, now, permitted=None):
    """Server for a new connection from ip:port, or None.

    A returning client (tracked, not expired) goes back to its server if that
    is up and below its hard limit; otherwise the algorithm picks.  The
    choice is remembered unless -r or -N."""
    st = state.settings
    track = not (st.roundrobin or st.hash_nosave)
    if track:
        entry = state.clients.lookup(ip, now, st.tracking)
        if entry is not None and entry.server < len(state.servers):
            s = state.servers[entry.server]
            if available(s, now, returning=True, permitted=permitted):
                state.clients.store(ip, entry.server, now)
                return entry.server
            if st.stubborn:
                return None
    index = initial(state, ip, port, now, permitted)
    if index is not None and track:
        state.clients.store(ip, index, now)
    return index


def failover(state, ip, failed, now, tried, permitted=None):
    """The server to try after `failed` refused or timed out, or None.

    -s (stubborn) never fails over.  Otherwise each server is tried once:
    `tried` is the set of indexes already attempted for this client."""
    st = state.settings
    if st.stubborn:
        return None
    servers = state.servers
    n = len(servers)
    index = None
    if st.prio or st.weight:
        pick = by_prio if st.prio else by_weight
        index = pick(state, now, lambda a: (permitted is None or permitted(a)))
        if index in tried:
            index = None
    if index is None:
        for step in range(1, n + 1):
            i = (failed + step) % n
            if i not in tried and available(servers[i], now, permitted=permitted):
                index = i
                break
    if index is not None and not (st.roundrobin or st.hash_nosave):
        state.clients.store(ip, index, now)
    return index
