"""Where our pen spends its time per connection: cProfile call counts,
CPU time, system calls, py-spy or perf samples, under the benchmark's load.

    python bench/profiling.py                      # cProfile, new connections
    python bench/profiling.py --scenario keepalive --tool pyspy
    python bench/profiling.py --tool strace        # system calls per request
    python bench/profiling.py --tool perf          # perf record of the process
    python bench/profiling.py --ours-cmd "python bench/floor.py"   # the floor

It starts two nginx backends as bench/run.py does, one balancer (ours by
default, in the repository's tree) and wrk (2 threads, 50 connections; with
`Connection: close` for newconn), and prints per request:

- always: the balancer's CPU time (user+sys from /proc/PID/stat, us per
  request: the least noisy figure on a shared machine);
- cprofile: Python calls per request and the functions that make them
  (profiling only the event loop, not start-up; the profiler slows pen
  down, so its req/s mean nothing);
- strace: system calls per request (`strace -c -f`);
- pyspy: the functions most often on top of the stack (`py-spy record
  --format raw`; `--svg FILE` for a flame graph);
- perf: `perf record -g` of the process, summarised with `perf report`
  (kernel and C frames; CPython 3.11 shows no Python names);
- callgrind: user-space instructions per request, counted by valgrind
  (no wrk: 100, then 600 requests one at a time from here, each run in
  a fresh balancer; the difference over 500 requests).  The one figure
  here that other load on the machine does not move.

Every process is started here and stopped by its PID.
"""

import argparse
import collections
import os
import pstats
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load                                    # noqa: E402
import services                                # noqa: E402

TOOLS = ("cprofile", "strace", "pyspy", "perf", "cpu", "callgrind")
CALLGRIND_COUNTS = (100, 600)      # requests in the two runs (their difference is measured)
REQUEST = (b"GET /" + services.SMALL_FILE.encode() + b" HTTP/1.1\r\nHost: bench\r\n%s\r\n")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD = "--child-profile"


def cpu_seconds(pid):
    """user + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child(out, argv):
    """Run our pen with cProfile on while its event loop runs."""
    import cProfile

    from pen import loop
    from pen.__main__ import main
    profiler = cProfile.Profile()
    run = loop.Reactor.run

    def profiled(self):
        profiler.enable()
        try:
            run(self)
        finally:
            profiler.disable()
            profiler.dump_stats(out)
    loop.Reactor.run = profiled
    return main(argv)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python bench/profiling.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", choices=TOOLS, default="cprofile")
    p.add_argument("--scenario", choices=("newconn", "keepalive"), default="newconn")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--conns", type=int, default=50, help="wrk connections")
    p.add_argument("--top", type=int, default=30, help="rows to print")
    p.add_argument("--ours-cmd", metavar="CMD",
                   help="another balancer with pen's command line (not for cprofile)")
    p.add_argument("--pen-args", default="", metavar="ARGS",
                   help="extra options for the balancer, e.g. '-o \"defer_accept 1\"'")
    p.add_argument("--svg", metavar="FILE", help="pyspy: also write a flame graph")
    p.add_argument("--keep", metavar="DIR",
                   help="callgrind: copy its output files there (for callgrind_annotate)")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == CHILD:
        return child(argv[1], argv[2:])
    args = parse_args(argv)
    wrk_exe = services.find_tool("wrk")
    if wrk_exe is None or services.find_tool("nginx", "/usr/sbin/nginx") is None:
        sys.exit("profile: needs wrk and nginx (bench/README.md)")
    work = services.workdir()
    started = []
    try:
        return measure(args, wrk_exe, work, started)
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure(args, wrk_exe, work, started):
    nofile = services.raise_nofile(20000)
    services.make_docroot(work)
    backends = [services.nginx(work, 4096, nofile, started).port for _ in range(2)]
    if args.tool == "callgrind":
        return instructions(args, work, backends, started)
    prof_out = Path(work) / "pen.prof"
    if args.ours_cmd:
        prefix = ours_prefix(args)
    elif args.tool == "cprofile":
        prefix = [sys.executable, str(Path(__file__).resolve()), CHILD, str(prof_out)]
    else:
        prefix = [sys.executable, "-m", "pen"]
    extra = shlex.split(args.pen_args)
    port = services.free_port()
    proc = services.Proc("ours", services.pen_argv(prefix, port, backends, 10000, extra=extra),
                         work, cwd=services.REPO_DIR,
                         env=dict(os.environ, PYTHONPATH=str(services.REPO_DIR)))
    started.append(proc.start())
    proc.wait_tcp(port)
    close = args.scenario == "newconn"
    if args.tool != "cprofile":     # it profiles every request: wrk's count must cover them all
        load.wrk(wrk_exe, port, services.SMALL_FILE, 1, args.conns, 2, close)   # warm-up
    tracer = start_tracer(args, proc.pid, work)
    cpu0 = cpu_seconds(proc.pid)
    run = load.wrk(wrk_exe, port, services.SMALL_FILE, args.seconds, args.conns, 2, close)
    cpu = cpu_seconds(proc.pid) - cpu0
    requests = run["requests"]
    print(f"profile: {args.scenario}, {requests} requests in {run['seconds']:.1f} s "
          f"({requests / run['seconds']:,.0f} req/s, {run['errors']} errors), "
          f"balancer CPU {cpu:.2f} s = {cpu / max(requests, 1) * 1e6:.1f} us per request")
    report = finish_tracer(args, tracer, proc, work, requests)
    if args.tool == "cprofile":
        proc.stop()
        report = cprofile_report(prof_out, args.top, requests)
    if report:
        print(report)
    return 0


def ours_prefix(args):
    """--ours-cmd as argv, `python` being this interpreter (a pyenv shim
    would put a shell between valgrind and the balancer)."""
    argv = shlex.split(args.ours_cmd)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def instructions(args, work, backends, started):
    """--tool callgrind: Ir per request, (Ir(600) - Ir(100)) / 500."""
    prefix = ours_prefix(args) if args.ours_cmd else [sys.executable, "-m", "pen"]
    totals = []
    for count in CALLGRIND_COUNTS:
        out = Path(work) / f"callgrind-{count}.out"
        port = services.free_port()
        argv = (["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                + services.pen_argv(prefix, port, backends, 10000,
                                    extra=shlex.split(args.pen_args)))
        proc = services.Proc(f"callgrind-{count}", argv, work, cwd=services.REPO_DIR,
                             env=dict(os.environ, PYTHONPATH=str(services.REPO_DIR)))
        started.append(proc.start())
        proc.wait_tcp(port, timeout=300)
        drive(port, count, args.scenario == "newconn")
        proc.popen.send_signal(signal.SIGTERM)     # valgrind writes its file on the way out
        proc.popen.wait(timeout=300)
        totals.append(callgrind_total(out))
        if args.keep:
            shutil.copy(out, args.keep)
    per = (totals[1] - totals[0]) / (CALLGRIND_COUNTS[1] - CALLGRIND_COUNTS[0])
    print(f"callgrind: {args.scenario}, {per:,.0f} user-space instructions per request "
          f"(Ir {totals[0]:,} for {CALLGRIND_COUNTS[0]} requests, "
          f"{totals[1]:,} for {CALLGRIND_COUNTS[1]})")
    return 0


def drive(port, count, close):
    """`count` requests for the small file, one at a time: each on a new
    connection (`close`), or all on one kept-alive connection."""
    sock = None
    for _ in range(count):
        if sock is None:
            sock = socket.create_connection((services.HOST, port), timeout=60)
        sock.sendall(REQUEST % (b"Connection: close\r\n" if close else b""))
        got = b""
        while not (got.endswith(b"\n") and b"\r\n\r\n" in got
                   and len(got.split(b"\r\n\r\n", 1)[1]) >= services.SMALL_SIZE):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"profile: short response through port {port}: {got[:200]!r}")
            got += chunk
        if close:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def callgrind_total(path):
    for line in Path(path).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"profile: no totals in {path}")


def start_tracer(args, pid, work):
    out = Path(work) / f"{args.tool}.out"
    if args.tool == "strace":
        argv = ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)]
    elif args.tool == "pyspy":
        argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "-r", "500",
                "-d", str(int(args.seconds)), "-o", str(out), "-p", str(pid)]
    elif args.tool == "perf":
        argv = ["perf", "record", "-g", "-o", str(out), "-p", str(pid)]
    else:
        return None
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    time.sleep(0.5)                 # let it attach
    tracer.out = out
    return tracer


def finish_tracer(args, tracer, proc, work, requests):
    if tracer is None:
        return ""
    if args.tool in ("strace", "perf"):
        tracer.send_signal(2)       # SIGINT: detach and write the summary
    try:
        tracer.wait(timeout=30)
    except subprocess.TimeoutExpired:
        tracer.kill()
        tracer.wait()
    if not tracer.out.exists():
        return f"profile: {args.tool} wrote nothing: {tracer.stderr.read().decode()[-500:]}"
    if args.tool == "strace":
        return strace_report(tracer.out.read_text(), requests)
    if args.tool == "pyspy":
        if args.svg:
            subprocess.run(["py-spy", "record", "--nonblocking", "-d", "3", "-o", args.svg,
                            "-p", str(proc.pid)], capture_output=True, timeout=30)
        return pyspy_report(tracer.out.read_text(), args.top)
    done = subprocess.run(["perf", "report", "-i", str(tracer.out), "--stdio", "--no-children",
                           "--percent-limit", "0.7", "-g", "none", "--sort", os.environ.get("PERF_SORT", "dso,sym")],
                          capture_output=True, text=True, timeout=120)
    return "\n".join(done.stdout.splitlines()[:args.top + 12])


def strace_report(text, requests):
    """strace -c's table with a calls-per-request column."""
    lines = ["syscall              calls/request  errors"]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            errors = int(parts[4]) if len(parts) == 6 else 0
            lines.append(f"{parts[-1]:20} {calls / requests:13.2f}  {errors / requests:6.2f}")
    return "\n".join(lines)


def pyspy_report(text, top):
    """Self samples per function from py-spy's collapsed stacks."""
    self_samples = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        self_samples[stack.split(";")[-1]] += int(count)
    rows = [f"{n / total * 100:5.1f}%  {frame}" for frame, n in self_samples.most_common(top)]
    return f"py-spy: {total} samples, self time by function\n" + "\n".join(rows)


def cprofile_report(path, top, requests):
    """Calls per connection (Service._accepted counts connections) and per
    request (wrk's count)."""
    stats = pstats.Stats(str(path))
    table = stats.stats            # (file, line, name) -> (cc, nc, tt, ct, callers)
    conns = sum(v[1] for k, v in table.items() if k[2] == "_accepted")
    if not conns:
        return "cprofile: no connection was accepted"
    total = sum(v[1] for v in table.values())
    rows = sorted(table.items(), key=lambda kv: -kv[1][1])[:top]
    lines = [f"cprofile: {conns} connections, {total / conns:.1f} Python calls per connection, "
             f"{total / max(requests, 1):.1f} per request (ncalls, C functions included)",
             "  calls/conn  us/conn(own)  function"]
    for (file, line, name), (cc, nc, tt, ct, callers) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(f"  {nc / conns:10.2f}  {tt / conns * 1e6:12.2f}  {name} ({where})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
