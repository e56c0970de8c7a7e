"""penlog: pipe web server log lines to penlogd over UDP (penlog(1)).

    penlog server_ip server_port [my_ip]

Reads lines on stdin (Apache's CustomLog "|penlog lbhost 10000" common,
or nginx through a pipe) and sends each as one datagram.  penlogd knows the
web server by the datagram's source address, which must be the address pen
has for it: my_ip picks it on a host with several.  `penlog host:port`, the
form in pen's manual page, is taken too.
"""

import socket
import sys

from .addr import parse_hostport
from .errors import ConfigError

DATAGRAM_MAX = 65507      # the largest UDP payload over IPv4
USAGE = "usage: penlog server_ip server_port [my_ip]"


def parse_args(argv):
    """(host, port, my_ip or None); ConfigError says what was wrong."""
    if len(argv) == 1 or (len(argv) == 2 and not (argv[1].isascii() and argv[1].isdigit())):
        host, port = parse_hostport(argv[0], what="penlogd address")
        return host, port, (argv[1] if len(argv) == 2 else None)
    if len(argv) not in (2, 3):
        raise ConfigError(f"expected penlogd's address and port ({USAGE})")
    host, port = argv[0], argv[1]
    if not (port.isascii() and port.isdigit() and len(port) <= 5) \
            or not 0 < int(port) < 65536:
        raise ConfigError(f"port {port!r}: expected a number 1-65535")
    return host, int(port), (argv[2] if len(argv) == 3 else None)


def open_socket(host, port, my_ip):
    """(socket, address) for sending to penlogd, bound to my_ip if given."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot resolve {host!r}: {getattr(e, 'strerror', None) or e}") from None
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if my_ip:
        try:
            local = socket.getaddrinfo(my_ip, 0, family, socket.SOCK_DGRAM)[0][4]
            sock.bind(local)
        except (socket.gaierror, UnicodeError, OSError) as e:
            sock.close()
            raise ConfigError(f"cannot send from {my_ip!r}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
    return sock, addr


def pump(lines, sock, addr, err=sys.stderr):
    """Send every line; report the first failure only (a piped log must
    never stop the web server), return how many were sent."""
    sent = failed = 0
    for line in lines:
        try:
            sock.sendto(line[:DATAGRAM_MAX], addr)
            sent += 1
        except OSError as e:
            if not failed:
                err.write(f"penlog: cannot send to {addr[0]} port {addr[1]}: {e.strerror}\n")
            failed += 1
    return sent


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        host, port, my_ip = parse_args(argv)
        sock, addr = open_socket(host, port, my_ip)
    except ConfigError as e:
        sys.stderr.write(f"penlog: {e}\n")
        return 1
    with sock:
        pump(sys.stdin.buffer, sock, addr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
