"""pen.udp.PortCycle: session ports in turn through the ephemeral range."""

import errno

from pen.udp import PORT_TRIES, PortCycle


class FakeSock:
    def __init__(self, taken=()):
        self.taken = set(taken)
        self.bound = None

    def bind(self, addr):
        if addr[1] in self.taken:
            raise OSError(errno.EADDRINUSE, "in use")
        self.bound = addr[1]


def cycle(tmp_path, low, high):
    f = tmp_path / "range"
    f.write_text(f"{low}\t{high}\n")
    c = PortCycle(str(f))
    c.next = low
    return c


def test_ports_come_back_only_after_the_whole_range(tmp_path):
    c = cycle(tmp_path, 40000, 40003)
    got = []
    for _ in range(6):
        s = FakeSock()
        c.bind(s)
        got.append(s.bound)
    assert got == [40000, 40001, 40002, 40003, 40000, 40001]


def test_a_port_in_use_is_skipped(tmp_path):
    c = cycle(tmp_path, 40000, 40009)
    s = FakeSock(taken={40000, 40001})
    c.bind(s)
    assert s.bound == 40002 and c.next == 40003


def test_a_full_range_leaves_the_choice_to_the_kernel(tmp_path):
    c = cycle(tmp_path, 40000, 40000 + PORT_TRIES)
    s = FakeSock(taken=range(40000, 40000 + PORT_TRIES + 1))
    c.bind(s)
    assert s.bound is None


def test_an_unreadable_range_falls_back_to_linux_default(tmp_path):
    c = PortCycle(str(tmp_path / "missing"))
    assert (c.low, c.high) == (32768, 60999) and c.low <= c.next <= c.high
