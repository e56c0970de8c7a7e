"""pen/commands.py: every command, pen's replies, bad input, write round trips.

Strings marked "observed" were read from the reference pen 0.34.1 (Debian's
/usr/bin/pen) with its penctl, started as
`pen -f -X -C 127.0.0.1:C 127.0.0.1:L 127.0.0.1:B1 127.0.0.1:B2`.
"""

import copy
import os

import pytest
from nodns import no_dns  # noqa: F401  (autouse: no DNS lookups here)
from realconn import RealConns

from pen import commands
from pen.addr import parse_listen
from pen.commands import apply, execute, parse
from pen.config import dump, load_config
from pen.errors import CommandError
from pen.servers import parse_backend
from pen.state import Settings, State

NOW = 1000.0
WALL = 1_700_000_000.0


def make_state(**settings):
    st = Settings(listen=parse_listen("127.0.0.1:8000"), control="127.0.0.1:9000",
                  **settings)
    servers = [parse_backend("127.0.0.1:9001", 8000, 0),
               parse_backend("127.0.0.1:9002", 8000, 1)]
    return State(st, servers)


def run(state, line):
    return execute(state, line, now=NOW, wall=WALL)


def reply(state, line):
    lines, _ = run(state, line)
    return lines


def snapshot(state):
    """Everything a command could change, comparable."""
    return (copy.deepcopy(state.settings), dump(state, "/x", WALL),
            [(s.host, s.port, s.sockaddr, s.max, s.hard, s.weight, s.prio, s.acl,
              s.blacklisted_until, s.disabled, s.draining) for s in state.servers],
            len(state.clients.entries), state.clients.size)


@pytest.fixture
def state():
    return make_state()


# --- replies as pen gives them --------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("blacklist", ["30"]),                                   # observed
    ("blacklist 10", ["10"]),                                # observed
    ("mode", ["no hash no roundrobin no stubborn no weight no prio"]),   # observed
    ("timeout", ["3"]),                                      # observed
    ("timeout 7", ["7"]),                                    # observed
    ("tracking", ["0"]),                                     # observed
    ("tracking 60", ["60"]),                                 # observed
    ("clients_max", ["2048"]),                               # observed
    ("clients_max 4000", ["4000"]),                          # observed
    ("conn_max", ["500"]),                                   # observed
    ("conn_max 1000", ["1000"]),                             # observed
    ("debug", ["0"]),                                        # observed
    ("debug 2", ["2"]),                                      # observed
    ("idle_timeout", ["Idle timeout: 0 seconds"]),           # observed
    ("idle_timeout 5", ["Idle timeout: 5 seconds"]),         # observed
    ("idlers", ["Idlers: 0/0"]),                             # observed
    ("idlers 2", ["Idlers: 0/2"]),                           # observed
    ("client_acl", ["0"]),                                   # observed
    ("client_acl 5", ["5"]),                                 # observed
    ("control_acl", ["0"]),                                  # observed
    ("tarpit_acl", ["tarpit_acl = -1"]),    # observed (pen sends no newline)
    ("tarpit_acl 3", ["tarpit_acl = 3"]),                    # observed
    ("connection 0", ["Connection 0:", "state = 0", "downfd = -1, upfd = -1",
                      "client = 0, server = 0", "pend = 0"]),   # observed
    ("connection 9999", ["Connection 9999 out of range"]),   # observed
    ("connection -1", ["Connection -1 out of range"]),       # observed
    ("close 600", ["Connection 600 out of range"]),          # observed
    ("socket 3", ["Socket 3 belongs to connection -1"]),     # observed
    ("foo bar", ["do_cmd: ignoring command starting with 'foo'"]),   # observed
    ("MODE", ["do_cmd: ignoring command starting with 'MODE'"]),     # observed
    ("block", []),          # pen 0.34.1 says "ignoring"; SPEC: obsolete, accepted
    ("delayed_forward", []),
    ("tcp_fastclose", ["do_cmd: ignoring tcp_fastclose without argument"]),  # observed
    ("tcp_fastclose both", []),                              # observed
    ("exit", ["Exit is not enabled; restart with -X flag"]),
    ("# comment", []),                                       # observed
    ("", []),
    ("   ", []),
    ("listen", ["127.0.0.1:8000"]),
    ("control", ["127.0.0.1:9000"]),
    ("log", []),                                             # observed (no log)
    ("web_stats", []),                                       # observed
    ("recent", []),
    ("pending_max 5", []),                                   # observed
    ("keepalive", []), ("no keepalive", []), ("peek", []), ("no peek", []),
    ("abort_on_error", []), ("no abort_on_error", []), ("transparent", []),
    ("dummy", []), ("no dummy", []), ("no block", []), ("epoll", []), ("poll", []),
    ("kqueue", []), ("select", []), ("ssl_ciphers ALL", []), ("ssl_ciphers", []),
    ("server 1 blacklist 60", []),                           # observed
    ("server 0 max 5 hard 7 weight 3 prio 2", []),           # observed
    ("acl 1 permit 127.0.0.1", []),                          # observed
    ("no acl 2", []),
    ("hash", []), ("no hash", []),                           # observed
    ("blacklist 5 # five", ["5"]),
])
def test_reply(state, line, expected):
    assert reply(state, line) == expected


def test_mode_flags(state):
    for word in ("hash", "roundrobin", "stubborn", "weight", "prio"):
        assert reply(state, word) == []
    assert reply(state, "mode") == ["hash roundrobin stubborn weight prio"]   # observed
    for word in ("hash", "roundrobin", "stubborn", "weight", "prio"):
        assert reply(state, "no " + word) == []
    assert reply(state, "mode") == ["no hash no roundrobin no stubborn no weight no prio"]


def test_extension_algorithms(state):
    assert reply(state, "leastconn") == []
    assert state.settings.algorithm == "leastconn"
    assert reply(state, "mode") == [
        "no hash no roundrobin no stubborn no weight no prio leastconn"]
    assert reply(state, "no random") == []
    assert state.settings.algorithm == "leastconn"
    assert reply(state, "no leastconn") == []
    assert state.settings.algorithm is None
    reply(state, "byorder")
    assert state.settings.algorithm == "byorder"


def test_servers_lines(state):
    reply(state, "server 0 max 5 hard 7 weight 3 prio 2")
    state.servers[1].sx = state.servers[1].rx = 60
    assert reply(state, "servers") == [    # observed format
        "0 addr 127.0.0.1 port 9001 conn 0 max 5 hard 7 weight 3 prio 2 sx 0 rx 0",
        "1 addr 127.0.0.1 port 9002 conn 0 max 0 hard 0 weight 0 prio 0 sx 60 rx 60"]
    assert reply(state, "server 1") == [
        "1 addr 127.0.0.1 port 9002 conn 0 max 0 hard 0 weight 0 prio 0 sx 60 rx 60",
        "state up blacklisted_for 0 failures 0 check passed 0 failed 0 last -",
        "finished 0 avg_bytes 0 avg_seconds 0.000000 decay 0"]


def test_log_and_web_stats(state):
    assert run(state, "log /tmp/pen.log") == (["/tmp/pen.log"], [("log", "/tmp/pen.log", None)])
    assert reply(state, "log") == ["/tmp/pen.log"]                     # observed
    assert run(state, "no log") == ([], [("log", None)])
    assert reply(state, "log") == []                                   # observed
    assert run(state, "log 127.0.0.1:5000")[1] == [("log", "127.0.0.1:5000", None)]
    assert reply(state, "web_stats /tmp/web.html") == ["/tmp/web.html"]  # observed
    assert reply(state, "web_stats") == ["/tmp/web.html"]
    assert reply(state, "no web_stats") == []
    assert reply(state, "web_stats") == []


def test_recent(state):
    state.clients.touch("10.0.0.1", NOW - 10, 0)
    e = state.clients.touch("10.0.0.2", NOW - 1000, 0)
    e.sx, e.rx = 70, 60      # 70 bytes went to the client, 60 came from it
    assert reply(state, "recent") == ["10.0.0.1 connects 1 sx 0 rx 0"]   # observed format
    # pen's sx is what was sent to the client, rx what came from it
    assert reply(state, "recent 5000") == ["10.0.0.1 connects 1 sx 0 rx 0",
                                           "10.0.0.2 connects 1 sx 70 rx 60"]
    assert reply(state, "recent 0") == []


def test_server_blacklist_and_restore(state):
    reply(state, "server 1 blacklist 60")
    assert state.servers[1].blacklisted_until == NOW + 60
    reply(state, "server 1 blacklist 0")
    assert state.servers[1].blacklisted_until <= NOW


def test_server_grows_by_one_and_needs_an_address(state):
    assert reply(state, "server 2 address 127.0.0.3 port 9003 max 4") == []
    assert len(state.servers) == 3
    s = state.servers[2]
    assert (s.addr, s.port, s.max, s.acl) == ("127.0.0.3", 9003, 4, -1)
    assert reply(state, "server 3 address 127.0.0.4") == []
    assert state.servers[3].port == 8000          # the listen port, as backends
    assert reply(state, "server 9 max 3") == [
        "server: index 9 out of range (0-4; 4 adds a new server)"]
    assert reply(state, "server 4 max 3") == [
        "server: new server 4 needs an address (server 4 address HOST [port P])"]
    assert len(state.servers) == 4


def test_server_address_and_port(state):
    reply(state, "server 0 address 127.0.0.5")
    assert state.servers[0].sockaddr == ("127.0.0.5", 9001)
    reply(state, "server 0 port 9100")
    assert state.servers[0].sockaddr == ("127.0.0.5", 9100)
    reply(state, "server 0 address [::1] port 9101")
    assert state.servers[0].addr == "::1" and state.servers[0].port == 9101


def test_server_disable_enable(state):
    reply(state, "server 1 disable")
    assert state.servers[1].disabled
    reply(state, "server 1 enable weight 2")
    assert not state.servers[1].disabled and state.servers[1].weight == 2
    assert reply(state, "server 1 enable disable") == [
        "server: give one of disable, enable or drain, not several"]


def test_acl_commands(state):
    reply(state, "acl 1 permit 127.0.0.1")
    reply(state, "acl 1 deny 2001:db8::/32")
    assert [r.text() for r in state.acls[1]] == ["permit 127.0.0.1 255.255.255.255",
                                                  "deny 2001:db8::/32"]
    reply(state, "no acl 1")
    assert state.acls[1] == []
    reply(state, "server 0 acl 3")
    assert state.servers[0].acl == 3
    reply(state, "client_acl 2")
    assert state.settings.client_acl == 2


def test_acl_table_is_bounded(state):
    for i in range(commands.ACL_RULES_MAX):
        state.acls.add(4, commands.aclmod.parse_rule(["permit", "10.0.0.1"]))
    assert reply(state, "acl 4 permit 10.0.0.2")[0].startswith("acl: ACL 4 is full")


def test_clients_max_resizes_the_table(state):
    for i in range(10):
        state.clients.touch(f"10.0.0.{i}", NOW, 0)
    assert reply(state, "clients_max 4") == ["4"]     # pen only grows; we shrink too
    assert len(state.clients) == 4


# --- effects -------------------------------------------------------------------------------

def test_effects(state):
    lines, effects = run(state, "listen 127.0.0.1:8100")
    assert lines == ["127.0.0.1:8100"]
    assert effects[0][0] == "listen" and str(effects[0][1]) == "127.0.0.1:8100"
    assert run(state, "listen /tmp/pen.sock")[1][0][1].path == "/tmp/pen.sock"
    assert run(state, "debug 3") == (["3"], [("debug", 3)])
    assert run(state, "conn_max 10") == (["10"], [("conn_max", 10)])
    assert run(state, "include /etc/pen.cfg") == ([], [("include", "/etc/pen.cfg")])
    assert run(state, "source 127.0.0.2") == ([], [("source", "127.0.0.2")])
    assert run(state, "no source") == ([], [("source", None)])
    assert run(state, "ssl_option no_tlsv1") == ([], [("tls",)])
    assert state.settings.ssl_options == ["no_tlsv1"]


def test_exit_needs_dash_x():
    state = make_state(exit_enabled=True)
    assert run(state, "exit") == ([], [("exit",)])


def test_close_and_connection_of_a_live_conn(state):
    real = RealConns(state)
    try:
        conn = real.make(7, client_ip="10.0.0.9", client_port=5555, index=1)
        down, up = conn.client.fileno(), conn.server.fileno()
        assert run(state, "close 7") == (["Forcibly closing connection 7"], [("close", 7)])
        assert reply(state, "close 8") == ["Connection 8 is not open"]
        assert reply(state, "connection 7") == [
            "Connection 7:", "state = 2", f"downfd = {down}, upfd = {up}",
            "client = 10.0.0.9, server = 1", "pend = 0"]
        assert reply(state, f"socket {up}") == [f"Socket {up} belongs to connection 7"]
        assert reply(state, "socket 9999") == ["Socket 9999 belongs to connection -1"]
    finally:
        real.close()


def test_status_html_and_webfile(state):
    lines, effects = run(state, "status")
    assert lines[0] == "<html>" and lines[-1] == "</html>"
    assert effects == []
    reply(state, "web_stats /tmp/w.html")
    lines, effects = run(state, "status")
    assert effects == [("write", "/tmp/w.html", "\n".join(lines) + "\n")]


def test_status_machine_formats(state):
    import json
    doc = json.loads(reply(state, "status json")[0])
    assert doc["servers"][1]["port"] == 9002
    prom = reply(state, "status prometheus")
    assert 'pen_server_connections{server="0",address="127.0.0.1",port="9001"} 0' in prom
    assert reply(state, "status xml") == [
        "status: unknown format 'xml' (expected json or prometheus)"]


def test_write(state):
    assert reply(state, "write") == [
        "write: no file given, and pen was started without -F (usage: write FILE)"]
    assert run(state, "write /tmp/x.cfg") == ([], [("write", "/tmp/x.cfg")])
    state.settings.cfgfile = "/etc/pen.cfg"
    assert run(state, "write") == ([], [("write", "/etc/pen.cfg")])


# --- bad input: a clear one-line error, and nothing changes --------------------------------------

BAD = [
    ("blacklist abc", "blacklist: seconds must be a whole number, got 'abc'"),
    ("blacklist -5", "blacklist: seconds -5 out of range (0 or more)"),
    ("blacklist 1.5", "blacklist: seconds must be a whole number, got '1.5'"),
    ("blacklist 99999999999", "blacklist: seconds 99999999999 out of range (0 or more)"),
    ("blacklist 5 6", "blacklist: unexpected '6' (usage: blacklist [SECONDS])"),
    ("client_acl 10", "client_acl: ACL number 10 out of range (0-9)"),
    ("client_acl -1", "client_acl: ACL number -1 out of range (0-9)"),
    ("client_acl abc", "client_acl: ACL number must be a whole number, got 'abc'"),
    ("control_acl 11", "control_acl: ACL number 11 out of range (0-9)"),
    ("tarpit_acl 10", "tarpit_acl: ACL number 10 out of range (-1-9)"),
    ("clients_max 0", "clients_max: size 0 out of range (1-16777216)"),
    ("clients_max x", "clients_max: size must be a whole number, got 'x'"),
    ("conn_max 0", "conn_max: count 0 out of range (1-1048576)"),
    ("conn_max many", "conn_max: count must be a whole number, got 'many'"),
    ("debug x", "debug: level must be a whole number, got 'x'"),
    ("debug -1", "debug: level -1 out of range (0-100)"),
    ("idle_timeout -3", "idle_timeout: seconds -3 out of range (0 or more)"),
    ("idle_timeout x", "idle_timeout: seconds must be a whole number, got 'x'"),
    ("idlers x", "idlers: count must be a whole number, got 'x'"),
    ("pending_max 0", "pending_max: count 0 out of range (1-1048576)"),
    ("pending_max", "pending_max: missing argument (usage: pending_max N)"),
    ("recent abc", "recent: seconds must be a whole number, got 'abc'"),
    ("recent -1", "recent: seconds -1 out of range (0 or more)"),
    ("timeout x", "timeout: seconds must be a whole number, got 'x'"),
    ("timeout 0", "timeout: seconds 0 out of range (1-3600)"),
    ("tracking x", "tracking: seconds must be a whole number, got 'x'"),
    ("tracking -2", "tracking: seconds -2 out of range (0 or more)"),
    ("close abc", "close: connection must be a whole number, got 'abc'"),
    ("close", "close: missing argument (usage: close N)"),
    ("connection abc", "connection: connection must be a whole number, got 'abc'"),
    ("socket abc", "socket: socket must be a whole number, got 'abc'"),
    ("ssl_client_renegotiation_interval x",
     "ssl_client_renegotiation_interval: seconds must be a whole number, got 'x'"),
    ("server", "server: missing server number"),
    ("server x max 1", "server: index must be a whole number, got 'x'"),
    ("server -1 max 1", "server: index -1 out of range (0-2; 2 adds a new server)"),
    ("server 0 max x", "server: max must be a whole number, got 'x'"),
    ("server 0 max -1", "server: max -1 out of range (0 or more)"),
    ("server 0 hard x", "server: hard must be a whole number, got 'x'"),
    ("server 0 weight 1.5", "server: weight must be a whole number, got '1.5'"),
    ("server 0 prio p", "server: prio must be a whole number, got 'p'"),
    ("server 0 blacklist x", "server: blacklist must be a whole number, got 'x'"),
    ("server 0 acl 12", "server: ACL number 12 out of range (0-9)"),
    ("server 0 acl -1", "server: ACL number -1 out of range (0-9)"),
    ("server 0 port abc", "server: port 'abc' is not a number or a known service name"),
    ("server 0 port 70000", "server: port '70000' out of range (expected 1-65535)"),
    ("server 0 port 0", "server: port '0' out of range (expected 1-65535)"),
    ("server 0 max 1 port", "server: port needs a value"),
    ("server 0 foo 3", "server: unknown keyword 'foo'"),
    ("server 0 address bogus.invalid", "server: cannot resolve host 'bogus.invalid'"),
    ("server 0 max 5 address bogus.invalid", "server: cannot resolve host"),
    ("server 0 address [::1]:80", "server: address '[::1]:80': give the port"),
    ("acl", "acl: missing ACL number"),
    ("acl 12 permit 1.2.3.4", "acl: ACL number 12 out of range (0-9)"),
    ("acl x permit 1.2.3.4", "acl: ACL number must be a whole number, got 'x'"),
    ("acl 1 permit bogus", "acl: bad IPv4 address 'bogus'"),
    ("no acl", "no acl: missing argument (usage: no acl N)"),
    ("no acl 10", "no acl: ACL number 10 out of range (0-9)"),
    ("no", "no: expected a setting to turn off (like 'no hash')"),
    ("no bogus", "no: cannot turn off 'bogus'"),
    ("hash extra words", "hash: unexpected 'extra' (usage: hash)"),
    ("no hash now", "no hash: unexpected 'now' (usage: no hash)"),
    ("exit now", "exit: unexpected 'now' (usage: exit)"),
    ("listen 127.0.0.1:99999", "listen: listen address '127.0.0.1:99999': port"),
    ("listen a b", "listen: unexpected 'b'"),
    ("log bogus.invalid:x", "log: log address 'bogus.invalid:x': port 'x'"),
    ("source bogus", "source: 'bogus' is not an IP address"),
    ("ssl_option foo", "ssl_option: unknown option 'foo'"),
    ("ssl_ocsp_response /tmp/r.der", "ssl_ocsp_response: OCSP stapling is not supported"),
    ("ssl_option", "ssl_option: missing argument"),
    ("ssl_sni_path", "ssl_sni_path: missing argument (usage: ssl_sni_path DIR)"),
    ("tcp_fastclose bogus", "tcp_fastclose: expected up, down, both or off, got 'bogus'"),
    ("include", "include: missing argument (usage: include FILE)"),
    ("geoip_db /nonexistent.mmdb", "geoip_db: /nonexistent.mmdb: no such file"),
    ("status json extra", "status: unexpected 'extra'"),
]


@pytest.mark.parametrize("line, message", BAD)
def test_bad_input_changes_nothing(state, line, message):
    before = snapshot(state)
    lines, effects = run(state, line)
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert effects == []
    assert snapshot(state) == before
    with pytest.raises(CommandError):
        parse(line, state)


def test_parse_is_pure(state):
    before = snapshot(state)
    for line in ("blacklist 9", "server 0 max 9", "server 2 address 127.0.0.9",
                 "acl 1 permit 10.0.0.1", "hash", "clients_max 3", "no acl 0"):
        assert parse(line, state) is not None
    assert snapshot(state) == before


def test_every_spec_command_is_known():
    spec = ("abort_on_error acl no ascii blacklist block client_acl clients_max close "
            "connection conn_max control control_acl debug delayed_forward dsr_if dummy "
            "epoll exit hash http idle_timeout idlers include keepalive kqueue listen log "
            "mode pending_max pid poll prio recent roundrobin select server servers socket "
            "source ssl_ciphers ssl_client_renegotiation_interval ssl_ocsp_response "
            "ssl_option ssl_sni_path status stubborn tarpit_acl tcp_fastclose tcp_nodelay "
            "timeout tracking transparent web_stats weight write geoip_db leastconn random "
            "byorder").split()
    assert [w for w in spec if w not in commands.HANDLERS] == []
    for word in ("ascii", "hash", "http", "log", "prio", "roundrobin", "stubborn",
                 "tcp_nodelay", "transparent", "web_stats", "weight", "dummy", "acl",
                 "block", "keepalive", "abort_on_error"):
        assert word in commands.NO_HANDLERS


def test_pid(state):
    assert reply(state, "pid") == [str(os.getpid())]


# --- write: pen's layout, and parse(dump(state)) recreates the state -------------------------------

def test_dump_layout(state):
    lines = dump(state, "/etc/pen.cfg", WALL)
    assert lines[0].startswith("# Generated by pen 20")
    assert lines[1] == "# pen -F '/etc/pen.cfg' -C 127.0.0.1:9000 127.0.0.1:8000"
    assert lines[2:12] == [f"no acl {i}" for i in range(10)]
    assert lines[12:] == [       # observed order and spelling (plus weight/prio)
        "no ascii", "blacklist 30", "client_acl 0", "control_acl 0", "debug 0",
        "no hash", "no http", "no log", "no roundrobin",
        "server 0 acl 0 address 127.0.0.1 port 9001 max 0 hard 0 weight 0 prio 0",
        "server 1 acl 0 address 127.0.0.1 port 9002 max 0 hard 0 weight 0 prio 0",
        "no stubborn", "tcp_fastclose off", "no tcp_nodelay", "timeout 3", "tracking 0",
        "no web_stats", "no weight", "no prio"]


def test_dump_command_line_flags():
    state = make_state(udp=True, foreground=True, exit_enabled=True, clients_max=100,
                       conn_max=50, emergency="127.0.0.1:7000", abuse="127.0.0.1:7001",
                       chroot="/var/empty", pidfile="/run/pen.pid", user="pen")
    assert dump(state, "/etc/p'en.cfg", WALL)[1] == (
        "# pen -U -f -X -c 100 -e 127.0.0.1:7000 -B 127.0.0.1:7001 -j '/var/empty' "
        "-p '/run/pen.pid' -u 'pen' -x 50 -F '/etc/p'\\''en.cfg' -C 127.0.0.1:9000 "
        "127.0.0.1:8000")


CONFIG = """\
acl 1 permit 127.0.0.1
acl 1 deny 10.0.0.0 255.0.0.0
acl 1 permit ::1
acl 1 deny 2001:db8::/32
acl 1 permit country SE
acl 3 deny 1.2.3.4
ascii
blacklist 12
client_acl 1
control_acl 3
debug 1
hash
http
log /tmp/pen-test.log
roundrobin
server 0 acl 1 address 127.0.0.7 port 7001 max 3 hard 5 weight 2 prio 1
server 1 address localhost port 7002
server 2 address ::1 port 7003 weight 9
stubborn
tcp_fastclose both
tcp_nodelay
timeout 4
tracking 60
web_stats /tmp/pen-test.html
weight
prio
clients_max 100
conn_max 50
idle_timeout 9
pending_max 7
idlers 2
tarpit_acl 4
abort_on_error
dummy
keepalive
transparent
source 127.0.0.1
ssl_ciphers HIGH
ssl_option no_tlsv1
ssl_option cipher_server_preference
ssl_client_renegotiation_interval 60
random
server 1 disable
"""


def test_round_trip(state):
    for line in CONFIG.splitlines():
        lines, _ = run(state, line)
        assert not any(x.startswith(line.split()[0] + ":") for x in lines), (line, lines)
    first = dump(state, "/etc/pen.cfg", WALL)
    fresh = make_state()
    fresh.servers = []
    for line in first:
        lines, _ = run(fresh, line)
        assert all(not x.startswith(("do_cmd", "server:", "acl:")) for x in lines), lines
    assert dump(fresh, "/etc/pen.cfg", WALL) == first
    # a server without an ACL (-1) is written as pen's default, acl 0
    # (an empty ACL 0 permits everybody, so the two behave the same)
    for s in state.servers:
        s.acl = max(s.acl, 0)
    assert snapshot(fresh)[2] == snapshot(state)[2]
    assert fresh.settings == state.settings
    assert [r.text() for r in fresh.acls[1]] == [r.text() for r in state.acls[1]]


def test_round_trip_of_defaults(state):
    first = dump(state, "/x", WALL)
    fresh = make_state()
    for line in first:
        run(fresh, line)
    assert fresh.settings == state.settings
    assert dump(fresh, "/x", WALL) == first


# --- config files ------------------------------------------------------------------------------

def test_load_config_reports_bad_lines_and_applies_good_ones(state, tmp_path):
    cfg = tmp_path / "pen.cfg"
    cfg.write_text("# a comment\n\nblacklist 12\nblacklist abc\nserver 0 max 4\n"
                   "bogus\nserver 7 max 1\nlog /tmp/x.log\ntracking 5 # trailing\n")
    effects, errors = load_config(str(cfg), state, NOW, WALL)
    assert errors == [
        f"{cfg}:4: blacklist: seconds must be a whole number, got 'abc'",
        f"{cfg}:6: do_cmd: ignoring command starting with 'bogus'",
        f"{cfg}:7: server: index 7 out of range (0-2; 2 adds a new server)"]
    assert effects == [("log", "/tmp/x.log", None)]
    assert state.settings.blacklist_time == 12
    assert state.servers[0].max == 4
    assert state.settings.tracking == 5


def test_load_config_includes_nest_and_loops_are_caught(state, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.cfg").write_text("blacklist 1\ninclude sub/b.cfg\ntracking 3\n")
    (tmp_path / "sub" / "b.cfg").write_text("timeout 9\ninclude ../a.cfg\nbad line\n")
    effects, errors = load_config(str(tmp_path / "a.cfg"), state, NOW, WALL)
    assert state.settings.connect_timeout == 9 and state.settings.tracking == 3
    assert len(errors) == 2
    assert errors[0].startswith(f"{tmp_path / 'a.cfg'}:2: {tmp_path / 'sub' / 'b.cfg'}:2: ")
    assert "include loop" in errors[0]
    assert errors[1] == (f"{tmp_path / 'a.cfg'}:2: {tmp_path / 'sub' / 'b.cfg'}:3: "
                         "do_cmd: ignoring command starting with 'bad'")


def test_load_config_missing_file(state, tmp_path):
    effects, errors = load_config(str(tmp_path / "none.cfg"), state)
    assert effects == [] and errors == [
        f"{tmp_path / 'none.cfg'}: cannot read: No such file or directory"]


def test_apply_of_none_and_split():
    assert apply(make_state(), None) == ([], [])
    assert commands.split("blacklist 5\r\nmode\n") == ["blacklist", "5"]
    assert commands.split("  a\tb  #c d") == ["a", "b"]


def test_effects_are_small_named_types(state):
    from pen import effects
    _, out = run(state, "write /tmp/x.cfg")
    assert out == [effects.Write("/tmp/x.cfg")] and type(out[0]) is effects.Write
    assert out[0].name == "write" and out[0].args == ("/tmp/x.cfg",)
    assert repr(out[0]) == "Write('/tmp/x.cfg',)"
    assert effects.Close(7) == ("close", 7)          # still the tuple underneath
    _, out = run(state, "no log")
    assert type(out[0]) is effects.Log and out[0].args == (None,)


def test_paths_with_blanks_and_quotes_survive_write(state, tmp_path):
    odd = str(tmp_path / 'my logs/pen "x".log')
    for line in (f'log "{odd.replace(chr(34), chr(92) + chr(34))}"',
                 'trafficlog "/var/tmp/#dumps/t.log"', "web_stats /tmp/plain.html"):
        assert not any(x.startswith(line.split()[0] + ":") for x in run(state, line)[0]), line
    assert state.settings.logfile == odd
    first = dump(state, "/x", WALL)
    assert "web_stats /tmp/plain.html" in first          # a plain path stays as pen writes it
    fresh = make_state()
    for line in first:
        run(fresh, line)
    assert fresh.settings.logfile == odd
    assert fresh.settings.trafficlog == "/var/tmp/#dumps/t.log"
    assert dump(fresh, "/x", WALL) == first
