"""penlogd: consolidate web server logs with pen's network log (penlogd(1)).

    penlogd [-fd] [-j dir] [-l logfile] [-n N] [-p pidfile] [-u user] port

Datagrams arrive on one UDP port.  A datagram that starts with '+' is pen's
network log line `+ CLIENT SERVER REQUEST` (pen -l host:port): it goes into
a ring of the last N entries.  Anything else is a web server's log line
(sent by penlog): its source address names the server; the newest cached
entry for that server whose request starts like the line's quoted request
gives the real client, which replaces the line's first field.  A line with
no match is written as it came; a line without a quoted request is dropped,
as pen's penlogd does.

Memory is the ring (N entries of three short strings) and one datagram:
nothing else is kept, whatever arrives.  SIGHUP reopens the log file,
SIGTERM (or SIGINT) closes it, removes the pid file and exits 0.
"""

import getopt
import ipaddress
import logging
import os
import selectors
import signal
import socket
import sys

from .daemon import check_chroot, daemonize, drop_privileges, resolve_user, setup_logging
from .errors import ConfigError
from .netlog import FIELD_MAX, parse_netlog

log = logging.getLogger("penlogd")

CACHE_DEFAULT = 1000      # -n: pen log entries to keep
RECV_MAX = 65535          # the largest UDP datagram
BATCH = 256               # datagrams handled per wakeup before flushing the log

USAGE = """\
Usage:
  penlogd [options] port

  -d        debugging on
  -f        stay in foreground
  -j dir    run in chroot
  -l file   write log to file
  -b        unbuffer output (Testing Only!)
  -n N      number of pen log entries to cache [1000]
  -p file   write pid to file
  -u user   run as alternative user
"""


# --- PURE: the cache and the merge ------------------------------------------------

def canonical_ip(text):
    """An address as one spelling (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class PenCache:
    """The last `size` entries of pen's network log, in a fixed ring."""

    __slots__ = ("slots", "next")

    def __init__(self, size=CACHE_DEFAULT):
        if size < 1:
            raise ValueError("cache size must be at least 1")
        self.slots = [None] * size      # (server, client, request) or None
        self.next = 0

    def __len__(self):
        return sum(1 for s in self.slots if s is not None)

    def store(self, server, client, request):
        self.slots[self.next] = (server, client, request[:FIELD_MAX])
        self.next = (self.next + 1) % len(self.slots)

    def find(self, server, request):
        """The client of the newest entry for `server` whose request starts
        with `request` (its first FIELD_MAX characters), or None."""
        key = request[:FIELD_MAX]
        slots, n = self.slots, len(self.slots)
        for k in range(1, n + 1):
            entry = slots[(self.next - k) % n]
            if entry is None:
                return None          # the ring is filled in order: nothing older
            if entry[0] == server and entry[2].startswith(key):
                return entry[1]
        return None


def handle_datagram(cache, data, source_ip):
    """One datagram from `source_ip`: a pen line is cached (returns None);
    a web server line comes back as bytes to write, its first field
    replaced by the real client when pen logged the request; garbage is
    dropped (None)."""
    text = data.decode("latin-1")
    if text.startswith("+"):
        entry = parse_netlog(data)
        if entry is None:
            log.debug("discarding bogus pen line %r", text[:200])
            return None
        client, server, request = entry
        server_ip = canonical_ip(server)
        if server_ip is None:
            log.debug("bogus address %r", server)
            return None
        cache.store(server_ip, client, request)
        return None
    first = text.find('"')
    second = text.find('"', first + 1) if first >= 0 else -1
    if second < 0:
        log.debug("bogus web line %r", text[:200])
        return None
    client = cache.find(canonical_ip(source_ip) or source_ip, text[first + 1:second])
    if client is not None:
        space = text.find(" ")
        if space < 0:
            return None
        text = client + text[space:]
    if not text.endswith("\n"):
        text += "\n"
    return text.encode("latin-1")


# --- the program -------------------------------------------------------------------

class Options:
    __slots__ = ("debug", "foreground", "jail", "logfile", "cache", "pidfile",
                 "user", "unbuffered", "port")

    def __init__(self):
        self.debug = 0
        self.foreground = self.unbuffered = False
        self.jail = self.logfile = self.pidfile = self.user = None
        self.cache = CACHE_DEFAULT
        self.port = None


def parse_args(argv):
    """Options from argv; ConfigError says what was wrong."""
    try:
        opts, args = getopt.getopt(argv, "j:l:n:p:u:dfbh")
    except getopt.GetoptError as e:
        raise ConfigError(f"{e.msg} (expected {USAGE.splitlines()[1].strip()})") from None
    o = Options()
    for flag, value in opts:
        if flag == "-h":
            return None
        if flag == "-d":
            o.debug += 1
        elif flag == "-f":
            o.foreground = True
        elif flag == "-b":
            o.unbuffered = True
        elif flag == "-j":
            o.jail = value
        elif flag == "-l":
            o.logfile = value
        elif flag == "-p":
            o.pidfile = value
        elif flag == "-u":
            o.user = value
        elif flag == "-n":
            if not (value.isascii() and value.isdigit() and len(value) <= 9) \
                    or int(value) < 1:
                raise ConfigError(f"-n {value!r}: expected a number of entries, at least 1")
            o.cache = int(value)
    if len(args) != 1:
        raise ConfigError("expected one UDP port to listen on" if not args
                          else f"unexpected arguments after the port: {' '.join(args[1:])}")
    if not (args[0].isascii() and args[0].isdigit() and len(args[0]) <= 5) \
            or not 0 < int(args[0]) < 65536:
        raise ConfigError(f"port {args[0]!r}: expected a number 1-65535")
    o.port = int(args[0])
    return o


def bind(port):
    """A UDP socket on every address: IPv6 and IPv4 when the host has IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        where = ("::", port)
    except OSError:
        sock, where = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ("0.0.0.0", port)
    try:
        sock.bind(where)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on UDP port {port}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


class Output:
    """The merged log: a file (reopened on SIGHUP) or stdout."""

    def __init__(self, path, unbuffered):
        self.path, self.unbuffered = path, unbuffered
        self.file = self._open() if path else sys.stdout.buffer

    def _open(self):
        try:
            return open(self.path, "ab", buffering=0 if self.unbuffered else -1)
        except OSError as e:
            raise ConfigError(f"cannot open log file {self.path}: {e.strerror}") from None

    def reopen(self):
        if not self.path:
            return
        try:
            new = self._open()
        except ConfigError as e:
            log.error("%s; still writing to the old one", e)
            return
        self.file.close()
        self.file = new
        log.debug("reopened %s", self.path)

    def write(self, line):
        self._guarded(self.file.write, line)

    def flush(self):
        self._guarded(self.file.flush)

    @staticmethod
    def _guarded(fn, *args):
        try:
            fn(*args)
        except OSError as e:         # a full disk: say so, keep receiving
            log.error("cannot write the log: %s", e.strerror)

    def close(self):
        self.flush()
        if self.path:
            self.file.close()


def serve(sock, cache, out, wakeup):
    """The loop: datagrams in, merged lines out, until SIGTERM."""
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wakeup, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is wakeup:
                    for signum in os.read(wakeup, 64):
                        if signum == signal.SIGHUP:
                            out.flush()
                            out.reopen()
                        elif signum in (signal.SIGTERM, signal.SIGINT):
                            log.debug("exit main loop")
                            return
                    continue
                for _ in range(BATCH):
                    try:
                        data, peer = sock.recvfrom(RECV_MAX)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        log.debug("error receiving data: %s", e)
                        break
                    line = handle_datagram(cache, data, peer[0])
                    if line is not None:
                        out.write(line)
                out.flush()
    finally:
        selector.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        o = parse_args(argv)
        if o is None:
            sys.stdout.write(USAGE)
            return 0
        setup_logging(o.debug, o.foreground, log, prefix="penlogd: ")
        user = resolve_user(o.user) if o.user else None
        if o.jail:
            check_chroot(o.jail)
        logfile, pidfile = o.logfile, o.pidfile
        if not o.jail:          # inside a jail, paths are the jail's (as pen's penlogd)
            logfile = logfile and os.path.abspath(logfile)
            pidfile = pidfile and os.path.abspath(pidfile)
        sock = bind(o.port)
        devnull = os.open(os.devnull, os.O_RDWR)   # for detaching, after the chroot too
        drop_privileges(o.jail, user)
        out = Output(logfile, o.unbuffered)
        pidfd = None
        if pidfile:
            try:
                pidfd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot create pid file {pidfile}: {e.strerror}") from None
    except ConfigError as e:
        sys.stderr.write(f"penlogd: {e}\n")
        if "expected one UDP port" in str(e):
            sys.stderr.write(USAGE)
        return 1
    if not o.foreground:
        daemonize(devnull)
    else:
        os.close(devnull)
    if pidfd is not None:
        os.write(pidfd, str(os.getpid()).encode())
        os.close(pidfd)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)   # recorded through the wakeup fd
    log.debug("listening on UDP port %d, caching %d pen log entries", o.port, o.cache)
    try:
        serve(sock, PenCache(o.cache), out, rfd)
    finally:
        out.close()
        sock.close()
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
