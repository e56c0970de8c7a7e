"""PROXY protocol out: the header a Conn writes to its server first.

`proxy_protocol v1|v2` (or `server N proxy_protocol ...`) makes every new
server connection start with a PROXY header (pen/proxyproto.py) carrying
the client's address as source and the address the client connected to --
pen's own listening address and port -- as destination.  It is written
straight to the server socket once the connect has completed, before any
client byte and outside the c2s pump's filter and dumps, so the connection
then relays as any other (spliced when plain TCP).
"""

import logging

from .proxyproto import build_v1, build_v2

log = logging.getLogger("pen")

SOFT = (BlockingIOError, InterruptedError)


def version_for(settings, index):
    """"v1", "v2" or None: the header to send to server `index`."""
    version = settings.server_proxy_protocol.get(index) or settings.proxy_protocol
    return None if version == "off" else version


def header_for(conn, version):
    """The header for conn: its client (the address a PROXY header from a
    front balancer carried, when accept_proxy read one) and the address the
    client connected to."""
    client = conn.client
    try:
        src, dst = client.getpeername(), client.getsockname()
    except OSError:          # the client is already gone: say nothing about it
        src = dst = None
    if src is not None and conn.facts is not None and "proxied_by" in conn.facts:
        src = (conn.client_ip, conn.client_port)
    return build_v1(src, dst) if version == "v1" else build_v2(src, dst)


def send_header(conn, c2s, preread):
    """Write the header conn's server wants, if any, before everything else.

    A short send (the header is far smaller than any socket buffer, so
    hardly ever) leaves the rest in the c2s pump's pending buffer, followed
    by the stages' bytes (`preread`) run through the pump's dump and filter
    as Pump.hold would; the Conn then waits for EVENT_WRITE as for any held
    bytes.  Returns the preread the caller still has to hold (None when it
    is held here).  Raises OSError when the server socket fails.
    """
    version = version_for(conn.settings, conn.index)
    if version is None:
        return preread
    header = header_for(conn, version)
    try:
        sent = conn.server.send(header)
    except SOFT:
        sent = 0
    if sent == len(header):
        return preread
    log.debug("conn %d: PROXY header: %d of %d bytes sent, holding the rest",
              conn.id, sent, len(header))
    data = bytes(preread or b"")
    if data:
        if c2s.dump is not None:
            c2s.dump(memoryview(data))
        if c2s.filter is not None:
            data = bytes(c2s.filter.feed(memoryview(data)))
    c2s.out = memoryview(header[sent:] + data)
    c2s.pending = len(c2s.out)
    return None
