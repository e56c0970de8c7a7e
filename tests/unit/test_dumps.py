"""pen/dumps.py: the trafficlog and throughputlog formats, the bounded
buffer (dropped lines are counted), `# conn` runs, configure errors."""

from types import SimpleNamespace

from pen import dumps
from pen.state import Counters, Settings, State


class FakeReactor:
    def __init__(self):
        self.timers = []

    def call_later(self, delay, callback, *args):
        timer = SimpleNamespace(cancel=lambda: None, callback=callback)
        self.timers.append(timer)
        return timer

    def run_timers(self):
        timers, self.timers = self.timers, []
        for timer in timers:
            timer.callback()


def conn(conn_id=3, index=0, ip="127.0.0.1", port=40000, started=0.0):
    target = SimpleNamespace(addr="127.0.0.1", port=9000 + (index if isinstance(index, int) else 0))
    return SimpleNamespace(id=conn_id, index=index, client_ip=ip, client_port=port,
                           target=target, started=started)


def test_hex_lines_are_crossroads_layout():
    data = b"GET http://www.cs.helsinki.fi/linux/linux-kernel/2001-47/0417.html HTTP/1.1\r\nCon"
    lines = dumps.hex_lines("C", data)
    assert lines[0] == ("C 0000  47 45 54 20 68 74 74 70 3a 2f 2f 77 77 77 2e 63 "
                        "GET http://www.c")
    assert lines[1] == ("C 0010  73 2e 68 65 6c 73 69 6e 6b 69 2e 66 69 2f 6c 69 "
                        "s.helsinki.fi/li")
    assert lines[4] == ("C 0040  6d 6c 20 48 54 54 50 2f 31 2e 31 0d 0a 43 6f 6e "
                        "ml HTTP/1.1..Con")
    # A short last line keeps the text column aligned.
    short = dumps.hex_lines("B", b" Mo")
    assert short == ["B 0000  20 4d 6f" + " " * 39 + "  Mo"]
    assert len(short[0]) == len(lines[0]) - 13


def test_text_lines_and_throughput_line():
    assert dumps.text_lines("B", b"HTTP/1.0 200 OK\r\n" + b"x" * 60) == [
        "B 0000  HTTP/1.0 200 OK.." + "x" * 47, "B 0040  " + "x" * 13]
    line = dumps.throughput_line(594, 0.1737129, "B", b"HTTP/1.0 200 OK\r\n" + b"y" * 200)
    assert line == "0000594 0.173713 B HTTP/1.0 200 OK.." + "y" * 83
    assert dumps.throughput_line(1, -0.5, "C", b"") == "0000001 0.000000 C "


def test_conn_header_v4_v6_unix():
    assert dumps.conn_header(conn()) == "# conn 3 127.0.0.1:40000 -> 127.0.0.1:9000"
    assert dumps.conn_header(conn(ip="::1")) == "# conn 3 [::1]:40000 -> 127.0.0.1:9000"
    assert dumps.conn_header(conn(ip="")) == "# conn 3 unix -> 127.0.0.1:9000"


def make_dumps(tmp_path, **settings):
    st = State(Settings(**settings), [])
    reactor = FakeReactor()
    return st, reactor, dumps.Dumps(st, reactor)


def test_runs_of_two_connections_each_start_with_a_header(tmp_path):
    log = tmp_path / "traffic.log"
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(log))
    assert d.configure() == [] and d.active
    a_c, a_s = d.for_conn(conn(1), None, None)
    b_c, _ = d.for_conn(conn(2, port=40001), None, None)
    a_c(b"GET /")
    a_s(b"HTTP")
    b_c(b"GET /b")
    a_s(b"more")
    reactor.run_timers()
    assert log.read_text().splitlines() == [
        "# conn 1 127.0.0.1:40000 -> 127.0.0.1:9000",
        "C 0000  47 45 54 20 2f" + " " * 32 + "  GET /",
        "B 0000  48 54 54 50" + " " * 35 + "  HTTP",
        "# conn 2 127.0.0.1:40001 -> 127.0.0.1:9000",
        "C 0000  47 45 54 20 2f 62" + " " * 29 + "  GET /b",
        "# conn 1 127.0.0.1:40000 -> 127.0.0.1:9000",
        "B 0000  6d 6f 72 65" + " " * 35 + "  more",
    ]
    d.close()


def test_no_file_for_this_connection_keeps_its_dumps_as_they_were(tmp_path):
    st, reactor, d = make_dumps(tmp_path)
    st.settings.server_trafficlogs[1] = str(tmp_path / "s1.log")
    assert d.configure() == []
    prev = object()
    assert d.for_conn(conn(index=0), prev, None) == (prev, None)
    c, s = d.for_conn(conn(index=1), None, None)
    assert callable(c) and callable(s)
    d.close()


def test_server_and_global_file_both_get_the_lines_and_debug_dump_still_runs(tmp_path):
    glob, one = tmp_path / "all.log", tmp_path / "one.log"
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(glob), ascii=True,
                                throughputlog=str(tmp_path / "tp.log"))
    st.settings.server_trafficlogs[1] = str(one)
    assert d.configure() == []
    seen = []
    c, _ = d.for_conn(conn(7, index=1, started=0.0), seen.append, None)
    c(b"hello\n")
    reactor.run_timers()
    assert seen == [b"hello\n"]
    assert glob.read_text() == one.read_text() == (
        "# conn 7 127.0.0.1:40000 -> 127.0.0.1:9001\nC 0000  hello.\n")
    [line] = (tmp_path / "tp.log").read_text().splitlines()
    ident, seconds, tag, text = line.split(" ", 3)
    assert (ident, tag, text) == ("0000007", "C", "hello.")
    assert len(seconds.split(".")[1]) == 6
    d.close()


def test_full_buffer_drops_and_counts_lines_never_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(dumps, "BUFFER_MAX", 200)
    log = tmp_path / "t.log"
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(log))
    d.configure()
    c, _ = d.for_conn(conn(), None, None)
    c(b"x" * 32)                 # header + 2 lines, about 180 bytes: fits
    c(b"y" * 16)                 # 1 more line: over the bound, dropped
    assert st.counters.dump_lines_dropped == 1
    reactor.run_timers()         # written: room again
    c(b"z" * 16)
    reactor.run_timers()
    lines = log.read_text().splitlines()
    assert [line[0] for line in lines] == ["#", "C", "C", "#", "C"]
    assert lines[-1].endswith("z" * 16)
    d.close()


def test_a_file_that_cannot_be_opened_turns_its_setting_off(tmp_path):
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(tmp_path / "no" / "such.log"),
                                throughputlog=str(tmp_path / "ok.log"))
    errors = d.configure()
    assert errors == [f"trafficlog: cannot open {tmp_path}/no/such.log: "
                      "No such file or directory (trafficlog is off)"]
    assert st.settings.trafficlog is None and st.settings.throughputlog
    st.settings.throughputlog = None
    assert d.configure() == [] and not d.active
    assert isinstance(st.counters, Counters)


def test_reopen_follows_a_renamed_file(tmp_path):
    log = tmp_path / "t.log"
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(log))
    d.configure()
    c, _ = d.for_conn(conn(), None, None)
    c(b"one")
    log.rename(tmp_path / "t.log.1")
    d.reopen()                   # the buffered line goes to the old file
    c(b"two")
    reactor.run_timers()
    assert "one" in (tmp_path / "t.log.1").read_text()
    assert log.read_text().splitlines()[0].startswith("# conn 3 ")
    assert log.read_text().splitlines()[1].endswith("two")
    d.close()


def test_lines_after_the_file_closed_are_not_kept(tmp_path):
    log = tmp_path / "t.log"
    st, reactor, d = make_dumps(tmp_path, trafficlog=str(log))
    d.configure()
    c, _ = d.for_conn(conn(), None, None)
    st.settings.trafficlog = None
    assert d.configure() == [] and not d.active
    c(b"late")                   # a connection that started while dumping
    assert not reactor.timers and log.read_text() == ""
