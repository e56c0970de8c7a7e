"""The floor: a bare Python TCP relay, to measure how fast Python can go.

    python bench/run.py --ours-cmd "python bench/floor.py" --scenarios newconn,keepalive
    python bench/profiling.py --ours-cmd "python bench/floor.py" --tool strace

It takes pen's command line as bench/services.py gives it (`-f -r -x N
[host:]port server...`, other options ignored), and does only what every
relay must: accept, connect to the next server (round robin), splice both
ways through one pipe each, pass a half-close on, close.  No ACLs, logs,
limits, failover, timers or statistics: what our pen costs beyond this is
the price of its features and its structure.  One thread, one epoll,
level-triggered, the same system calls our pen makes on its fast path.  It waits for a
slow destination in select() (no backpressure handling): for the newconn
and keepalive scenarios only.
"""

import errno
import os
import select
import signal
import socket
import sys

BUF = 65536
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
IN = select.EPOLLIN


def parse(argv):
    skip = {"-x", "-c", "-t"}         # options with a value
    addrs = [a for i, a in enumerate(argv)
             if not a.startswith("-") and (i == 0 or argv[i - 1] not in skip)]

    def split(text):
        host, _, port = text.rpartition(":")
        return (host or "0.0.0.0", int(port))
    return split(addrs[0]), [split(a) for a in addrs[1:]]


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # exit() as pen does: tools' reports get written
    listen, servers = parse(argv)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(listen)
    lsock.listen(4096)
    lsock.setblocking(False)
    lfd = lsock.fileno()
    ep = select.epoll()
    ep.register(lfd, IN)
    peer = {}        # fd -> [own socket, other fd, pipe (r, w), shut-other flag list]
    pipes = []
    nxt = 0
    splice = os.splice
    while True:
        for fd, ev in ep.poll(1.0, 1024):
            if fd == lfd:
                for _ in range(64):
                    try:
                        cfd, _ = lsock._accept()
                    except BlockingIOError:
                        break
                    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, cfd)
                    c.setblocking(False)
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                    err = s.connect_ex(servers[nxt])
                    nxt = (nxt + 1) % len(servers)
                    if err not in (0, errno.EINPROGRESS):
                        c.close()
                        s.close()
                        continue
                    sfd = s.fileno()
                    state = [0]          # directions finished
                    peer[cfd] = [c, sfd, s, state]
                    peer[sfd] = [s, cfd, c, state]
                    ep.register(cfd, IN)
                    ep.register(sfd, IN)   # readable once connected: data or EOF
                continue
            entry = peer.get(fd)
            if entry is None:
                continue
            own, ofd, other, state = entry
            pipe = pipes.pop() if pipes else os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                n = splice(fd, pipe[1], BUF, flags=FLAGS)
                if n:
                    left = n
                    while left:          # the bench's replies fit: no backpressure
                        try:
                            left -= splice(pipe[0], ofd, left, flags=FLAGS)
                        except BlockingIOError:
                            select.select([], [ofd], [], 1.0)
            except BlockingIOError:
                n = -1
            except OSError:
                n = 0
                state[0] = 1
            pipes.append(pipe)
            if n == 0:                   # EOF: pass it on; close when both are done
                state[0] += 1
                ep.unregister(fd)
                try:
                    other.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                if state[0] >= 2:        # both out of epoll already
                    del peer[fd], peer[ofd]
                    own.close()
                    other.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
