"""pen's command language: the control socket, -F files, -o/-O and include.

    parse(line, state) -> Command or None    PURE: every check happens here
    apply(state, cmd) -> (reply_lines, effects)   edits State; cannot fail
    execute(state, line) -> (reply_lines, effects)   both; errors become replies
    config.dump(state, path) -> lines        what `write` puts in the file
    config.load_config(path, state) -> (effects, errors)   -F, SIGHUP, include
                                 (pen/config.py, which builds on this module)

A line is split on whitespace; a word starting with `#` starts a comment.
Words and replies are pen 0.34.1's.  Where pen silently accepts garbage
(non-numbers, out-of-range server or ACL numbers, bad addresses, unknown
keywords, extra words) parse raises CommandError with a one-line message
naming the command, the value and what was allowed, and nothing changes.
Unknown commands get pen's own reply, `do_cmd: ignoring command starting
with 'X'`.

Effects are what apply cannot do itself because it touches file
descriptors: small named types of pen/effects.py (Listen, Close, Log,
Write, Include, Tls, Admin, Dumps, Stages, Shutdown, ...), which the
daemon (App.run_effects in pen/app.py) carries out, in order, after apply.

The daemon's run_effects may return extra reply lines (for example an
error saying the new listen address could not be bound); the control
socket appends them to the reply.
"""

import ipaddress
import os
import re
import socket
import time

from . import acl as aclmod
from . import effects
from . import health, hooks   # issue 10
from . import stats
from . import rewrite   # issue 12
from .addr import parse_hostport, parse_listen, parse_port, resolve, split_host
from .errors import CommandError, ConfigError
from .balance import OVER_MAX
from .servers import Server

INT_MAX = 2 ** 31 - 1
DIGITS_MAX = 20            # a longer number is out of every range
SERVERS_MAX = 4096          # server indexes 0..4095
ACL_RULES_MAX = 1000        # rules per ACL
CLIENTS_LIMIT = 1 << 24     # clients_max ceiling
CONN_LIMIT = 1 << 20        # conn_max ceiling
DEFER_ACCEPT_MAX = 3600     # defer_accept ceiling, seconds
RECENT_DEFAULT = 300
UNKNOWN = "do_cmd: ignoring command starting with '{}'"
FASTCLOSE = ("up", "down", "both", "off")
ALGORITHMS = ("leastconn", "random", "byorder", "bysize", "byduration")
SERVER_KEYS = ("acl", "address", "port", "max", "hard", "blacklist", "weight", "prio")
FLAG_ACTIONS = {"disable": Server.disable, "enable": Server.enable, "drain": Server.drain}
SERVER_FLAGS = tuple(FLAG_ACTIONS)
NUMBER_RE = re.compile(r"-?[0-9]+")


class Command:
    """A checked command: `run(state, now, wall)` -> (reply_lines, effects)."""

    __slots__ = ("word", "run")

    def __init__(self, word, run):
        self.word = word
        self.run = run

    def __repr__(self):
        return f"Command({self.word!r})"




def _nothing(state, now, wall):
    return [], []


# --- small checks ----------------------------------------------------------------------


def number(word, text, lo=0, hi=INT_MAX, what="value"):
    """A whole number lo..hi from `text`, or CommandError naming `word`."""
    if not NUMBER_RE.fullmatch(text):
        raise CommandError(f"{word}: {what} must be a whole number, got {text!r}")
    allowed = f"{lo} or more" if hi >= INT_MAX else f"{lo}-{hi}"
    if len(text) > DIGITS_MAX:      # int() refuses past 4300 digits; no limit is near
        raise CommandError(f"{word}: {what} {text[:DIGITS_MAX]}... out of range ({allowed})")
    n = int(text)
    if not lo <= n <= hi:
        raise CommandError(f"{word}: {what} {n} out of range ({allowed})")
    return n


def arity(word, args, most, usage, least=0):
    if len(args) > most:
        raise CommandError(f"{word}: unexpected {args[most]!r} (usage: {usage})")
    if len(args) < least:
        raise CommandError(f"{word}: missing argument (usage: {usage})")


def split(line):
    """Words of a command line: cut at the first CR/LF (as pen), split on
    whitespace, drop a trailing comment (a word starting with '#').  A
    value with blanks goes in double quotes, `\\"` and `\\\\` inside (SPEC
    §10); a line without `"` splits exactly as pen's."""
    for end in ("\r", "\n"):
        line = line.split(end, 1)[0]
    if '"' in line:
        return split_quoted(line)
    words = line.split()
    for i, w in enumerate(words):
        if w.startswith("#"):
            return words[:i]
    return words


def split_quoted(line):
    """split() for a line with quotes: `"a b"` is one word, `\\"` and
    `\\\\` inside quotes stand for `"` and `\\` (any other backslash is
    kept as it is, for the escapes of `check expect`)."""
    words = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n or line[i] == "#":
            return words
        word = []
        while i < n and not line[i].isspace():
            c = line[i]
            i += 1
            if c != '"':
                word.append(c)
                continue
            while True:
                if i >= n:
                    raise CommandError(f"unterminated quote in {line.strip()!r} "
                                       '(a quoted value ends with ")')
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    word.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    word.append(c)
                    i += 1
        words.append("".join(word))


def show(word, field):
    """A Command replying with settings.field, or nothing when it is unset."""
    def run(state, now, wall):
        value = getattr(state.settings, field)
        return ([str(value)] if value else []), []
    return Command(word, run)


# --- handler factories -----------------------------------------------------------------
# A handler is handler(word, args, state) -> Command; it checks everything.


def setting(field, what, lo=0, hi=INT_MAX, fmt="{}", effect=None, usage=None):
    """`word [N]`: set settings.field when N is given; reply with its value."""
    def handler(word, args, state):
        arity(word, args, 1, usage or f"{word} [{what.upper()}]")
        value = number(word, args[0], lo, hi, what) if args else None

        def run(state, now, wall):
            st = state.settings
            if value is not None:
                setattr(st, field, value)
            current = getattr(st, field)
            if isinstance(current, float) and current.is_integer():
                current = int(current)
            out = [effect(value)] if effect and value is not None else []
            return [fmt.format(current)], out
        return Command(word, run)
    return handler


def flag(field, value=True):
    """`word` / `no word`: switch a boolean setting."""
    def handler(word, args, state):
        arity(word, args, 0, word)

        def run(state, now, wall):
            setattr(state.settings, field, value)
            return [], []
        return Command(word, run)
    return handler


def obsolete(word, args, state):
    """Commands pen keeps for old configs; they do nothing."""
    return Command(word, _nothing)


def event_backend(name):
    def handler(word, args, state):
        arity(word, args, 0, word)

        def run(state, now, wall):
            state.settings.event_backend = name
            return [], []
        return Command(word, run)
    return handler


def text_setting(field, what, effect=None, query=True, required=False):
    """`word [VALUE]`: set a string setting; without VALUE reply with it."""
    def handler(word, args, state):
        arity(word, args, 1, f"{word} {what}" if required else f"{word} [{what}]",
              least=1 if required else 0)
        value = args[0] if args else None

        def run(state, now, wall):
            st = state.settings
            if value is not None:
                setattr(st, field, value)
            out = [effect] if effect and value is not None else []
            current = getattr(st, field)
            return ([current] if query and current else []), out
        return Command(word, run)
    return handler


def clear(field, effect=None, value=None):
    """`no word`: reset a setting."""
    def handler(word, args, state):
        arity(word, args, 0, word)

        def run(state, now, wall):
            setattr(state.settings, field, value)
            return [], ([effect] if effect else [])
        return Command(word, run)
    return handler


# --- commands with their own logic -------------------------------------------------------


def cmd_acl(word, args, state):
    usage = "acl N permit|deny ADDRESS [MASK] | ADDRESS6[/LEN] | country CC"
    if not args:
        raise CommandError(f"acl: missing ACL number (usage: {usage})")
    n = aclmod.check_number("acl", args[0])
    rule = aclmod.parse_rule(args[1:])
    if len(state.acls[n]) >= ACL_RULES_MAX:
        raise CommandError(f"acl: ACL {n} is full ({ACL_RULES_MAX} rules); "
                           f"clear it with 'no acl {n}'")

    def run(state, now, wall):
        state.acls.add(n, rule)
        return [], []
    return Command(word, run)


def cmd_no_acl(word, args, state):
    arity(word, args, 1, "no acl N", least=1)
    n = aclmod.check_number(word, args[0])

    def run(state, now, wall):
        state.acls.clear(n)
        return [], []
    return Command(word, run)


def cmd_geoip_db(word, args, state):
    arity(word, args, 1, "geoip_db [FILE]")
    if not args:
        return show(word, "geoip_db")
    from .geoip import open_db
    db = open_db(args[0])
    return Command(word, lambda state, now, wall: _set_geoip(state, db, args[0]))


def cmd_no_geoip_db(word, args, state):
    arity(word, args, 0, word)
    return Command(word, lambda state, now, wall: _set_geoip(state, None, None))


def _set_geoip(state, db, path):
    old = state.acls.country_of
    if old is not None and hasattr(old, "close"):
        old.close()
    state.acls.country_of = db
    state.settings.geoip_db = path
    return [], []


def cmd_clients_max(word, args, state):
    arity(word, args, 1, "clients_max [N]")
    value = number(word, args[0], 1, CLIENTS_LIMIT, "size") if args else None

    def run(state, now, wall):
        if value is not None:
            state.settings.clients_max = value
            state.clients.resize(value)
        return [str(state.settings.clients_max)], []
    return Command(word, run)


def conn_command(live, free):
    """`close N` / `connection N`: `live(n, conn)` -> reply for an open
    connection, `free(n)` -> lines for an unused id below conn_max; pen's
    "out of range" above it."""
    def handler(word, args, state):
        arity(word, args, 1, f"{word} N", least=1)
        n = number(word, args[0], -INT_MAX, INT_MAX, "connection")

        def run(state, now, wall):
            conn = state.conns.get(n)
            if conn is not None:
                return live(n, conn)
            if 0 <= n < state.settings.conn_max:
                return free(n), []
            return [f"Connection {n} out of range"], []
        return Command(word, run)
    return handler


def cmd_socket(word, args, state):
    arity(word, args, 1, "socket N", least=1)
    fd = number(word, args[0], -INT_MAX, INT_MAX, "socket")

    def run(state, now, wall):
        owner = -1
        for conn_id, conn in state.conns.items():
            info = stats.conn_info(conn)
            if fd >= 0 and fd in (info["downfd"], info["upfd"]):
                owner = conn_id
                break
        return [f"Socket {fd} belongs to connection {owner}"], []
    return Command(word, run)


def cmd_control(word, args, state):
    arity(word, args, 0, word)
    return show(word, "control")


def cmd_exit(word, args, state):
    arity(word, args, 0, word)

    def run(state, now, wall):
        if state.settings.exit_enabled:
            return [], [effects.Exit()]
        return ["Exit is not enabled; restart with -X flag"], []
    return Command(word, run)


def cmd_idlers(word, args, state):
    arity(word, args, 1, "idlers [N]")
    value = number(word, args[0], 0, 10000, "count") if args else None

    def run(state, now, wall):
        todo = []
        if value is not None:
            state.settings.idlers = value
            todo = [effects.Idlers()]
        # pen's reply: idlers open (before this change takes effect) / wanted
        return [f"Idlers: {state.idlers_open}/{state.settings.idlers}"], todo
    return Command(word, run)


def cmd_include(word, args, state):
    arity(word, args, 1, "include FILE", least=1)
    path = args[0]
    return Command(word, lambda state, now, wall: ([], [effects.Include(path)]))


def cmd_listen(word, args, state):
    arity(word, args, 1, "listen [[ADDRESS:]PORT | /path/to/socket]")
    if not args:
        return Command(word, lambda state, now, wall: (
            [str(state.settings.listen)] if state.settings.listen is not None else [], []))
    try:
        addr = parse_listen(args[0])
    except ConfigError as e:
        raise CommandError(f"listen: {e}") from None
    return Command(word, lambda state, now, wall: ([str(addr)], [effects.Listen(addr)]))


def _check_log_target(word, target):
    if "/" not in target and ":" in target:
        try:
            parse_hostport(target, what="log address")
        except ConfigError as e:
            raise CommandError(f"{word}: {e}") from None


def cmd_log(word, args, state):
    arity(word, args, 1, "log [FILE | HOST:PORT]")
    target = args[0] if args else None
    if target is not None:
        _check_log_target(word, target)

    def run(state, now, wall):
        st = state.settings
        out = []
        if target is not None:
            out.append(effects.Log(target, st.logfile))
            st.logfile = target
        return ([st.logfile] if st.logfile else []), out
    return Command(word, run)


def cmd_mode(word, args, state):
    arity(word, args, 0, word)
    return Command(word, lambda state, now, wall: ([stats.mode_line(state.settings)], []))


def cmd_pending_max(word, args, state):
    arity(word, args, 1, "pending_max N", least=1)
    value = number(word, args[0], 1, CONN_LIMIT, "count")

    def run(state, now, wall):
        state.settings.pending_max = value
        return [], []
    return Command(word, run)


def cmd_pid(word, args, state):
    arity(word, args, 0, word)
    return Command(word, lambda state, now, wall: ([str(os.getpid())], []))


def cmd_recent(word, args, state):
    arity(word, args, 1, "recent [SECONDS]")
    seconds = number(word, args[0], 0, INT_MAX, "seconds") if args else RECENT_DEFAULT
    return Command(word, lambda state, now, wall: (
        stats.recent_lines(state, seconds, now), []))


def cmd_servers(word, args, state):
    arity(word, args, 0, word)
    return Command(word, lambda state, now, wall: (stats.server_lines(state), []))


def _server_port(idx, existing, state, fields):
    if "port" in fields:
        return fields["port"]
    if existing is not None and existing.port:
        return existing.port
    listen = state.settings.listen
    port = getattr(listen, "port", None)
    if not port:
        raise CommandError(f"server: server {idx} needs a port (server {idx} port P); "
                           "the listen address has none to default to")
    return port


def cmd_server(word, args, state):
    usage = ("server N [acl A] [address HOST] [port P] [max M] [hard H] "
             "[blacklist T] [weight W] [prio P] [disable|enable|drain]")
    if not args:
        raise CommandError(f"server: missing server number (usage: {usage})")
    count = len(state.servers)
    if not NUMBER_RE.fullmatch(args[0]):
        raise CommandError(f"server: index must be a whole number, got {args[0]!r}")
    if len(args[0]) > DIGITS_MAX or not 0 <= int(args[0]) <= min(count, SERVERS_MAX - 1):
        extra = f"; {count} adds a new server" if count < SERVERS_MAX else ""
        raise CommandError(f"server: index {args[0][:DIGITS_MAX]} out of range (0-{count}{extra})")
    idx = int(args[0])
    existing = state.servers[idx] if idx < count else None
    if existing is not None and len(args) > 1 and args[1] in SERVER_EXTRA:
        return server_extra(idx, args[1:], state)       # issue 11
    fields, flags = {}, []
    i = 1
    while i < len(args):
        key = args[i]
        if key in SERVER_FLAGS:
            flags.append(key)
            i += 1
            continue
        if key not in SERVER_KEYS:
            raise CommandError(f"server: unknown keyword {key!r} "
                               f"(expected {', '.join(SERVER_KEYS + SERVER_FLAGS)})")
        if i + 1 >= len(args):
            raise CommandError(f"server: {key} needs a value (usage: {usage})")
        value = args[i + 1]
        i += 2
        if key == "address":
            fields[key] = value
        elif key == "port":
            try:
                fields[key] = parse_port(value, "port")
            except ConfigError as e:
                raise CommandError(f"server: {e}") from None
        elif key == "acl":
            fields[key] = aclmod.check_number("server", value)
        else:
            fields[key] = number("server", value, 0, INT_MAX, key)
    if len(set(flags)) > 1:
        raise CommandError("server: give one of disable, enable or drain, not several")
    if existing is None and "address" not in fields:
        raise CommandError(f"server: new server {idx} needs an address "
                           f"(server {idx} address HOST [port P])")
    resolved = None
    if "address" in fields or "port" in fields:
        host = fields.get("address", existing.host if existing is not None else None)
        try:
            if host.startswith("["):
                host, rest = split_host(host)
                if rest is not None:
                    raise ConfigError(f"address {fields['address']!r}: "
                                      "give the port with the port keyword")
            port = _server_port(idx, existing, state, fields)
            socktype = socket.SOCK_DGRAM if state.settings.udp else socket.SOCK_STREAM
            family, sockaddr = resolve(host, port, socktype)
        except ConfigError as e:
            raise CommandError(f"server: {e}") from None
        resolved = (host, port, family, sockaddr)

    if existing is not None and not fields and not flags:
        return Command(word, lambda state, now, wall: (
            stats.server_detail(state, idx, now), []))

    def run(state, now, wall):
        if idx == len(state.servers):
            state.servers.append(Server(idx, events=state.server_events))
        s = state.servers[idx]
        if resolved is not None:
            s.host, s.port, s.family, s.sockaddr = resolved
        for key in ("acl", "max", "hard", "weight", "prio"):
            if key in fields:
                setattr(s, key, fields[key])
        if "blacklist" in fields:
            s.blacklist(now, fields["blacklist"])
        if flags:
            FLAG_ACTIONS[flags[-1]](s, now)
        return [], []
    return Command(word, run)


def cmd_source(word, args, state):
    arity(word, args, 1, "source [IP]")
    if not args:
        return show(word, "source")
    try:
        ip = str(ipaddress.ip_address(args[0]))
    except ValueError:
        raise CommandError(f"source: {args[0]!r} is not an IP address") from None

    def run(state, now, wall):
        state.settings.source = ip
        return [], [effects.Source(ip)]
    return Command(word, run)


def cmd_ssl_option(word, args, state):
    from .tls import SSL_OPTION_NAMES, check_ssl_option
    arity(word, args, 1, f"ssl_option {'|'.join(SSL_OPTION_NAMES)}", least=1)
    option = args[0]
    try:
        check_ssl_option(option)
    except ConfigError as e:
        raise CommandError(str(e)) from None

    def run(state, now, wall):
        if option not in state.settings.ssl_options:
            state.settings.ssl_options.append(option)
        return [], [effects.Tls()]
    return Command(word, run)


def cmd_ssl_ocsp_response(word, args, state):
    """pen stapled a pre-fetched OCSP response; Python's ssl module cannot."""
    from .tls import OCSP_UNSUPPORTED
    raise CommandError(OCSP_UNSUPPORTED)


def cmd_ssl_info(word, args, state):
    """Our extension: the certificates in use (the daemon adds the lines)."""
    arity(word, args, 0, word)
    return Command(word, lambda state, now, wall: ([], [effects.SslInfo()]))


def cmd_ssl_ciphers(word, args, state):
    arity(word, args, 1, "ssl_ciphers [CIPHERS]")
    value = args[0] if args else None

    def run(state, now, wall):
        state.settings.ssl_ciphers = value
        return [], [effects.Tls()]
    return Command(word, run)


def cmd_status(word, args, state):
    arity(word, args, 1, "status [json|prometheus]")
    kind = args[0] if args else "html"
    if kind not in ("html", "json", "prometheus"):
        raise CommandError(f"status: unknown format {kind!r} (expected json or prometheus)")

    def run(state, now, wall):
        if kind == "json":
            return [stats.status_json(state, now, wall)], []
        if kind == "prometheus":
            return stats.prometheus(state, now).splitlines(), []
        page = stats.status_html(state, now, wall)
        webfile = state.settings.webfile
        return page.splitlines(), ([effects.Write(webfile, page)] if webfile else [])
    return Command(word, run)


def cmd_tcp_fastclose(word, args, state):
    if not args:
        return Command(word, lambda state, now, wall: (
            ["do_cmd: ignoring tcp_fastclose without argument"], []))
    arity(word, args, 1, f"tcp_fastclose {'|'.join(FASTCLOSE)}")
    if args[0] not in FASTCLOSE:
        raise CommandError(f"tcp_fastclose: expected up, down, both or off, got {args[0]!r}")

    def run(state, now, wall):
        state.settings.tcp_fastclose = args[0]
        return [], []
    return Command(word, run)


def cmd_dsr(field):
    def handler(word, args, state):
        arity(word, args, 1, f"{word} VALUE", least=1)

        def run(state, now, wall):
            setattr(state.settings, field, args[0])
            return [f"{word}: stored, but this pen does not do direct server return"], []
        return Command(word, run)
    return handler


def cmd_write(word, args, state):
    arity(word, args, 1, "write [FILE]")
    path = args[0] if args else state.settings.cfgfile
    if not path:
        raise CommandError("write: no file given, and pen was started without -F "
                           "(usage: write FILE)")

    def run(state, now, wall):
        return [], [effects.Write(path)]
    return Command(word, run)


def algorithm(word, args, state):
    """`leastconn` | `random` | `byorder` | `bysize [over N]` | `byduration [over N]`."""
    over = 0
    if word in OVER_ALGORITHMS:
        usage = f"{word} [over N]"
        arity(word, args, 2, usage)
        if args:
            if args[0] != "over" or len(args) != 2:
                raise CommandError(f"{word}: expected 'over N', got {' '.join(args)!r} "
                                   f"(usage: {usage})")
            over = number(word, args[1], 1, OVER_MAX, "connection count")
    else:
        arity(word, args, 0, word)

    def run(state, now, wall):
        state.settings.algorithm = word
        state.settings.algorithm_over = over
        return [], []
    return Command(word, run)


def no_algorithm(name):
    def handler(word, args, state):
        arity(word, args, 0, word)

        def run(state, now, wall):
            if state.settings.algorithm == name:
                state.settings.algorithm = None
                state.settings.algorithm_over = 0
            return [], []
        return Command(word, run)
    return handler


# --- issue 11: per-server figures and dumps, traffic logs, help, MRTG ---------------------
OVER_ALGORITHMS = ("bysize", "byduration")
SERVER_EXTRA = ("decay", "reset", "trafficlog", "no")


def server_extra(idx, args, state):
    """`server N decay D` | `server N reset` | `server N trafficlog FILE` |
    `server N no trafficlog` (one of them per line)."""
    key, rest = args[0], args[1:]
    usage = f"server {idx} decay D | reset | trafficlog FILE | no trafficlog"
    if key == "decay":
        arity("server", rest, 1, usage, least=1)
        percent = number("server", rest[0], 0, 100, "decay percent")

        def run(state, now, wall):
            state.loads.set_decay(idx, percent)
            return [], []
    elif key == "reset":
        arity("server", rest, 0, usage)

        def run(state, now, wall):
            s = state.servers[idx]
            s.sx = s.rx = s.connects = 0
            state.loads[idx].clear()
            return [], []
    elif key == "trafficlog":
        arity("server", rest, 1, usage, least=1)
        path = rest[0]

        def run(state, now, wall):
            state.settings.server_trafficlogs[idx] = path
            return [], [effects.Dumps()]
    else:
        if rest != ["trafficlog"]:
            raise CommandError(f"server: expected 'no trafficlog' or 'no header [M]' after server {idx}, "
                               f"got {' '.join(args)!r}")

        def run(state, now, wall):
            state.settings.server_trafficlogs.pop(idx, None)
            return [], [effects.Dumps()]
    return Command("server", run)


def dump_file(field):
    """`trafficlog [FILE]` / `throughputlog [FILE]`: set (and open) the file;
    bare: the file and how many dump lines were dropped because the disk lagged."""
    def handler(word, args, state):
        arity(word, args, 1, f"{word} [FILE]")
        path = args[0] if args else None

        def run(state, now, wall):
            st = state.settings
            if path is not None:
                setattr(st, field, path)
                return [], [effects.Dumps()]
            current = getattr(st, field)
            if not current:
                return [], []
            return [f"{current} ({state.counters.dump_lines_dropped} lines dropped)"], []
        return Command(word, run)
    return handler


def uptime_text(seconds):
    """MRTG's third line: how long pen has run, as uptime(1) says it."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} day{'s' if days != 1 else ''}, {hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def mrtg(kind):
    """`mrtg_bytes N` / `mrtg_conns N`: MRTG's four lines for server N
    (bytes in and out, or connections made and open; uptime; name)."""
    def handler(word, args, state):
        arity(word, args, 1, f"{word} N", least=1)
        n = number(word, args[0], 0, INT_MAX, "server")
        if n >= len(state.servers):
            raise CommandError(f"{word}: no server {n} (servers are 0-{len(state.servers) - 1})")

        def run(state, now, wall):
            s = state.servers[n]
            first, second = (s.rx, s.sx) if kind == "bytes" else (s.connects, s.conn)
            return [str(first), str(second), uptime_text(now - state.started),
                    f"server {n}"], []
        return Command(word, run)
    return handler


def cmd_help(word, args, state):
    arity(word, args, 0, word)
    width = max(len(name) for name in HANDLERS)
    lines = [f"{name.ljust(width)}  {SUMMARIES.get(name, '')}".rstrip()
             for name in sorted(HANDLERS)]
    return Command(word, lambda state, now, wall: (lines, []))


SUMMARIES = {
    "abort_on_error": "abort (dump core) on an unexpected error",
    "acl": "acl N permit|deny ADDRESS [MASK] | country CC: add a rule to ACL N",
    "ascii": "show traffic dumps as printable text, not hex",
    "blacklist": "blacklist [SECONDS]: how long a failed server stays out",
    "block": "obsolete, does nothing",
    "byduration": "byduration [over N]: the server with the shortest connections",
    "byorder": "the first available server, by index",
    "bysize": "bysize [over N]: the server with the fewest bytes per connection",
    "client_acl": "client_acl [N]: the ACL clients must pass",
    "clients_max": "clients_max [N]: size of the client table",
    "close": "close N: close connection N",
    "conn_max": "conn_max [N]: most simultaneous connections",
    "connection": "connection N: show connection N",
    "control": "show the control socket address",
    "control_acl": "control_acl [N]: the ACL control clients must pass",
    "debug": "debug [N]: set the debug level",
    "delayed_forward": "obsolete, does nothing",
    "dsr_if": "dsr_if IF: stored (no direct server return)",
    "dsr_ip": "dsr_ip IP: stored (no direct server return)",
    "dummy": "answer clients as a dummy web server",
    "epoll": "use epoll (the default)",
    "exit": "stop pen (needs -X)",
    "geoip_db": "geoip_db [FILE]: the country database for ACLs",
    "hash": "choose the first server by a hash of the client address",
    "help": "list every command with a one-line summary",
    "http": "add X-Forwarded-For headers",
    "idle_timeout": "idle_timeout [SECONDS]: close connections idle that long",
    "idlers": "idlers [N]: idle connections kept open to each server",
    "defer_accept": "defer_accept [SECONDS]: accept a client once it has sent data "
                    "(client-speaks-first protocols only)",
    "include": "include FILE: run the commands in FILE",
    "keepalive": "set SO_KEEPALIVE on upstream connections",
    "kqueue": "use kqueue",
    "leastconn": "the server with the fewest connections per unit of weight",
    "listen": "listen [[ADDRESS:]PORT | PATH]: show or change the listen address",
    "log": "log [FILE | HOST:PORT]: the connection log",
    "mode": "show the selection mode",
    "mrtg_bytes": "mrtg_bytes N: MRTG lines for server N's bytes in and out",
    "mrtg_conns": "mrtg_conns N: MRTG lines for server N's connections",
    "no": "no WORD: turn a setting off",
    "peek": "accepted, no effect",
    "splice": "relay plain TCP with splice (the default); no splice: through buffers",
    "pending_max": "pending_max N: most connects in progress",
    "pid": "show pen's process id",
    "poll": "use poll",
    "prio": "choose the available server with the lowest prio",
    "random": "a random server, weight-proportional when weights are set",
    "recent": "recent [SECONDS]: clients seen lately",
    "roundrobin": "plain round robin, no client tracking",
    "select": "use select",
    "server": "server N [address H] [port P] [max M] ... | decay D | reset: show or change server N",
    "servers": "list the servers",
    "socket": "socket N: which connection owns fd N",
    "source": "source [IP]: local address for upstream connections",
    "ssl_allow_expired": "accept expired client certificates",
    "ssl_ciphers": "ssl_ciphers [CIPHERS]: TLS cipher list",
    "ssl_client_renegotiation_interval": "ssl_client_renegotiation_interval [SECONDS]",
    "ssl_info": "show the certificates in use",
    "ssl_key_password_file": "ssl_key_password_file FILE: the key's passphrase",
    "ssl_ocsp_response": "not supported (Python's ssl cannot staple OCSP)",
    "ssl_option": "ssl_option WORD: a TLS option",
    "ssl_sni_path": "ssl_sni_path DIR: certificates per server name",
    "status": "status [json|prometheus]: the status page",
    "stubborn": "close the client instead of failing over",
    "tarpit_acl": "tarpit_acl [N]: stored (DSR only)",
    "tcp_fastclose": "tcp_fastclose up|down|both|off",
    "tcp_nodelay": "set TCP_NODELAY on client connections",
    "throughputlog": "throughputlog [FILE]: log each chunk's time and first bytes",
    "timeout": "timeout [SECONDS]: connect timeout",
    "tracking": "tracking [SECONDS]: how long a client is remembered",
    "trafficlog": "trafficlog [FILE]: dump all relayed traffic (hex, or text with ascii)",
    "transparent": "connect upstream from the client's address",
    "weight": "choose by connections per unit of weight (-W)",
    "web_stats": "web_stats [FILE]: the HTML status file",
    "write": "write [FILE]: save the configuration",
}
# --- end issue 11 -------------------------------------------------------------------------


FLAGS = ("abort_on_error", "ascii", "dummy", "hash", "http", "keepalive", "peek",
         "prio", "roundrobin", "splice", "stubborn", "tcp_nodelay", "transparent", "weight")

HANDLERS = {
    "acl": cmd_acl,
    "blacklist": setting("blacklist_time", "seconds", usage="blacklist [SECONDS]"),
    "block": obsolete,
    "client_acl": setting("client_acl", "ACL number", 0, aclmod.ACLS_MAX - 1,
                          usage="client_acl [N]"),
    "clients_max": cmd_clients_max,
    "close": conn_command(
        lambda n, conn: ([f"Forcibly closing connection {n}"], [effects.Close(n)]),
        lambda n: [f"Connection {n} is not open"]),
    "conn_max": setting("conn_max", "count", 1, CONN_LIMIT, effect=lambda n: effects.ConnMax(n),
                        usage="conn_max [N]"),
    "connection": conn_command(lambda n, conn: (stats.connection_lines(n, conn), []),
                               stats.empty_connection_lines),
    "control": cmd_control,
    "control_acl": setting("control_acl", "ACL number", 0, aclmod.ACLS_MAX - 1,
                           usage="control_acl [N]"),
    "debug": setting("debug", "level", 0, 100, effect=lambda n: effects.Debug(n), usage="debug [N]"),
    "delayed_forward": obsolete,
    "dsr_if": cmd_dsr("dsr_if"),
    "dsr_ip": cmd_dsr("dsr_ip"),
    "epoll": event_backend("epoll"),
    "exit": cmd_exit,
    "geoip_db": cmd_geoip_db,
    "idle_timeout": setting("idle_timeout", "seconds", fmt="Idle timeout: {} seconds",
                            usage="idle_timeout [SECONDS]"),
    "idlers": cmd_idlers,
    "defer_accept": setting("defer_accept", "seconds", 0, DEFER_ACCEPT_MAX,
                            effect=lambda n: effects.DeferAccept(n),
                            usage="defer_accept [SECONDS]"),
    "include": cmd_include,
    "kqueue": event_backend("kqueue"),
    "listen": cmd_listen,
    "log": cmd_log,
    "mode": cmd_mode,
    "pending_max": cmd_pending_max,
    "pid": cmd_pid,
    "poll": event_backend("poll"),
    "recent": cmd_recent,
    "select": event_backend("select"),
    "server": cmd_server,
    "servers": cmd_servers,
    "socket": cmd_socket,
    "source": cmd_source,
    "ssl_allow_expired": flag("ssl_allow_expired"),
    "ssl_ciphers": cmd_ssl_ciphers,
    "ssl_client_renegotiation_interval": setting(
        "ssl_client_renegotiation_interval", "seconds", effect=lambda n: effects.Tls(),
        usage="ssl_client_renegotiation_interval [SECONDS]"),
    "ssl_key_password_file": text_setting("ssl_key_password_file", "FILE",
                                          effect=effects.Tls(), required=True, query=False),
    "ssl_info": cmd_ssl_info,
    "ssl_ocsp_response": cmd_ssl_ocsp_response,
    "ssl_option": cmd_ssl_option,
    "ssl_sni_path": text_setting("ssl_sni_path", "DIR", effect=effects.Tls(),
                                 required=True, query=False),
    "status": cmd_status,
    "tarpit_acl": setting("tarpit_acl", "ACL number", -1, aclmod.ACLS_MAX - 1,
                          fmt="tarpit_acl = {}", usage="tarpit_acl [N]"),
    "tcp_fastclose": cmd_tcp_fastclose,
    "timeout": setting("connect_timeout", "seconds", 1, 3600, usage="timeout [SECONDS]"),
    "tracking": setting("tracking", "seconds", usage="tracking [SECONDS]"),
    "web_stats": text_setting("webfile", "FILE"),
    "write": cmd_write,
}
HANDLERS.update({name: flag(name) for name in FLAGS})
HANDLERS.update({name: algorithm for name in ALGORITHMS})
HANDLERS.update({"help": cmd_help, "mrtg_bytes": mrtg("bytes"),      # issue 11
                 "mrtg_conns": mrtg("conns"), "trafficlog": dump_file("trafficlog"),
                 "throughputlog": dump_file("throughputlog")})

NO_HANDLERS = {
    "acl": cmd_no_acl,
    "block": obsolete,
    "delayed_forward": obsolete,
    "dsr_if": clear("dsr_if"),
    "dsr_ip": clear("dsr_ip"),
    "geoip_db": cmd_no_geoip_db,
    "log": clear("logfile", effects.Log(None)),
    "source": clear("source", effects.Source(None)),
    "ssl_allow_expired": flag("ssl_allow_expired", False),
    "web_stats": clear("webfile"),
}
NO_HANDLERS.update({name: flag(name, False) for name in FLAGS})
NO_HANDLERS.update({name: no_algorithm(name) for name in ALGORITHMS})
NO_HANDLERS.update({"trafficlog": clear("trafficlog", effects.Dumps()),       # issue 11
                    "throughputlog": clear("throughputlog", effects.Dumps())})


# --- admin web listener (pen/admin.py) ------------------------------------------------------
# Effect Admin(ListenAddr or None): open the admin listener there (the
# App sets settings.admin_listen once it is bound) or close it.  The password
# file is read and checked here, so a bad one changes nothing.


def cmd_admin_listen(word, args, state):
    arity(word, args, 1, "admin_listen [[ADDRESS:]PORT | /path/to/socket]")
    if not args:
        return Command(word, lambda state, now, wall: (
            [str(state.settings.admin_listen)] if state.settings.admin_listen else [], []))
    try:
        addr = parse_listen(args[0])
    except ConfigError as e:
        raise CommandError(f"admin_listen: {e}") from None
    return Command(word, lambda state, now, wall: ([], [effects.Admin(addr)]))


def cmd_admin_password_file(word, args, state):
    arity(word, args, 1, "admin_password_file [FILE]")
    if not args:
        return show(word, "admin_password_file")
    from .admin import read_password_file     # admin imports this module
    try:
        entries = read_password_file(args[0])
    except ValueError as e:
        raise CommandError(f"admin_password_file: {e}") from None

    def run(state, now, wall):
        state.settings.admin_password_file = args[0]
        state.settings.admin_passwords = entries
        return [], []
    return Command(word, run)


def cmd_no_admin_password_file(word, args, state):
    arity(word, args, 0, word)

    def run(state, now, wall):
        state.settings.admin_password_file = None
        state.settings.admin_passwords = ()
        return [], []
    return Command(word, run)


SUMMARIES.update({
    "admin_listen": "admin_listen [[ADDRESS:]PORT | PATH]: the admin web page's address",
    "admin_acl": "admin_acl [N]: the ACL admin web clients must pass",
    "admin_password_file": "admin_password_file [FILE]: hashes (pen --hash-password) "
                           "for the admin page's Basic login",
})
HANDLERS.update({
    "admin_listen": cmd_admin_listen,
    "admin_acl": setting("admin_acl", "ACL number", 0, aclmod.ACLS_MAX - 1,
                         usage="admin_acl [N]"),
    "admin_password_file": cmd_admin_password_file,
})
NO_HANDLERS.update({
    "admin_listen": clear("admin_listen", effects.Admin(None)),
    "admin_password_file": cmd_no_admin_password_file,
})
# --- end admin web listener -----------------------------------------------------------------

def cmd_no(word, args, state):
    if not args:
        raise CommandError("no: expected a setting to turn off (like 'no hash')")
    handler = NO_HANDLERS.get(args[0])
    if handler is None:
        raise CommandError(f"no: cannot turn off {args[0]!r} "
                           f"(expected one of {', '.join(sorted(NO_HANDLERS))})")
    return handler(f"no {args[0]}", args[1:], state)


HANDLERS["no"] = cmd_no


# --- issue 10: health checks, failure rules, hooks (pen/health.py, pen/hooks.py) ----------
CHECK_COUNT_MAX = 1000      # check_rise / check_fall / server_retry ceiling
HOOKS_LIMIT = 4096
SERVER_CHECK_KEYS = ("check_port",) + hooks.HOOK_WORDS


def cmd_check(word, args, state):
    """`check` (reply with the probe) or `check tcp|http|expect|udp ...`."""
    if not args:
        return Command(word, lambda state, now, wall: (
            [" ".join(["check"] + state.settings.check.words())], []))
    spec = health.parse_check(args, word)

    def run(state, now, wall):
        state.settings.check = spec
        return [], []
    return Command(word, run)


def seconds_setting(field, example=None):
    """`word [SECONDS]` for a fractional seconds setting (health.parse_interval);
    with `example`, 0 is refused (the value must be more than 0)."""
    def handler(word, args, state):
        arity(word, args, 1, f"{word} [SECONDS]")
        value = health.parse_interval(word, args[0]) if args else None
        if example is not None and value == 0:
            raise CommandError(f"{word}: seconds must be more than 0 (like {example})")

        def run(state, now, wall):
            if value is not None:
                setattr(state.settings, field, value)
            return [str(getattr(state.settings, field))], []
        return Command(word, run)
    return handler


cmd_check_interval = seconds_setting("check_interval")
cmd_hook_timeout = seconds_setting("hook_timeout", example="hook_timeout 30")


def cmd_hook(word, args, state):
    """`on_down "CMD"` sets the global hook; bare `on_down` replies with it."""
    arity(word, args, 1, f'{word} ["CMD"]')
    if not args:
        return show(word, word)
    cmd = _hook_text(word, args[0])

    def run(state, now, wall):
        setattr(state.settings, word, cmd)
        return [], []
    return Command(word, run)


def _hook_text(word, text):
    if "\0" in text:
        raise CommandError(f"{word}: the command must not contain NUL")
    if not text.strip():
        raise CommandError(f'{word}: empty command (to remove the hook: no {word})')
    return text


def cmd_server_checks(word, args, state):
    """`server N check_port P`, `server N on_down "CMD"` (and on_failure,
    on_success, on_up): per-server settings in Server.extra; `check_port 0`
    and `on_down ""` remove them.  Other server lines go to cmd_server."""
    if len(args) < 2 or args[1] not in SERVER_CHECK_KEYS:
        return cmd_server(word, args, state)
    usage = "server N check_port P | server N on_failure|on_success|on_down|on_up \"CMD\""
    idx = number("server", args[0], 0, INT_MAX, "index")
    count = len(state.servers)
    if idx >= count:
        raise CommandError(f"server: index {idx} out of range (0-{count - 1}); "
                           "create the server first (server N address HOST port P)")
    key, rest = args[1], args[2:]
    arity("server", rest, 1, usage, least=1)
    if key == "check_port":
        value = 0 if rest[0] == "0" else None
        if value is None:
            try:
                value = parse_port(rest[0], "check_port")
            except ConfigError as e:
                raise CommandError(f"server: {e}") from None
    else:
        value = _hook_text(f"server {idx} {key}", rest[0]) if rest[0] else None

    def run(state, now, wall):
        extra = state.servers[idx].extra
        if value:
            extra[key] = value
        else:
            extra.pop(key, None)
        return [], []
    return Command(word, run)


HANDLERS.update({
    "autodisable": flag("autodisable"),
    "check": cmd_check,
    "check_interval": cmd_check_interval,
    "check_fall": setting("check_fall", "count", 1, CHECK_COUNT_MAX, usage="check_fall [N]"),
    "check_rise": setting("check_rise", "count", 1, CHECK_COUNT_MAX, usage="check_rise [N]"),
    "hook_timeout": cmd_hook_timeout,
    "hooks_max": setting("hooks_max", "count", 0, HOOKS_LIMIT, usage="hooks_max [N]"),
    "server": cmd_server_checks,
    "server_retry": setting("server_retry", "count", 1, CHECK_COUNT_MAX,
                            usage="server_retry [N]"),
})
HANDLERS.update({word: cmd_hook for word in hooks.HOOK_WORDS})
SUMMARIES.update({
    "autodisable": "a server failing server_retry connects is disabled, not blacklisted",
    "check": 'check tcp | http PATH [CODE ...] | expect "TEXT" [send "TEXT"] | '
             'udp "PAYLOAD" [expect "TEXT"]: the health probe',
    "check_fall": "check_fall [N]: failed probes in a row that take a server down",
    "check_interval": "check_interval [SECONDS]: probe every server this often (0 = off)",
    "check_rise": "check_rise [N]: passing probes in a row that bring a server up",
    "hook_timeout": "hook_timeout [SECONDS]: kill a hook still running after this long",
    "hooks_max": "hooks_max [N]: hooks running at once; more are dropped",
    "on_down": 'on_down ["CMD"]: run CMD when a server goes out of service',
    "on_failure": 'on_failure ["CMD"]: run CMD when a connect to a server fails',
    "on_success": 'on_success ["CMD"]: run CMD when a connect to a server succeeds',
    "on_up": 'on_up ["CMD"]: run CMD when a server comes back into service',
    "server_retry": "server_retry [N]: failed connects in a row before a server is blacklisted",
})
NO_HANDLERS.update({"autodisable": flag("autodisable", False),
                    "check_interval": clear("check_interval", value=0),
                    "check": clear("check", value=health.TCP)})
NO_HANDLERS.update({word: clear(word) for word in hooks.HOOK_WORDS})
# --- end issue 10 ---------------------------------------------------------------------


# --- issue 12: HTTP mode header rules and sticky cookie (pen/rewrite.py) ----------------
# Rules are checked when made (rewrite.RuleError is a CommandError) and kept
# as tuples in order: settings.header_rules, settings.server_header_rules[N].


def _rule_lines(rules):
    return [f"{i} {rule.line()}" for i, rule in enumerate(rules)]


def cmd_header(word, args, state):
    """`header` lists the global rules; `header ACTION DIR "Name: value"` adds one."""
    if not args:
        return Command(word, lambda state, now, wall: (
            _rule_lines(state.settings.header_rules), []))
    rule = rewrite.rule_from_words(word, args)

    def run(state, now, wall):
        state.settings.header_rules += (rule,)
        return [], []
    return Command(word, run)


def cmd_no_header(word, args, state):
    """`no header` removes every global rule, `no header N` rule N."""
    arity(word, args, 1, "no header [N]")
    rules = state.settings.header_rules
    if args and not rules:
        raise CommandError(f"{word}: there are no header rules")
    n = number(word, args[0], 0, len(rules) - 1, "rule") if args else None

    def run(state, now, wall):
        st = state.settings
        st.header_rules = () if n is None else st.header_rules[:n] + st.header_rules[n + 1:]
        return [], []
    return Command(word, run)


def cmd_sticky_cookie(word, args, state):
    arity(word, args, 1, "sticky_cookie [NAME]")
    if not args:
        return show(word, "sticky_cookie")
    name = rewrite.check_cookie_name(args[0])

    def run(state, now, wall):
        state.settings.sticky_cookie = name
        return [], [effects.Stages()]      # the first-head stage reads the cookie
    return Command(word, run)


def cmd_server_http(word, args, state, _other=HANDLERS["server"]):
    """`server N header [ACTION DIR "Name: value"]` (list or add that server's
    rules), `server N no header [M]` (remove them all, or the one `server N
    header` lists as M), `server N cookie [VALUE]`; other server lines go on
    as before."""
    if args[1:2] not in (["header"], ["cookie"]) and args[1:3] != ["no", "header"]:
        return _other(word, args, state)
    idx = number("server", args[0], 0, INT_MAX, "index")
    count = len(state.servers)
    if idx >= count:
        raise CommandError(f"server: index {idx} out of range (0-{count - 1}); "
                           "create the server first (server N address HOST port P)")
    if args[1] == "no":
        return _server_no_header(word, idx, args[3:], state)
    key, rest = args[1], args[2:]
    if key == "cookie":
        arity("server", rest, 1, "server N cookie [VALUE]")
        if not rest:
            return Command(word, lambda state, now, wall: (
                [rewrite.server_cookie(state.settings, idx)], []))
        value = rewrite.check_cookie_value(rest[0])

        def run(state, now, wall):
            state.settings.server_cookies[idx] = value
            return [], []
        return Command(word, run)
    if not rest:
        return Command(word, lambda state, now, wall: (
            _rule_lines(state.settings.server_header_rules.get(idx, ())), []))
    rule = rewrite.rule_from_words(f"server {idx} header", rest)

    def run(state, now, wall):
        rules = state.settings.server_header_rules
        rules[idx] = rules.get(idx, ()) + (rule,)
        return [], []
    return Command(word, run)


def _server_no_header(word, idx, args, state):
    """`server N no header [M]`: as `no header [M]`, for server N's rules."""
    what = f"server {idx} no header"
    arity(what, args, 1, f"server {idx} no header [M]")
    rules = state.settings.server_header_rules.get(idx, ())
    if args and not rules:
        raise CommandError(f"{what}: server {idx} has no header rules")
    n = number(what, args[0], 0, len(rules) - 1, "rule") if args else None

    def run(state, now, wall):
        table = state.settings.server_header_rules
        kept = () if n is None else table[idx][:n] + table[idx][n + 1:]
        if kept:
            table[idx] = kept
        else:
            table.pop(idx, None)
        return [], []
    return Command(word, run)


HANDLERS.update({"header": cmd_header, "sticky_cookie": cmd_sticky_cookie,
                 "server": cmd_server_http})
NO_HANDLERS.update({"header": cmd_no_header, "sticky_cookie": clear("sticky_cookie", effects.Stages())})
SUMMARIES.update({
    "header": 'header [add|append|set|delete server|client "Name: value"]: list the '
              "HTTP header rules, or add one (%r %t %T %v expand)",
    "sticky_cookie": "sticky_cookie [NAME]: keep HTTP clients on their server with "
                     "this cookie",
})
# --- end issue 12 ---------------------------------------------------------------------


# --- issue 14: PROXY protocol out (pen/proxyproto.py) ------------------------------------
# settings.proxy_protocol is "off", "v1" or "v2" for every server;
# settings.server_proxy_protocol {index: version} overrides it per server
# (`server N proxy_protocol default` removes the override).  pen/proxyout.py
# writes the header before any client byte.
PROXY_VERSIONS = ("v1", "v2", "off")


def _proxy_version(word, args, extra=()):
    usage = f"{word} [{'|'.join(PROXY_VERSIONS + extra)}]"
    arity(word, args, 1, usage)
    if args and args[0] not in PROXY_VERSIONS + extra:
        raise CommandError(f"{word}: unknown version {args[0]!r} "
                           f"(expected {', '.join(PROXY_VERSIONS + extra)})")
    return args[0] if args else None


def cmd_proxy_protocol(word, args, state):
    version = _proxy_version(word, args)

    def run(state, now, wall):
        if version is not None:
            state.settings.proxy_protocol = version
        return ([] if version else [state.settings.proxy_protocol]), []
    return Command(word, run)


_server_before_proxy = HANDLERS["server"]


def cmd_server_proxy(word, args, state):
    """`server N proxy_protocol [v1|v2|off|default]`; other server lines go on."""
    if len(args) < 2 or args[1] != "proxy_protocol":
        return _server_before_proxy(word, args, state)
    idx = number("server", args[0], 0, INT_MAX, "index")
    count = len(state.servers)
    if idx >= count:
        raise CommandError(f"server: index {idx} out of range (0-{count - 1}); "
                           "create the server first (server N address HOST port P)")
    version = _proxy_version(f"server {idx} proxy_protocol", args[2:], ("default",))

    def run(state, now, wall):
        overrides = state.settings.server_proxy_protocol
        if version is None:
            return [overrides.get(idx, "default")], []
        if version == "default":
            overrides.pop(idx, None)
        else:
            overrides[idx] = version
        return [], []
    return Command(word, run)


def proxy_protocol_dump(state):
    """The lines `write` saves for the PROXY protocol settings."""
    st = state.settings
    lines = [f"proxy_protocol {st.proxy_protocol}"] if st.proxy_protocol != "off" else []
    return lines + [f"server {i} proxy_protocol {v}"
                    for i, v in sorted(st.server_proxy_protocol.items()) if i < len(state.servers)]


HANDLERS.update({"proxy_protocol": cmd_proxy_protocol, "server": cmd_server_proxy})
NO_HANDLERS["proxy_protocol"] = clear("proxy_protocol", value="off")
SUMMARIES.update({
    "proxy_protocol": "proxy_protocol [v1|v2|off]: send a PROXY header to servers; "
                      "server N proxy_protocol v1|v2|off|default overrides it",
})
# --- end issue 14 ----------------------------------------------------------------------------


# --- issue 14: PROXY in, graceful stop, per-client limits (pen/stages.py, pen/service.py) ----
# Effects: Stages() the pre-dispatch stages to run changed (accept_proxy,
# client_timeout); Shutdown(seconds) stop accepting and drain.
SHUTDOWN_DEFAULT = 30


def cmd_shutdown(word, args, state):
    arity(word, args, 1, "shutdown [SECONDS]")
    seconds = number(word, args[0], 0, 86400, "seconds") if args else SHUTDOWN_DEFAULT

    def run(state, now, wall):
        if state.settings.exit_enabled:
            return [], [effects.Shutdown(seconds)]
        return ["Shutdown is not enabled; restart with -X flag"], []
    return Command(word, run)


def cmd_client_rate(word, args, state):
    usage = "client_rate [N SECONDS] (0 turns it off)"
    if not args:
        return Command(word, lambda state, now, wall: (
            [f"{state.settings.client_rate} {state.settings.client_rate_window}"], []))
    arity(word, args, 2, usage, least=1 if args == ["0"] else 2)
    n = number(word, args[0], 0, INT_MAX, "connections")
    window = number(word, args[1], 1, 86400, "seconds") if len(args) > 1 else 1

    def run(state, now, wall):
        state.settings.client_rate, state.settings.client_rate_window = n, window
        return [], []
    return Command(word, run)


def client_limits_dump(state):
    """The lines `write` saves for this block."""
    st = state.settings
    return [text for wanted, text in (
        (st.accept_proxy, "accept_proxy"),
        (st.accept_proxy_acl >= 0, f"accept_proxy_acl {st.accept_proxy_acl}"),
        (st.client_conn_max, f"client_conn_max {st.client_conn_max}"),
        (st.client_rate, f"client_rate {st.client_rate} {st.client_rate_window}"),
        (st.client_timeout, f"client_timeout {st.client_timeout}"),
    ) if wanted]


def _stages_flag(field, value):
    """`accept_proxy` / `no accept_proxy`: a flag whose change reshapes the stages."""
    def handler(word, args, state):
        arity(word, args, 0, word)

        def run(state, now, wall):
            setattr(state.settings, field, value)
            return [], [effects.Stages()]
        return Command(word, run)
    return handler


HANDLERS.update({
    "accept_proxy": _stages_flag("accept_proxy", True),
    "accept_proxy_acl": setting("accept_proxy_acl", "ACL number", -1, aclmod.ACLS_MAX - 1,
                                usage="accept_proxy_acl [N] (-1: from anywhere)"),
    "shutdown": cmd_shutdown,
    "client_conn_max": setting("client_conn_max", "connections", 0, CONN_LIMIT,
                               usage="client_conn_max [N] (0: no limit)"),
    "client_rate": cmd_client_rate,
    "client_timeout": setting("client_timeout", "seconds", 0, 3600,
                              effect=lambda n: effects.Stages(),
                              usage="client_timeout [SECONDS] (0: off)"),
})
NO_HANDLERS["accept_proxy"] = _stages_flag("accept_proxy", False)
SUMMARIES.update({
    "accept_proxy": "accept_proxy: read a PROXY v1/v2 header from each client first; "
                    "no accept_proxy turns it off",
    "accept_proxy_acl": "accept_proxy_acl [N]: only sources ACL N permits may send "
                        "PROXY headers (-1: any)",
    "shutdown": "shutdown [SECONDS]: stop accepting, let connections finish, exit "
                "(after SECONDS at most, default 30; needs -X)",
    "client_conn_max": "client_conn_max [N]: connections one client address may hold at once",
    "client_rate": "client_rate [N SECONDS]: new connections one client address may open "
                   "per window",
    "client_timeout": "client_timeout [SECONDS]: close a client that sends nothing for that "
                      "long after connecting (not for server-speaks-first protocols)",
})
# --- end issue 14 (PROXY in, graceful stop, limits) -------------------------------------------


# --- the entry points ------------------------------------------------------------------


def parse(line, state):
    """A checked Command for `line`, or None for a blank line or comment.
    Raises CommandError, and then nothing may change."""
    words = split(line)
    if not words:
        return None
    if any("\0" in w for w in words):
        # no file name, address or value may hold one (open() and bind()
        # would raise ValueError when the effect runs)
        raise CommandError(f"{words[0].split(chr(0))[0] or 'command'}: "
                           "a NUL byte in the line; refused")
    handler = HANDLERS.get(words[0])
    if handler is None:
        raise CommandError(UNKNOWN.format(words[0]))
    return handler(words[0], words[1:], state)


def apply(state, cmd, now=None, wall=None):
    """Run a parsed Command: (reply_lines, effects).  Cannot fail."""
    if cmd is None:
        return [], []
    return cmd.run(state, time.monotonic() if now is None else now,
                   time.time() if wall is None else wall)


def execute(state, line, now=None, wall=None):
    """parse + apply; a CommandError becomes the one-line reply."""
    try:
        cmd = parse(line, state)
    except CommandError as e:
        return [str(e)], []
    return apply(state, cmd, now, wall)

