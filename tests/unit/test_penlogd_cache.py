"""penlogd's pure parts: the pen log ring and the merge of one datagram;
penlog's argument forms; pen's network log line (pen/netlog.py)."""

import io

import pytest

from pen import penlog, penlogd
from pen.errors import ConfigError
from pen.netlog import NETLOG_MAX, netlog_line, parse_file_log, parse_netlog
from pen.penlogd import PenCache, canonical_ip, handle_datagram

WEB = b'127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET /a HTTP/1.0" 200 5\n'


def test_netlog_line_is_pens_datagram():
    assert netlog_line("10.0.0.9 1700000000 127.0.0.1 GET / HTTP/1.1") == \
        b"+ 10.0.0.9 127.0.0.1 GET / HTTP/1.1\n"
    assert netlog_line("10.0.0.9 1700000000 127.0.0.1 ") == b"+ 10.0.0.9 127.0.0.1 \n"
    long = netlog_line("1.2.3.4 1 5.6.7.8 " + "x" * 5000)
    assert len(long) == NETLOG_MAX and long.endswith(b"x\n")


def test_parse_netlog_round_trip_and_garbage():
    assert parse_netlog(b"+ 1.2.3.4 5.6.7.8 GET /x HTTP/1.0\n") == \
        ("1.2.3.4", "5.6.7.8", "GET /x HTTP/1.0")
    for junk in (b"", b"+", b"+ a", b"+ a b", b"- a b c", b"\xff\xfe"):
        assert parse_netlog(junk) is None
    assert parse_file_log("1.2.3.4 99 5.6.7.8 GET / HTTP/1.0\n") == \
        ("1.2.3.4", 99, "5.6.7.8", "GET / HTTP/1.0")
    assert parse_file_log("1.2.3.4 soon 5.6.7.8 GET") is None


def test_canonical_ip():
    assert canonical_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical_ip("0:0::1") == "::1"
    assert canonical_ip("/run/app.sock") is None


def test_web_line_gets_the_client_pen_logged():
    cache = PenCache(10)
    assert handle_datagram(cache, b"+ 10.9.9.9 127.0.0.1 GET /a HTTP/1.0\n", "127.0.0.1") is None
    assert handle_datagram(cache, WEB, "127.0.0.1") == WEB.replace(b"127.0.0.1", b"10.9.9.9", 1)
    # another server, or another request: written as it came
    assert handle_datagram(cache, WEB, "127.0.0.2") == WEB
    other = WEB.replace(b"/a", b"/b")
    assert handle_datagram(cache, other, "127.0.0.1") == other
    # the source of an IPv4 datagram on a dual-stack socket
    assert handle_datagram(cache, WEB, "::ffff:127.0.0.1").startswith(b"10.9.9.9 - -")


def test_newest_entry_wins_and_prefix_matches():
    cache = PenCache(10)
    cache.store("127.0.0.1", "1.1.1.1", "GET /a HTTP/1.0")
    cache.store("127.0.0.1", "2.2.2.2", "GET /a HTTP/1.0")
    assert cache.find("127.0.0.1", "GET /a HTTP/1.0") == "2.2.2.2"
    assert cache.find("127.0.0.1", "GET /a") == "2.2.2.2"          # pen's strncmp
    assert cache.find("127.0.0.1", "GET /a HTTP/1.0 and more") is None
    cache.store("127.0.0.1", "3.3.3.3", "GET /" + "y" * 300)        # kept: 99 characters
    assert cache.find("127.0.0.1", "GET /" + "y" * 200) == "3.3.3.3"


def test_garbage_is_dropped_and_the_ring_never_grows():
    cache = PenCache(5)
    for i in range(2000):
        assert handle_datagram(cache, b"+ %d.0.0.1 127.0.0.1 GET /%d" % (i % 250, i),
                               "127.0.0.1") is None
        assert handle_datagram(cache, b"+ garbage %d" % i, "127.0.0.1") is None
        assert handle_datagram(cache, b"no quotes %d" % i, "127.0.0.1") is None
    assert len(cache.slots) == 5 and len(cache) == 5
    assert cache.find("127.0.0.1", "GET /1999") == "249.0.0.1"
    assert cache.find("127.0.0.1", "GET /1994") is None            # pushed out
    assert handle_datagram(cache, b"+ 1.2.3.4 /run/app.sock GET /", "x") is None   # not an IP


def test_line_without_newline_gets_one():
    assert handle_datagram(PenCache(1), WEB.rstrip(b"\n"), "127.0.0.1") == WEB


@pytest.mark.parametrize("argv,message", [
    ([], "expected one UDP port"),
    (["0"], "port '0'"),
    (["-n", "0", "10000"], "-n '0'"),
    (["-n", "x", "10000"], "-n 'x'"),
    (["-z", "10000"], "option -z not recognized"),
    (["10000", "extra"], "unexpected arguments"),
    (["\u00b2"], "port '\u00b2'"),                  # a digit to str.isdigit, not to int()
    (["9" * 5000], "port '9999"),                  # int() refuses over 4300 digits
    (["-n", "\u0661", "10000"], "-n '\u0661'"),
    (["-n", "9" * 5000, "10000"], "-n '9999"),
])
def test_penlogd_bad_arguments(argv, message):
    with pytest.raises(ConfigError, match=message):
        penlogd.parse_args(argv)


def test_penlogd_arguments():
    o = penlogd.parse_args(["-fdd", "-n", "5", "-l", "out", "-p", "pid", "10000"])
    assert (o.foreground, o.debug, o.cache, o.logfile, o.pidfile, o.port) == \
        (True, 2, 5, "out", "pid", 10000)


def test_penlog_argument_forms():
    assert penlog.parse_args(["lb", "10000"]) == ("lb", 10000, None)
    assert penlog.parse_args(["::1", "10000", "::1"]) == ("::1", 10000, "::1")
    assert penlog.parse_args(["lb:10000"]) == ("lb", 10000, None)
    assert penlog.parse_args(["[::1]:10000", "::1"]) == ("::1", 10000, "::1")
    for bad in ([], ["lb"], ["lb", "x", "y", "z"], ["lb", "99999"], ["lb", "\u00b2", "x"],
                ["lb", "9" * 5000, "x"]):
        with pytest.raises(ConfigError):
            penlog.parse_args(bad)


class FailingSock:
    def __init__(self):
        self.calls = 0

    def sendto(self, data, addr):
        self.calls += 1
        raise OSError(111, "Connection refused")


def test_penlog_reports_the_first_send_failure_only():
    err, sock = io.StringIO(), FailingSock()
    assert penlog.pump([b"a\n", b"b\n", b"c\n"], sock, ("127.0.0.1", 9), err) == 0
    assert sock.calls == 3
    assert err.getvalue() == "penlog: cannot send to 127.0.0.1 port 9: Connection refused\n"
