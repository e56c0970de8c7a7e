"""mergelogs' pure parts: web log lines, times, the nearest pen line, the merge."""

import io

import pytest

from pen import mergelogs
from pen.errors import ConfigError
from pen.mergelogs import (PenScan, PenWindow, best, format_time, merge, parse_time,
                           parse_web_line, server_lines, split_server)

T0 = 1010549330          # 09/Jan/2002:04:08:50 UTC

PEN = """\
10.1.1.1 1010549330 10.0.18.6 GET /robots.txt HTTP/1.0
10.1.1.2 1010549331 10.0.18.8 GET /news.html HTTP/1.0
not a pen line
10.1.1.3 1010549332 10.0.18.6 GET /news.html HTTP/1.0
10.1.1.4 1010552000 10.0.18.6 GET /news.html HTTP/1.0
"""
A = """\
10.0.18.5 - - [09/Jan/2002:05:08:50 +0100] "GET /robots.txt HTTP/1.0" 404 268
10.0.18.5 - - [09/Jan/2002:05:08:52 +0100] "GET /news.html HTTP/1.0" 200 4017
"""
B = """\
10.0.18.5 - - [09/Jan/2002:04:08:51 +0000] "GET /news.html HTTP/1.0" 200 4017 "-" "agent"
garbage
10.0.18.5 - - [09/Jan/2002:04:08:59 +0000] "GET /nothing HTTP/1.0" 200 1
"""
MERGED = """\
10.1.1.1 - - [09/Jan/2002:04:08:50 +0000] "GET /robots.txt HTTP/1.0" 404 268
10.1.1.2 - - [09/Jan/2002:04:08:51 +0000] "GET /news.html HTTP/1.0" 200 4017 "-" "agent"
10.1.1.3 - - [09/Jan/2002:04:08:52 +0000] "GET /news.html HTTP/1.0" 200 4017
10.0.18.8 - - [09/Jan/2002:04:08:59 +0000] "GET /nothing HTTP/1.0" 200 1
"""


def test_times():
    assert parse_time("09/Jan/2002:04:08:50 +0000") == T0
    assert parse_time("09/Jan/2002:05:08:50 +0100") == T0
    assert parse_time("08/Jan/2002:23:38:50 -0430") == T0
    assert parse_time("09/Jan/2002:04:08:50") == T0
    assert parse_time("09/Foo/2002:04:08:50 +0000") is None
    assert parse_time("31/Feb/2002:04:08:50 +0000") is None
    assert format_time(T0) == "09/Jan/2002:04:08:50 +0000"


def test_web_lines():
    line = parse_web_line('1.2.3.4 - bob [09/Jan/2002:04:08:50 +0000] "GET / HTTP/1.0" 200 5\n')
    assert (line.client, line.before, line.when, line.middle, line.request, line.rest) == \
        ("1.2.3.4", "- bob ", T0, " ", "GET / HTTP/1.0", " 200 5")
    assert line.render("9.9.9.9") == \
        '9.9.9.9 - bob [09/Jan/2002:04:08:50 +0000] "GET / HTTP/1.0" 200 5\n'
    for junk in ("", "garbage", '1.2.3.4 - - [x] "GET /" 200', "1.2.3.4 - - [09/Jan/2002:04:08:50]"):
        assert parse_web_line(junk) is None


def test_best_is_the_nearest_in_time_for_that_server_and_request():
    entries = [("a", 100, "s1", "GET /"), ("b", 108, "s1", "GET /"),
               ("c", 104, "s2", "GET /"), ("d", 105, "s1", "GET /x")]
    assert best(entries, "s1", 105, "GET /") == "b"
    assert best(entries, "s1", 104, "GET /") == "a"       # the first of equals
    assert best(entries, "s2", 0, "GET /") == "c"
    assert best(entries, "s3", 105, "GET /") is None
    long = "GET /" + "z" * 300
    assert best([("e", 1, "s1", long[:100])], "s1", 1, long) == "e"   # pen keeps 100


def test_window_keeps_only_the_jitter():
    lines = ["c%d %d s GET /\n" % (i, 1000 + 10 * i) for i in range(100)]
    w = PenWindow(lines, jitter=20, tz=0)
    assert [e[0] for e in w.around(1500)] == ["c48", "c49", "c50", "c51", "c52"]
    assert [e[0] for e in w.around(1600)] == ["c58", "c59", "c60", "c61", "c62"]
    assert len(w.entries) == 6          # and the one line read ahead
    assert len(w.around(5000)) == 0 and w.done


def test_window_applies_the_timezone():
    w = PenWindow(["c 8200 s GET /\n"], jitter=0, tz=7200)
    assert best(w.around(1000), "s", 1000, "GET /") == "c"


def _merge(cache, pen=PEN, jitter=600):
    out = io.StringIO()
    pen_file = io.StringIO(pen)
    source = PenWindow(pen_file, jitter, 0) if cache else PenScan(pen_file, 0)
    err = io.StringIO()
    counts = merge([("10.0.18.6", server_lines("10.0.18.6", io.StringIO(A), 1, err)),
                    ("10.0.18.8", server_lines("10.0.18.8", io.StringIO(B), 1, err))],
                   source, out, 1, err)
    return out.getvalue(), counts, err.getvalue()


@pytest.mark.parametrize("cache", [True, False])
def test_merge_in_time_order_with_real_clients(cache):
    text, counts, err = _merge(cache)
    assert text == MERGED
    assert counts == (4, 1)
    assert "10.0.18.8 line 2: not a web server log line" in err
    assert "no pen line for 10.0.18.8 'GET /nothing HTTP/1.0'" in err


def test_merge_with_zero_jitter_misses_late_pen_lines():
    text, counts, _ = _merge(True, jitter=0)
    assert counts == (4, 1)            # every pen time here is exact
    late = PEN.replace("1010549331", "1010549334")
    text, counts, _ = _merge(True, pen=late, jitter=2)
    assert counts == (4, 2) and "10.0.18.8 - - [09/Jan/2002:04:08:51" in text


def test_split_server():
    assert split_server("10.0.0.1:access_log") == ("10.0.0.1", "access_log")
    assert split_server("[::1]:logs/a:b") == ("::1", "logs/a:b")
    for bad in ("access_log", ":x", "10.0.0.1:"):
        with pytest.raises(ConfigError, match="bogus server"):
            split_server(bad)


@pytest.mark.parametrize("argv,message", [
    (["a:b"], "-p penlog is required"),
    (["-p", "pen.log"], "at least one server:logfile"),
    (["-p", "pen.log", "-j", "x", "a:b"], "-j 'x'"),
    (["-p", "pen.log", "-j", "-1", "a:b"], "-j '-1'"),
    (["-z"], "option -z not recognized"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(ConfigError, match=message):
        mergelogs.parse_args(argv)


def test_main_on_files(tmp_path, capsysbinary):
    (tmp_path / "pen.log").write_text(PEN)
    (tmp_path / "a").write_text(A)
    (tmp_path / "b").write_text(B.replace("agent", "agent \xe9"), encoding="latin-1")
    assert mergelogs.main(["-p", str(tmp_path / "pen.log"), f"10.0.18.6:{tmp_path / 'a'}",
                           f"10.0.18.8:{tmp_path / 'b'}"]) == 0
    out = capsysbinary.readouterr().out
    assert out == MERGED.replace("agent", "agent \xe9").encode("latin-1")   # bytes kept
    assert mergelogs.main(["-p", str(tmp_path / "absent"), "a:b"]) == 1
    assert b"mergelogs: cannot open" in capsysbinary.readouterr().err
