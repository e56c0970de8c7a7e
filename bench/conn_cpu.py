"""CPU time a balancer spends per new connection, which load hardly skews.

usage: python bench/conn_cpu.py [--requests N] [--rounds R] [-- OPTION...]

One nginx on 127.0.0.1; our pen plain, our pen with the options after
`--` (default: -o "idlers 4") and the C pen in front of it.  One client
makes N requests, each on a new connection (connect, request, response,
close), taking turns over the balancers request by request; each
balancer's CPU time comes from /proc/PID/schedstat (nanoseconds on a CPU),
read before and after.  On a loaded machine the wall-clock latency moves
with the neighbours; the CPU time per connection mostly does not.
"""

import argparse
import socket
import sys
import time

import load
import services
from services import HOST, REF_PEN, SMALL_FILE, Proc


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def fetch(port, request, size, buf):
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(request)
        got = 0
        while got < size:
            n = s.recv_into(buf)
            if not n:
                raise RuntimeError(f"port {port}: closed after {got} bytes")
            got += n


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = ["-o", "idlers 4"]
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(prog="python bench/conn_cpu.py", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=3000, help="per balancer and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    workdir = services.workdir()
    services.make_docroot(workdir)
    started = []
    try:
        nginx = services.nginx(workdir, 4096, services.raise_nofile(8192), started)
        kinds = {"ours": [sys.executable, "-m", "pen"],
                 "ours " + " ".join(extra): [sys.executable, "-m", "pen", *extra],
                 "pen": [REF_PEN]}
        procs = {}
        for name, prefix in kinds.items():
            port = services.free_port()
            proc = Proc(f"cpu{len(procs)}-{port}",
                        services.pen_argv(prefix, port, [nginx.port], 1000), workdir,
                        cwd=services.REPO_DIR)
            started.append(proc.start())
            procs[name] = proc.wait_tcp(port)
            proc.port = port
        request = f"GET /{SMALL_FILE} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        with socket.create_connection((HOST, nginx.port), timeout=5) as s:
            size = load.response_size(s, request)
        buf = bytearray(65536)
        for proc in procs.values():            # warm up
            for _ in range(200):
                fetch(proc.port, request, size, buf)
        per_round = {name: [] for name in procs}
        for rnd in range(args.rounds):
            before = {name: cpu_ns(proc.pid) for name, proc in procs.items()}
            wall = time.monotonic()
            for _ in range(args.requests):
                for proc in procs.values():
                    fetch(proc.port, request, size, buf)
            after = {name: cpu_ns(proc.pid) for name, proc in procs.items()}
            for name in procs:
                per_round[name].append((after[name] - before[name]) / args.requests / 1000)
            print(f"round {rnd + 1}: {time.monotonic() - wall:.1f}s "
                  + ", ".join(f"{n} {v[-1]:.1f} us" for n, v in per_round.items()), flush=True)
    finally:
        for proc in reversed(started):
            proc.stop()
    print("\nCPU per new connection (median of rounds):")
    for name, values in per_round.items():
        values.sort()
        print(f"  {name:<28}{values[len(values) // 2]:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
