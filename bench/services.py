"""Processes the benchmark runs: nginx backends, balancers, UDP echo backends.

Every process is started by `Proc` and stopped by its PID (SIGTERM, then
SIGKILL after a bounded wait).  Everything listens on 127.0.0.1 only, on ports
found by binding port 0.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

REF_PEN = "/usr/bin/pen"          # Debian's C pen; never looked up on PATH
SMALL_FILE = "small.bin"          # 100 bytes
BIG_FILE = "big.bin"              # 10 MB
SMALL_SIZE = 100
BIG_SIZE = 10 * 1000 * 1000
START_TIMEOUT = 15.0              # seconds a process gets to open its port
STOP_TIMEOUT = 5.0


class StartError(RuntimeError):
    """A process did not come up; the message carries its output."""


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def end_on_signals():
    """SIGTERM and SIGINT end a run through its finally blocks, which stop
    every child by PID (SIGINT too when started with it ignored, as `&`
    does in a script)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def guarded(body, stop, say):
    """(None, body()) -- or, when body raised StartError or was interrupted,
    (exit status, None), having said why; stop() runs in any case (it stops
    every child by PID)."""
    try:
        return None, body()
    except StartError as exc:
        say(str(exc))
        return 2, None
    except KeyboardInterrupt:
        say("interrupted")
        return 130, None
    finally:
        stop()


def find_tool(name, *fallbacks):
    """Absolute path of a program, also looking in the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


def free_port(kind=socket.SOCK_STREAM):
    """A port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_nofile(wanted):
    """Raise RLIMIT_NOFILE (inherited by children); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        except OSError:
            nr_open = wanted
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (soft, min(wanted, nr_open)))
        except (ValueError, OSError):
            pass                        # not root: keep the hard limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kib(pid):
    """VmRSS of a process in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """One child process with its output in a log file; stopped by PID."""

    def __init__(self, name, argv, workdir, cwd=None, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.cwd = cwd
        self.env = env
        self.log_path = Path(workdir) / f"{name}.log"
        self.popen = None

    @property
    def pid(self):
        return self.popen.pid

    def start(self):
        with open(self.log_path, "wb") as log:
            # Own session: a Ctrl-C on the terminal reaches only the harness,
            # which then stops every child by PID in its finally blocks.
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env,
                start_new_session=True)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def output_tail(self, lines=15):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why):
        code = self.popen.poll() if self.popen else None
        status = f" (exit status {code})" if code is not None else ""
        raise StartError(f"{self.name}: {why}{status}\n"
                         f"  command: {' '.join(self.argv)}\n"
                         f"  output:\n{self.output_tail()}")

    def wait_tcp(self, port, timeout=START_TIMEOUT):
        """Poll until the port accepts a connection (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail("exited during startup")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.fail(f"port {port} not open after {timeout:.0f}s")

    def stop(self):
        """SIGTERM by PID, bounded wait, then SIGKILL by PID."""
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5)):
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


# ---------------------------------------------------------------- nginx

NGINX_CONF = """\
# written by pen's bench/run.py
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx-{port}.pid;
error_log {prefix}/nginx-{port}.err warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {conns};
    use epoll;
    multi_accept on;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_header_timeout 600s;
    client_body_temp_path {prefix}/tmp/body-{port};
    proxy_temp_path {prefix}/tmp/proxy-{port};
    fastcgi_temp_path {prefix}/tmp/fastcgi-{port};
    uwsgi_temp_path {prefix}/tmp/uwsgi-{port};
    scgi_temp_path {prefix}/tmp/scgi-{port};
    server {{
        listen {host}:{port} backlog=4096;
{proxy_listen}        root {prefix}/www;
        location / {{ }}
    }}
}}
"""


def make_docroot(prefix):
    www = Path(prefix) / "www"
    www.mkdir(parents=True, exist_ok=True)
    (Path(prefix) / "tmp").mkdir(exist_ok=True)
    (www / SMALL_FILE).write_bytes(b"x" * (SMALL_SIZE - 1) + b"\n")
    chunk = bytes(range(256)) * 4096                      # 1 MiB pattern
    with open(www / BIG_FILE, "wb") as big:
        left = BIG_SIZE
        while left > 0:
            left -= big.write(chunk[:min(left, len(chunk))])


def nginx(prefix, conns, nofile, started, proxy_protocol=False):
    """One single-process nginx on a free port serving prefix/www; with
    `proxy_protocol` also on a second port (`proxy_port`) where every
    connection must start with a PROXY v1 or v2 header."""
    exe = find_tool("nginx", "/usr/sbin/nginx")
    port = free_port()
    proxy_port = free_port() if proxy_protocol else None
    proxy_listen = (f"        listen {HOST}:{proxy_port} proxy_protocol "
                    f"backlog=4096;\n" if proxy_protocol else "")
    conf = Path(prefix) / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, host=HOST,
                                      conns=min(conns, nofile - 100),
                                      nofile=nofile, proxy_listen=proxy_listen))
    proc = Proc(f"nginx-{port}",
                [exe, "-e", Path(prefix) / f"nginx-{port}.err",
                 "-p", prefix, "-c", conf], prefix)
    proc.port, proc.proxy_port = port, proxy_port
    started.append(proc.start())
    return proc.wait_tcp(port)


# ---------------------------------------------------------------- balancers

HAPROXY_CONF = """\
# written by pen's bench/run.py: single thread, TCP mode, round robin
global
    nbthread 1
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    maxconn {maxconn}
frontend fe
    bind {host}:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
"""


# HTTP scenarios (bench/run.py run_http): what each balancer is told to do
# to every request.  "http_rule": one header rule; the reference pen has
# none, so it sits that one out.  "http_xff": pen's -H (X-Forwarded-For).
HTTP_MODES = {
    "http_rule": {"ours": ["-o", 'header set server "X-Real-IP: %r"'], "pen": None,
                  "haproxy": "    mode http\n    http-request set-header X-Real-IP %[src]\n"},
    "http_xff": {"ours": ["-H"], "pen": ["-H"],
                 "haproxy": "    mode http\n    option forwardfor\n"},
}


def pen_argv(prefix_argv, port, backends, maxconn, udp=False, extra=()):
    """pen's own command line, the same for ours and the reference."""
    argv = list(prefix_argv) + list(extra) + ["-f", "-r", "-x", str(maxconn)]
    if udp:
        argv.append("-U")
    argv.append(f"{HOST}:{port}")
    argv += [f"{HOST}:{b}" for b in backends]
    return argv


# The PROXY header each balancer is told to send (bench/run.py
# run_proxy): ours's option, HAProxy's server keyword.
PROXY_MODES = {"v1": {"ours": ["-o", "proxy_protocol v1"], "haproxy": " send-proxy"},
               "v2": {"ours": ["-o", "proxy_protocol v2"], "haproxy": " send-proxy-v2"}}


def balancer(kind, workdir, backends, ours_cmd, started, maxconn, udp=False,
             tag="", http=None, proxy=None, extra=()):
    """Start one balancer ('ours', 'pen' or 'haproxy'); returns a Proc.
    `http`: a key of HTTP_MODES (that scenario's options); `proxy`: a key
    of PROXY_MODES (the PROXY header it sends to the backends); `extra`:
    more arguments for a pen's command line (ours or the reference).

    The Proc is appended to `started` as soon as it runs, so the caller can
    stop it by PID even when it then fails to come up.
    """
    port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    name = f"{kind}{tag}-{port}"
    if http:
        extra = HTTP_MODES[http][kind]
    if proxy:
        extra = PROXY_MODES[proxy][kind]
    if kind == "ours":
        proc = Proc(name, pen_argv(ours_cmd, port, backends, maxconn, udp, extra),
                    workdir, cwd=REPO_DIR)
    elif kind == "pen":
        proc = Proc(name, pen_argv([REF_PEN], port, backends, maxconn, udp, extra),
                    workdir)
    elif kind == "haproxy":
        conf = Path(workdir) / f"{name}.cfg"
        send = extra if proxy else ""
        servers = "\n".join(f"    server s{i} {HOST}:{b}{send}"
                            for i, b in enumerate(backends, 1))
        text = HAPROXY_CONF.format(maxconn=maxconn, host=HOST, port=port,
                                   servers=servers)
        if http:
            text = text.replace("backend be\n", "backend be\n" + extra).replace(
                "frontend fe\n", "frontend fe\n    mode http\n")
        conf.write_text(text)
        exe = find_tool("haproxy", "/usr/sbin/haproxy")
        proc = Proc(name, [exe, "-db", "-f", conf], workdir)
    else:
        raise ValueError(kind)
    proc.port = port
    started.append(proc.start())
    if udp:
        return wait_udp(proc, port)
    return proc.wait_tcp(port)


# ---------------------------------------------------------------- UDP

def udp_echo(workdir, index, lifetime, started):
    """Start bench/udp_echo.py; it binds port 0 and prints the port."""
    proc = Proc(f"udp-echo-{index}",
                [sys.executable, BENCH_DIR / "udp_echo.py", HOST,
                 str(int(lifetime))], workdir)
    started.append(proc.start())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            proc.fail("exited during startup")
        first = proc.output_tail(1).strip()
        if first.isdigit():
            proc.port = int(first)
            return wait_udp(proc, proc.port)
        time.sleep(0.02)
    proc.fail("printed no port")


def wait_udp(proc, port, timeout=START_TIMEOUT):
    """Poll with a datagram until an echo comes back (bounded)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if not proc.alive():
                proc.fail("exited during startup")
            try:
                sock.sendto(b"ping", (HOST, port))
                if sock.recv(64) == b"ping":
                    return proc
            except OSError:
                time.sleep(0.02)
    proc.fail(f"no UDP echo through port {port} after {timeout:.0f}s")


def workdir():
    path = tempfile.mkdtemp(prefix="pen-bench-")
    os.chmod(path, 0o755)
    return path
