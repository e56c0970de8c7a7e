"""pen/hooks.py's pure half: which command runs, its environment, quoting;
the hook commands; commands.split()'s quotes."""

import random

import pytest

from pen import commands, hooks
from pen.servers import Server
from pen.state import Settings, State


def make_state():
    s = Server(0, "backend.example", 8080)
    s.sockaddr = ("192.0.2.7", 8080)
    return State(Settings(), [s])


def run(state, line):
    return commands.execute(state, line, now=100.0, wall=0.0)


def test_the_servers_own_hook_wins_over_the_global_one():
    st = make_state()
    server = st.servers[0]
    assert hooks.hook_command(st.settings, server, "down") is None
    run(st, 'on_down "global"')
    assert hooks.hook_command(st.settings, server, "down") == "global"
    run(st, 'server 0 on_down "own"')
    assert hooks.hook_command(st.settings, server, "down") == "own"
    assert hooks.hook_command(st.settings, server, "up") is None
    run(st, 'server 0 on_down ""')
    assert hooks.hook_command(st.settings, server, "down") == "global"
    run(st, "no on_down")
    assert hooks.hook_command(st.settings, server, "down") is None


def test_environment_carries_the_facts_and_drops_inherited_pen_vars():
    server = make_state().servers[0]
    env = hooks.hook_env("failure", server, "refused", ("10.0.0.1;touch x", 5555),
                         base={"PATH": "/bin", "PEN_REASON": "stale", "PEN_OTHER": "x"})
    assert env == {"PATH": "/bin", "PEN_EVENT": "failure", "PEN_SERVER": "0",
                   "PEN_SERVER_ADDR": "192.0.2.7", "PEN_SERVER_PORT": "8080",
                   "PEN_CLIENT_ADDR": "10.0.0.1;touch x", "PEN_REASON": "refused"}
    env = hooks.hook_env("up", server, "", None, base={})
    assert env["PEN_CLIENT_ADDR"] == "" and env["PEN_REASON"] == ""


def test_hook_commands_set_reply_and_refuse():
    st = make_state()
    assert run(st, 'on_failure "echo $PEN_REASON >> /tmp/f"') == ([], [])
    assert run(st, "on_failure") == (["echo $PEN_REASON >> /tmp/f"], [])
    assert run(st, "hooks_max") == (["16"], [])
    assert run(st, "hooks_max 0") == (["0"], [])
    assert run(st, "hook_timeout 2.5") == (["2.5"], [])
    for line, message in ((' on_up ""', "on_up: empty command"),
                          ('on_up "a" "b"', "on_up: unexpected 'b'"),
                          ("hooks_max -1", "hooks_max: count -1 out of range (0-4096)"),
                          ("hooks_max 5000", "out of range (0-4096)"),
                          ("hook_timeout 0", "more than 0"),
                          ('server 0 on_sideways "x"', "server: unknown keyword 'on_sideways'"),
                          ('server 1 on_up "x"', "server: index 1 out of range")):
        before = repr(st.settings)
        replies, effects = run(st, line)
        assert len(replies) == 1 and message in replies[0], (line, replies)
        assert repr(st.settings) == before and effects == []


def test_split_quotes():
    split = commands.split
    assert split('on_down "a b" c') == ["on_down", "a b", "c"]
    assert split('x "say \\"hi\\"" "back\\\\slash"') == ["x", 'say "hi"', "back\\slash"]
    assert split('x "keep \\r as is"') == ["x", "keep \\r as is"]
    assert split('x "#not a comment" # a comment') == ["x", "#not a comment"]
    assert split('x ""') == ["x", ""]
    assert split('x a"b c"d') == ["x", "ab cd"]
    assert split('x "a"\r\nnext') == ["x", "a"]
    with pytest.raises(commands.CommandError, match="unterminated quote"):
        split('x "open')
    # without quotes, exactly as before
    assert split("  a\tb  #c d") == ["a", "b"]


def test_quote_round_trips_through_split():
    rng = random.Random(10)
    alphabet = 'ab\\" #r$;'
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        assert commands.split("w " + hooks.quote(text)) == ["w", text], text
    assert hooks.quote("PING\\r\\n") == '"PING\\r\\n"'      # readable where it can be
