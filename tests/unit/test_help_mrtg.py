"""`help` (every command, one line each) and `mrtg_bytes`/`mrtg_conns`
(MRTG's four lines), balance's controls (SPEC §10.5)."""

from pen import commands
from pen.servers import Server
from pen.state import Settings, State


def make():
    s = Server(0, "127.0.0.1", 9000)
    s.sockaddr = ("127.0.0.1", 9000)
    st = State(Settings(), [s])
    st.started = 1000.0
    return st


def test_every_command_has_a_one_line_summary():
    missing = sorted(set(commands.HANDLERS) - set(commands.SUMMARIES))
    assert not missing, f"add these to commands.SUMMARIES: {missing}"
    assert all(text and "\n" not in text for text in commands.SUMMARIES.values())
    stale = sorted(set(commands.SUMMARIES) - set(commands.HANDLERS))
    assert not stale, f"summaries of commands that do not exist: {stale}"


def test_help_lists_every_command_once_in_order():
    lines, effects = commands.execute(make(), "help")
    assert not effects
    names = [line.split()[0] for line in lines]
    assert names == sorted(commands.HANDLERS)
    assert any(line.startswith("bysize ") and "over N" in line for line in lines)
    assert commands.execute(make(), "help me")[0][0].startswith("help: unexpected")


def test_mrtg_bytes_and_conns_four_lines():
    st = make()
    s = st.servers[0]
    s.rx, s.sx, s.connects, s.conn = 123, 456, 7, 2
    now = 1000.0 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert commands.execute(st, "mrtg_bytes 0", now=now)[0] == [
        "123", "456", "2 days, 03:04:05", "server 0"]
    assert commands.execute(st, "mrtg_conns 0", now=1001.0)[0] == [
        "7", "2", "0 days, 00:00:01", "server 0"]
    assert commands.uptime_text(86400) == "1 day, 00:00:00"


def test_mrtg_bad_server():
    st = make()
    assert commands.execute(st, "mrtg_bytes 3")[0] == ["mrtg_bytes: no server 3 (servers are 0-0)"]
    assert "whole number" in commands.execute(st, "mrtg_conns x")[0][0]
    assert "missing argument" in commands.execute(st, "mrtg_conns")[0][0]
