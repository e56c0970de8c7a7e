"""The last resort (SPEC §10.2): a lone backend that refused once, or a
lone UDP backend that went away, is used again as soon as it is back --
not after the whole -b blacklist time -- with no health check configured."""

import socket
import time

from conftest import Backend, Pen, connect, free_port, read_line, wait_until

RECOVERY = 3.0      # seconds the issue allows


def test_a_lone_tcp_backend_is_retried_at_once_when_it_is_back(pen):
    bport = free_port()
    port = free_port()
    pen("-b", "30", f"127.0.0.1:{port}", f"127.0.0.1:{bport}", port=port)
    with connect(port) as s:                  # nothing there: refused, blacklisted
        assert s.recv(10) == b""
    backend = Backend("B", port=bport)
    try:
        started = time.monotonic()

        def served():
            try:
                with connect(port, timeout=1.0) as s:
                    return read_line(s) == "B"
            except OSError:
                return False
        assert wait_until(served, timeout=RECOVERY)
        assert time.monotonic() - started < RECOVERY
        assert all(served() for _ in range(3))     # and it stays in service
    finally:
        backend.close()


def _udp_echo(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.1)
    return sock


def _answer(sock, rounds=20):
    for _ in range(rounds):
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        sock.sendto(b"back:" + data, addr)
        return


def test_a_lone_udp_backend_is_used_again_at_once_when_it_is_back():
    bport = free_port(socket.SOCK_DGRAM)
    port = free_port(socket.SOCK_DGRAM)
    p = Pen(["-U", "-b", "30", f"127.0.0.1:{port}", f"127.0.0.1:{bport}"], port=port, udp=True)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(0.3)
    backend = None
    try:
        for i in range(3):                    # nobody there: ICMP refusals blacklist it
            client.sendto(b"lost %d" % i, ("127.0.0.1", port))
            time.sleep(0.05)
        backend = _udp_echo(bport)
        started = time.monotonic()
        got = None
        for i in range(30):
            client.sendto(b"hello %d" % i, ("127.0.0.1", port))
            _answer(backend, rounds=3)
            try:
                got = client.recv(100)
                break
            except socket.timeout:
                continue
        assert got is not None and got.startswith(b"back:hello")
        assert time.monotonic() - started < RECOVERY
    finally:
        client.close()
        if backend is not None:
            backend.close()
        p.stop()
