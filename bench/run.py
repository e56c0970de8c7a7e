"""Benchmark our pen against the reference C pen 0.34.1 and HAProxy.

usage: python bench/run.py [--quick] [--json FILE] [--png FILE]
                           [--only TARGETS] [--scenarios NAMES]
                           [--ours-cmd CMD] [--duration S] [--rounds N]
                           [--idle-conns N] [--install | --no-install]

Two single-process nginx backends on 127.0.0.1 serve a 100-byte and a 10 MB
file.  In front of them run our pen (`python -m pen`), the reference pen
(/usr/bin/pen) and HAProxy (one thread, TCP mode, round robin).  wrk loads
each in turn, the order rotating every round so that drift on a shared
machine hits all of them alike; the ratios are what to read, not the
absolute numbers.  Every process is stopped by PID when the run ends.
"""

import argparse
import datetime
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time

import load
import report
import services
from services import REF_PEN, StartError

TARGETS = ("ours", "pen", "haproxy")
TCP_SCENARIOS = ("keepalive", "latency", "bulk", "newconn")
HTTP_SCENARIOS = tuple(services.HTTP_MODES)
# newconn_proxy: new connections with ours and HAProxy sending no PROXY
# header, v1 and v2 (the three rows below), measured in turns
PROXY_SCENARIOS = {"newconn_proxy_off": None, "newconn_proxy_v1": "v1",
                   "newconn_proxy_v2": "v2"}
MEMORY_SCENARIOS = {"memory": None, "memory_http": "http_rule"}   # -> HTTP_MODES key
ALL_SCENARIOS = (TCP_SCENARIOS + HTTP_SCENARIOS + ("newconn_proxy", "idlers")
                 + tuple(MEMORY_SCENARIOS) + ("udp",))
IDLERS = 4                  # `idlers N` of the second ours in the idlers scenario
PERCENTILE_KEYS = ("latency", "connlat")    # scenarios recorded as KEY_p50, KEY_p99
PACKAGES = {                # tool -> (Debian package, where it lands)
    "wrk": ("wrk", "/usr/bin/wrk"),
    "nginx": ("nginx-light", "/usr/sbin/nginx"),
    "pen": ("pen", REF_PEN),
    "haproxy": ("haproxy", "/usr/sbin/haproxy"),
}
FULL = {"duration": 3, "rounds": 3, "idle_conns": 10000, "warmup": 1}
QUICK = {"duration": 1, "rounds": 1, "idle_conns": 1000, "warmup": 1}
FD_SLACK = 100              # descriptors a balancer needs besides its conns
NGINX_CONNS = 12000         # per backend; round robin gives each half
UDP_ECHO_LIFETIME = 1800    # seconds; echo backends exit by themselves then


def say(*args):
    print("bench:", *args, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark our pen against the reference pen 0.34.1 "
                    "(/usr/bin/pen) and HAProxy, on 127.0.0.1.")
    p.add_argument("--quick", action="store_true",
                   help="about 1 s per scenario, one round, 1000 idle "
                        "connections (a smoke run, not a measurement)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--png", metavar="FILE",
                   help="draw a bar chart (needs matplotlib)")
    p.add_argument("--only", metavar="TARGETS",
                   help="comma-separated subset of: ours, pen, haproxy "
                        "(direct nginx is always measured as the baseline)")
    p.add_argument("--scenarios", metavar="NAMES",
                   help="comma-separated subset of: "
                        + ", ".join(ALL_SCENARIOS))
    p.add_argument("--ours-cmd", metavar="CMD",
                   default=os.environ.get("PEN_BENCH_OURS_CMD"),
                   help="command that runs our pen (default: this Python "
                        "with -m pen, in the repository; env "
                        "PEN_BENCH_OURS_CMD)")
    p.add_argument("--duration", type=int, metavar="S",
                   help="whole seconds per measurement (default 3, quick 1)")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="rounds per scenario (default 3, quick 1)")
    p.add_argument("--idle-conns", type=int, metavar="N",
                   help="idle connections for the memory test "
                        "(default 10000, quick 1000)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--install", action="store_true",
                       help="apt-get install missing tools (default when "
                            "running as root)")
    group.add_argument("--no-install", action="store_true",
                       help="never install; skip what is missing")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.targets = pick(args.only, TARGETS, "--only", p)
    args.scenario_list = pick(args.scenarios, ALL_SCENARIOS, "--scenarios", p)
    if args.ours_cmd:
        args.ours_argv = shlex.split(args.ours_cmd)
    else:
        args.ours_argv = [sys.executable, "-m", "pen"]
    if args.duration <= 0 or args.rounds < 1 or args.idle_conns < 1:
        p.error("--duration, --rounds and --idle-conns must be positive")
    return args


def pick(text, allowed, option, parser):
    if not text:
        return list(allowed)
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in chosen if w not in allowed]
    if bad:
        parser.error(f"{option}: unknown {', '.join(bad)} "
                     f"(choose from {', '.join(allowed)})")
    return [w for w in allowed if w in chosen]


# ---------------------------------------------------------------- tools

def tool_path(tool):
    return services.find_tool(tool, PACKAGES[tool][1]) if tool != "pen" \
        else (REF_PEN if os.access(REF_PEN, os.X_OK) else None)


def ensure_tools(args):
    """Install what is missing (when allowed); drop targets we cannot run."""
    needed = ["wrk", "nginx"] + [t for t in ("pen", "haproxy")
                                 if t in args.targets]
    missing = [t for t in needed if not tool_path(t)]
    if missing:
        pkgs = [PACKAGES[t][0] for t in missing]
        command = ["apt-get", "install", "-y", "--no-install-recommends"] + pkgs
        may_install = args.install or (os.geteuid() == 0
                                       and not args.no_install)
        if may_install and shutil.which("apt-get"):
            say("missing", ", ".join(missing), "- installing:",
                "apt-get update && " + " ".join(command))
            subprocess.run(["apt-get", "update", "-q"], check=False,
                           timeout=600)
            subprocess.run(command, check=False, timeout=900,
                           env=dict(os.environ,
                                    DEBIAN_FRONTEND="noninteractive"))
        else:
            say("missing", ", ".join(missing), "- install with:",
                "sudo " + " ".join(command))
    for tool in missing:
        if tool_path(tool):
            continue
        if tool in ("wrk", "nginx"):
            say(f"cannot run without {tool} (Debian package "
                f"{PACKAGES[tool][0]})")
            sys.exit(2)
        say(f"skipping {tool}: not installed")
        args.targets.remove(tool)


def versions(args):
    def first_line(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else None

    found = {"python": platform.python_version(),
             "wrk": first_line([tool_path("wrk"), "--version"]),
             "nginx": first_line([tool_path("nginx"), "-v"])}
    commit = first_line(["git", "-C", str(services.REPO_DIR), "describe",
                         "--always", "--dirty"])
    found["ours_commit"] = commit if commit and " " not in commit else None
    if "haproxy" in args.targets:
        found["haproxy"] = first_line([tool_path("haproxy"), "-v"])
    if "pen" in args.targets:
        found["pen"] = deb_version("pen")
    return found


def deb_version(package):
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "hostname": socket.gethostname()}


# ---------------------------------------------------------------- runs

class Bench:
    """Holds the processes and the results of one benchmark run."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.wrk = tool_path("wrk")
        self.procs = []             # everything started, stopped in finally
        # -x for pen, maxconn for HAProxy: as many as the fd limit allows
        self.fd_limit = services.raise_nofile(8 * args.idle_conns + 1000)
        self.maxconn = max(500, (self.fd_limit - FD_SLACK) // 2)
        self.results = {}
        self.failures = []

    def balancer(self, kind, backends, udp=False, tag="", http=None,
                 proxy=None, extra=()):
        """Start one balancer; on failure record it and return None."""
        try:
            proc = services.balancer(kind, self.workdir, backends,
                                     self.args.ours_argv, self.procs,
                                     self.maxconn, udp=udp, tag=tag, http=http,
                                     proxy=proxy, extra=extra)
        except StartError as exc:
            say(str(exc))
            self.failures.append(f"{kind}{tag}: {str(exc).splitlines()[0]}")
            return None
        return proc

    def entry(self, scenario, target):
        per = self.results.setdefault(scenario, {})
        return per.setdefault(target, {"samples": [], "runs": [],
                                       "errors": 0})

    def fail(self, scenario, target, why):
        keys = (f"{scenario}_p50", f"{scenario}_p99") if scenario in PERCENTILE_KEYS \
            else (scenario,)
        for key in keys:
            self.entry(key, target)["failed"] = why
        say(f"{target} {scenario}: FAILED: {why}")

    # -- TCP scenarios -------------------------------------------------

    def run_tcp(self, backends):
        args = self.args
        ports = {"direct": backends[0].port}
        procs = {}
        for kind in args.targets:
            proc = self.balancer(kind, [b.port for b in backends])
            if proc is None:
                for name in TCP_SCENARIOS:
                    if name in args.scenario_list:
                        self.fail(name, kind, "did not start")
                continue
            procs[kind] = proc
            ports[kind] = proc.port
        order = [t for t in ("direct",) + TARGETS if t in ports]
        say("warming up:", ", ".join(order))
        self.warm_up(order, ports)
        for name in TCP_SCENARIOS:
            if name not in args.scenario_list:
                continue
            if name == "latency":
                self.run_latency(ports, procs)
                continue
            self.rounds([(name, t, ports[t], procs.get(t)) for t in order])

    def warm_up(self, order, ports, label="warm-up"):
        for target in order:
            try:
                load.wrk(self.wrk, ports[target], services.SMALL_FILE,
                         self.args.warmup, 50, 2)
            except load.LoadError as exc:
                say(f"{target} {label}: {exc}")

    def rounds(self, slots):
        """args.rounds measurements of each slot (scenario, target, port,
        proc or None for direct), taking turns (each round starts one
        further along), recorded."""
        for rnd in range(self.args.rounds):
            shift = rnd % max(1, len(slots))
            for name, target, port, proc in slots[shift:] + slots[:shift]:
                if proc is not None and not proc.alive():
                    self.fail(name, target, "balancer died: "
                              + proc.output_tail(3))
                    continue
                if self.is_failed(name, target):
                    continue
                try:
                    run = self.wrk_run(name, port)
                except load.LoadError as exc:
                    self.fail(name, target, str(exc))
                    continue
                self.record(name, target, run, rnd)

    def run_proxy(self, backends):
        """New connections with the PROXY header on against off (issue
        14): ours and HAProxy each sending none, v1 and v2 to the same
        nginx backends (one port plain, one with proxy_protocol), all of
        them measured in turns, so the on/off ratios share the noise."""
        slots = []
        for name, version in PROXY_SCENARIOS.items():
            for kind in ("ours", "haproxy"):
                if kind not in self.args.targets:
                    continue
                ports = [b.proxy_port if version else b.port for b in backends]
                proc = self.balancer(kind, ports, tag=f"-{name}", proxy=version)
                if proc is None:
                    self.fail(name, kind, "did not start")
                    continue
                slots.append((name, kind, proc.port, proc))
        keys = [(name, kind) for name, kind, _, _ in slots]
        self.warm_up(keys, {(n, k): port for n, k, port, _ in slots})
        self.rounds(slots)
        for slot in slots:
            slot[3].stop()

    def run_http(self, backends):
        """HTTP mode, kept-alive (wrk -c50): each balancer started with the
        scenario's options (services.HTTP_MODES), measured in turns."""
        args = self.args
        for name in HTTP_SCENARIOS:
            if name not in args.scenario_list:
                continue
            ports, procs = {}, {}
            for kind in args.targets:
                if services.HTTP_MODES[name][kind] is None:
                    continue             # that balancer cannot do it
                proc = self.balancer(kind, [b.port for b in backends], tag=name,
                                     http=name)
                if proc is None:
                    self.fail(name, kind, "did not start")
                    continue
                procs[kind], ports[kind] = proc, proc.port
            order = [t for t in TARGETS if t in ports]
            self.warm_up(order, ports, f"{name} warm-up")
            self.rounds([(name, t, ports[t], procs.get(t)) for t in order])
            for proc in procs.values():
                proc.stop()

    def is_failed(self, name, target):
        key = f"{name}_p50" if name in PERCENTILE_KEYS else name
        return bool(self.results.get(key, {}).get(target, {}).get("failed"))

    def wrk_run(self, name, port):
        d = self.args.duration
        if name == "keepalive":
            return load.wrk(self.wrk, port, services.SMALL_FILE, d, 50, 2)
        if name in ("newconn", "idlers_newconn") or name in PROXY_SCENARIOS:
            return load.wrk(self.wrk, port, services.SMALL_FILE, d, 50, 2,
                            close=True)
        if name == "bulk":
            return load.wrk(self.wrk, port, services.BIG_FILE, d, 4, 2)
        if name in HTTP_SCENARIOS:      # kept-alive, the balancer in HTTP mode
            return load.wrk(self.wrk, port, services.SMALL_FILE, d, 50, 2)
        raise ValueError(name)

    def record(self, name, target, run, rnd):
        run["round"] = rnd
        secs = run["seconds"] or 1e-9
        if name == "bulk":
            value = run["bytes"] / secs / 1e6
        else:
            value = run["requests"] / secs
        entry = self.entry(name, target)
        entry["samples"].append(value)
        entry["runs"].append(run)
        entry["errors"] += run["errors"]
        errs = f", {run['errors']} errors" if run["errors"] else ""
        unit = report.SCENARIOS[name][1]
        say(f"{target:>8} {name:<9} round {rnd + 1}: "
            f"{report.fmt(value, unit)} {unit}{errs}")

    def run_latency(self, ports, procs, key="latency", fresh=False):
        """Added latency, measured request by request in turn (`fresh`:
        each request on a new connection, recorded as `key`).

        One client takes turns over every target, one request each, so a
        noisy neighbour lands on all of them alike (separate wrk runs gave
        p99s that jumped by milliseconds from one second to the next).
        Each round gives every target's p50/p99 and their excess over
        direct in that round; the value is the median excess over rounds.
        """
        live = {t: p for t, p in ports.items()
                if t == "direct" or procs[t].alive()}
        for target in set(ports) - set(live):
            self.fail(key, target, "balancer died: "
                      + procs[target].output_tail(3))
        for rnd in range(self.args.rounds):
            times = None
            while times is None and "direct" in live and len(live) > 1:
                try:
                    times = load.interleaved_latency(
                        live, services.SMALL_FILE, self.args.duration, fresh)
                except load.LoadError as exc:    # drop the culprit, again
                    culprit = exc.target or "direct"
                    self.fail(key, culprit, str(exc))
                    live.pop(culprit, None)
            if times is None:
                return
            pcts = {}
            for target, samples in times.items():
                samples.sort()
                pcts[target] = {p: load.percentile(samples, int(p[1:])) / 1000
                                for p in ("p50", "p99")}
            for target, got in pcts.items():
                for pct, value in got.items():
                    entry = self.entry(f"{key}_{pct}", target)
                    base = pcts["direct"][pct]
                    entry["runs"].append({"round": rnd, "us": value,
                                          "direct_us": base,
                                          "requests": len(times[target])})
                    entry["samples"].append(
                        value if target == "direct" else value - base)
                say(f"{target:>8} {key:<9} round {rnd + 1}: "
                    f"p50 {got['p50']:.0f} us, p99 {got['p99']:.0f} us "
                    f"({len(times[target])} requests)")

    # -- idlers ---------------------------------------------------------

    def run_idlers(self, backends):
        """pen's `idlers N` (issue 16): our pen plain and with idlers, the
        reference pen and HAProxy, fresh balancers, measured in turns:
        new-connection requests/s (wrk, Connection: close) and the latency
        one new connection adds (connect, request, response)."""
        ports, procs = {"direct": backends[0].port}, {}
        for kind in ["ours", "idlers"] + [t for t in self.args.targets if t != "ours"]:
            if kind == "idlers" and "ours" not in self.args.targets:
                continue
            proc = self.balancer("ours" if kind == "idlers" else kind,
                                 [b.port for b in backends], tag=f"-{kind}",
                                 extra=["-o", f"idlers {IDLERS}"] if kind == "idlers" else ())
            if proc is None:
                self.fail("idlers_newconn", kind, "did not start")
                continue
            procs[kind], ports[kind] = proc, proc.port
        order = [t for t in ("direct", "ours", "idlers", "pen", "haproxy") if t in ports]
        self.warm_up(order, ports, "idlers warm-up")
        self.rounds([("idlers_newconn", t, ports[t], procs[t]) for t in order[1:]])
        self.run_latency(ports, procs, key="connlat", fresh=True)
        for proc in procs.values():
            proc.stop()

    # -- memory --------------------------------------------------------

    def run_memory(self, backends, name="memory", http=None):
        """Idle kept-alive connections (load.idle_memory); `http`: the
        HTTP_MODES key the balancers run with (memory_http: HTTP mode with
        one rule), its results as NAME and NAME_fresh."""
        n = self.args.idle_conns
        if n > self.maxconn - 10:
            n = self.maxconn - 10
            say(f"the fd limit is {self.fd_limit} (and cannot be raised "
                f"here): a balancer relays at most {self.maxconn} "
                f"connections, so {n} idle connections are measured")
        self.results.setdefault(name, {})
        self.idle_conns = n
        ports = [b.port for b in backends]
        fresh = name + "_fresh"
        for target in self.args.targets:
            if http and (services.HTTP_MODES[http][target] is None
                         or target == "haproxy"):
                # pen cannot; HAProxy in mode http connects to a server
                # only for a request, so its connections cannot be counted
                # at the backends while they are fresh.
                continue
            proc = self.balancer(target, ports, tag="-" + name, http=http)
            if proc is None:
                self.fail(name, target, "did not start")
                self.fail(fresh, target, "did not start")
                continue
            try:
                started = time.monotonic()
                run = load.idle_memory(proc, n, ports, proc.alive,
                                       services.SMALL_FILE,
                                       services.SMALL_SIZE)
            except load.LoadError as exc:
                self.fail(name, target, str(exc))
                self.fail(fresh, target, str(exc))
                continue
            finally:
                proc.stop()
            for key, per in ((name, "kib_per_conn"),
                             (fresh, "fresh_kib_per_conn")):
                entry = self.entry(key, target)
                entry["samples"].append(run[per])
                entry["runs"].append(run)
            say(f"{target:>8} {name}: RSS {run['rss_before_kib']} KiB, "
                f"{run['rss_fresh_kib']} with {n} connections "
                f"({run['fresh_kib_per_conn']:.2f} KiB each), "
                f"{run['rss_after_kib']} after one request on each "
                f"({run['kib_per_conn']:.2f} KiB each) "
                f"[{time.monotonic() - started:.1f}s]")

    # -- UDP -----------------------------------------------------------

    def run_udp(self):
        targets = [t for t in self.args.targets if t in ("ours", "pen")]
        if "haproxy" in self.args.targets:
            say("haproxy has no UDP: not in the UDP scenario")
        echoes = [services.udp_echo(self.workdir, i, UDP_ECHO_LIFETIME,
                                    self.procs) for i in (1, 2)]
        ports = {"direct": echoes[0].port}
        for target in targets:
            proc = self.balancer(target, [e.port for e in echoes], udp=True)
            if proc is None:
                self.fail("udp", target, "did not start with -U")
                continue
            ports[target] = proc.port
        order = [t for t in ("direct", "ours", "pen") if t in ports]
        for rnd in range(self.args.rounds):
            shift = rnd % len(order)
            for target in order[shift:] + order[:shift]:
                if self.is_failed("udp", target):
                    continue
                run = load.udp_rate(ports[target], self.args.duration)
                run["round"] = rnd
                value = run["requests"] / run["seconds"]
                entry = self.entry("udp", target)
                entry["samples"].append(value)
                entry["runs"].append(run)
                entry["errors"] += run["errors"]
                if run["requests"] == 0:
                    self.fail("udp", target, "no replies")
                lost = f", {run['lost']} lost" if run["lost"] else ""
                say(f"{target:>8} udp       round {rnd + 1}: "
                    f"{value:,.0f} req/s{lost}")

    def stop_all(self):
        for proc in reversed(self.procs):
            proc.stop()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    services.end_on_signals()
    ensure_tools(args)
    workdir = services.workdir()
    bench = Bench(args, workdir)
    say(f"targets: {', '.join(['direct'] + args.targets)}; scenarios: "
        f"{', '.join(args.scenario_list)}; {args.duration}s x "
        f"{args.rounds} rounds; fd limit {bench.fd_limit}; work dir {workdir}")
    say("ours:", " ".join(args.ours_argv))
    started = time.monotonic()
    when = datetime.datetime.now(datetime.timezone.utc)
    def measure():
        tcp = [s for s in args.scenario_list if s != "udp"]
        if tcp:
            services.make_docroot(workdir)
            proxy = "newconn_proxy" in args.scenario_list
            backends = [services.nginx(workdir, NGINX_CONNS,
                                       bench.fd_limit, bench.procs,
                                       proxy_protocol=proxy)
                        for _ in range(2)]
            if any(s in TCP_SCENARIOS for s in args.scenario_list):
                bench.run_tcp(backends)
            if any(s in HTTP_SCENARIOS for s in args.scenario_list):
                bench.run_http(backends)
            if proxy:
                bench.run_proxy(backends)
            if "idlers" in args.scenario_list:
                bench.run_idlers(backends)
            for name, http in MEMORY_SCENARIOS.items():
                if name in args.scenario_list:
                    bench.run_memory(backends, name, http)
        if "udp" in args.scenario_list:
            bench.run_udp()
    status, _ = services.guarded(measure, bench.stop_all, say)
    if status is not None:
        return status
    elapsed = time.monotonic() - started

    ratios = report.summarise(bench.results)
    targets = ["direct"] + args.targets
    if "idlers" in args.scenario_list and "ours" in args.targets:
        targets.insert(2, "idlers")
    print()
    print(report.table(bench.results, ratios, targets))
    print()
    say(f"finished in {elapsed:.0f}s")
    doc = {
        "format": "pen-bench/1",
        "date": when.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py"] + sys.argv[1:]),
        "machine": machine(),
        "versions": versions(args),
        "config": {"duration": args.duration, "rounds": args.rounds,
                   "idle_conns": getattr(bench, "idle_conns",
                                         args.idle_conns),
                   "fd_limit": bench.fd_limit, "max_conns": bench.maxconn,
                   "quick": args.quick,
                   "ours": args.ours_argv, "targets": targets,
                   "scenarios": args.scenario_list},
        "elapsed_seconds": round(elapsed, 1),
        "units": {k: v[1] for k, v in report.SCENARIOS.items()},
        "higher_is_better": {k: v[2] for k, v in report.SCENARIOS.items()},
        "results": bench.results,
        "ratios": ratios,
        "failures": bench.failures,
    }
    if args.json:
        report.write_json(args.json, doc)
        say("wrote", args.json)
    if args.png:
        title = (f"pen benchmark {when:%Y-%m-%d}, {doc['machine']['cores']} "
                 f"cores, {doc['machine']['cpu']}")
        why = report.draw_png(args.png, bench.results, targets, title)
        say(why if why else f"wrote {args.png}")
    failed = bench.failures or any(
        e.get("failed") for per in bench.results.values()
        for e in per.values())
    if failed:
        say("some runs failed; logs kept in", workdir)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
