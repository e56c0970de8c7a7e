"""When fds run short, stalled connections give their splice pipes back
and go on through buffers, so new clients are still served (issue 9
item 6): 50 clients that do not read a fast backend's stream, under an
fd limit that 4 fds per connection would not fit."""

import resource
import socket
import threading

from conftest import Pen, free_port, wait_until

CLIENTS = 50
LIMIT = 160       # 50 x 4 fds (sockets + a pipe) would not fit; 50 x 2 does


class Firehose:
    """Sends data to every connection until it is closed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._pour, args=(conn,), daemon=True).start()

    def _pour(self, conn):
        conn.settimeout(30)
        chunk = b"x" * 65536
        try:
            while not self.stopped.is_set():
                conn.sendall(chunk)
        except OSError:
            pass

    def close(self):
        self.stopped.set()
        self.sock.close()
        for conn in self.conns:
            conn.close()


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
