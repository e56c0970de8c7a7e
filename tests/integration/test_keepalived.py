"""The keepalived pair of contrib/keepalived, in Linux network namespaces.

    client ---+                 +--- be1 10.0.77.21:8000
              |    bridge br0   |
   lb1 (pen + keepalived MASTER) 10.0.77.1    VIP 10.0.77.100:8080
   lb2 (pen + keepalived BACKUP) 10.0.77.2
              +--- be2 10.0.77.22:8000

Every node is a namespace this test creates, joined by veths to a bridge in
a sixth one; the shipped configs are used as they are, with only the script
and state-file paths pointed into a temporary directory.  The client makes
short connections to the VIP back to back while the master's pen is killed
(failover) and started again (failback); the figures are printed.

The test thread and the client thread enter a namespace with setns(2) on
themselves only: a socket created there stays in that namespace.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import TIMEOUT, Backend, recv_all, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "keepalived"
KEEPALIVED = "/usr/sbin/keepalived"
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)

NET = "10.0.77."
LB = {"lb1": NET + "1", "lb2": NET + "2"}
BACKENDS = {"be1": NET + "21", "be2": NET + "22"}
CLIENT = NET + "10"
VIP = NET + "100"
PEN_PORT, BACKEND_PORT, CONTROL = 8080, 8000, "127.0.0.1:10000"
CHECK = "/usr/local/lib/pen/check_pen.sh"
NOTIFY = "/usr/local/lib/pen/notify_pen.sh"
STATEFILE = "/run/pen/vrrp.state"
PAYLOAD = b"ping"
MAX_REQUESTS = 4000


def run(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=check)


@contextmanager
def netns(name):
    """The calling thread in namespace `name` for the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if LIBC.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        yield
    finally:
        back = LIBC.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)
        assert back == 0, "could not return to the test's own network namespace"


def can_make_namespaces():
    """None when this machine lets the test build namespaces, else the reason."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    for tool in ("ip", "timeout", KEEPALIVED):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = f"pkprobe{os.getpid()}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add fails here: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def tcp_listening(pid, port):
    """Whether process pid's network namespace has a TCP listener on port."""
    hexport = ":%04X" % port
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return any(line.split()[1].endswith(hexport) and line.split()[3] == "0A"
                       for line in list(f)[1:])
    except (FileNotFoundError, ProcessLookupError):
        return False


class Lab:
    """The namespaces, the processes started in them, and their cleanup."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.tag = f"pk{os.getpid() % 100000}"
        self.namespaces = []
        self.procs = []            # Popen objects, stopped by PID
        self.backends = []

    def ns(self, role):
        return f"{self.tag}-{role}"

    def build(self):
        switch = self.ns("sw")
        self._add_ns(switch)
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        nodes = {"client": CLIENT, **LB, **BACKENDS}
        for role, address in nodes.items():
            node = self.ns(role)
            self._add_ns(node)
            run("ip", "-n", switch, "link", "add", role, "type", "veth",
                "peer", "name", "eth0", "netns", node)
            run("ip", "-n", switch, "link", "set", role, "master", "br0", "up")
            run("ip", "-n", node, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", node, "link", "set", "eth0", "up")
            run("ip", "-n", node, "link", "set", "lo", "up")

    def _add_ns(self, name):
        run("ip", "netns", "add", name)
        self.namespaces.append(name)

    def start(self, role, *cmd, log):
        out = open(self.tmp / log, "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *cmd],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        out.close()
        self.procs.append(proc)
        return proc

    def start_pen(self, role):
        proc = self.start(role, sys.executable, "-m", "pen", "-f", "-u", "root",
                          "-C", CONTROL, str(PEN_PORT),
                          *(f"{a}:{BACKEND_PORT}" for a in BACKENDS.values()),
                          log=f"pen-{role}.log")
        ready = wait_until(lambda: proc.poll() is not None or (
            tcp_listening(proc.pid, PEN_PORT) and tcp_listening(proc.pid, 10000)))
        assert ready and proc.poll() is None, self.log(f"pen-{role}.log")
        return proc

    def start_keepalived(self, role, template):
        conf = self.tmp / f"keepalived-{role}.conf"
        conf.write_text(render(template.read_text(), self.tmp, role))
        checked = run(KEEPALIVED, "-t", "-f", str(conf), check=False)
        assert checked.returncode == 0, f"keepalived -t {conf}: {checked.stderr}"
        return self.start(role, KEEPALIVED, "-n", "-l", "-D", "-G", "-P", "-R",
                          "-f", str(conf),
                          "-p", str(self.tmp / f"{role}.pid"),
                          "-r", str(self.tmp / f"{role}-vrrp.pid"),
                          "-c", str(self.tmp / f"{role}-checkers.pid"),
                          log=f"keepalived-{role}.log")

    def state(self, role):
        try:
            return (self.tmp / f"{role}.state").read_text().split()[0]
        except (FileNotFoundError, IndexError):
            return None

    def has_vip(self, role):
        out = run("ip", "-n", self.ns(role), "-o", "-4", "addr", "show", "dev", "eth0").stdout
        return f" {VIP}/" in out

    def log(self, name):
        try:
            return (self.tmp / name).read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return f"(no {name})"

    def close(self):
        for proc in reversed(self.procs):
            stop(proc)
        for role in LB:        # keepalived's VRRP child, should it outlive its parent
            pidfile = self.tmp / f"{role}-vrrp.pid"
            if pidfile.exists():
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                except (ValueError, IndexError, ProcessLookupError):
                    pass
        for backend in self.backends:
            backend.close()
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def render(conf, tmp, role):
    """The shipped config with its script and state paths moved into tmp."""
    check = f"{CHECK} {CONTROL} 2"
    for token in (check, NOTIFY, STATEFILE):
        assert token in conf, f"{token!r} no longer in the shipped config"
    conf = conf.replace(check, f"{tmp}/check_pen.sh {CONTROL} 2 {tmp}/penctl")
    conf = conf.replace(NOTIFY, f"{tmp}/notify_pen.sh")
    return conf.replace(STATEFILE, f"{tmp}/{role}.state")


class Traffic(threading.Thread):
    """Short connections to the VIP from the client namespace, back to back.

    results: (start, end, ok, what) with what = the backend's name or the error."""

    def __init__(self, namespace, interval=0.02, seconds=45):
        super().__init__(daemon=True)
        self.namespace, self.interval, self.seconds = namespace, interval, seconds
        self.results = []
        self.stopping = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.seconds
        with netns(self.namespace):
            while (not self.stopping.is_set() and time.monotonic() < deadline
                   and len(self.results) < MAX_REQUESTS):
                start = time.monotonic()
                ok, what = request()
                self.results.append((start, time.monotonic(), ok, what))
                self.stopping.wait(max(0.0, start + self.interval - time.monotonic()))

    def successes_after(self, t):
        return sum(1 for start, _, ok, _ in list(self.results) if ok and start > t)

    def stop(self):
        self.stopping.set()
        self.join(TIMEOUT)
        assert not self.is_alive()


def request():
    try:
        with socket.create_connection((VIP, PEN_PORT), timeout=1.0) as s:
            s.settimeout(1.0)
            s.sendall(PAYLOAD)
            s.shutdown(socket.SHUT_WR)
            data = recv_all(s, 4096)
    except OSError as e:
        return False, type(e).__name__
    name, _, echo = data.partition(b"\n")
    if echo != PAYLOAD or name.decode(errors="replace") not in BACKENDS:
        return False, f"bad reply {data[:40]!r}"
    return True, name.decode()


@pytest.fixture
def lab():
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="pen-keepalived-"))
    lab = Lab(tmp)
    try:
        for script in ("check_pen.sh", "notify_pen.sh"):
            shutil.copy(CONTRIB / script, tmp / script)
            os.chmod(tmp / script, 0o755)
        (tmp / "penctl").write_text(f"#!/bin/sh\nexec {sys.executable} -m penctl \"$@\"\n")
        os.chmod(tmp / "penctl", 0o755)
        lab.build()
        yield lab
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def first(results, after, ok=True):
    return next((r for r in results if r[0] > after and r[2] == ok), None)


def failures(results, start, end):
    return [r for r in results if start < r[0] <= end and not r[2]]


def test_failover_and_failback_lose_no_request_once_the_vip_moved(lab):
    for name, address in BACKENDS.items():
        with netns(lab.ns(name)):
            lab.backends.append(Backend(name, host=address, port=BACKEND_PORT))
    pens = {role: lab.start_pen(role) for role in LB}
    lab.start_keepalived("lb1", CONTRIB / "keepalived-master.conf")
    lab.start_keepalived("lb2", CONTRIB / "keepalived-backup.conf")
    settled = wait_until(lambda: lab.state("lb1") == "MASTER" and lab.state("lb2") == "BACKUP"
                         and lab.has_vip("lb1"), timeout=15)
    assert settled, (lab.state("lb1"), lab.state("lb2"), lab.log("keepalived-lb1.log"))
    assert not lab.has_vip("lb2")

    traffic = Traffic(lab.ns("client"))
    traffic.start()
    try:
        assert wait_until(lambda: traffic.successes_after(0) >= 20, timeout=10), \
            traffic.results[-5:]
        assert not failures(traffic.results, 0, time.monotonic()), "failures before the kill"

        # Failover: the master's pen dies; its keepalived must give up the VIP.
        killed = time.monotonic()
        pens["lb1"].kill()
        pens["lb1"].wait(TIMEOUT)
        assert wait_until(lambda: first(traffic.results, killed) is not None, timeout=15), \
            (lab.state("lb1"), lab.state("lb2"), lab.log("keepalived-lb2.log"))
        back = first(traffic.results, killed)
        assert wait_until(lambda: lab.state("lb2") == "MASTER" and lab.has_vip("lb2")
                          and traffic.successes_after(back[0]) >= 40, timeout=10)
        assert lab.state("lb1") == "FAULT" and not lab.has_vip("lb1")
        failover = back[1] - killed
        lost_in_failover = failures(traffic.results, killed, back[0])

        # Failback: pen on lb1 again; after `rise 2` checks lb1 preempts.
        restarted = time.monotonic()
        seen = [len(b.peers) for b in lab.backends]
        pens["lb1"] = lab.start_pen("lb1")
        after_failover = failures(traffic.results, back[0], restarted)

        def lb1_serves():
            fresh = [p for b, n in zip(lab.backends, seen) for p in b.peers[n:]]
            return (lab.state("lb1") == "MASTER" and lab.state("lb2") == "BACKUP"
                    and any(p[0] == LB["lb1"] for p in fresh))
        assert wait_until(lb1_serves, timeout=20), (lab.state("lb1"), lab.state("lb2"))
        failback = time.monotonic() - restarted
        assert lab.has_vip("lb1") and not lab.has_vip("lb2")
        settled_back = time.monotonic()
        assert wait_until(lambda: traffic.successes_after(settled_back) >= 25, timeout=10)
    finally:
        traffic.stop()
    results = traffic.results
    lost_in_failback = failures(results, restarted, settled_back)
    after_failback = failures(results, settled_back, results[-1][0])
    print(f"\nkeepalived pair: {len(results)} requests; failover {failover:.2f}s "
          f"({len(lost_in_failover)} failed while the VIP moved: "
          f"{sorted({r[3] for r in lost_in_failover})}); "
          f"failed after failover {len(after_failover)}; failback {failback:.2f}s "
          f"({len(lost_in_failback)} failed during failback); "
          f"failed after failback {len(after_failback)}")
    assert after_failover == [], after_failover[:5]
    assert after_failback == [], after_failback[:5]
    assert failover < 10


def test_check_script_fails_for_a_pen_that_does_not_answer(tmp_path):
    """check_pen.sh against a pen on loopback: running, stopped (SIGSTOP), gone."""
    from conftest import free_port
    check = CONTRIB / "check_pen.sh"
    wrapper = tmp_path / "penctl"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m penctl \"$@\"\n")
    wrapper.chmod(0o755)
    control, port = free_port(), free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([sys.executable, "-m", "pen", "-f", *user, "-C",
                             f"127.0.0.1:{control}", str(port), "127.0.0.1:1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def status(limit="1"):
            return subprocess.run([str(check), f"127.0.0.1:{control}", limit, str(wrapper)],
                                  capture_output=True, timeout=10).returncode
        assert wait_until(lambda: proc.poll() is not None or status() == 0), \
            proc.stderr.read().decode() if proc.poll() is not None else "check never passed"
        proc.send_signal(signal.SIGSTOP)
        began = time.monotonic()
        assert status() == 2                 # accepted by the kernel, never answered
        assert time.monotonic() - began < 5
        proc.send_signal(signal.SIGCONT)
        assert status() == 0
    finally:
        proc.send_signal(signal.SIGCONT)
        stop(proc)
    assert status() == 2
    usage = subprocess.run([str(check)], capture_output=True, text=True, timeout=10)
    assert usage.returncode == 1 and "usage" in usage.stderr


def test_notify_script_records_each_transition(tmp_path):
    notify = CONTRIB / "notify_pen.sh"
    state = tmp_path / "vrrp.state"
    for word in ("BACKUP", "MASTER", "FAULT"):
        subprocess.run([str(notify), str(state), "INSTANCE", "PEN", word, "150"],
                       check=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
    assert state.read_text().split()[:2] == ["FAULT", "PEN"]
    log = (tmp_path / "vrrp.state.log").read_text().splitlines()
    assert [line.split()[0] for line in log] == ["BACKUP", "MASTER", "FAULT"]
    assert all(re.fullmatch(r"\w+ PEN \d+\.\d+", line) for line in log)
