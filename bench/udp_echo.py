"""A tiny UDP echo backend for the benchmark: python udp_echo.py HOST LIFETIME.

Binds HOST port 0, prints the port on stdout, then sends every datagram back
to its sender.  It exits by itself after LIFETIME seconds (SIGALRM), so it
can never be left running; the harness normally stops it by PID long before.
"""

import signal
import socket
import sys


def main():
    host, lifetime = sys.argv[1], int(sys.argv[2])
    signal.alarm(max(1, lifetime))          # default action: terminate
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, 0))
    print(sock.getsockname()[1], flush=True)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:                             # bounded by the alarm above
        data, addr = recvfrom(65536)
        try:
            sendto(data, addr)
        except OSError:
            pass                            # a full buffer drops, like UDP


if __name__ == "__main__":
    main()
