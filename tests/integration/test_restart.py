"""Restart without dropping a connection (SIGUSR2) and systemd socket
activation (LISTEN_FDS), through real pens."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from conftest import (Backend, TIMEOUT, Pen, connect, free_port, listening, read_line,
                      wait_until)


def _pid_of(pidfile):
    try:
        return int(pidfile.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigusr2_restart_refuses_and_fails_no_connection(tmp_path):
    backend = Backend("B")
    port, ctl = free_port(), str(tmp_path / "ctl")
    pidfile = tmp_path / "pen.pid"
    old = Pen(["-u", "root", "-X", "-p", str(pidfile), "-C", ctl, f"127.0.0.1:{port}",
               backend.spec], port=port)
    stop = threading.Event()
    ok, failed = [], []

    def clients():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with connect(port, timeout=2.0) as s:
                    assert read_line(s) == "B"
                ok.append(1)
            except (OSError, AssertionError) as e:
                failed.append(repr(e))
    new_pid = 0
    thread = threading.Thread(target=clients, daemon=True)
    try:
        assert wait_until(lambda: _pid_of(pidfile) == old.pid)
        thread.start()
        assert wait_until(lambda: len(ok) >= 20)
        before = len(ok)
        old.proc.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: _pid_of(pidfile) not in (0, old.pid), timeout=10)
        new_pid = _pid_of(pidfile)
        assert old.proc.wait(TIMEOUT) == 0            # the old one drained and left
        n = len(ok)
        assert wait_until(lambda: len(ok) >= n + 20)  # the new one serves
        stop.set()
        thread.join(TIMEOUT)
        assert failed == [] and len(ok) > before
        assert _alive(new_pid) and os.path.exists(ctl)      # its control socket too
        out = subprocess.run([sys.executable, "-m", "penctl", ctl, "pid"],
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.stdout.strip() == str(new_pid)
    finally:
        stop.set()
        if new_pid and _alive(new_pid):
            os.kill(new_pid, signal.SIGTERM)
            wait_until(lambda: not _alive(new_pid))
        old.stop()
        backend.close()
    assert not pidfile.exists() and not os.path.exists(ctl)   # the new one cleaned up


def test_a_restart_with_a_broken_config_keeps_the_old_pen_serving(tmp_path):
    backend = Backend("B")
    port = free_port()
    cfg = tmp_path / "pen.cfg"
    cfg.write_text(f"server 0 address 127.0.0.1 port {backend.port}\n")
    old = Pen(["-F", str(cfg), f"127.0.0.1:{port}"], port=port)
    try:
        cfg.unlink()                                  # the new pen cannot read -F
        old.proc.send_signal(signal.SIGUSR2)
        time.sleep(1.0)                               # the new pen starts and fails
        assert old.proc.poll() is None
        with connect(port) as s:
            assert read_line(s) == "B"
    finally:
        rc, err = old.stop()
        backend.close()
    assert "restart: the new pen" in err and "goes on serving" in err, err


def test_systemd_socket_activation(tmp_path):
    backend = Backend("B")
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    env = dict(os.environ, LISTEN_FDS="1")
    fd = lsock.fileno()

    def as_fd3():
        os.dup2(fd, 3)
        os.set_inheritable(3, True)
    proc = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh",
                             sys.executable, "-m", "pen", "-f", f"127.0.0.1:{port}",
                             backend.spec], env=env, preexec_fn=as_fd3, close_fds=False,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lsock.close()                                 # pen holds the only copy now
        with connect(port) as s:
            assert read_line(s) == "B"
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
        backend.close()
    assert b"Address already in use" not in err
