"""Traffic dumps (Crossroads' trafficlog and throughputlog, SPEC §10.4).

    trafficlog FILE            every relayed byte, Crossroads' hex layout:
        # conn 3 127.0.0.1:40000 -> 127.0.0.1:9000
        C 0000  47 45 54 20 2f 20 48 54 54 50 2f 31 2e 30 0d 0a GET / HTTP/1.0..
      (C from the client, B from the backend; the offset counts from the
      start of each chunk read; with `ascii`, printable text instead of hex)
    server N trafficlog FILE   the same, for the connections to server N
    throughputlog FILE         one line per chunk:
        0000003 0.000412 C GET / HTTP/1.0..
      (connection id zero-padded to 7, seconds since the connection started
      with microseconds, C|B, the chunk's first 100 bytes as printable text)

A `# conn ...` line starts each run of lines from one connection, so
interleaved connections stay readable.

The loop never waits for the disk: lines go to a bounded buffer per file,
written by a timer with plain write()s on an O_APPEND|O_NONBLOCK fd (a
regular file is always "writable" to epoll, so there is nothing to wait
for; the bound is what keeps memory in check).  When the buffer is full
the new lines are dropped -- never traffic -- and counted in
state.counters.dump_lines_dropped (`trafficlog` without a file shows it).

Only connections that have a dump get dump callables; the others keep
their pumps' splice path.  The service asks `for_conn` once per connection.
"""

import logging
import os
import time

log = logging.getLogger("pen")

BUFFER_MAX = 4 * 1024 * 1024     # bytes waiting for the disk, per file
FLUSH_DELAY = 0.05               # seconds between writes of the buffer
WRITE_MAX = 1024 * 1024          # bytes per write() call
HEX_WIDTH = 16                   # bytes per trafficlog line
TEXT_WIDTH = 64                  # bytes per line with `ascii`
FIRST_BYTES = 100                # bytes of each chunk in the throughputlog
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC

PRINTABLE = bytes(c if 32 <= c < 127 else ord(".") for c in range(256))


# --- the formats (pure) ----------------------------------------------------------------


def printable(data):
    """Bytes as text: printable ASCII kept, everything else a dot."""
    return bytes(data).translate(PRINTABLE).decode("ascii")


def hex_lines(tag, data):
    """Crossroads' trafficlog lines for one chunk."""
    data = bytes(data)
    lines = []
    for off in range(0, len(data), HEX_WIDTH):
        part = data[off:off + HEX_WIDTH]
        lines.append(f"{tag} {off:04x}  {part.hex(' '):<47} {printable(part)}")
    return lines


def text_lines(tag, data):
    """The `ascii` variant: printable text, TEXT_WIDTH bytes a line."""
    data = bytes(data)
    return [f"{tag} {off:04x}  {printable(data[off:off + TEXT_WIDTH])}"
            for off in range(0, len(data), TEXT_WIDTH)]


def throughput_line(conn_id, seconds, tag, data):
    return f"{conn_id:07d} {max(0.0, seconds):.6f} {tag} {printable(bytes(data[:FIRST_BYTES]))}"


def _endpoint(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def conn_header(conn):
    """`# conn ID CLIENT -> SERVER` for a connection's run of lines."""
    client = _endpoint(conn.client_ip, conn.client_port) if conn.client_ip else "unix"
    target = conn.target
    server = _endpoint(target.addr, target.port) if target is not None else "?"
    return f"# conn {conn.id} {client} -> {server}"


# --- the files -------------------------------------------------------------------------


class DumpFile:
    """One dump file: a bounded buffer and a timer that writes it out."""

    def __init__(self, path, reactor, counters):
        self.path = path
        self.reactor = reactor
        self.counters = counters
        self.fd = os.open(path, OPEN_FLAGS, 0o644)
        self.chunks = []
        self.size = 0
        self.timer = None
        self.run = None          # the token of the connection that wrote last

    def add(self, lines, run=None, header=None):
        """Queue `lines` (a `# conn` header first when another connection
        wrote last); drop and count them when the buffer is full.  Once
        the file is closed (`no trafficlog`), its connections stop dumping."""
        if self.fd is None:
            return
        if header is not None and self.run is not run:
            lines = [header] + lines
        data = ("\n".join(lines) + "\n").encode("ascii", "replace")
        if self.size + len(data) > BUFFER_MAX:
            self.counters.dump_lines_dropped += len(lines)
            self.run = None      # the next line that fits says whose it is
            return
        self.run = run
        self.chunks.append(data)
        self.size += len(data)
        if self.timer is None:
            self.timer = self.reactor.call_later(FLUSH_DELAY, self.flush)

    def flush(self):
        """Write what the buffer holds (WRITE_MAX a call, one pass); the
        rest waits for the next tick."""
        self.timer = None
        if not self.chunks or self.fd is None:
            return
        data = b"".join(self.chunks)
        self.chunks.clear()
        done = 0
        try:
            while done < len(data):
                n = os.write(self.fd, data[done:done + WRITE_MAX])
                if not n:
                    break
                done += n
        except BlockingIOError:
            pass
        except OSError as e:
            lost = data[done:].count(b"\n")
            self.counters.dump_lines_dropped += lost
            log.error("%s: %s; %d dump lines dropped", self.path, e.strerror, lost)
            done = len(data)
        rest = data[done:]
        self.size = len(rest)
        if rest:
            self.chunks.append(rest)
            self.timer = self.reactor.call_later(FLUSH_DELAY, self.flush)

    def reopen(self):
        """SIGHUP (log rotation): write out the buffer to the old file, then
        open the path again.  If that fails the old fd stays."""
        self.flush()
        fd = os.open(self.path, OPEN_FLAGS, 0o644)
        os.close(self.fd)
        self.fd = fd
        self.run = None

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
        self.flush()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Dumps:
    """The dump files that the settings ask for, and the dump callables of
    the connections they cover."""

    def __init__(self, state, reactor):
        self.state = state
        self.reactor = reactor
        self.files = {}          # path -> DumpFile

    @property
    def active(self):
        return bool(self.files)

    def configure(self):
        """The ("dumps",) effect: open the files the settings name, close
        the others.  A file that cannot be opened turns its setting off and
        gives one error line (the rest still apply)."""
        st = self.state.settings
        errors = []
        wanted = {}
        for word, path, undo in self._wanted(st):
            if path in wanted or path in self.files:
                wanted[path] = self.files.get(path) or wanted[path]
                continue
            try:
                wanted[path] = DumpFile(path, self.reactor, self.state.counters)
            except OSError as e:
                undo()
                errors.append(f"{word}: cannot open {path}: {e.strerror} ({word} is off)")
        for path, dump_file in self.files.items():
            if path not in wanted:
                dump_file.close()
        self.files = wanted
        return errors

    @staticmethod
    def _wanted(st):
        """(word, path, undo) for every dump file the settings name."""
        if st.trafficlog:
            yield "trafficlog", st.trafficlog, lambda: setattr(st, "trafficlog", None)
        if st.throughputlog:
            yield "throughputlog", st.throughputlog, lambda: setattr(st, "throughputlog", None)
        for i, path in sorted(st.server_trafficlogs.items()):
            yield (f"server {i} trafficlog", path,
                   lambda i=i: st.server_trafficlogs.pop(i, None))

    def reopen(self):
        """SIGHUP: reopen every file by name (after logrotate moved it)."""
        for dump_file in self.files.values():
            try:
                dump_file.reopen()
            except OSError as e:
                log.error("cannot reopen %s: %s", dump_file.path, e.strerror)

    def close(self):
        for dump_file in self.files.values():
            dump_file.close()
        self.files = {}

    def for_conn(self, conn, dump_c, dump_s):
        """The pumps' dump callables for `conn`, wrapping the ones it already
        has (debug dumps); unchanged when no file covers this connection."""
        st = self.state.settings
        files = self.files
        traffic = []
        for path in (st.trafficlog, st.server_trafficlogs.get(conn.index)):
            if path and path in files and files[path] not in traffic:
                traffic.append(files[path])
        throughput = files.get(st.throughputlog) if st.throughputlog else None
        if not traffic and throughput is None:
            return dump_c, dump_s
        header = conn_header(conn)
        run = object()           # this connection's token for `# conn` runs
        lines_of = text_lines if st.ascii else hex_lines

        def make(tag, prev):
            def dump(data):
                if prev is not None:
                    prev(data)
                if traffic:
                    lines = lines_of(tag, data)
                    for dump_file in traffic:
                        dump_file.add(lines, run, header)
                if throughput is not None:
                    throughput.add([throughput_line(conn.id, time.time() - conn.started,
                                                    tag, data)])
            return dump
        return make("C", dump_c), make("B", dump_s)
