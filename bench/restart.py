"""Request latency through our pen across a SIGUSR2 restart, against steady.

usage: python bench/restart.py [--restarts N] [--steady S] [--clients N]
                               [--rate R] [--json FILE]

One nginx backend on 127.0.0.1 (bench/services.py) serves a 100-byte file;
our pen (`python -m pen -f -r -p PIDFILE`) is in front of it.  Client
threads each send a new-connection request (connect, GET with
`Connection: close`, the whole response read) --rate times a second and
time it.  The run alternates: --steady seconds of steady state, then a
SIGUSR2 to the pen that the pid file names, and the restart window, from
the signal until the old pen has exited and the pid file names the new one
(pen/handover.py: the new pen inherits the listening socket, the old one
drains), --restarts times.  It reports p50, p99 and the worst latency of
the steady windows and of the restart windows, and the requests that
failed (refused, reset, timed out, or a wrong response) in each.

Each request is timed from the connect, so the figures include what a
new connection costs; a client that falls behind its pace does not send a
burst to catch up.  Every socket has a timeout; every pen is stopped by
its PID.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import load
import services
from services import HOST, StartError

IO_TIMEOUT = 5.0
RESTART_TIMEOUT = 30.0       # seconds for the new pen to serve, the old to go
AFTER_EXIT = 0.2             # seconds still counted as restart after it
JOIN_TIMEOUT = 2 * IO_TIMEOUT
ERRORS_KEPT = 20


def say(*args):
    print("restart:", *args, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python bench/restart.py",
        description="Latency of new-connection requests through our pen "
                    "during SIGUSR2 restarts against steady state.")
    p.add_argument("--restarts", type=int, default=5, metavar="N",
                   help="restarts (default 5)")
    p.add_argument("--steady", type=float, default=5.0, metavar="S",
                   help="seconds of steady state before each (default 5)")
    p.add_argument("--clients", type=int, default=4, metavar="N",
                   help="client threads (default 4)")
    p.add_argument("--rate", type=float, default=100.0, metavar="R",
                   help="requests per second per client (default 100)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args(argv)
    if args.restarts < 1 or args.steady <= 0 or args.clients < 1 \
            or args.rate <= 0:
        p.error("--restarts, --steady, --clients and --rate must be positive")
    return args


class Clients:
    """Paced new-connection requests from threads; every result kept as
    (start time, seconds or None for a failure)."""

    def __init__(self, port, body, n, rate):
        self.port, self.body = port, body
        self.request = (f"GET /{services.SMALL_FILE} HTTP/1.1\r\nHost: {HOST}"
                        f"\r\nConnection: close\r\n\r\n").encode()
        self.rate = rate
        self.stop = threading.Event()
        self.results = [[] for _ in range(n)]
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(out,),
                                         daemon=True) for out in self.results]

    def start(self):
        for thread in self.threads:
            thread.start()

    def one(self):
        """One request; None when it worked, else why not."""
        with socket.create_connection((HOST, self.port),
                                      timeout=IO_TIMEOUT) as sock:
            sock.sendall(self.request)
            chunks = []
            for _ in range(1000):             # a 100-byte response: bounded
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        reply = b"".join(chunks)
        head, _, body = reply.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 ") or body != self.body:
            return f"unexpected response {reply[:40]!r} ({len(reply)} bytes)"
        return None

    def run(self, out):
        pace = load.Pace(self.rate, self.stop)
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                why = self.one()
            except OSError as exc:
                why = repr(exc)
            took = time.monotonic() - start
            out.append((start, None if why else took))
            if why and len(self.errors) < ERRORS_KEPT:
                self.errors.append(f"{start:.3f}: {why}")
            pace.wait()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT)
        return sorted(r for out in self.results for r in out)


def read_pid(path):
    try:
        return int(Path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def alive(pid):
    """Running (a zombie is not: a pen whose parent, an earlier pen, has
    gone is reaped by whoever adopted it, in its own time)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def stop_pid(pid):
    """SIGTERM, a bounded wait, SIGKILL: for pens that are not our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + services.STOP_TIMEOUT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(pid):
            return


def restart(pidfile, old, first):
    """SIGUSR2 to `old`; wait until it has exited and the pid file names
    the new pen.  Returns (signal time, new pen named, old pen gone, new
    pid)."""
    sent = time.monotonic()
    os.kill(old, signal.SIGUSR2)
    deadline = sent + RESTART_TIMEOUT
    new = 0
    named = gone = None
    while time.monotonic() < deadline:
        new = read_pid(pidfile)
        if named is None and new not in (0, old):
            named = time.monotonic()
        # the first pen is our child: a zombie until reaped, so ask Popen
        if gone is None and not (first.alive() if old == first.pid
                                 else alive(old)):
            gone = time.monotonic()
        if named and gone:
            return sent, named, gone, new
        time.sleep(0.01)
    raise StartError(f"pen {old}: no new pen serving {RESTART_TIMEOUT:.0f}s "
                     f"after SIGUSR2 (pid file says {new})")


def stats(results, windows):
    """p50/p99/max in us and the failures of the requests started in any
    of the windows [(start, end)]."""
    took = []
    failed = 0
    for start, secs in results:
        if any(a <= start < b for a, b in windows):
            if secs is None:
                failed += 1
            else:
                took.append(secs * 1e6)
    took.sort()
    return {"requests": len(took) + failed, "failed": failed,
            "p50_us": load.percentile(took, 50),
            "p99_us": load.percentile(took, 99),
            "max_us": took[-1] if took else None,
            "seconds": round(sum(b - a for a, b in windows), 2)}


def run(args, workdir, procs):
    services.make_docroot(workdir)
    nginx = services.nginx(workdir, 1024, services.raise_nofile(4096), procs)
    port = services.free_port()
    pidfile = Path(workdir) / "pen.pid"
    argv = services.pen_argv([sys.executable, "-m", "pen"], port, [nginx.port],
                             500, extra=["-p", pidfile])
    first = services.Proc("pen", argv, workdir, cwd=services.REPO_DIR)
    procs.append(first.start())
    first.wait_tcp(port)
    pids = [first.pid]
    body = (Path(workdir) / "www" / services.SMALL_FILE).read_bytes()
    clients = Clients(port, body, args.clients, args.rate)
    steady, during, restarts = [], [], []
    try:
        clients.start()
        for i in range(args.restarts):
            begin = time.monotonic()
            time.sleep(args.steady)
            steady.append((begin, time.monotonic()))
            sent, named, gone, new = restart(pidfile, pids[-1], first)
            done = max(named, gone)
            pids.append(new)
            during.append((sent, done + AFTER_EXIT))
            restarts.append({"named": round(named - sent, 3),
                             "old_gone": round(gone - sent, 3)})
            say(f"restart {i + 1}: pen {pids[-2]} -> {new}: the pid file "
                f"named it after {named - sent:.2f}s, the old one was gone "
                f"after {gone - sent:.2f}s")
            time.sleep(AFTER_EXIT)
        begin = time.monotonic()
        time.sleep(args.steady)
        steady.append((begin, time.monotonic()))
    finally:
        results = clients.finish()
        for pid in pids[1:]:
            stop_pid(pid)
    return {"steady": stats(results, steady), "restart": stats(results, during),
            "restart_seconds": restarts, "errors": clients.errors,
            "pids": pids}


def fmt_us(value):
    return "-" if value is None else f"{value:,.0f}"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    services.end_on_signals()
    if not services.find_tool("nginx", "/usr/sbin/nginx"):
        say("needs nginx (Debian package nginx-light)")
        return 2
    workdir = services.workdir()
    procs = []
    say(f"{args.restarts} restarts, {args.steady:g}s steady before each, "
        f"{args.clients} clients x {args.rate:g} new-connection requests/s; "
        f"work dir {workdir}")
    def stop():
        for proc in reversed(procs):
            proc.stop()
    status, doc = services.guarded(lambda: run(args, workdir, procs), stop, say)
    if status is not None:
        return status
    print()
    say(f"{'window':<9}{'seconds':>8}{'requests':>10}{'failed':>8}"
        f"{'p50 us':>9}{'p99 us':>9}{'max us':>10}")
    for name in ("steady", "restart"):
        s = doc[name]
        say(f"{name:<9}{s['seconds']:>8.1f}{s['requests']:>10,}"
            f"{s['failed']:>8}{fmt_us(s['p50_us']):>9}"
            f"{fmt_us(s['p99_us']):>9}{fmt_us(s['max_us']):>10}")
    if doc["steady"]["p99_us"]:
        say(f"p99 restart/steady: "
            f"{doc['restart']['p99_us'] / doc['steady']['p99_us']:.2f}")
    for line in doc["errors"][:5]:
        say("  failed:", line)
    doc.update({"format": "pen-restart/1", "restarts": args.restarts,
                "steady_seconds": args.steady, "clients": args.clients,
                "rate": args.rate})
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        say("wrote", args.json)
    failed = doc["steady"]["failed"] + doc["restart"]["failed"]
    if failed:
        say("logs kept in", workdir)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
