"""Real relay.Conn objects for unit tests of the pages and commands that
show connections: built over socketpairs (no network) and owned by a real
Service, so a change to Conn or Pump shows up here as it would in pen."""

import socket

from pen.relay import RELAYING, Conn, Pump
from pen.service import Service


class RealConns:
    def __init__(self, state):
        self.service = Service(state, reactor=None)
        self.socks = []

    def make(self, conn_id=3, client_ip="10.0.0.1", client_port=4000, index=0,
             relaying=True):
        """A Conn from client_ip to server `index`, relaying (both pumps
        built, as after the connect) or still connecting."""
        state = self.service.state
        peer, client = socket.socketpair()
        backend, server = socket.socketpair()
        self.socks += [peer, client, backend, server]
        conn = Conn(conn_id, self.service, client, (client_ip, client_port),
                    client_ip, client_port)
        conn.server, conn.index, conn.target = server, index, state.servers[index]
        if relaying:
            conn.phase = RELAYING
            pools = self.service.pools
            conn.c2s = Pump(client, server, pools, False)
            conn.s2c = Pump(server, client, pools, False)
        state.conns[conn_id] = conn
        return conn

    def close(self):
        for sock in self.socks:
            sock.close()
