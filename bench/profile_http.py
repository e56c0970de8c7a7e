"""Where our pen spends its time in an HTTP-mode scenario of bench/run.py.

    python bench/profile_http.py [SCENARIO] [--seconds S] [--py-spy]

Starts one nginx backend (bench/services.py) and our pen with the
scenario's options (services.HTTP_MODES: http_rule, http_xff; `tcp` for
none), drives it with wrk (50 kept-alive connections), and prints the
functions by their own time: cProfile inside pen by default (its
overhead inflates Python calls against system calls), or py-spy sampling
the running process (`pip install py-spy`; no overhead, needs ptrace).
Requests per second are printed too, to compare runs of the same kind.
"""

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import load
import services

# pen under cProfile, writing its stats when SIGTERM ends the loop.
PROFILED_PEN = """\
import cProfile, signal, sys
sys.argv = ["pen"] + sys.argv[2:]
out = sys.argv.pop(1)
from pen.__main__ import main
prof = cProfile.Profile()
def stop(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
prof.enable()
try:
    main(sys.argv[1:])
except (KeyboardInterrupt, SystemExit):
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""


def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/profile_http.py")
    p.add_argument("scenario", nargs="?", default="http_rule",
                   choices=sorted(services.HTTP_MODES) + ["tcp"])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--py-spy", action="store_true",
                   help="sample with py-spy instead of cProfile")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    wrk = services.find_tool("wrk", "/usr/bin/wrk")
    started = []
    workdir = tempfile.mkdtemp(prefix="pen-profile-")
    try:
        services.make_docroot(workdir)
        backend = services.nginx(workdir, 1000, 4096, started)
        port = services.free_port()
        extra = services.HTTP_MODES[args.scenario]["ours"] if args.scenario != "tcp" else []
        pen_args = services.pen_argv([], port, [backend.port], 1000, extra=extra)
        stats = Path(workdir) / "pen.prof"
        if args.py_spy:
            cmd = [sys.executable, "-m", "pen"] + pen_args
        else:
            cmd = [sys.executable, "-c", PROFILED_PEN, "-", str(stats)] + pen_args
        pen = services.Proc("pen", cmd, workdir, cwd=services.REPO_DIR)
        started.append(pen.start())
        pen.wait_tcp(port)
        load.wrk(wrk, port, services.SMALL_FILE, 1, 50, 2)      # warm up
        spy = None
        if args.py_spy:
            flame = Path(workdir) / "pen.txt"
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "500",
                                    "-d", str(args.seconds), "-f", "raw", "-o", str(flame),
                                    "-p", str(pen.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = load.wrk(wrk, port, services.SMALL_FILE, args.seconds, 50, 2)
        print("%s: %.0f req/s over %.1f s (%d errors)" % (
            args.scenario, run["requests"] / run["seconds"], run["seconds"], run["errors"]))
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
            print_spy(flame, args.top)
        pen.stop()
        if not args.py_spy:
            deadline = time.monotonic() + 10
            while not stats.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            pstats.Stats(str(stats)).sort_stats("tottime").print_stats(args.top)
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_spy(path, top):
    """py-spy's raw (collapsed) stacks as self time per function."""
    own, total = {}, 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        own[frame] = own.get(frame, 0) + int(count)
        total += int(count)
    print("py-spy: %d samples, self time" % total)
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print("%5.1f%%  %s" % (100.0 * count / total, frame))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
