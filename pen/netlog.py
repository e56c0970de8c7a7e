"""PURE: the lines of pen's logs, built (pen) and read (penlogd, mergelogs).

- The file log (`-l FILE`): `CLIENT WHEN SERVER REQUEST`, WHEN in seconds
  since the epoch (what mergelogs reads).
- The network log (`-l HOST:PORT`): one datagram `+ CLIENT SERVER REQUEST\\n`
  of at most NETLOG_MAX bytes (what penlogd reads), as pen.c's netlog().
"""

NETLOG_MAX = 1024         # pen.c's buffer for one network log datagram
FIELD_MAX = 99            # penlogd keeps this much of each field (sscanf %99[^ ])


def netlog_line(file_line):
    """The network log datagram for one file log line."""
    client, _when, server, request = (file_line.split(" ", 3) + ["", "", ""])[:4]
    head = f"+ {client} {server} ".encode("latin-1", "replace")
    request = request.split("\r", 1)[0].split("\n", 1)[0]
    body = request.encode("latin-1", "replace")[:NETLOG_MAX - len(head) - 1]
    return head + body + b"\n"


def parse_netlog(data):
    """(client, server, request) from a `+ CLIENT SERVER REQUEST` datagram,
    each cut to FIELD_MAX characters as penlogd does, or None if it is not
    one."""
    text = data.decode("latin-1")
    if not text.startswith("+ "):
        return None
    parts = text[2:].split("\n", 1)[0].split(" ", 2)
    if len(parts) != 3 or not all(parts):
        return None
    client, server, request = (p[:FIELD_MAX] for p in parts)
    return client, server, request


def parse_file_log(line):
    """(client, when, server, request) from a `-l FILE` line, or None."""
    parts = line.rstrip("\r\n").split(None, 3)
    if len(parts) != 4:
        return None
    client, when, server, request = parts
    try:
        when = int(when)
    except ValueError:
        return None
    return client, when, server, request
