"""penctl: address parsing, MRTG output, usage and the interactive loop
(no sockets: send_command is replaced by a fake)."""

import io
import json

import pytest

import penctl
from penctl import PenctlError, mrtg_bytes, mrtg_conns, parse_address

SERVERS = ("0 addr 127.0.0.1 port 9001 conn 0 max 0 hard 0 weight 0 prio 0 sx 10 rx 20\n"
           "1 addr 127.0.0.1 port 9002 conn 2 max 0 hard 0 weight 0 prio 0 sx 30 rx 40\n")


@pytest.mark.parametrize("text, addr", [
    ("127.0.0.1:8888", ("inet", "127.0.0.1", "8888")),
    ("localhost:http", ("inet", "localhost", "http")),
    ("::1:10080", ("inet", "::1", "10080")),        # the last ':' splits, as pen's penctl
    ("[::1]:10080", ("inet", "::1", "10080")),
    (":8888", ("inet", "localhost", "8888")),
    ("/var/run/pen.ctl", ("unix", "/var/run/pen.ctl")),
    ("./pen.ctl", ("unix", "./pen.ctl")),
])
def test_parse_address(text, addr):
    assert parse_address(text) == addr


@pytest.mark.parametrize("text", ["foo", "127.0.0.1:", "[::1]", "[::1]:"])
def test_parse_address_without_port(text):
    with pytest.raises(PenctlError, match="no port given"):
        parse_address(text)


def test_format_address():
    assert penctl.format_address(("inet", "::1", "80")) == "[::1]:80"
    assert penctl.format_address(("inet", "h", "80")) == "h:80"
    assert penctl.format_address(("unix", "/p")) == "/p"


def test_mrtg_bytes():
    assert mrtg_bytes(SERVERS, 1) == "40\n30\nUNKNOWN\nserver 1\n"
    with pytest.raises(PenctlError, match="no server 5"):
        mrtg_bytes(SERVERS, 5)


def test_mrtg_conns():
    doc = json.dumps({"servers": [{"connects": 7, "conn": 1}, {"connects": 9, "conn": 2}]})
    assert mrtg_conns(doc, 1) == "9\n2\nUNKNOWN\nserver 1\n"
    with pytest.raises(PenctlError, match="no server 2"):
        mrtg_conns(doc, 2)
    with pytest.raises(PenctlError, match="does not answer 'status json'"):
        mrtg_conns("do_cmd: ignoring command starting with 'status'\n", 0)


@pytest.fixture
def fake_pen(monkeypatch):
    sent = []

    def send_command(addr, line, timeout=penctl.TIMEOUT):
        sent.append((addr, line))
        if line == "servers":
            return SERVERS.encode()
        if line.startswith("mrtg_") and "reference" in str(addr):
            return f"do_cmd: ignoring command starting with '{line.split()[0]}'\n".encode()
        if line == "down":
            raise PenctlError("cannot connect to 127.0.0.1:1: Connection refused")
        return f"reply to {line}\n".encode()

    monkeypatch.setattr(penctl, "send_command", send_command)
    return sent


def test_main_sends_the_words_as_one_line(fake_pen, capsys):
    assert penctl.main(["127.0.0.1:8888", "server", "1", "blacklist", "60"]) == 0
    assert fake_pen == [(("inet", "127.0.0.1", "8888"), "server 1 blacklist 60")]
    assert capsys.readouterr().out == "reply to server 1 blacklist 60\n"


def test_main_mrtg(fake_pen, capsys):
    # A pen that does not know mrtg_bytes (the reference pen): from `servers`.
    assert penctl.main(["/tmp/reference", "mrtg_bytes", "0"]) == 0
    assert capsys.readouterr().out == "20\n10\nUNKNOWN\nserver 0\n"
    assert [line for _, line in fake_pen] == ["mrtg_bytes 0", "servers"]
    # Ours answers it itself (with the uptime): the reply is printed as is.
    assert penctl.main(["/tmp/ctl", "mrtg_bytes", "0"]) == 0
    assert capsys.readouterr().out == "reply to mrtg_bytes 0\n"
    assert penctl.main(["/tmp/ctl", "mrtg_bytes", "x"]) == 1
    assert "mrtg_bytes: expected a server number" in capsys.readouterr().err


def test_main_errors(fake_pen, capsys):
    assert penctl.main(["127.0.0.1:1", "down"]) == 1
    assert capsys.readouterr().err == (
        "penctl: cannot connect to 127.0.0.1:1: Connection refused\n")
    assert penctl.main(["nohost", "mode"]) == 1
    assert capsys.readouterr().err.startswith("penctl: no port given in 'nohost'")


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"], ["127.0.0.1:8888"]])
def test_usage_exits_zero_like_pens_penctl(argv, capsys):
    assert penctl.main(argv) == 0
    assert capsys.readouterr().out.startswith("usage: penctl host:port")


def test_dash_i_needs_one_address(capsys):
    assert penctl.main(["-i"]) == 1
    assert penctl.main(["-i", "a:1", "b:2"]) == 1
    assert "-i takes exactly one control address" in capsys.readouterr().err


def test_interactive(fake_pen):
    stdin = io.StringIO("mode\n\n   \nhelp\ndown\nmrtg_bytes 1\nquit\nnot sent\n")
    out, err = io.StringIO(), io.StringIO()
    assert penctl.interactive(("unix", "/tmp/reference"), stdin, out, err) == 0
    assert [line for _, line in fake_pen] == ["mode", "help", "down", "mrtg_bytes 1",
                                              "servers"]
    text = out.getvalue()
    assert "reply to mode\n" in text and "mrtg_bytes N" in text
    assert "reply to help\n" in text      # penctl's lines, then pen's list
    assert text.endswith("40\n30\nUNKNOWN\nserver 1\n")
    assert err.getvalue() == "penctl: cannot connect to 127.0.0.1:1: Connection refused\n"


def test_interactive_ends_at_eof(fake_pen):
    out = io.StringIO()
    assert penctl.interactive(("unix", "/x"), io.StringIO("mode"), out, io.StringIO()) == 0
    assert out.getvalue() == "reply to mode\n"


@pytest.mark.parametrize("text", ["\u00b2", "9" * 5000, "-1", "x"])
def test_server_number_is_ascii_digits(text):
    with pytest.raises(PenctlError, match="expected a server number"):
        penctl.server_number("blacklist", [text])
