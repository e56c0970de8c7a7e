"""mergelogs: merge web server logs with pen's log file (mergelogs(1)).

    mergelogs -p penlog [-c] [-d] [-j jitter] [-t seconds] server1:logfile1 ...

pen's log file (`pen -l FILE`) has a line `CLIENT WHEN SERVER REQUEST` per
request.  Each web server's log is in common/combined format, its client
field naming pen.  The server logs are merged in time order; each line's
client becomes the client of the pen line for that server and request whose
time is nearest (within the jitter), or the server's own address when none
is found.  Times are written in UTC (+0000).

By default the pen log is read once, keeping only the lines within the
jitter of the current time (they are in time order); -c searches the whole
pen log for every web server line instead.
"""

import calendar
import datetime
import getopt
import io
import re
import sys
import time

from .errors import ConfigError
from .netlog import parse_file_log

JITTER_DEFAULT = 600      # seconds (-j)
KEEP_MAX = 100            # pen keeps this much of the request in its log
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# client, stuff, [time], stuff, "request", rest  (mergelogs.c's sscanf)
WEB_LINE = re.compile(r'([^ ]+) ([^\[]+)\[([^\]]+)\]([^"]+)"([^"]+)"([^\n]+)')
WEB_TIME = re.compile(r"(\d+)/(\w{3})/(\d+):(\d+):(\d+):(\d+)(?:\s+([+-])(\d\d)(\d\d))?")

USAGE = """\
Usage: mergelogs -p penlog [-c] [-d] [-j jitter] [-t seconds] \\
        server1:logfile1 [server2:logfile2 ...]

  -c                Do not use penlog cache
  -d                Debugging (repeat for more)
  -p penlog         Log file from pen
  -j jitter         Jitter in seconds [600]
  -t seconds        Timezone
  server:logfile    Web server address and name of logfile
"""


# --- PURE: lines and times ---------------------------------------------------------

def parse_time(text):
    """'09/Jan/2002:00:27:15 +0100' -> seconds since the epoch, or None."""
    m = WEB_TIME.match(text.strip())
    if m is None or m.group(2) not in MONTHS:
        return None
    day, mon, year, hh, mi, ss, sign, tzh, tzm = m.groups()
    try:
        t = calendar.timegm(datetime.datetime(int(year), MONTHS.index(mon) + 1, int(day),
                                              int(hh), int(mi), int(ss)).timetuple())
    except (ValueError, OverflowError):
        return None
    if sign:
        offset = 3600 * int(tzh) + 60 * int(tzm)
        t = t - offset if sign == "+" else t + offset
    return t


def format_time(t):
    tm = time.gmtime(t)
    return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (
        tm.tm_mday, MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec)


class WebLine:
    """One parsed web server log line."""

    __slots__ = ("client", "before", "when", "middle", "request", "rest")

    def __init__(self, client, before, when, middle, request, rest):
        self.client, self.before, self.when = client, before, when
        self.middle, self.request, self.rest = middle, request, rest

    def render(self, client):
        return '%s %s[%s]%s"%s"%s\n' % (client, self.before, format_time(self.when),
                                        self.middle, self.request, self.rest)


def parse_web_line(line):
    m = WEB_LINE.match(line)
    if m is None:
        return None
    when = parse_time(m.group(3))
    if when is None:
        return None
    client, before, _, middle, request, rest = m.groups()
    return WebLine(client, before, when, middle, request, rest)


def same_request(pen_request, web_request):
    """pen keeps the first KEEP_MAX characters of the request."""
    return pen_request[:KEEP_MAX] == web_request[:KEEP_MAX]


def best(entries, server, when, request):
    """The client of the entry for `server` and `request` nearest `when`
    (the first of equals), or None.  entries: (client, when, server, request)."""
    found, distance = None, None
    for client, t, s, r in entries:
        if s == server and same_request(r, request):
            d = abs(when - t)
            if distance is None or d < distance:
                found, distance = client, d
    return found


class PenWindow:
    """pen log entries within the jitter of the current time, read once."""

    def __init__(self, lines, jitter, tz):
        self.lines, self.jitter, self.tz = iter(lines), jitter, tz
        self.entries = []          # in file order (time order)
        self.done = False

    def around(self, when):
        """The entries from when - jitter to when + jitter."""
        lo, hi = when - self.jitter, when + self.jitter
        entries = self.entries
        while not self.done and not (entries and entries[-1][1] > hi):
            line = next(self.lines, None)
            if line is None:
                self.done = True
                break
            entry = parse_file_log(line)
            if entry is not None:
                client, t, server, request = entry
                entries.append((client, t - self.tz, server, request))
        drop = 0
        while drop < len(entries) and entries[drop][1] < lo:
            drop += 1
        del entries[:drop]
        return [e for e in entries if e[1] <= hi]


class PenScan:
    """-c: the whole pen log, searched again for every web server line."""

    def __init__(self, fileobj, tz):
        self.file, self.tz = fileobj, tz

    def around(self, when):
        self.file.seek(0)
        for line in self.file:
            entry = parse_file_log(line)
            if entry is not None:
                client, t, server, request = entry
                yield client, t - self.tz, server, request


def server_lines(name, lines, debug=0, err=sys.stderr):
    """The parsable lines of one web server log, as WebLines."""
    for n, line in enumerate(lines, 1):
        parsed = parse_web_line(line)
        if parsed is not None:
            yield parsed
        elif debug:
            err.write(f"mergelogs: {name} line {n}: not a web server log line\n")


def merge(servers, pen, out, debug=0, err=sys.stderr):
    """servers: [(name, iterator of WebLine)]; pen: a PenWindow or PenScan.
    Writes the merged lines to out, oldest first (the first server of equals);
    returns (lines written, lines with no pen match)."""
    heads = [next(it, None) for _, it in servers]
    written = unmatched = 0
    while True:
        live = [i for i, h in enumerate(heads) if h is not None]
        if not live:
            return written, unmatched
        i = min(live, key=lambda k: heads[k].when)
        name, it = servers[i]
        line = heads[i]
        client = best(pen.around(line.when), name, line.when, line.request)
        if client is None:
            unmatched += 1
            client = name
            if debug:
                err.write(f"mergelogs: no pen line for {name} {line.request!r}\n")
        out.write(line.render(client))
        written += 1
        heads[i] = next(it, None)


def split_server(arg):
    """'server:logfile' or '[v6]:logfile' -> (server, logfile)."""
    if arg.startswith("["):
        end = arg.find("]:")
        if end > 0:
            return arg[1:end], arg[end + 2:]
    server, sep, path = arg.partition(":")
    if not sep or not server or not path:
        raise ConfigError(f"bogus server {arg!r} (expected server:logfile)")
    return server, path


def parse_args(argv):
    try:
        opts, args = getopt.getopt(argv, "p:j:t:cdh")
    except getopt.GetoptError as e:
        raise ConfigError(f"{e.msg} (see mergelogs -h)") from None
    o = {"penlog": None, "jitter": JITTER_DEFAULT, "tz": 0, "cache": True, "debug": 0}
    for flag, value in opts:
        if flag == "-h":
            return None, []
        if flag == "-p":
            o["penlog"] = value
        elif flag in ("-j", "-t"):
            try:
                number = int(value)
            except ValueError:
                raise ConfigError(f"{flag} {value!r}: expected a number of seconds") from None
            if flag == "-j" and number < 0:
                raise ConfigError(f"-j {value!r}: expected a number of seconds, 0 or more")
            o["jitter" if flag == "-j" else "tz"] = number
        elif flag == "-c":
            o["cache"] = False
        elif flag == "-d":
            o["debug"] += 1
    if o["penlog"] is None:
        raise ConfigError("-p penlog is required (pen's log file)")
    if not args:
        raise ConfigError("expected at least one server:logfile")
    return o, [split_server(a) for a in args]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    files = []
    try:
        o, servers = parse_args(argv)
        if o is None:
            sys.stdout.write(USAGE)
            return 0
        for path in [o["penlog"]] + [p for _, p in servers]:
            try:
                files.append(open(path, encoding="latin-1", newline="\n"))
            except OSError as e:
                raise ConfigError(f"cannot open {path}: {e.strerror}") from None
        pen_file, logs = files[0], files[1:]
        pen = (PenWindow(pen_file, o["jitter"], o["tz"]) if o["cache"]
               else PenScan(pen_file, o["tz"]))
        streams = [(name, server_lines(name, f, o["debug"]))
                   for (name, _), f in zip(servers, logs)]
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="latin-1", newline="\n")
        try:
            written, unmatched = merge(streams, pen, out, o["debug"])
            out.flush()
        finally:
            out.detach()              # stdout stays open for the caller
        if o["debug"]:
            sys.stderr.write(f"mergelogs: {written} lines, {unmatched} without a pen line\n")
    except ConfigError as e:
        sys.stderr.write(f"mergelogs: {e}\n")
        return 1
    except BrokenPipeError:           # mergelogs ... | head
        sys.stderr.close()
        return 0
    finally:
        for f in files:
            f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
