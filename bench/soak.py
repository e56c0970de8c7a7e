"""Soak: mixed load through a real pen for a chosen time; does it leak?

usage: python bench/soak.py [--duration S] [--target ours|pen] [--json FILE]
                            [--sample S] [--hup-every S] [--scale F]
                            [--ours-cmd CMD]

Two nginx backends (bench/services.py) serve a 100-byte and a 10 MB file on
127.0.0.1, two UDP echo backends answer datagrams.  In front of them run a
TCP pen and a `-U` pen (ours, or with `--target pen` the reference
/usr/bin/pen 0.34.1), each with a control port and a config file (-F).
For --duration seconds, paced worker threads keep up a mixed load:

  keepalive   kept-alive HTTP requests (100-byte body), a fresh connection
              every KEEPALIVE_REQUESTS requests
  newconn     one request per connection (`Connection: close`)
  bulk        10 MB responses, one per connection
  udp         datagrams of several sizes, one in flight per client socket,
              each socket replaced after UDP_PER_SOCKET datagrams (new
              client addresses keep pen's session table churning)

while the main thread sends a control command to both pens every second
and a SIGHUP to both every --hup-every seconds.  Every response is checked
byte for byte; a transfer that fails, in any way, counts as a lost
connection and its whole size as lost bytes.

Every --sample seconds the load pauses (no operation in flight; the
kept-alive connections stay open), pen's descriptor count is let settle,
and both pens' RSS (VmRSS) and open fds (/proc/PID/fd) are read, so the
samples carry no noise from connections that happen to be in flight.  The
report gives them over time and their least-squares slope per minute,
fitted to the samples after the warm-up (the first WARMUP_SHARE of the
run, at least WARMUP_MIN seconds but at most half of it: pools and caches
fill there).

Exit status 0 when nothing was lost, every control command was answered
and both pens lived to the end; 1 otherwise; 2 when the setup failed.
Every process is stopped by its PID; every socket has a timeout.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import load
import services
from services import HOST

WARMUP_SHARE = 0.15
WARMUP_MIN = 10.0
IO_TIMEOUT = 10.0             # seconds any socket operation may take
UDP_TIMEOUT = 2.0             # seconds a datagram's reply may take
CONTROL_EVERY = 1.0
CONTROL_COMMANDS = ("servers", "status", "mode", "conn_max", "pid")
PAUSE_TIMEOUT = 3 * IO_TIMEOUT   # an operation in flight ends by then
SETTLE_TIMEOUT = 2.0          # for pen's fds to settle once the load pauses
KEEPALIVE_REQUESTS = 500
UDP_SOCKETS = 4
UDP_PER_SOCKET = 25
UDP_SIZES = (32, 512, 1400, 8000)
UDP_PATTERN = bytes(range(256)) * (max(UDP_SIZES) // 256 + 2)
UDP_MAXCONN = 32              # -x of the -U pen: bounds its session table
TCP_MAXCONN = 500
JOIN_TIMEOUT = 2 * PAUSE_TIMEOUT
ERRORS_KEPT = 20
# operations per second per kind at --scale 1: (threads, rate per thread)
LOADS = {"keepalive": (2, 200), "newconn": (2, 100), "bulk": (1, 2),
         "udp": (UDP_SOCKETS, 50)}
PEN_CONFIG = "# bench/soak.py: re-read on every SIGHUP\nblacklist 30\ntimeout 5\n"


def say(*args):
    print("soak:", *args, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python bench/soak.py",
        description="Mixed load through a real pen for a while; reports its "
                    "RSS and open fds over time and what was lost.")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="seconds of load (default 60)")
    p.add_argument("--target", choices=("ours", "pen"), default="ours",
                   help="ours (python -m pen) or pen (/usr/bin/pen 0.34.1)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--sample", type=float, default=5.0, metavar="S",
                   help="seconds between samples of RSS and fds (default 5)")
    p.add_argument("--hup-every", type=float, default=30.0, metavar="S",
                   help="seconds between SIGHUPs (default 30)")
    p.add_argument("--scale", type=float, default=1.0, metavar="F",
                   help="multiply every load's rate (default 1: about 400 "
                        "kept-alive requests, 200 new connections, 2 bulk "
                        "transfers and 200 datagrams a second); 0 = no pacing")
    p.add_argument("--ours-cmd", metavar="CMD",
                   default=os.environ.get("PEN_BENCH_OURS_CMD"),
                   help="command that runs our pen (default: this Python with "
                        "-m pen, in the repository)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.sample <= 0 or args.hup_every <= 0 \
            or args.scale < 0:
        p.error("--duration, --sample and --hup-every must be positive, "
                "--scale not negative")
    if args.target == "pen":
        args.pen_argv = [services.REF_PEN]
    elif args.ours_cmd:
        args.pen_argv = shlex.split(args.ours_cmd)
    else:
        args.pen_argv = [sys.executable, "-m", "pen"]
    return args


# ---------------------------------------------------------------- pausing

class Gate:
    """Lets the sampler pause the load: workers enter() before and leave()
    after each operation; close() waits until none is in flight."""

    def __init__(self, stop):
        self.stop = stop
        self.cond = threading.Condition()
        self.open = True
        self.busy = 0

    def enter(self):
        """True when the worker may start an operation; False once stopped."""
        with self.cond:
            while not self.open and not self.stop.is_set():
                self.cond.wait(0.5)
            if self.stop.is_set():
                return False
            self.busy += 1
            return True

    def leave(self):
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def close(self, timeout=PAUSE_TIMEOUT):
        with self.cond:
            self.open = False
            return self.cond.wait_for(lambda: self.busy == 0, timeout)

    def reopen(self):
        with self.cond:
            self.open = True
            self.cond.notify_all()


# ---------------------------------------------------------------- loads

class Tally:
    """One worker's counts (only that worker writes them)."""

    def __init__(self, kind):
        self.kind = kind
        self.ok = self.failed = 0
        self.bytes_ok = self.bytes_lost = 0
        self.errors = []

    def passed(self, size):
        self.ok += 1
        self.bytes_ok += size

    def lost(self, size, why, started):
        self.failed += 1
        self.bytes_lost += size
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(f"{time.monotonic() - started:.1f}s "
                               f"{self.kind}: {why}")


class Bad(Exception):
    """A response that is not the one expected."""


def read_response(sock, expected, buf, close):
    """Read one HTTP response whose body must equal `expected`; with
    `close` the connection must end right after it."""
    view = memoryview(buf)
    got = 0
    while True:
        n = sock.recv_into(view[got:], len(buf) - got)
        if not n:
            raise Bad(f"closed after {got} bytes of the response head")
        got += n
        end = buf.find(b"\r\n\r\n", 0, got)
        if end >= 0:
            break
        if got >= 8192:
            raise Bad("response head over 8 KiB")
    head = bytes(buf[:end])
    if not head.startswith(b"HTTP/1.1 200 "):
        raise Bad(f"status {head[:30]!r}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length != len(expected):
        raise Bad(f"Content-Length {length}, expected {len(expected)}")
    body = end + 4
    total = body + length
    if len(buf) < total:
        raise Bad("buffer too small")
    while got < total:
        n = sock.recv_into(view[got:total], total - got)
        if not n:
            raise Bad(f"closed after {got - body} of {length} body bytes")
        got += n
    if got > total:
        raise Bad(f"{got - total} bytes after the body")
    if buf[body:total] != expected:
        raise Bad("body differs from the file served")
    if close:
        extra = sock.recv(1)
        if extra:
            raise Bad("bytes after the body of a Connection: close response")


def http_request(path, close):
    conn = "Connection: close\r\n" if close else ""
    return f"GET /{path} HTTP/1.1\r\nHost: {HOST}\r\n{conn}\r\n".encode()


def tcp_connect(port):
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Op:
    """One kind of operation, called once per turn by a worker; holds at
    most one socket between turns, closed by close()."""

    sock = None

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class KeepAlive(Op):
    """Kept-alive requests on one connection, renewed every
    KEEPALIVE_REQUESTS requests or after a failure."""

    def __init__(self, port, body, tally, started):
        self.port, self.body, self.tally = port, body, tally
        self.started = started
        self.request = http_request(services.SMALL_FILE, close=False)
        self.buf = bytearray(len(body) + 16384)
        self.used = 0

    def __call__(self):
        try:
            # renewed at the start of a turn, so that a paused sample
            # always sees the same connections open
            if self.sock is None or self.used >= KEEPALIVE_REQUESTS:
                self.close()
                self.sock = tcp_connect(self.port)
                self.used = 0
            self.sock.sendall(self.request)
            read_response(self.sock, self.body, self.buf, close=False)
            self.tally.passed(len(self.body))
            self.used += 1
        except (OSError, Bad, ValueError) as exc:
            self.tally.lost(len(self.body), f"request {self.used + 1} on a "
                            f"kept-alive connection: {exc!r}", self.started)
            self.close()


class OneShot(Op):
    """One request per connection (`Connection: close`): new connections,
    or bulk transfers when the file is the big one."""

    def __init__(self, port, path, body, tally, started):
        self.port, self.body, self.tally = port, body, tally
        self.started = started
        self.request = http_request(path, close=True)
        self.buf = bytearray(len(body) + 16384)

    def __call__(self):
        try:
            with tcp_connect(self.port) as sock:
                sock.sendall(self.request)
                read_response(sock, self.body, self.buf, close=True)
            self.tally.passed(len(self.body))
        except (OSError, Bad, ValueError) as exc:
            self.tally.lost(len(self.body), repr(exc), self.started)



class UdpClient(Op):
    """One datagram in flight; a new client socket (address) every
    UDP_PER_SOCKET datagrams.  A reply must be the datagram sent; one that
    does not come within UDP_TIMEOUT is lost."""

    def __init__(self, port, index, tally, started):
        self.port, self.index, self.tally = port, index, tally
        self.started = started
        self.seq = 0

    def __call__(self):
        if self.sock is None or self.seq % UDP_PER_SOCKET == 0:
            self.close()
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.settimeout(UDP_TIMEOUT)
            self.sock.connect((HOST, self.port))
        self.seq += 1
        size = UDP_SIZES[self.seq % len(UDP_SIZES)]
        tag = f"{self.index}:{self.seq}:".encode()
        start = self.seq % 256
        payload = tag + UDP_PATTERN[start:start + size - len(tag)]
        try:
            self.sock.send(payload)
            deadline = time.monotonic() + UDP_TIMEOUT
            while True:             # a late reply to an earlier one is skipped
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                reply = self.sock.recv(65536)
                if reply == payload:
                    break
                if not reply.startswith(f"{self.index}:".encode()):
                    raise Bad(f"a foreign reply {reply[:20]!r}")
            self.tally.passed(size)
        except (OSError, Bad) as exc:
            self.tally.lost(size, f"datagram {self.seq} ({size} bytes): "
                            f"{exc!r}", self.started)
            self.close()


def worker(op, rate, gate, stop):
    """Run op() at `rate` per second (0: back to back) until stopped."""
    pace = load.Pace(rate, stop)
    try:
        while gate.enter():
            try:
                op()
            finally:
                gate.leave()
            pace.wait()
    finally:
        op.close()


# ---------------------------------------------------------------- pen

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid):
    """pen's fd count once three readings in a row agree (bounded)."""
    last, same = fd_count(pid), 0
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while same < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        now = fd_count(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


def control(port, command):
    """One control command; the reply text (ValueError if empty)."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(command.encode() + b"\n")
        chunks = []
        for _ in range(10000):          # replies are small; bounded anyway
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    reply = b"".join(chunks)
    if not reply.strip():
        raise ValueError(f"empty reply to {command!r}")
    return reply


def start_pen(args, workdir, name, backends, udp, started):
    ctl = services.free_port()
    cfg = Path(workdir) / f"{name}.cfg"
    cfg.write_text(PEN_CONFIG)
    port = services.free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    extra = ["-C", f"{HOST}:{ctl}", "-F", cfg]
    if os.geteuid() == 0:             # both pens refuse -C as root without it
        extra += ["-u", "root"]
    argv = services.pen_argv(args.pen_argv, port, backends,
                             UDP_MAXCONN if udp else TCP_MAXCONN, udp=udp,
                             extra=extra)
    cwd = services.REPO_DIR if args.target == "ours" else None
    proc = services.Proc(name, argv, workdir, cwd=cwd)
    proc.port, proc.ctl = port, ctl
    started.append(proc.start())
    if udp:
        services.wait_udp(proc, port)
    else:
        proc.wait_tcp(port)
    proc.wait_tcp(ctl)
    return proc


# ---------------------------------------------------------------- report

def slope_per_minute(points):
    """Least-squares slope of [(seconds, value)] in value per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def summarise(samples, pens, warmup):
    """Per pen: first/last/min/max of RSS and fds after the warm-up and
    their slopes per minute."""
    out = {}
    for name in pens:
        late = [s for s in samples if s["t"] >= warmup]
        rss = [(s["t"], s[name]["rss_kib"]) for s in late]
        fds = [(s["t"], s[name]["fds"]) for s in late]
        out[name] = {
            "samples_fitted": len(late),
            "rss_kib_first": rss[0][1] if rss else None,
            "rss_kib_last": rss[-1][1] if rss else None,
            "rss_kib_max": max((v for _, v in rss), default=None),
            "rss_kib_per_min": slope_per_minute(rss),
            "fds_first": fds[0][1] if fds else None,
            "fds_last": fds[-1][1] if fds else None,
            "fds_max": max((v for _, v in fds), default=None),
            "fds_per_min": slope_per_minute(fds),
        }
    return out


def fmt_slope(value, unit):
    return "n/a" if value is None else f"{value:+.2f} {unit}/min"


# ---------------------------------------------------------------- run

class Soak:
    def __init__(self, args):
        self.args = args
        self.workdir = services.workdir()
        self.procs = []
        self.stop = threading.Event()
        self.gate = Gate(self.stop)
        self.samples = []
        self.tallies = []
        self.threads = []
        self.control_ok = self.control_failed = self.hups = 0
        self.control_errors = []
        self.died = []

    def setup(self):
        services.raise_nofile(4096)
        services.make_docroot(self.workdir)
        nginx = [services.nginx(self.workdir, 1024, 4096, self.procs)
                 for _ in range(2)]
        echoes = [services.udp_echo(self.workdir, i,
                                    self.args.duration + 600, self.procs)
                  for i in (1, 2)]
        self.tcp = start_pen(self.args, self.workdir, "pen-tcp",
                             [b.port for b in nginx], False, self.procs)
        self.udp = start_pen(self.args, self.workdir, "pen-udp",
                             [e.port for e in echoes], True, self.procs)
        self.pens = {"tcp": self.tcp, "udp": self.udp}
        www = Path(self.workdir) / "www"
        self.small = (www / services.SMALL_FILE).read_bytes()
        self.big = (www / services.BIG_FILE).read_bytes()

    def start_load(self, started):
        scale = self.args.scale
        for kind, (threads, rate) in LOADS.items():
            for i in range(threads):
                tally = Tally(kind)
                if kind == "keepalive":
                    op = KeepAlive(self.tcp.port, self.small, tally, started)
                elif kind == "newconn":
                    op = OneShot(self.tcp.port, services.SMALL_FILE,
                                 self.small, tally, started)
                elif kind == "bulk":
                    op = OneShot(self.tcp.port, services.BIG_FILE, self.big,
                                 tally, started)
                else:
                    op = UdpClient(self.udp.port, i, tally, started)
                thread = threading.Thread(
                    target=worker, args=(op, rate * scale, self.gate,
                                         self.stop),
                    name=f"{kind}-{i}", daemon=True)
                self.tallies.append(tally)
                self.threads.append(thread)
                thread.start()

    def sample(self, started, paused=True):
        """Both pens' RSS and fds with no operation in flight (paused: the
        load is running; else it is not, and the sample is not one of the
        series)."""
        if paused and not self.gate.close():
            say("warning: an operation was still in flight at a sample")
        try:
            got = {"t": round(time.monotonic() - started, 2)}
            for name, proc in self.pens.items():
                fds = settled_fds(proc.pid)
                got[name] = {"rss_kib": services.rss_kib(proc.pid),
                             "fds": fds}
        finally:
            if paused:
                self.gate.reopen()
        if paused:
            self.samples.append(got)
        done = sum(t.ok for t in self.tallies)
        lost = sum(t.failed for t in self.tallies)
        say(f"t={got['t']:6.1f}s  tcp pen RSS {got['tcp']['rss_kib']} KiB, "
            f"{got['tcp']['fds']} fds; udp pen RSS {got['udp']['rss_kib']} "
            f"KiB, {got['udp']['fds']} fds; {done} ok, {lost} lost")
        return got

    def tick_control(self, seq, started):
        command = CONTROL_COMMANDS[seq % len(CONTROL_COMMANDS)]
        for name, proc in self.pens.items():
            try:
                control(proc.ctl, command)
                self.control_ok += 1
            except (OSError, ValueError) as exc:
                self.control_failed += 1
                if len(self.control_errors) < ERRORS_KEPT:
                    self.control_errors.append(
                        f"{time.monotonic() - started:.1f}s {name} pen "
                        f"{command!r}: {exc!r}")

    def alive(self):
        for name, proc in self.pens.items():
            if not proc.alive() and name not in self.died:
                self.died.append(name)
                say(f"the {name} pen died: {proc.output_tail(5)}")
        return not self.died

    def run(self):
        args = self.args
        started = time.monotonic()
        self.baseline = self.sample(started, paused=False)
        self.start_load(started)
        end = started + args.duration
        next_ctl = started + CONTROL_EVERY
        next_hup = started + args.hup_every
        next_sample = started + args.sample
        seq = 0
        while self.alive():
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_ctl:
                seq += 1
                self.tick_control(seq, started)
                next_ctl += CONTROL_EVERY
            if now >= next_hup:
                for proc in self.pens.values():
                    os.kill(proc.pid, signal.SIGHUP)
                self.hups += 1
                next_hup += args.hup_every
            if now >= next_sample:
                self.sample(started)
                next_sample += args.sample
            wake = min(next_ctl, next_hup, next_sample, end)
            self.stop.wait(max(0.0, min(1.0, wake - time.monotonic())))
        self.elapsed = time.monotonic() - started
        self.stop.set()
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                say(f"warning: worker {thread.name} did not stop")
        if self.alive():
            self.after = self.sample(started, paused=False)
        else:
            self.after = None

    def report(self):
        args = self.args
        warmup = min(max(WARMUP_MIN, WARMUP_SHARE * args.duration),
                     args.duration / 2)
        kinds = {}
        for t in self.tallies:
            k = kinds.setdefault(t.kind, {"ok": 0, "lost": 0, "bytes_ok": 0,
                                          "bytes_lost": 0, "errors": []})
            k["ok"] += t.ok
            k["lost"] += t.failed
            k["bytes_ok"] += t.bytes_ok
            k["bytes_lost"] += t.bytes_lost
            k["errors"] += t.errors[:ERRORS_KEPT - len(k["errors"])]
        trend = summarise(self.samples, self.pens, warmup)
        doc = {
            "format": "pen-soak/1",
            "target": args.target, "pen": args.pen_argv,
            "duration": args.duration, "elapsed": round(self.elapsed, 1),
            "scale": args.scale, "sample_every": args.sample,
            "hup_every": args.hup_every, "warmup": warmup,
            "loads": kinds,
            "lost_connections": sum(k["lost"] for k in kinds.values()),
            "lost_bytes": sum(k["bytes_lost"] for k in kinds.values()),
            "control": {"ok": self.control_ok, "failed": self.control_failed,
                        "errors": self.control_errors},
            "hups": self.hups,
            "died": self.died,
            "baseline": self.baseline, "after": self.after,
            "samples": self.samples,
            "trend": trend,
        }
        print()
        say(f"{args.target} pen, {self.elapsed:.0f}s of load, "
            f"{self.hups} SIGHUPs, {self.control_ok} control commands "
            f"answered, {self.control_failed} not")
        for kind, k in kinds.items():
            unit = "datagrams" if kind == "udp" else "transfers"
            say(f"  {kind:<9} {k['ok']:>9,} {unit} ok ({k['bytes_ok']:,} "
                f"bytes), {k['lost']} lost ({k['bytes_lost']:,} bytes)")
            for line in k["errors"][:5]:
                say("     ", line)
        for name, tr in trend.items():
            say(f"  {name} pen after {warmup:.0f}s warm-up "
                f"({tr['samples_fitted']} samples): RSS "
                f"{tr['rss_kib_first']} -> {tr['rss_kib_last']} KiB "
                f"(max {tr['rss_kib_max']}), "
                f"{fmt_slope(tr['rss_kib_per_min'], 'KiB')}; fds "
                f"{tr['fds_first']} -> {tr['fds_last']} (max {tr['fds_max']}), "
                f"{fmt_slope(tr['fds_per_min'], 'fds')}")
            if self.after:
                say(f"  {name} pen idle fds: {self.baseline[name]['fds']} "
                    f"before the load, {self.after[name]['fds']} after")
        say(f"lost: {doc['lost_connections']} connections/datagrams, "
            f"{doc['lost_bytes']:,} bytes")
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
            say("wrote", args.json)
        ok = (doc["lost_connections"] == 0 and not self.died
              and self.control_failed == 0)
        return doc, ok

    def stop_all(self):
        self.stop.set()
        for proc in reversed(self.procs):
            proc.stop()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    services.end_on_signals()
    if not services.find_tool("nginx", "/usr/sbin/nginx"):
        say("needs nginx (Debian package nginx-light)")
        return 2
    if args.target == "pen" and not os.access(services.REF_PEN, os.X_OK):
        say(f"--target pen needs {services.REF_PEN} (Debian package pen)")
        return 2
    soak = Soak(args)
    say(f"{args.target} pen ({' '.join(args.pen_argv)}) for "
        f"{args.duration:g}s, scale {args.scale:g}; work dir {soak.workdir}")
    def body():
        soak.setup()
        soak.run()
    status, _ = services.guarded(body, soak.stop_all, say)
    if status is not None:
        return status
    _, ok = soak.report()
    if not ok:
        say("logs kept in", soak.workdir)
        return 1
    shutil.rmtree(soak.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
