"""PURE statistics: State -> text, as pen prints it, plus machine formats.

- `server_lines`, `mode_line`, `recent_lines`, `connection_lines`: the
  replies of `servers`, `mode`, `recent`, `connection N`, in pen's formats;
- `status_html`: the `status` command and the -w file (pen's webstats page);
- `text_stats`: what SIGUSR1 logs when there is no -w file;
- `status_json` (`status json`) and `prometheus` (`status prometheus`): our
  machine-readable extensions.

Times: `now` is time.monotonic() (the clock of Server.blacklisted_until and
ClientEntry.last), `wall` is time.time() for the printed date.
Connections are relay.Conn objects, read through
`conn_info`, which also reads connections that are still connecting.
"""

import json
import time

from .servers import BLACKLISTED, STATES, UP

# pen's connection state bits (conn.h)
CS_IN_PROGRESS, CS_CONNECTED, CS_CLOSED_UP, CS_CLOSED_DOWN = 1, 2, 4, 8

HEAD = '<td bgcolor="#80f080">%s</td>\n'


def local_time(wall):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def blacklisted_for(server, now):
    """Seconds of blacklisting left (0 when the server is not blacklisted)."""
    left = server.blacklisted_until - now
    return max(0, int(round(left))) if left > 0 else 0


def mode_line(st):
    """`mode`: pen's five flags, then our extension algorithm if one is set."""
    words = [("" if on else "no ") + name for name, on in (
        ("hash", st.hash), ("roundrobin", st.roundrobin), ("stubborn", st.stubborn),
        ("weight", st.weight), ("prio", st.prio))]
    algorithm = st.algorithm
    if algorithm:
        words.append(algorithm)
        if st.algorithm_over:                      # issue 11: bysize/byduration over N
            words.append(f"over {st.algorithm_over}")
    return " ".join(words)


def server_lines(state):
    """`servers`: one line per server, pen's format."""
    return ["%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %d rx %d" % (
        i, s.addr, s.port or 0, s.conn, s.max, s.hard, s.weight, s.prio, s.sx, s.rx)
        for i, s in enumerate(state.servers)]


def server_detail(state, i, now):
    """Bare `server N`: pen's `servers` line, then the state and check figures."""
    s = state.servers[i]
    c = s.check
    return [server_lines(state)[i],
            f"state {s.state(now)} blacklisted_for {blacklisted_for(s, now)} "
            f"failures {s.failures} check passed {c.passed} failed {c.failed} "
            f"last {c.last or '-'}",
            load_line(state, i)]


def load_line(state, i):
    """issue 11: server i's bysize/byduration figures (what the choice
    compares, before the weight divides them), decay and dump file."""
    f = state.loads.get(i)
    over = state.settings.algorithm_over
    figures = (f.count, f.figure("bysize", over), f.figure("byduration", over),
               f.decay) if f is not None else (0, 0.0, 0.0, 0)
    line = "finished %d avg_bytes %.0f avg_seconds %.6f decay %d" % figures
    path = state.settings.server_trafficlogs.get(i)
    return f"{line} trafficlog {path}" if path else line


def _entry_server(entry):
    return -1 if entry.server is None else entry.server


def recent_lines(state, seconds, now):
    """`recent [N]`: clients seen in the last N seconds.  As pen's, sx is
    what was sent to the client and rx what came from it."""
    since = now - seconds
    return ["%s connects %d sx %d rx %d" % (ip, e.connects, e.sx, e.rx)
            for ip, e in state.clients.entries.items() if e.last >= since]


def _fileno(sock):
    return sock.fileno() if sock is not None else -1


def conn_info(conn):
    """The facts about a relay.Conn that the pages show.  Before the
    server connect there are no pumps, during the stages no server."""
    c2s, s2c = conn.c2s, conn.s2c     # client -> server ("up"), back ("down")
    phase = conn.phase
    bits = 0
    if phase == "CONNECTING":
        bits = CS_IN_PROGRESS
    elif phase == "RELAYING":
        bits = CS_CONNECTED
        if s2c.eof:
            bits |= CS_CLOSED_UP
        if c2s.eof:
            bits |= CS_CLOSED_DOWN
    return {
        "id": conn.id,
        "phase": phase,
        "state": bits,
        "downfd": _fileno(conn.client),
        "upfd": _fileno(conn.server),
        "client": conn.client_ip or "unix",
        "client_port": conn.client_port or 0,
        "server": -1 if conn.index is None else conn.index,
        "pending_down": s2c.pending if s2c is not None else 0,
        "pending_up": c2s.pending if c2s is not None else 0,
        "sx": conn.sx,
        "rx": conn.rx,
    }


def connection_lines(conn_id, conn):
    """`connection N` for a live connection (pen's layout; `client` is the
    client's address where pen printed its client-table slot)."""
    i = conn_info(conn)
    return [f"Connection {conn_id}:",
            f"state = {i['state']}",
            f"downfd = {i['downfd']}, upfd = {i['upfd']}",
            f"client = {i['client']}, server = {i['server']}",
            f"pend = {1 if i['state'] == CS_IN_PROGRESS else 0}"]


def empty_connection_lines(conn_id):
    """`connection N` for an unused slot, exactly as pen prints it."""
    return [f"Connection {conn_id}:", "state = 0", "downfd = -1, upfd = -1",
            "client = 0, server = 0", "pend = 0"]


def _row(cells):
    return "<tr>\n" + "".join(f"<td>{c}</td>\n" for c in cells) + "</tr>\n"


def status_html(state, now, wall):
    """pen's HTML status page (webstats), byte for byte in layout."""
    st = state.settings
    out = ["<html>\n<head>\n<title>Pen status page</title>\n</head>\n"
           '<body bgcolor="#ffffff"><h1>Pen status page</h1>\n',
           f"Time {local_time(wall)}, {len(state.servers)} servers, "
           f"{state.last_server} current<p>\n",
           '<table bgcolor="#c0c0c0">\n<tr>\n']
    out += [HEAD % h for h in ("server", "address", "status", "port", "connections",
                               "max soft", "max hard", "sent", "received",
                               "weight", "prio")]
    out.append("</tr>\n")
    for i, s in enumerate(state.servers):
        out.append(_row((i, s.addr, blacklisted_for(s, now), s.port or 0, s.conn,
                         s.max, s.hard, s.sx, s.rx, s.weight, s.prio)))
    out.append("</table>\n")
    out.append("<h2>Active clients</h2>")
    out.append(f"Max number of clients: {st.clients_max}<p>")
    out.append('<table bgcolor="#c0c0c0">\n<tr>\n')
    out += [HEAD % h for h in ("client", "address", "age(secs)", "last server",
                               "connects", "sent", "received")]
    out.append("</tr>\n")
    for i, (ip, e) in enumerate(state.clients.entries.items()):
        out.append(_row((i, ip, int(max(0, now - e.last)), _entry_server(e),
                         e.connects, e.sx, e.rx)))
    out.append("</table>\n")
    out.append("<h2>Active connections</h2>")
    last = max(state.conns, default=0)     # pen: the highest slot in use
    out.append(f"Number of connections: {st.conn_max} max, {len(state.conns)} used, "
               f"{last} last<p>")
    out.append('<table bgcolor="#c0c0c0">\n<tr>\n')
    out += [HEAD % h for h in ("connection", "downfd", "upfd", "pending data down",
                               "pending data up", "client", "server")]
    out.append("</tr>\n")
    for conn_id in sorted(state.conns):
        i = conn_info(state.conns[conn_id])
        out.append(_row((conn_id, i["downfd"], i["upfd"], i["pending_down"],
                         i["pending_up"], i["client"], i["server"])))
    out.append("</table>\n</body>\n</html>\n")
    return "".join(out)


def text_stats(state, now, wall):
    """SIGUSR1 without -w: the statistics as log lines (pen's textstats)."""
    st = state.settings
    lines = [f"Time {local_time(wall)}, {len(state.servers)} servers, "
             f"{state.last_server} current, {len(state.conns)} connections"]
    for i, s in enumerate(state.servers):
        lines.append(f"Server {i} status: address {s.addr} port {s.port or 0} "
                     f"blacklisted {blacklisted_for(s, now)}s "
                     f"{'' if s.state(now) in (UP, BLACKLISTED) else s.state(now) + ' '}"
                     f"{s.conn} connections ({s.max} soft, {s.hard} hard) "
                     f"{s.sx} sent, {s.rx} received")
    lines.append(f"Max number of clients: {st.clients_max}")
    lines.append("Active clients:")
    for i, (ip, e) in enumerate(state.clients.entries.items()):
        lines.append(f"Client {i} status: address {ip} last used "
                     f"{int(max(0, now - e.last))} last server {_entry_server(e)} "
                     f"connects {e.connects} sent {e.sx} received {e.rx}")
    lines.append(f"Max number of connections: {st.conn_max}")
    lines.append("Active connections:")
    for conn_id in sorted(state.conns):
        i = conn_info(state.conns[conn_id])
        lines.append(f"Connection {conn_id} status: downfd = {i['downfd']}, "
                     f"upfd = {i['upfd']}, pending data {i['pending_down']} down, "
                     f"{i['pending_up']} up, client {i['client']}, server {i['server']}")
    return lines


def _counters(state):
    counters = state.counters
    return {name: getattr(counters, name) for name in type(counters).__slots__}


def _server_dict(i, s, now):
    return {"index": i, "address": s.addr, "host": s.host, "port": s.port or 0,
            "conn": s.conn, "max": s.max, "hard": s.hard, "weight": s.weight,
            "prio": s.prio, "acl": s.acl, "sx": s.sx, "rx": s.rx,
            "connects": s.connects,
            "blacklisted_for": blacklisted_for(s, now), "disabled": s.disabled,
            "state": s.state(now), "check": s.check.as_dict(),
            "up": s.available(now)}


def status_json(state, now, wall):
    """`status json`: everything the HTML page shows, as one JSON object."""
    st = state.settings
    doc = {
        "time": int(wall),
        "listen": str(st.listen) if st.listen is not None else None,
        "mode": mode_line(st),
        "blacklist": st.blacklist_time,
        "tracking": st.tracking,
        "clients_max": st.clients_max,
        "conn_max": st.conn_max,
        "servers": [_server_dict(i, s, now) for i, s in enumerate(state.servers)],
        "emergency": (_server_dict("emergency", state.emergency, now)
                      if state.emergency is not None else None),
        "abuse": (_server_dict("abuse", state.abuse, now)
                  if state.abuse is not None else None),
        "clients": [{"address": ip, "age": int(max(0, now - e.last)),
                     "server": _entry_server(e), "connects": e.connects,
                     "sx": e.sx, "rx": e.rx}
                    for ip, e in state.clients.entries.items()],
        "connections": [conn_info(state.conns[c]) for c in sorted(state.conns)],
        "counters": _counters(state),
    }
    # --- issue 10: the health check settings (each server has its "check" figures)
    doc["check"] = {"interval": st.check_interval, "probe": " ".join(st.check.words()),
                    "rise": st.check_rise, "fall": st.check_fall,
                    "ports": {str(i): s.extra["check_port"]
                              for i, s in enumerate(state.servers) if s.extra.get("check_port")}}
    # --- end issue 10
    return json.dumps(doc, sort_keys=True)


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(state, now):
    """`status prometheus`: Prometheus text exposition format 0.0.4."""
    out = []

    def metric(name, kind, help_text, samples):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                out.append(f"{name}{{{text}}} {value}")
            else:
                out.append(f"{name} {value}")

    servers = [({"server": str(i), "address": s.addr, "port": str(s.port or 0)}, s)
               for i, s in enumerate(state.servers)]
    metric("pen_server_up", "gauge", "1 if the server takes new clients.",
           [(lb, int(s.available(now))) for lb, s in servers])
    metric("pen_server_state", "gauge", "1 for the state the server is in.",
           [({**lb, "state": name}, int(s.state(now) == name))
            for lb, s in servers for name in STATES])
    metric("pen_server_connections", "gauge", "Current connections to the server.",
           [(lb, s.conn) for lb, s in servers])
    metric("pen_server_connections_total", "counter",
           "Connections made to the server.",
           [(lb, s.connects) for lb, s in servers])
    metric("pen_server_sent_bytes_total", "counter", "Bytes sent to the server.",
           [(lb, s.sx) for lb, s in servers])
    metric("pen_server_received_bytes_total", "counter",
           "Bytes received from the server.", [(lb, s.rx) for lb, s in servers])
    metric("pen_connections", "gauge", "Open client connections.",
           [({}, len(state.conns))])
    metric("pen_clients", "gauge", "Clients in the client table.",
           [({}, len(state.clients))])
    for name, value in _counters(state).items():
        metric(f"pen_{name}_total", "counter", f"Total {name.replace('_', ' ')}.",
               [({}, value)])
    return "\n".join(out) + "\n"
