"""What active health checks cost (issue 10): pen's CPU time with N servers
probed every check_interval seconds, against the same pen with checks off.

usage: python bench/checks.py [--servers 100] [--interval 1] [--seconds 20]
                              [--check "tcp" | --check "http /health"]

N backends listen on 127.0.0.1 in one thread of this process (a selector
that answers `/health` with 200 and closes); `python -m pen -f` balances
over them with `check_interval`.  After a warm-up, pen's utime+stime are
read from /proc/PID/stat at the start and the end of the window; the
figure is that CPU time as a percentage of one core.  The target of the
issue is under 5% for 100 servers at check_interval 1.  Every process is
stopped by its PID.
"""

import argparse
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

WARMUP = 3.0
TICKS = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Backends:
    """N listeners served by one thread: accept, answer an HTTP request
    (if one comes before a short timeout) with 200, close."""

    def __init__(self, n):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, "listen")
            self.socks.append(s)
        self.accepted = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def specs(self):
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in self.socks]

    def _serve(self):
        while not self.stopped.is_set():
            for key, _ in self.sel.select(0.2):
                if key.data == "listen":
                    try:
                        conn, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    self.accepted += 1
                    conn.setblocking(False)
                    self.sel.register(conn, selectors.EVENT_READ, "conn")
                else:
                    conn = key.fileobj
                    try:
                        data = conn.recv(4096)
                        if data.startswith(b"GET "):
                            conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                    except OSError:
                        pass
                    self.sel.unregister(conn)
                    conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join(2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS      # utime + stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(backends, interval, seconds, check):
    """pen's CPU use in percent of one core, and the probes the backends saw."""
    port = free_port()
    cmd = [sys.executable, "-m", "pen", "-f", "-o", f"check_interval {interval}",
           "-o", f"check {check}", f"127.0.0.1:{port}", *backends.specs]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(WARMUP)
        if proc.poll() is not None:
            raise SystemExit(f"pen exited: {proc.stderr.read().decode()}")
        cpu0, seen0, t0 = cpu_seconds(proc.pid), backends.accepted, time.monotonic()
        time.sleep(seconds)
        cpu1, seen1, t1 = cpu_seconds(proc.pid), backends.accepted, time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return 100.0 * (cpu1 - cpu0) / (t1 - t0), (seen1 - seen0) / (t1 - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--check", default="tcp", help='"tcp" or "http /health"')
    args = ap.parse_args()
    backends = Backends(args.servers)
    try:
        off, _ = measure(backends, 0, args.seconds, args.check)
        on, rate = measure(backends, args.interval, args.seconds, args.check)
    finally:
        backends.close()
    print(f"{args.servers} servers, check {args.check}, check_interval {args.interval:g}, "
          f"{args.seconds:g} s window")
    print(f"  checks off: {off:.2f}% of one core")
    print(f"  checks on:  {on:.2f}% of one core ({rate:.0f} probes/s seen by the backends)")
    print(f"  probe cost: {on - off:.2f}% of one core "
          f"({'under' if on < 5 else 'OVER'} the 5% target)")


if __name__ == "__main__":
    main()
