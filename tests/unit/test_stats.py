"""pen/stats.py: pen's page and line formats, and the machine formats."""

import json
import time

import pytest
from realconn import RealConns

from pen import stats
from pen.addr import parse_listen
from pen.servers import parse_backend
from pen.state import Settings, State

NOW = 5000.0
WALL = 1_700_000_000.0

# The page the reference pen 0.34.1 returned for `status` with two servers
# (server 1: weight 4, 60 bytes each way) and one client (4 connects).
OBSERVED_PAGE = """\
<html>
<head>
<title>Pen status page</title>
</head>
<body bgcolor="#ffffff"><h1>Pen status page</h1>
Time TIME, 2 servers, 1 current<p>
<table bgcolor="#c0c0c0">
<tr>
<td bgcolor="#80f080">server</td>
<td bgcolor="#80f080">address</td>
<td bgcolor="#80f080">status</td>
<td bgcolor="#80f080">port</td>
<td bgcolor="#80f080">connections</td>
<td bgcolor="#80f080">max soft</td>
<td bgcolor="#80f080">max hard</td>
<td bgcolor="#80f080">sent</td>
<td bgcolor="#80f080">received</td>
<td bgcolor="#80f080">weight</td>
<td bgcolor="#80f080">prio</td>
</tr>
<tr>
<td>0</td>
<td>127.0.0.1</td>
<td>0</td>
<td>49229</td>
<td>0</td>
<td>0</td>
<td>0</td>
<td>0</td>
<td>0</td>
<td>0</td>
<td>0</td>
</tr>
<tr>
<td>1</td>
<td>127.0.0.1</td>
<td>0</td>
<td>36321</td>
<td>0</td>
<td>0</td>
<td>0</td>
<td>60</td>
<td>60</td>
<td>4</td>
<td>0</td>
</tr>
</table>
<h2>Active clients</h2>Max number of clients: 2048<p><table bgcolor="#c0c0c0">
<tr>
<td bgcolor="#80f080">client</td>
<td bgcolor="#80f080">address</td>
<td bgcolor="#80f080">age(secs)</td>
<td bgcolor="#80f080">last server</td>
<td bgcolor="#80f080">connects</td>
<td bgcolor="#80f080">sent</td>
<td bgcolor="#80f080">received</td>
</tr>
<tr>
<td>0</td>
<td>127.0.0.1</td>
<td>1</td>
<td>1</td>
<td>4</td>
<td>60</td>
<td>60</td>
</tr>
</table>
<h2>Active connections</h2>Number of connections: 500 max, 0 used, 0 last<p><table bgcolor="#c0c0c0">
<tr>
<td bgcolor="#80f080">connection</td>
<td bgcolor="#80f080">downfd</td>
<td bgcolor="#80f080">upfd</td>
<td bgcolor="#80f080">pending data down</td>
<td bgcolor="#80f080">pending data up</td>
<td bgcolor="#80f080">client</td>
<td bgcolor="#80f080">server</td>
</tr>
</table>
</body>
</html>
"""


def make_state():
    st = Settings(listen=parse_listen("127.0.0.1:8000"))
    servers = [parse_backend("127.0.0.1:49229", 8000, 0),
               parse_backend("127.0.0.1:36321:0:0:4", 8000, 1)]
    state = State(st, servers)
    servers[1].sx = servers[1].rx = 60
    entry = state.clients.touch("127.0.0.1", NOW - 1, 0)
    entry.server, entry.connects, entry.sx, entry.rx = 1, 4, 60, 60
    state.last_server = 1
    return state


@pytest.fixture
def conns():
    made = []

    def make(state, relaying=True):
        real = RealConns(state)
        made.append(real)
        conn = real.make(3, relaying=relaying)
        if relaying:
            conn.c2s.pending, conn.c2s.eof = 7, True    # 7 bytes held for the server
        return conn
    yield make
    for real in made:
        real.close()


def test_status_page_matches_pens_layout():
    page = stats.status_html(make_state(), NOW, WALL)
    expected = OBSERVED_PAGE.replace("TIME", stats.local_time(WALL))
    assert page == expected


def test_status_page_lists_connections_and_blacklist(conns):
    state = make_state()
    conn = conns(state)
    down, up = conn.client.fileno(), conn.server.fileno()
    state.servers[0].blacklisted_until = NOW + 20
    page = stats.status_html(state, NOW, WALL)
    assert "<tr>\n<td>0</td>\n<td>127.0.0.1</td>\n<td>20</td>\n" in page
    assert (f"<tr>\n<td>3</td>\n<td>{down}</td>\n<td>{up}</td>\n<td>0</td>\n<td>7</td>\n"
            "<td>10.0.0.1</td>\n<td>0</td>\n</tr>\n") in page
    assert "500 max, 1 used, 3 last" in page


def test_conn_info_reads_relaying_and_connecting_conns(conns):
    state = make_state()
    info = stats.conn_info(conns(state))
    assert info["state"] == stats.CS_CONNECTED | stats.CS_CLOSED_DOWN
    assert (info["pending_up"], info["pending_down"], info["sx"], info["rx"]) == (7, 0, 0, 0)
    connecting = conns(state, relaying=False)
    info = stats.conn_info(connecting)
    assert info["state"] == stats.CS_IN_PROGRESS and info["pending_up"] == 0
    connecting.client.close()
    assert stats.conn_info(connecting)["downfd"] == -1


def test_lines(conns):
    state = make_state()
    assert stats.server_lines(state)[1] == (
        "1 addr 127.0.0.1 port 36321 conn 0 max 0 hard 0 weight 4 prio 0 sx 60 rx 60")
    assert stats.recent_lines(state, 300, NOW) == ["127.0.0.1 connects 4 sx 60 rx 60"]
    assert stats.mode_line(state.settings) == (
        "no hash no roundrobin no stubborn no weight no prio")
    conn = conns(state)
    assert stats.connection_lines(3, conn) == [
        "Connection 3:", "state = 10",
        f"downfd = {conn.client.fileno()}, upfd = {conn.server.fileno()}",
        "client = 10.0.0.1, server = 0", "pend = 0"]


def test_text_stats(conns):
    state = make_state()
    conn = conns(state)
    lines = stats.text_stats(state, NOW, WALL)
    assert lines[0] == f"Time {stats.local_time(WALL)}, 2 servers, 1 current, 1 connections"
    assert lines[2].startswith("Server 1 status: address 127.0.0.1 port 36321")
    assert "Client 0 status: address 127.0.0.1 last used 1 last server 1" in lines[5]
    assert lines[-1].startswith(f"Connection 3 status: downfd = {conn.client.fileno()}, "
                                f"upfd = {conn.server.fileno()}")


def test_status_json(conns):
    state = make_state()
    conns(state)
    state.servers[1].disabled = True
    doc = json.loads(stats.status_json(state, NOW, WALL))
    assert doc["time"] == int(WALL)
    assert doc["servers"][1]["weight"] == 4 and doc["servers"][1]["up"] is False
    assert doc["servers"][0]["up"] is True
    assert doc["clients"] == [{"address": "127.0.0.1", "age": 1, "server": 1,
                               "connects": 4, "sx": 60, "rx": 60}]
    assert doc["connections"][0]["pending_up"] == 7
    assert doc["counters"]["accepted"] == 0


def test_prometheus():
    state = make_state()
    state.servers[0].blacklisted_until = NOW + 5
    text = stats.prometheus(state, NOW)
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "# TYPE pen_server_up gauge" in lines
    assert 'pen_server_up{server="0",address="127.0.0.1",port="49229"} 0' in lines
    assert 'pen_server_sent_bytes_total{server="1",address="127.0.0.1",port="36321"} 60' in lines
    assert "pen_clients 1" in lines
    assert "pen_accepted_total 0" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_local_time_format():
    assert stats.local_time(WALL) == time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.localtime(WALL))
