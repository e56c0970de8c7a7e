"""When fds run short, stalled connections give their splice pipes back
and go on through buffers, so new clients are still served (issue 9
item 6): 50 clients that do not read a fast backend's stream, under an
fd limit that 4 fds per connection would not fit."""

import resource
import socket

from conftest import Pen, ThreadedServer, free_port, wait_until

CLIENTS = 50
LIMIT = 160       # 50 x 4 fds (sockets + a pipe) would not fit; 50 x 2 does


class Firehose(ThreadedServer):
    """Sends data to every connection until it is closed."""

    def handle(self, conn):
        conn.settimeout(30)
        chunk = b"x" * 65536
        try:
            while not self.stopped.is_set():
                conn.sendall(chunk)
        except OSError:
            pass


def _limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_stalled_clients_give_their_pipes_back_and_all_are_served():
    hose = Firehose()
    port = free_port()
    pen = Pen(["-x", str(CLIENTS + 10), f"127.0.0.1:{port}", f"127.0.0.1:{hose.port}"],
              port=port, preexec_fn=_limit)
    clients = []
    try:
        for _ in range(CLIENTS):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            clients.append(c)
        # Every client gets data (none is left waiting in the accept queue).
        for c in clients:
            assert c.recv(1) == b"x"
        assert pen.proc.poll() is None
        assert wait_until(lambda: len(hose.conns) == CLIENTS)
    finally:
        for c in clients:
            c.close()
        pen.stop()
        hose.close()
