"""PURE statistics: State -> text, as pen prints it, plus machine formats.

- `server_lines`, `mode_line`, `recent_lines`, `connection_lines`: the
  replies of `servers`, `mode`, `recent`, `connection N`, in pen's formats;
- `status_html`: the `status` command and the -w file (pen's webstats page);
- `text_stats`: what SIGUSR1 logs when there is no -w file;
- `status_json` (`status json`) and `prometheus` (`status prometheus`): our
  machine-readable extensions.

Times: `now` is time.monotonic() (the clock of Server.status and
ClientEntry.last), `wall` is time.time() for the printed date.
Connections are relay.Conn objects; they are read defensively through
`conn_info`, so a stats page never fails on a half-built connection.
"""

import json
import time

# pen's connection state bits (conn.h)
CS_IN_PROGRESS, CS_CONNECTED, CS_CLOSED_UP, CS_CLOSED_DOWN = 1, 2, 4, 8

HEAD = '<td bgcolor="#80f080">%s</td>\n'


def local_time(wall):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def blacklisted_for(server, now):
    """Seconds of blacklisting left (0 when the server is not blacklisted)."""
    return max(0, int(round(server.status - now))) if server.status > now else 0


def mode_line(st):
    """`mode`: pen's five flags, then our extension algorithm if one is set."""
    words = [("" if on else "no ") + name for name, on in (
        ("hash", st.hash), ("roundrobin", st.roundrobin), ("stubborn", st.stubborn),
        ("weight", st.weight), ("prio", st.prio))]
    algorithm = getattr(st, "algorithm", None)
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


def _entry_server(entry):
    return -1 if entry.server is None else entry.server


def recent_lines(state, seconds, now):
    """`recent [N]`: clients seen in the last N seconds.  As pen's, sx is
    what was sent to the client and rx what came from it (the entry counts
    the other way round: sx to the server, rx from it)."""
    since = now - seconds
    return ["%s connects %d sx %d rx %d" % (ip, e.connects, e.rx, e.sx)
            for ip, e in state.clients.entries.items() if e.last >= since]


def _fileno(sock):
    try:
        return sock.fileno() if sock is not None else -1
    except (AttributeError, OSError, ValueError):
        return -1


def _pending(pump):
    return getattr(pump, "pending", 0) if pump is not None else 0


def conn_info(conn):
    """The facts about a relay.Conn that the pages show, read defensively."""
    c2s = getattr(conn, "c2s", None)      # client -> server ("up")
    s2c = getattr(conn, "s2c", None)      # server -> client ("down")
    phase = getattr(conn, "phase", None)
    bits = 0
    if phase == "CONNECTING":
        bits = CS_IN_PROGRESS
    elif phase == "RELAYING":
        bits = CS_CONNECTED
        if getattr(s2c, "eof", False):
            bits |= CS_CLOSED_UP
        if getattr(c2s, "eof", False):
            bits |= CS_CLOSED_DOWN
    index = getattr(conn, "index", None)
    if index is None:
        index = -1
    return {
        "id": getattr(conn, "id", -1),
        "phase": phase or "UNKNOWN",
        "state": bits,
        "downfd": _fileno(getattr(conn, "client", None)),
        "upfd": _fileno(getattr(conn, "server", None)),
        "client": getattr(conn, "client_ip", None) or "unix",
        "client_port": getattr(conn, "client_port", 0) or 0,
        "server": index,
        "pending_down": _pending(s2c),
        "pending_up": _pending(c2s),
        "sx": getattr(conn, "sx", 0) or 0,
        "rx": getattr(conn, "rx", 0) or 0,
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
                     f"{'disabled ' if s.disabled else ''}"
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
    names = getattr(type(counters), "__slots__", None) or vars(counters)
    return {name: getattr(counters, name, 0) for name in names}


def _server_dict(i, s, now):
    return {"index": i, "address": s.addr, "host": s.host, "port": s.port or 0,
            "conn": s.conn, "max": s.max, "hard": s.hard, "weight": s.weight,
            "prio": s.prio, "acl": s.acl, "sx": s.sx, "rx": s.rx,
            "connects": getattr(s, "connects", 0),
            "blacklisted_for": blacklisted_for(s, now), "disabled": s.disabled,
            "up": s.status <= now and not s.disabled and s.sockaddr is not None}


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
           [(lb, int(s.status <= now and not s.disabled and s.sockaddr is not None))
            for lb, s in servers])
    metric("pen_server_connections", "gauge", "Current connections to the server.",
           [(lb, s.conn) for lb, s in servers])
    metric("pen_server_connections_total", "counter",
           "Connections made to the server.",
           [(lb, getattr(s, "connects", 0)) for lb, s in servers])
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
