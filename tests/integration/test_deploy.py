"""The deployment README's "Running it for real" describes, step by step
(issue 9): root starts pen with -u/-j/-p/-C/-F/-l and TLS, then HUP, log
rotation, certificate renewal, `write`, --check-config and SIGTERM; plus
one test per defect found in that sequence, and the small command-line
ones (--version, --check-config, usage, -L, fd warning, penctl's status)."""

import grp
import os
import pwd
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest

from conftest import (TIMEOUT, Pen, connect, free_port, listening, read_line, recv_all,
                      wait_until)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import certs as certgen  # noqa: E402  (tests/certs.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)
as_root = pytest.mark.skipif(os.getuid() != 0,
                             reason="needs root: pen binds, then chroots and setuids")


def run(*args, cwd=None, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT * 2,
                          cwd=cwd, env=ENV, **kw)


def pen_cmd(*args):
    return [sys.executable, "-m", "pen", *map(str, args)]


def penctl(ctl, *words):
    return run(sys.executable, "-m", "penctl", str(ctl), *words)


@pytest.fixture
def tree():
    """A temporary root for README's paths, searchable by everyone (pytest's
    tmp_path sits in a 0700 directory, which no -u user could walk)."""
    top = tempfile.mkdtemp(prefix="pen-deploy-", dir="/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def install_d(path, mode, owner=None, group=None):
    """`install -d -m MODE [-o OWNER] [-g GROUP] PATH`."""
    os.makedirs(path, exist_ok=True)
    for parent in _parents(path):
        os.chmod(parent, 0o755)
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def install(src_text, path, mode, group=None):
    with open(path, "wb") as f:
        f.write(src_text if isinstance(src_text, bytes) else src_text.encode())
    os.chown(path, -1, grp.getgrnam(group).gr_gid if group else -1)
    os.chmod(path, mode)


def _parents(path):
    out, head = [], os.path.dirname(path)
    while head not in ("/", "/tmp") and head:
        out.append(head)
        head = os.path.dirname(head)
    return out


def tls_peer(port, ca):
    """(certificate DER, first line) a TLS client gets through pen."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
            line = b""
            while not line.endswith(b"\n") and len(line) < 100:
                chunk = s.recv(100)
                if not chunk:
                    break
                line += chunk
            return der, line.decode().strip()


def gone(pid):
    return not os.path.exists(f"/proc/{pid}")


@as_root
def test_readme_deployment_end_to_end(backends, tree):
    a, b = backends(2)
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    jail, etc = f"{tree}/var/lib/pen", f"{tree}/etc/pen"
    logdir, rundir = f"{tree}/var/log/pen", f"{tree}/run/pen"
    # README: install -d the jail (root's), /etc/pen (group-writable for the
    # user), /var/log/pen (the user's), /run/pen (root's); the config and
    # the certificate readable by the user's group.
    install_d(jail, 0o755)
    install_d(etc, 0o770, group=group)
    install_d(logdir, 0o750, owner="nobody", group="adm")
    install_d(rundir, 0o755)
    cfg, log = f"{etc}/pen.cfg", f"{logdir}/pen.log"
    pidfile, ctl = f"{rundir}/pen.pid", f"{rundir}/pen.ctl"
    install(f"blacklist 30\nserver 0 address 127.0.0.1 port {a.port}\n", cfg, 0o660, group)
    c = certgen.make_certs(tempfile.mkdtemp(dir=tree))
    crt, key = f"{etc}/site.crt", f"{etc}/site.key"
    install(certgen.cert_pem(c.server_obj, c.ca_obj), crt, 0o640, group)   # the full chain
    install(open(c.server_key, "rb").read(), key, 0o640, group)
    port = free_port()
    args = ["-u", "nobody", "-j", jail, "-p", pidfile, "-C", ctl, "-F", cfg, "-l", log,
            "-E", crt, "-K", key, f"127.0.0.1:{port}"]

    # Check, then start.
    r = run(*pen_cmd("--check-config", *args))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert not listening(port)                       # --check-config started nothing
    r = run(*pen_cmd(*args), cwd="/")
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: os.path.exists(pidfile) and listening(port))
    pid = int(open(pidfile).read())
    try:
        def uids():
            with open(f"/proc/{pid}/status") as f:
                return next(l for l in f if l.startswith("Uid:")).split()[1:]
        assert wait_until(lambda: uids() == [str(nobody.pw_uid)] * 4), uids()
        assert os.readlink(f"/proc/{pid}/root") == jail

        # Traffic flows, over TLS.
        der, line = tls_peer(port, c.ca_cert)
        assert line == "S0" and der == c.server_obj.public_bytes(certgen.serialization.Encoding.DER)
        assert wait_until(lambda: os.path.exists(log) and "127.0.0.1" in open(log).read())

        # Edit the config, HUP: the change is live.
        install(f"blacklist 45\nserver 0 address 127.0.0.1 port {b.port}\n", cfg, 0o660, group)
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: penctl(ctl, "blacklist").stdout == "45\n")
        assert wait_until(lambda: tls_peer(port, c.ca_cert)[1] == "S1")

        # Rotate the log, HUP: the new file fills.
        os.rename(log, log + ".1")
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: os.path.exists(log))
        tls_peer(port, c.ca_cert)
        assert wait_until(lambda: "127.0.0.1" in open(log).read())

        # Replace the certificate, HUP: a new client sees the new one.
        key2 = certgen.new_key()
        cert2 = certgen.make_cert("localhost", key2, c.ca_obj, c.ca_key_obj,
                                  sans=certgen.local_sans())
        install(certgen.cert_pem(cert2, c.ca_obj), crt, 0o640, group)
        install(certgen.key_pem(key2), key, 0o640, group)
        os.kill(pid, signal.SIGHUP)
        new_der = cert2.public_bytes(certgen.serialization.Encoding.DER)
        assert wait_until(lambda: tls_peer(port, c.ca_cert)[0] == new_der)
        assert f"default file {crt}\n" in penctl(ctl, "ssl_info").stdout   # named as given

        # penctl write (over the -F file, as the pen user), then check it.
        r = penctl(ctl, "write")
        assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
        text = open(cfg).read()
        assert f"port {b.port}" in text and "blacklist 45" in text
        assert sorted(os.listdir(etc)) == ["pen.cfg", "site.crt", "site.key"]   # no temp left
        r = run(*pen_cmd("--check-config", "-F", cfg, f"127.0.0.1:{free_port()}"))
        assert r.returncode == 0 and r.stderr == "", r.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: gone(pid))
    # the pid file and the socket in root's /run/pen are gone
    assert wait_until(lambda: not os.path.exists(pidfile) and not os.path.exists(ctl))
    assert not listening(port)


@as_root
def test_hup_under_u_runs_every_step_when_the_log_cannot_be_reopened(backends, tree):
    # Defect 1: the log could not be reopened as nobody, and that aborted
    # the whole HUP: the config was not re-read.  Here the log directory is
    # root's, so after a rename the new log cannot be created: the HUP says
    # so and still applies the config.
    (a,) = backends(1)
    jail, logdir = f"{tree}/jail", f"{tree}/logs"
    install_d(jail, 0o755)
    install_d(logdir, 0o755)
    cfg, log = f"{tree}/pen.cfg", f"{logdir}/pen.log"
    install("blacklist 30\n", cfg, 0o644)
    port, ctl = free_port(), f"{tree}/ctl"
    p = Pen(["-u", "nobody", "-j", jail, "-C", ctl, "-F", cfg, "-l", log,
             f"127.0.0.1:{port}", a.spec], port=port)
    try:
        assert wait_until(lambda: penctl(ctl, "blacklist").stdout == "30\n")  # serving
        os.rename(log, log + ".1")
        install("blacklist 77\n", cfg, 0o644)
        p.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: penctl(ctl, "blacklist").stdout == "77\n")
    finally:
        rc, err = p.stop()
    assert "SIGHUP: reopening the log failed" in err and "Permission denied" in err, err
    assert "Traceback" not in err


@as_root
def test_relative_write_and_include_after_detaching_resolve_from_the_start_directory(
        backends, tree):
    # Issue 8 item 6: a detached pen created /rel2.cfg for `write rel2.cfg`.
    (a,) = backends(1)
    os.makedirs(f"{tree}/conf")
    install(f"server 0 address 127.0.0.1 port {a.port}\n", f"{tree}/conf/rel.cfg", 0o644)
    install("blacklist 12\n", f"{tree}/conf/more.cfg", 0o644)
    port = free_port()
    r = run(*pen_cmd("-u", "root", "-p", "pen.pid", "-C", "./ctl", "-F", "conf/rel.cfg",
                     f"127.0.0.1:{port}"), cwd=tree)
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: os.path.exists(f"{tree}/pen.pid") and listening(port))
    pid = int(open(f"{tree}/pen.pid").read())
    ctl = f"{tree}/ctl"
    try:
        assert penctl(ctl, "include", "conf/more.cfg").stdout == ""
        assert penctl(ctl, "blacklist").stdout == "12\n"
        r = penctl(ctl, "write", "conf/rel2.cfg")
        assert r.returncode == 0 and r.stdout == "", r.stdout
        assert "blacklist 12" in open(f"{tree}/conf/rel2.cfg").read()
        assert not os.path.exists("/conf/rel2.cfg") and not os.path.exists("/rel2.cfg")
        # an error reply makes penctl exit 2
        r = penctl(ctl, "write", "no/such/dir/x.cfg")
        assert r.returncode == 2 and r.stdout.startswith("write: cannot write"), r.stdout
        assert penctl(ctl, "include", "conf/none.cfg").returncode == 2
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: gone(pid))


def test_check_config_reports_every_problem_and_starts_nothing(tmp_path):
    cfg = tmp_path / "pen.cfg"
    cfg.write_text("blacklist abc\nroundrobin\nserver x\n")
    port = free_port()
    r = run(*pen_cmd("--check-config", "-F", cfg, "-E", tmp_path / "none.pem",
                     "-p", tmp_path / "no/dir/pen.pid", f"127.0.0.1:{port}"))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert any(l.startswith(f"pen: {cfg}:1: ") for l in lines), r.stderr
    assert any(l.startswith(f"pen: {cfg}:3: ") for l in lines)
    assert any("pid file" in l for l in lines) and any("none.pem" in l for l in lines)
    assert len(lines) == 4, r.stderr
    assert not listening(port)
    cfg.write_text("roundrobin\n")
    r = run(*pen_cmd("--check-config", "-F", cfg, f"127.0.0.1:{port}"))
    assert (r.returncode, r.stderr) == (0, "")


def test_version_usage_long_options_and_protocol():
    r = run(*pen_cmd("--version"))
    assert r.returncode == 0 and r.stdout.startswith("pen 0.34.1")
    r = run(*pen_cmd("--frobnicate", "8080"))
    assert (r.returncode, r.stderr) == (1, "pen: unknown option --frobnicate (see pen --help)\n")
    r = run(*pen_cmd("-f"))                           # no listen address: the usage
    assert r.returncode == 1 and r.stdout.startswith("usage:")
    assert r.stderr == "pen: missing listen address (expected [host:]port or /path/to/socket)\n"
    r = run(*pen_cmd("-f", "-L", "no-such-protocol", f"127.0.0.1:{free_port()}", "127.0.0.1:9"))
    assert r.returncode == 1 and r.stderr.startswith("pen: -L no-such-protocol: "), r.stderr
    r = run(sys.executable, "-m", "penctl", "--help")
    assert r.returncode == 0 and "penctl(1)" in r.stdout and "servers" in r.stdout


@pytest.mark.skipif(os.getuid() != 0, reason="pen refuses the control port only as root")
def test_root_without_u_refuses_the_control_port_once():
    r = run(*pen_cmd("-f", "-C", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                     "127.0.0.1:9"))
    assert r.returncode == 1
    assert r.stderr.count("Won't open control port") == 1 and len(r.stderr.splitlines()) == 1


def test_fd_warning_when_x_cannot_fit_the_hard_limit(backends):
    (a,) = backends(1)
    port = free_port()

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    p = subprocess.Popen(pen_cmd("-f", "-x", "1000", f"127.0.0.1:{port}", a.spec),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=low_limit, env=ENV)
    try:
        assert wait_until(lambda: listening(port) or p.poll() is not None)
        with connect(port) as s:
            assert read_line(s) == "S0"
            s.shutdown(socket.SHUT_WR)
            recv_all(s)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=TIMEOUT)
    err = err.decode()
    assert "pen: warning: -x 1000 connections may need 4032 file descriptors" in err, err
    assert "the hard limit (RLIMIT_NOFILE) is 1024" in err
