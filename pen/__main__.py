"""pen's command line (docopt) -> Settings -> State, then run.  Nothing else."""

import re
import signal
import sys

from docopt import DocoptExit, docopt

from .addr import parse_hostport, parse_listen
from .errors import ConfigError
from .servers import Server, parse_backend
from .state import Settings, State

HEADER = """\
usage:
  pen [-C addr:port] [-X] [-b sec] [-c N] [-e host[:port]] \\
      [-t sec] [-x N] [-w dir] [-UHPWadfhrs] \\
      [-o option] \\
      [-E certfile] [-K keyfile] \\
      [-G cacertfile] [-A cacertdir] \\
      [-Z] [-R] [-L protocol] \\
      [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2[:p2[:maxc2[:hard2[:weight2[:prio2]]]]]] ...

"""
GRAMMAR = """\
Usage:
  pen [-d]... [-o OPTION]... [-O OPTION]... [options] [LISTEN [SERVER...]]
  pen --help

"""
OPTIONS = """\
Options:
  -B HOSTPORT  abuse server for naughty clients
  -C PORT      control port (port, addr:port or /path/to/socket)
  -T SEC       tracking time in seconds (0 = forever) [default: 0]
  -H           add X-Forwarded-For header in http requests
  -U           use udp protocol support
  -N           use hash for initial server selection without save server
  -O OPTION    use option in penctl format
  -P           use poll() rather than epoll()
  -Q           use kqueue to manage events (BSD)
  -W           use weight for server selection
  -X           enable 'exit' command for control port
  -a           debugging dumps in ascii format
  -b SEC       blacklist time in seconds [default: 30]
  -c N         max number of clients [default: 2048]
  -d           debugging on (repeat -d for more)
  -e HOSTPORT  emergency server of last resort
  -f           stay in foreground
  -h           use hash for initial server selection
  -j DIR       run in chroot
  -F FILE      name of configuration file
  -l FILE      logging on (a file, or host:port for UDP)
  -m N         accept up to N connections at a time [default: 100]
  -q N         listen backlog [default: 500]
  -r           bypass client tracking in server selection
  -s           stubborn selection, i.e. don't fail over
  -t SEC       connect timeout in seconds [default: 3]
  -u USER      run as alternative user
  -p FILE      write pid to file
  -x N         max number of simultaneous connections [default: 500]
  -w FILE      save statistics in HTML format in a file
  -o OPTION    use option in penctl format
  -E CERTFILE  use the given certificate in PEM format
  -K KEYFILE   use the given key in PEM format (may be contained in cert)
  -G CAFILE    file containing the CA's certificate
  -A CADIR     directory containing CA certificates in hashed format
  -Z           use SSL compatibility mode
  -R           require valid peer certificate
  -L PROTOCOL  ssl23 (default), ssl3, tls1, tls1.1, tls1.2 or tls1.3
  --help       show this text

example:
  pen smtp mailhost1:smtp mailhost2:25 mailhost3
"""
# Shown by --help, handled by main() before docopt sees the arguments.
WHOLE_LINE = """\
  --version    print pen's version
  --check-config ARGS...
               check what a start with ARGS would read (config file, options,
               certificates, user, directories); print every problem, exit 1
               if there was any; start nothing (for ExecReload, packages)
"""
USAGE = HEADER + OPTIONS.replace("\nexample:", WHOLE_LINE + "\nexample:")

# option -> (Settings field, minimum value)
NUMBERS = {"-b": ("blacklist_time", 0), "-c": ("clients_max", 1),
           "-t": ("connect_timeout", 1), "-x": ("conn_max", 1),
           "-T": ("tracking", 0), "-m": ("multi_accept", 1), "-q": ("backlog", 1)}
FLAGS = {"-H": "http", "-U": "udp", "-N": "hash_nosave", "-W": "weight",
         "-X": "exit_enabled", "-a": "ascii", "-f": "foreground", "-h": "hash",
         "-r": "roundrobin", "-s": "stubborn", "-Z": "ssl_compat",
         "-R": "ssl_require_cert"}
STRINGS = {"-B": "abuse", "-C": "control", "-e": "emergency", "-j": "chroot",
           "-F": "cfgfile", "-l": "logfile", "-u": "user", "-p": "pidfile",
           "-w": "webfile", "-E": "ssl_cert", "-K": "ssl_key",
           "-G": "ssl_cafile", "-A": "ssl_cadir", "-L": "ssl_protocol"}


def _docopt_error(exc, argv):
    text = str(exc).splitlines()[0] if str(exc) else ""
    m = re.search(r"Option\((?:'([^']+)'|None), (?:'([^']+)'|None)", text)
    if "unmatched" in text and m:
        return f"unknown option {m.group(1) or m.group(2)} (see pen --help)"
    m = re.match(r"(--\S+?) is not (?:a unique prefix|recognized)", text)
    if m:
        return f"unknown option {m.group(1)} (see pen --help)"
    m = re.match(r"(\S+) requires argument", text)
    if m:
        return f"option {m.group(1)} requires an argument (see pen --help)"
    if text.startswith("Usage") or not text:
        return "bad command line (see pen --help)"
    return f"{text} (see pen --help)"


def parse_args(argv):
    """argv (without the program name) -> Settings; ConfigError if bad."""
    try:
        args = docopt(GRAMMAR + OPTIONS, argv, default_help=False)
    except DocoptExit as e:
        raise ConfigError(_docopt_error(e, argv)) from None
    st = Settings(argv=list(argv))
    for opt, (name, minimum) in NUMBERS.items():
        value = args[opt]
        if not re.fullmatch(r"\d+", value or ""):
            raise ConfigError(f"option {opt}: {value!r} is not a number "
                              f"(expected a whole number >= {minimum})")
        if int(value) < minimum:
            raise ConfigError(f"option {opt}: {value} is too small "
                              f"(expected a whole number >= {minimum})")
        setattr(st, name, int(value))
    for opt, name in FLAGS.items():
        setattr(st, name, bool(args[opt]))
    for opt, name in STRINGS.items():
        setattr(st, name, args[opt])
    st.debug = args["-d"]
    st.options = list(args["-o"]) + list(args["-O"])
    st.event_backend = "poll" if args["-P"] else "kqueue" if args["-Q"] else "epoll"
    if args["LISTEN"]:
        st.listen = parse_listen(args["LISTEN"])
    elif not (st.cfgfile or st.options):
        raise MissingListen("missing listen address (expected [host:]port or /path/to/socket)")
    st.backends = list(args["SERVER"])
    if st.ssl_protocol is not None:
        from .tls import parse_protocol
        parse_protocol(st.ssl_protocol)      # -L: a bad name is an error, -E or not
    return st


class MissingListen(ConfigError):
    """No listen address: pen prints its usage."""


def build_state(st):
    """Resolve the backends, emergency and abuse servers once, up front."""
    import socket
    socktype = socket.SOCK_DGRAM if st.udp else socket.SOCK_STREAM
    default_port = st.listen.port if st.listen and st.listen.kind == "inet" else None
    servers = [parse_backend(spec, default_port, i, socktype)
               for i, spec in enumerate(st.backends)]
    extra = {}
    for name, opt in (("emergency", "-e"), ("abuse", "-B")):
        text = getattr(st, name)
        if text:
            host, port = parse_hostport(text, default_port, f"{opt} server")
            server = Server(name)
            server.set_address(host, port, socktype)
            extra[name] = server
    return State(st, servers, **extra)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv == ["--help"]:
        sys.stdout.write(USAGE)
        return 0
    if argv == ["--hash-password"]:      # a line for admin_password_file
        from .admin import hash_password_main
        return hash_password_main()
    if argv == ["--version"]:
        from . import VERSION
        print(f"pen {VERSION} (Python re-implementation)")
        return 0
    checking = argv[0] == "--check-config"
    if checking:
        argv = argv[1:]
    try:
        settings = parse_args(argv)
        state = build_state(settings)
    except MissingListen as e:
        sys.stdout.write(USAGE)              # as pen: no listen address, the usage
        print(f"pen: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"pen: {e}", file=sys.stderr)
        return 1
    from .daemon import check, run
    return check(state) if checking else run(state)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
