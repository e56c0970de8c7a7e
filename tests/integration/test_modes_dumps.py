"""bysize / byduration steering real clients, trafficlog / throughputlog
line by line and their SIGHUP rotation, `server N reset`, `help`
(SPEC §10.1, §10.4, §10.5)."""

import os
import re
import signal
import time

from pen import commands

from conftest import TIMEOUT, Backend, connect, free_port, listening, read_line, wait_until
from test_control import ME, ask, penctl


class SizedBackend(Backend):
    """Per connection: waits `delay` seconds, sends its name and a newline,
    then `size` bytes, and closes (conftest's Backend, another handler)."""

    def __init__(self, name, size, delay=0.0):
        self.size, self.delay = size, delay
        super().__init__(name)

    def _handle(self, conn):
        conn.settimeout(TIMEOUT)
        try:
            time.sleep(self.delay)
            conn.sendall(self.name.encode() + b"\n" + b"x" * self.size)
        except OSError:
            pass
        finally:
            conn.close()


def start_pen(pen, specs, *extra):
    ctl, port = free_port(), free_port()
    p = pen("-r", "-u", ME, "-C", f"127.0.0.1:{ctl}", *extra, f"127.0.0.1:{port}",
            *specs, port=port)
    assert wait_until(lambda: listening(ctl))
    return p, f"127.0.0.1:{ctl}", port


def fetch(port):
    """One whole connection: the name of the backend reached, bytes read."""
    with connect(port) as s:
        name = read_line(s)
        total = 0
        for _ in range(10000):
            chunk = s.recv(65536)
            if not chunk:
                break
            total += len(chunk)
        return name, total


def all_closed(ctl):
    """Every connection pen held has ended (its figures are fed)."""
    return all(" conn 0 " in line for line in ask(ctl, "servers").splitlines())


def picks(ctl, port, n):
    got = []
    for _ in range(n):
        got.append(fetch(port)[0])
        assert wait_until(lambda: all_closed(ctl))
    return got


def test_bysize_steers_to_the_lighter_server_and_decay_brings_the_other_back(pen):
    big, small = SizedBackend("A", 100000), SizedBackend("B", 1000)
    try:
        p, ctl, port = start_pen(pen, [big.spec, small.spec], "-o", "bysize over 3")
        assert ask(ctl, "mode").rstrip().endswith("no prio bysize over 3")
        assert ask(ctl, "server", "0", "decay", "50") == ""
        # A's 100 kB connection makes it the heavy one; each pick of B
        # halves A's figure: after 7 picks it is below B's 1 kB.
        assert picks(ctl, port, 9) == ["A"] + ["B"] * 7 + ["A"]
    finally:
        big.close()
        small.close()


def test_byduration_steers_to_the_faster_server_and_weight_divides(pen):
    slow, fast = SizedBackend("A", 10, delay=0.4), SizedBackend("B", 10, delay=0.01)
    try:
        p, ctl, port = start_pen(pen, [slow.spec, fast.spec], "-o", "byduration over 2")
        assert picks(ctl, port, 3) == ["A", "B", "B"]
        # A bigger weight takes more: A's 0.4 s / 100 beats B's ~0.01 s / 1.
        assert ask(ctl, "server", "0", "weight", "100") == ""
        assert picks(ctl, port, 1) == ["A"]
    finally:
        slow.close()
        fast.close()


def test_server_reset_zeroes_bytes_and_connections(pen, backends):
    (a,) = backends(1)
    p, ctl, port = start_pen(pen, [a.spec])
    with connect(port) as s:
        assert read_line(s) == "S0"
        s.sendall(b"hello\n")
        assert s.recv(100) == b"hello\n"
    assert wait_until(lambda: all_closed(ctl))
    line = ask(ctl, "servers").splitlines()[0]
    assert re.search(r" sx [1-9]\d* rx [1-9]\d*$", line)
    assert ask(ctl, "mrtg_conns", "0").splitlines()[0] == "1"
    assert ask(ctl, "server", "0", "reset") == ""
    assert ask(ctl, "servers").splitlines()[0].endswith(" sx 0 rx 0")
    mrtg = ask(ctl, "mrtg_conns", "0").splitlines()
    assert mrtg[:2] == ["0", "0"] and mrtg[3] == "server 0"
    assert penctl(ctl, "server", "0", "reset", "x").stdout.startswith("server: unexpected 'x'")


def test_help_lists_every_command(pen, backends):
    (a,) = backends(1)
    p, ctl, port = start_pen(pen, [a.spec])
    lines = ask(ctl, "help").splitlines()
    assert [line.split()[0] for line in lines] == sorted(commands.HANDLERS)
    assert any(re.match(r"bysize +bysize \[over N\]: ", line) for line in lines)


def _hex(tag, data, off=0):
    """Crossroads' line, written out independently of pen/dumps.py."""
    text = "".join(chr(c) if 32 <= c < 127 else "." for c in data)
    return f"{tag} {off:04x}  {data.hex(' '):<47} {text}"


def test_trafficlog_and_throughputlog_line_by_line_and_rotation(pen, backends, tmp_path):
    os.chmod(tmp_path, 0o777)
    traffic, throughput = tmp_path / "traffic.log", tmp_path / "tp.log"
    a, b = backends(2)
    p, ctl, port = start_pen(pen, [a.spec, b.spec], "-o", f"trafficlog {traffic}",
                             "-o", f"throughputlog {throughput}", "-o", "byorder")
    request = b"GET / HTTP/1.0\r\n\r\n"
    with connect(port) as s:
        cport = s.getsockname()[1]
        assert read_line(s) == "S0"
        s.sendall(request)
        assert s.recv(100) == request
    header = f"# conn 0 127.0.0.1:{cport} -> {a.spec}"
    want = [header, _hex("B", b"S0\n"), _hex("C", request[:16]),
            "C 0010  0d 0a" + " " * 43 + "..", _hex("B", request[:16]),
            _hex("B", b"\r\n", 16)]
    assert wait_until(lambda: traffic.exists() and len(traffic.read_text().splitlines()) >= 6)
    assert traffic.read_text().splitlines() == want
    assert wait_until(lambda: len(throughput.read_text().splitlines()) >= 3)
    lines = throughput.read_text().splitlines()
    assert [line.split(" ", 3)[2:] for line in lines] == [
        ["B", "S0."], ["C", "GET / HTTP/1.0...."], ["B", "GET / HTTP/1.0...."]]
    for line in lines:
        assert re.fullmatch(r"0000000 \d+\.\d{6} [CB] .*", line)
    assert [float(line.split()[1]) for line in lines] == sorted(
        float(line.split()[1]) for line in lines)
    assert ask(ctl, "trafficlog") == f"{traffic} (0 lines dropped)\n"

    # Rotation: rename, SIGHUP, the next connection lands in a new file.
    traffic.rename(tmp_path / "traffic.log.1")
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(traffic.exists)
    with connect(port) as s:
        assert read_line(s) == "S0"
    assert wait_until(lambda: len(traffic.read_text().splitlines()) >= 2)
    new = traffic.read_text().splitlines()
    assert new[0].startswith("# conn ") and new[1] == _hex("B", b"S0\n")
    assert (tmp_path / "traffic.log.1").read_text().splitlines() == want

    # no trafficlog: new connections are not dumped any more.
    assert ask(ctl, "no", "trafficlog") == ""
    with connect(port) as s:
        assert read_line(s) == "S0"
    assert wait_until(lambda: len(throughput.read_text().splitlines()) >= 5)
    assert traffic.read_text().splitlines() == new


def test_per_server_trafficlog_and_ascii_and_a_bad_path(pen, backends, tmp_path):
    os.chmod(tmp_path, 0o777)
    one = tmp_path / "one.log"
    a, b = backends(2)
    p, ctl, port = start_pen(pen, [a.spec, b.spec], "-a")
    assert ask(ctl, "server", "1", "trafficlog", str(one)) == ""
    names = []
    for _ in range(4):
        with connect(port) as s:
            names.append(read_line(s))
            s.sendall(b"hi\r\n")
            assert s.recv(100) == b"hi\r\n"
    assert sorted(names) == ["S0", "S0", "S1", "S1"]
    assert wait_until(lambda: one.exists() and len(one.read_text().splitlines()) >= 8)
    lines = one.read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        "B 0000  S1.", "C 0000  hi..", "B 0000  hi.."] * 2
    assert all(line.endswith(f"-> {b.spec}") for line in lines if line.startswith("#"))
    reply = penctl(ctl, "trafficlog", str(tmp_path / "no" / "such.log")).stdout
    assert reply.startswith(f"trafficlog: cannot open {tmp_path}/no/such.log: ")
    assert ask(ctl, "trafficlog") == ""
    write = tmp_path / "w.cfg"
    assert ask(ctl, "write", str(write)) == ""
    assert f"server 1 trafficlog {one}" in write.read_text().splitlines()

