"""Fuzzing the command language (issue 15 part 4): whatever line comes in,
only CommandError escapes parse, a line parse refuses changes nothing,
apply never fails, and `write`'s output run through the config pipeline
gives back the same state (parse(dump(state)) == state)."""

import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nodns import no_dns  # noqa: F401  (autouse: no DNS lookups here)

from pen import commands
from pen.commands import CommandError, apply, parse
from pen.config import dump, load_config, run_lines
from test_commands import NOW, WALL, make_state, snapshot

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
ROUND_TRIP = settings(SETTINGS, max_examples=100)

WORDS = sorted(commands.HANDLERS)
NO_WORDS = sorted(commands.NO_HANDLERS)
# What a careless or hostile user types as an argument.
TRICKY = ["", "0", "1", "-1", "2", "4095", "4096", "65535", "65536", "2147483647",
          "2147483648", "-2147483648", "9" * 30, "9" * 5000, "--1", "+1", "-0", "0x10",
          "1e3", "1.5", ".5", "5.", "nan", "inf", "\u00b9", "\u0663", "\uff11", "\x00",
          "\udcff", "\t", "#", "#x", '"', '""', '"a b"', '"\\"', "\\", "a\\", "[", "]",
          "[::1]", "[::1]:80", "::1", ":::80", ":", "::", "127.0.0.1", "127.0.0.1:80",
          "255.255.255.255", "10.0.0.0/8", "::/0", "/tmp/x", "/", "a:b:c", "over",
          "address", "port", "acl", "max", "hard", "weight", "prio", "blacklist",
          "disable", "enable", "drain", "header", "cookie", "proxy_protocol",
          "check_port", "on_down", "decay", "reset", "trafficlog", "no", "tcp", "http",
          "expect", "udp", "send", "permit", "deny", "country", "SE", "add", "set",
          "delete", "append", "server", "client", '"X-A: b"', "X-A:", "json",
          "prometheus", "v1", "v2", "off", "default", "up", "down", "both", "x" * 300]
tricky = st.sampled_from(TRICKY)
word = st.one_of(st.sampled_from(WORDS), st.sampled_from(NO_WORDS).map("no ".__add__))
# Arguments: the tricky list, any text, and quoted texts.
argument = st.one_of(tricky, tricky, st.text(max_size=12),
                     st.text(max_size=12).map(lambda t: '"%s"' % t))
lines = st.one_of(
    st.tuples(word, st.lists(argument, max_size=6)).map(lambda t: " ".join([t[0]] + t[1])),
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")))


def parse_or_refuse(line, state):
    """parse(line): a Command or None, or the refusal (a CommandError);
    anything else is a bug and fails the test."""
    try:
        return parse(line, state)
    except CommandError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return e


# Where a command takes words after others: each tricky word goes there too.
PREFIXES = ["server 0", "server 0 address", "server 0 port", "server 0 max", "server 1 acl",
            "server 2", "server 2 address 127.0.0.1 port", "server 0 decay",
            "server 0 check_port", "server 0 header", "server 0 header set server",
            "server 0 cookie", "server 0 proxy_protocol", "server 0 on_down", "server 0 no",
            "server 0 trafficlog", "acl 1", "acl 1 permit", "acl 1 deny 10.0.0.0",
            "acl 1 permit country", "check", "check http", "check http /",
            "check expect", 'check expect "x" send', "check udp", 'check udp "x" expect',
            "header", "header set", "header set server", "header delete client",
            "client_rate", "client_rate 5", "bysize", "bysize over", "no", "no acl",
            "no header", "status", "recent", "close", "connection", "socket", "mrtg_bytes",
            "mrtg_conns", "tcp_fastclose", "listen", "admin_listen"]


def test_every_command_with_every_tricky_argument():
    """Missing, non-numeric, negative, huge, out-of-range and odd words in
    each place of every command: a refusal or a Command, nothing else, and
    a refusal changes nothing."""
    state = make_state()
    before = snapshot(state)
    for head in WORDS + ["no " + w for w in NO_WORDS] + PREFIXES:
        for line in [head] + [f"{head} {arg}" for arg in TRICKY] + [
                f"{head} 1 {arg}" for arg in TRICKY]:
            cmd = parse_or_refuse(line, state)
            if not isinstance(cmd, CommandError) and head.split()[0] not in ("exit", "shutdown"):
                scratch = make_state()
                apply(scratch, parse(line, scratch), NOW, WALL)
        assert snapshot(state) == before, head            # parse changed nothing


@SETTINGS
@given(st.lists(lines, min_size=1, max_size=4))
def test_only_command_errors_escape_and_refusals_change_nothing(texts):
    state = make_state()
    for line in texts:
        before = snapshot(state)
        cmd = parse_or_refuse(line, state)
        assert snapshot(state) == before, line          # parse is pure
        if not isinstance(cmd, CommandError):
            apply(state, cmd, NOW, WALL)                # cannot fail
    # run_lines (what -F, SIGHUP and the control socket run) gives one
    # `label: reason` per refused line and never raises
    labelled = [(f"f:{n}", line) for n, line in enumerate(texts, 1)
                if line.split()[:1] != ["include"]]
    _, _, errors = run_lines(make_state(), labelled, NOW, WALL)
    assert all(e.startswith("f:") for e in errors)


# --- generated states: sequences of good commands ---------------------------------------

IP = st.sampled_from(["127.0.0.1", "127.0.0.2", "10.1.2.3", "::1", "2001:db8::7"])
N = st.integers(0, 100_000).map(str)
SMALL = st.integers(0, 9).map(str)
# Values with what a file name or a hook command may hold: blanks, quotes,
# backslashes, a #, non-ASCII letters (surrogates and controls excluded).
# Line breaks for str.splitlines() but not for pen (\v \f \x1c-\x1e \x85 \u2028)
# are in; CR, LF and NUL, which no command word can hold, are not.
TEXT_CHARS = st.one_of(st.sampled_from(' "\\#\'a/\t\v\f\x1c\x1d\x1e\x85\u2028\u2029'),
                       st.characters(blacklist_categories=("Cs",),
                                     blacklist_characters="\r\n\x00"))
free_text = st.text(TEXT_CHARS, min_size=1, max_size=16).filter(str.strip)
path = st.one_of(st.text(string.ascii_letters + "/._-", min_size=1, max_size=12)
                 .map("/tmp/".__add__), free_text.map("/tmp/".__add__))
hook_text = free_text
header_name = st.text(string.ascii_letters + "-", min_size=1, max_size=8)
header_value = st.text(st.one_of(st.sampled_from(' "\\#%r'), st.characters(
    min_codepoint=0x20, max_codepoint=0xff, blacklist_characters="\x7f\x85")), max_size=12)
cookie = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1,
                 max_size=8)


def quote(text):
    return commands.hooks.quote(text)


def server_line(n):
    """A good `server` line for server n (0..3; the state starts with 2)."""
    return st.one_of(
        st.tuples(IP, st.integers(1, 65535), N, N, N, N, SMALL).map(
            lambda t: f"server {n} address {t[0]} port {t[1]} max {t[2]} hard {t[3]} "
                      f"weight {t[4]} prio {t[5]} acl {t[6]}"),
        st.sampled_from(["disable", "enable", "drain"]).map(f"server {n} ".__add__),
        st.integers(0, 100).map(lambda d: f"server {n} decay {d}"),
        path.map(lambda p: f"server {n} trafficlog {quote(p)}"),
        st.integers(1, 65535).map(lambda p: f"server {n} check_port {p}"),
        st.tuples(st.sampled_from(commands.hooks.HOOK_WORDS), hook_text).map(
            lambda t: f"server {n} {t[0]} {quote(t[1])}"),
        st.tuples(st.sampled_from(["add", "append", "set"]), st.sampled_from(["server", "client"]),
                  header_name, header_value).map(
            lambda t: f'server {n} header {t[0]} {t[1]} {quote(t[2] + ": " + t[3])}'),
        cookie.map(lambda c: f"server {n} cookie {c}"),
        st.sampled_from(["v1", "v2", "off", "default"]).map(f"server {n} proxy_protocol ".__add__),
    )


good_line = st.one_of(
    st.sampled_from(commands.FLAGS + commands.ALGORITHMS).map(str),
    st.sampled_from(commands.FLAGS + commands.ALGORITHMS).map("no ".__add__),
    st.tuples(st.sampled_from(["bysize", "byduration"]), st.integers(1, 1000)).map(
        lambda t: f"{t[0]} over {t[1]}"),
    st.tuples(st.sampled_from(["blacklist", "tracking", "idle_timeout",
                               "ssl_client_renegotiation_interval"]), N).map(" ".join),
    st.tuples(st.sampled_from(["client_acl", "control_acl", "admin_acl"]), SMALL).map(" ".join),
    st.tuples(st.sampled_from(["tarpit_acl", "accept_proxy_acl"]),
              st.integers(-1, 9).map(str)).map(" ".join),
    st.tuples(st.sampled_from(["clients_max", "conn_max", "pending_max"]),
              st.integers(1, 5000).map(str)).map(" ".join),
    st.integers(1, 3600).map(lambda n: f"timeout {n}"),
    st.integers(0, 100).map(lambda n: f"debug {n}"),
    st.integers(0, 10000).map(lambda n: f"idlers {n}"),
    st.sampled_from(commands.FASTCLOSE).map("tcp_fastclose ".__add__),
    st.tuples(SMALL, st.sampled_from(["permit", "deny"]), st.sampled_from(
        ["127.0.0.1", "10.0.0.0 255.0.0.0", "10.0.0.0/8", "::1", "2001:db8::/32",
         "country SE"])).map(lambda t: f"acl {t[0]} {t[1]} {t[2]}"),
    SMALL.map("no acl ".__add__),
    st.tuples(st.sampled_from(["log", "web_stats", "trafficlog", "throughputlog",
                               "dsr_if", "dsr_ip", "ssl_ciphers"]), path).map(
        lambda t: f"{t[0]} {quote(t[1])}"),
    st.sampled_from(["no log", "no web_stats", "no trafficlog", "no throughputlog",
                     "no dsr_if", "no dsr_ip", "no source", "no header", "no sticky_cookie",
                     "no check", "no check_interval", "no accept_proxy", "accept_proxy",
                     "autodisable", "no autodisable", "no proxy_protocol"]),
    IP.map("source ".__add__),
    st.sampled_from(["no_tlsv1", "no_tlsv1_1", "cipher_server_preference"]).map(
        "ssl_option ".__add__),
    st.one_of(st.just("check tcp"),
              st.tuples(st.sampled_from(["/", "/health", "/a?b=c"]),
                        st.lists(st.integers(100, 599).map(str), max_size=3)).map(
                  lambda t: " ".join(["check http", t[0]] + t[1])),
              st.tuples(free_text, st.none() | free_text).map(
                  lambda t: f"check expect {quote(t[0])}"
                            + (f" send {quote(t[1])}" if t[1] else "")),
              st.tuples(free_text, st.none() | free_text).map(
                  lambda t: f"check udp {quote(t[0])}"
                            + (f" expect {quote(t[1])}" if t[1] else ""))),
    st.sampled_from(["0", "1", "5", "0.5", "2.25", "86400"]).map("check_interval ".__add__),
    st.sampled_from(["1", "30", "0.5", "7.75"]).map("hook_timeout ".__add__),
    st.tuples(st.sampled_from(["check_rise", "check_fall", "server_retry"]),
              st.integers(1, 1000).map(str)).map(" ".join),
    st.integers(0, 4096).map(lambda n: f"hooks_max {n}"),
    st.tuples(st.sampled_from(commands.hooks.HOOK_WORDS), hook_text).map(
        lambda t: f"{t[0]} {quote(t[1])}"),
    st.sampled_from(commands.hooks.HOOK_WORDS).map("no ".__add__),
    st.tuples(st.sampled_from(["add", "append", "set"]), st.sampled_from(["server", "client"]),
              header_name, header_value).map(
        lambda t: f'header {t[0]} {t[1]} {quote(t[2] + ": " + t[3])}'),
    st.tuples(st.sampled_from(["server", "client"]), header_name).map(
        lambda t: f"header delete {t[0]} {t[1]}"),
    cookie.map("sticky_cookie ".__add__),
    st.sampled_from(["v1", "v2", "off"]).map("proxy_protocol ".__add__),
    st.integers(0, 1000).map(lambda n: f"client_conn_max {n}"),
    st.tuples(st.integers(1, 1000), st.integers(1, 86400)).map(
        lambda t: f"client_rate {t[0]} {t[1]}"),
    st.just("client_rate 0"),
    st.integers(0, 3600).map(lambda n: f"client_timeout {n}"),
    st.integers(0, 3).flatmap(server_line),
)


def applied(state, line):
    cmd = parse_or_refuse(line, state)
    if not isinstance(cmd, CommandError):
        apply(state, cmd, NOW, WALL)
        return True
    return False


@ROUND_TRIP
@given(st.lists(good_line, min_size=1, max_size=12))
@example(['dsr_if "/tmp/a b"', 'dsr_ip "#x"', 'ssl_ciphers "HIGH !aNULL"',
          'log "/tmp/\\""', 'on_failure "\\"\x0b"', "server 1 drain"])
def test_write_then_read_gives_the_same_state(tmp_path, texts):
    """What `write` saves (the file, as App.write_file writes it), read
    back as -F reads it, is the same state."""
    state = make_state()
    for line in texts:
        applied(state, line)
    written = dump(state, "/etc/pen.cfg", WALL)
    cfg = tmp_path / "pen.cfg"
    cfg.write_text("\n".join(written) + "\n", encoding="utf-8", errors="surrogateescape")
    fresh = make_state()
    fresh.servers = []
    _, errors = load_config(str(cfg), fresh, NOW, WALL)
    assert errors == []
    assert dump(fresh, "/etc/pen.cfg", WALL) == written
    assert fresh.settings == state.settings
    for ours, theirs in zip(snapshot(state)[2], snapshot(fresh)[2]):
        assert ours[:7] == theirs[:7] or ours[7] == -1      # acl -1 is written as 0
    assert [(s.disabled, s.draining, s.extra) for s in fresh.servers] == \
        [(s.disabled, s.draining, s.extra) for s in state.servers]
