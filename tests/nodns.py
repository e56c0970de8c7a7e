"""A fixture for unit tests that must not look names up: getaddrinfo
answers numeric addresses and `localhost` (from /etc/hosts, as the libc
would) and refuses every other name as unknown, so a test of "cannot
resolve host" sends no DNS query off the machine.  A test module turns it
on with `from nodns import no_dns`.  (Not a conftest.py: pytest would take
it for the integration tests' conftest module of the same name.)"""

import ipaddress
import socket

import pytest

_real_getaddrinfo = socket.getaddrinfo


def _local_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "", "localhost"):
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _local_getaddrinfo)
