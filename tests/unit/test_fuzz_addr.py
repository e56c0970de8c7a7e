"""Fuzzing the address specs (issue 15 part 4): backend specs
(servers.parse_backend), listen addresses (addr.parse_listen), host:port
(addr.parse_hostport) and ports (addr.parse_port).  Whatever the text,
only ConfigError escapes, and a listen address that parses prints as a
spec that parses to the same address."""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nodns import no_dns  # noqa: F401  (autouse: no DNS lookups here)

from pen.addr import parse_hostport, parse_listen, parse_port
from pen.errors import ConfigError
from pen.servers import parse_backend

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

PIECES = ["127.0.0.1", "::1", "[::1]", "[", "]", ":", "::", ":::", "/", "/tmp/s", "80",
          "0", "65535", "65536", "-1", "9" * 30, "9" * 5000, "http", "\u00b9", "\u0663",
          "\x00", "\udcff", " ", "a", "localhost", "1.2.3", "256.1.1.1", "fe80::1%lo"]
spec = st.one_of(st.lists(st.sampled_from(PIECES), max_size=7).map("".join),
                 st.text(max_size=30),
                 st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")))


def refused_or(fn, text):
    try:
        return fn(text)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return None


@SETTINGS
@given(spec)
@example("127.0.0.1:\u00b9")
@example("127.0.0.1:80:" + "9" * 5000)
@example("127.0.0.1:\x00")
def test_backend_specs(text):
    refused_or(lambda t: parse_backend(t, 8000), text)


@SETTINGS
@given(spec)
@example("\u00b9")
@example("9" * 5000)
@example("\udcff")
def test_listen_addresses_round_trip(text):
    addr = refused_or(parse_listen, text)
    if addr is not None and addr.kind == "inet" and addr.host != "":
        assert parse_listen(str(addr)) == addr


@SETTINGS
@given(spec)
def test_host_port_and_port(text):
    refused_or(parse_hostport, text)
    refused_or(lambda t: parse_hostport(t, default_port=80), text)
    port = refused_or(parse_port, text)
    assert port is None or 0 < port < 65536
