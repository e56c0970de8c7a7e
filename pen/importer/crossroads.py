"""PURE: Crossroads 1.16 services -> pen configurations (SPEC §10.6).

    convert(text, cfg_dir="") -> [Converted]   (ImportSyntaxError if unreadable)

One Converted per service: its config lines (pen's command language, one
command per line, what `pen -F` reads), the pen command line that runs
it, and the Findings (ignored / note / unsupported statements, each with
its LINE:COL).  Every statement of the Crossroads manual is mapped here;
a statement's argument is checked as Crossroads would (numbers, booleans,
the dispatch modes) and a bad one is a syntax error at its position.
"""

import math
import os
import re

from .common import (IGNORED, NOTE, UNSUPPORTED, Finding, ImportSyntaxError, listen_address,
                     quote, shell_line, word)
from .crossroads_parse import parse

BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
TYPES = ("any", "http", "stickyhttp")
MODES = {"roundrobin": None, "random": "random", "byconnections": "leastconn",
         "byorder": "byorder", "bysize": "bysize", "byduration": "byduration"}
OVER_MODES = ("bysize", "byduration")
HEADER_RE = re.compile(r"(add|append|set)(client|server)header")
WEIGHT_LCM_MAX = 1000       # beyond this the inverted weights are rounded
CONN_LIMIT = 1 << 20        # pen's conn_max ceiling
NUMBER_RE = re.compile(r"[0-9]+")
IPV4_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


class Backend:
    def __init__(self, block):
        self.block = block
        self.name = block.name
        self.host = self.port = None
        self.max = 0
        self.weight = 1
        self.weight_stmt = None
        self.decay = 0
        self.verbose = None         # the statement of verbosity on
        self.lines = []             # per-server commands, "server N " prefixed later
        self.cookie = None          # (NAME, VALUE, statement)
        self.set_cookies = []       # (header value, statement) of addclientheader Set-Cookie


class Service:
    def __init__(self, block):
        self.block = block
        self.name = block.name
        self.type = "any"
        self.port = None
        self.bindto = None
        self.debug = False
        self.mode, self.over = None, None
        self.revive = 0
        self.conn_max = 0
        self.backlog = 0
        self.idle = 0
        self.lines = []             # service-wide commands from hooks, headers, dumps
        self.throughput = None      # (FILE, statement)
        self.backends = []


class Converted:
    """One service's result."""

    def __init__(self, name, filename, lines, command, findings):
        self.name, self.filename = name, filename
        self.lines, self.command, self.findings = lines, command, findings


# --- argument checks ---------------------------------------------------------------------


def _fail(stmt, message):
    raise ImportSyntaxError(stmt.arg_where, f"{stmt.keyword}: {message}")


def _number(stmt, lo=0, hi=None):
    if not NUMBER_RE.fullmatch(stmt.arg):
        _fail(stmt, f"expected a non-negative whole number, got {stmt.arg!r}")
    value = int(stmt.arg)
    if value < lo or (hi is not None and value > hi):
        _fail(stmt, f"{value} is out of range (expected {lo}-{hi})" if hi is not None
              else f"{value} is too small (expected at least {lo})")
    return value


def _bool(stmt):
    value = BOOLEANS.get(stmt.arg.lower())
    if value is None:
        _fail(stmt, f"expected {', '.join(BOOLEANS)}, got {stmt.arg!r}")
    return value


def _text(stmt):
    if not stmt.arg:
        _fail(stmt, "missing argument")
    return stmt.arg


def _port(stmt, text=None):
    text = stmt.arg if text is None else text
    if not NUMBER_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        _fail(stmt, f"expected a port number 1-65535, got {text!r}")
    return int(text)


# --- service statements ------------------------------------------------------------------


def s_type(svc, stmt, findings):
    value = stmt.arg.lower()
    if value not in TYPES:
        _fail(stmt, f"expected {', '.join(TYPES)}, got {stmt.arg!r}")
    svc.type = value


def s_port(svc, stmt, findings):
    svc.port = _port(stmt)


def s_bindto(svc, stmt, findings):
    value = _text(stmt)
    if value.lower() == "any":
        svc.bindto = None
        return
    if not (IPV4_RE.fullmatch(value) or ":" in value):
        _fail(stmt, f"expected a numeric IP address or any, got {value!r}")
    svc.bindto = value


def s_verbosity(svc, stmt, findings):
    svc.debug = _bool(stmt) or svc.debug


def s_dispatchmode(svc, stmt, findings):
    words = stmt.arg.split()
    if not words or words[0] not in MODES:
        _fail(stmt, f"expected {', '.join(MODES)}, got {stmt.arg!r}")
    mode, rest = words[0], words[1:]
    over = None
    if rest:
        if mode not in OVER_MODES or len(rest) != 2 or rest[0] != "over" \
                or not NUMBER_RE.fullmatch(rest[1]) or int(rest[1]) < 1:
            _fail(stmt, f"unexpected {' '.join(rest)!r} (expected "
                        f"'{mode}'{' or ' + repr(mode + ' over N') if mode in OVER_MODES else ''})")
        over = int(rest[1])
    svc.mode, svc.over = mode, over


def s_revivinginterval(svc, stmt, findings):
    svc.revive = _number(stmt)


def s_maxconnections(svc, stmt, findings):
    value = _number(stmt)
    if value > CONN_LIMIT:
        findings.append(Finding(stmt.where, UNSUPPORTED,
                                f"maxconnections {value}: pen's conn_max goes up to "
                                f"{CONN_LIMIT}; using {CONN_LIMIT}"))
        value = CONN_LIMIT
    if stmt.keyword == "maxclients":
        findings.append(Finding(stmt.where, NOTE, "maxclients is the pre-0.26 name of "
                                "maxconnections; read as maxconnections"))
    svc.conn_max = value


def s_backlog(svc, stmt, findings):
    svc.backlog = _number(stmt)


def s_shmkey(svc, stmt, findings):
    _number(stmt)
    findings.append(Finding(stmt.where, IGNORED, f"shmkey {stmt.arg}: Crossroads' shared "
                            "memory key means nothing in pen (status is on the control "
                            "port, -C)"))


def s_connectiontimeout(svc, stmt, findings):
    if stmt.keyword == "sessiontimeout":
        findings.append(Finding(stmt.where, NOTE, "sessiontimeout is the pre-0.26 name of "
                                "connectiontimeout; read as connectiontimeout"))
    svc.idle = _number(stmt)


SERVICE = {
    "type": s_type, "port": s_port, "bindto": s_bindto, "verbosity": s_verbosity,
    "verbose": s_verbosity, "dispatchmode": s_dispatchmode,
    "revivinginterval": s_revivinginterval, "maxconnections": s_maxconnections,
    "maxclients": s_maxconnections, "backlog": s_backlog, "shmkey": s_shmkey,
    "connectiontimeout": s_connectiontimeout, "sessiontimeout": s_connectiontimeout,
}


# --- statements of a backend (some also allowed service-wide) ----------------------------


def b_server(be, stmt, findings):
    value = _text(stmt)
    host, port = value, None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            _fail(stmt, f"expected [IPV6]:PORT, got {value!r}")
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                _fail(stmt, f"expected [IPV6]:PORT, got {value!r}")
            port = _port(stmt, rest[1:])
    elif value.count(":") == 1:
        host, text = value.split(":")
        port = _port(stmt, text)
    if not host or any(c.isspace() for c in host):
        _fail(stmt, f"expected a host name or address, got {value!r}")
    be.host = host
    if port is not None:
        be.port = port


def b_port(be, stmt, findings):
    be.port = _port(stmt)


def b_verbosity(be, stmt, findings):
    be.verbose = stmt if _bool(stmt) else None


def b_maxconnections(be, stmt, findings):
    be.max = _number(stmt)


def b_weight(be, stmt, findings):
    be.weight = _number(stmt)
    be.weight_stmt = stmt


def b_decay(be, stmt, findings):
    be.decay = _number(stmt, 0, 100)


def hook(target, stmt, findings):
    name = {"onsuccess": "on_success", "onfailure": "on_failure"}[stmt.keyword]
    target.lines.append(f"{name} {quote(_text(stmt))}")


def dump(target, stmt, findings):
    target.lines.append(f"trafficlog {word(_text(stmt))}")


def header(target, stmt, findings):
    action, side = HEADER_RE.fullmatch(stmt.keyword).groups()
    value = _text(stmt)
    name, colon, rest = value.partition(":")
    if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
        _fail(stmt, f"expected \"Name: value\", got {value!r}")
    value = f"{name.strip()}: {rest.strip()}"
    if (isinstance(target, Backend) and action == "add" and side == "client"
            and name.strip().lower() == "set-cookie"):
        target.set_cookies.append((value, stmt))
    target.lines.append(f"header {action} {side} {quote(value)}")


def insertstickycookie(target, stmt, findings):
    findings.append(Finding(stmt.where, NOTE, "insertstickycookie (before 1.08) is "
                            "addclientheader \"Set-Cookie: ...\"; read so"))
    stmt.keyword, stmt.arg = "addclientheader", f"Set-Cookie: {_text(stmt)}"
    header(target, stmt, findings)


def insertrealip(target, stmt, findings):
    findings.append(Finding(stmt.where, NOTE, "insertrealip (before 1.08) is "
                            "setserverheader \"XR-Real-IP: %r\"; read so"))
    if _bool(stmt):
        stmt.keyword, stmt.arg = "setserverheader", "XR-Real-IP: %r"
        header(target, stmt, findings)


def b_stickycookie(be, stmt, findings):
    value = _text(stmt)
    name, eq, cookie = value.partition("=")
    if not eq or not name or not cookie or any(c.isspace() or c in ";," for c in value):
        _fail(stmt, f"expected NAME=VALUE, got {value!r}")
    be.cookie = (name, cookie, stmt)


COMMON = {"onsuccess": hook, "onfailure": hook, "trafficlog": dump,
          "insertstickycookie": insertstickycookie, "insertrealip": insertrealip}
COMMON.update({f"{a}{s}header": header for a in ("add", "append", "set")
               for s in ("client", "server")})
BACKEND = {
    "server": b_server, "port": b_port, "verbosity": b_verbosity, "verbose": b_verbosity,
    "maxconnections": b_maxconnections, "maxclients": b_maxconnections,
    "weight": b_weight, "decay": b_decay, "stickycookie": b_stickycookie,
}
BACKEND.update(COMMON)
KEYWORDS = set(SERVICE) | set(BACKEND) | {"throughputlog", "backend"}


def throughputlog(svc, stmt, findings, backend=None):
    path = _text(stmt)
    if svc.throughput is None:
        svc.throughput = (path, stmt)
        svc.lines.append(f"throughputlog {word(path)}")
        if backend is not None:
            findings.append(Finding(stmt.where, NOTE, f"throughputlog in backend {backend}: "
                                    "pen's throughputlog records every server's "
                                    "connections"))
    elif svc.throughput[0] != path:
        findings.append(Finding(stmt.where, UNSUPPORTED, f"throughputlog {path}: pen has one "
                                f"throughputlog per pen, already {svc.throughput[0]} "
                                f"(line {svc.throughput[1].line}); this one is not written"))


# --- reading a service -------------------------------------------------------------------


def _unknown(stmt, context):
    other = "a backend" if context == "service" else "a service"
    hint = ""
    if stmt.keyword in (SERVICE if context == "backend" else BACKEND):
        hint = f" ({stmt.keyword} belongs in {other})"
    raise ImportSyntaxError(stmt.where, f"unknown statement {stmt.keyword!r} in a "
                            f"{context}{hint}")


def read_service(block, findings):
    svc = Service(block)
    for stmt in block.statements:
        if stmt.keyword == "throughputlog":
            throughputlog(svc, stmt, findings)
        elif stmt.keyword in SERVICE:
            SERVICE[stmt.keyword](svc, stmt, findings)
        elif stmt.keyword in COMMON:
            COMMON[stmt.keyword](svc, stmt, findings)
        else:
            _unknown(stmt, "service")
    for bblock in block.backends:
        be = Backend(bblock)
        for stmt in bblock.statements:
            if stmt.keyword == "throughputlog":
                throughputlog(svc, stmt, findings, be.name)
            elif stmt.keyword in BACKEND:
                BACKEND[stmt.keyword](be, stmt, findings)
            else:
                _unknown(stmt, "backend")
        if be.host is None:
            raise ImportSyntaxError(bblock.where, f"backend {be.name}: no server statement "
                                    "(required: server HOST[:PORT];)")
        if be.port is None:
            raise ImportSyntaxError(bblock.where, f"backend {be.name}: no port (give "
                                    "server HOST:PORT; or port N;)")
        svc.backends.append(be)
    verbose = [be for be in svc.backends if be.verbose]
    if verbose and not svc.debug:
        svc.debug = True
        findings.append(Finding(verbose[0].verbose.where, NOTE, "verbosity on in backend "
                                f"{', '.join(be.name for be in verbose)}: pen's debug level "
                                "is for the whole pen; written as debug 1"))
    if svc.port is None:
        raise ImportSyntaxError(block.where, f"service {svc.name}: no port statement "
                                "(required: port N;)")
    if not svc.backends:
        raise ImportSyntaxError(block.where, f"service {svc.name}: no backend "
                                "(at least one backend NAME { server HOST:PORT; } is required)")
    return svc


def pen_weights(backends, findings):
    """Crossroads' weight is a penalty (bigger = chosen less); pen's a
    share (bigger = chosen more).  Each pen weight is L / w with L the
    least common multiple of the service's weights, so the ratios are
    kept exactly (1, 2, 4 -> 4, 2, 1); rounded if L is too big."""
    for be in backends:
        if be.weight == 0:
            findings.append(Finding(be.weight_stmt.where, UNSUPPORTED, f"weight 0 in backend "
                                    f"{be.name} (no penalty at all) has no pen equivalent; "
                                    "written as weight 1 of the heaviest"))
    weights = [be.weight or 1 for be in backends]
    lcm = math.lcm(*weights)
    if lcm <= WEIGHT_LCM_MAX:
        return [lcm // w for w in weights]
    top = max(weights)
    stmt = next(be.weight_stmt for be in backends if be.weight_stmt is not None)
    findings.append(Finding(stmt.where, NOTE, "weights inverted with rounding "
                            f"(their least common multiple {lcm} is over {WEIGHT_LCM_MAX})"))
    return [max(1, round(top / w)) for w in weights]


def _sticky(svc, findings):
    """sticky_cookie NAME and each server's cookie VALUE; a Set-Cookie
    addclientheader that sets the same cookie is then pen's own work."""
    cookies = [be.cookie for be in svc.backends if be.cookie]
    if not cookies:
        return None
    name, _, first = cookies[0]
    for other, _, stmt in cookies[1:]:
        if other != name:
            findings.append(Finding(stmt.where, UNSUPPORTED, f"stickycookie {other}=...: pen "
                                    f"has one sticky cookie name per pen, already {name} "
                                    f"(line {first.line}); this server gets none"))
    for be in svc.backends:
        if be.cookie is None:
            continue
        cname, value, stmt = be.cookie
        if cname != name:
            be.cookie = None
            continue
        for text, hstmt in be.set_cookies:
            if re.match(rf"Set-Cookie:\s*{re.escape(name)}={re.escape(value)}\s*(;|$)", text):
                be.lines.remove(f"header add client {quote(text)}")
                findings.append(Finding(hstmt.where, NOTE, f"addclientheader \"{text}\": "
                                        f"pen's sticky_cookie sets {name}={value} itself "
                                        "(with Path=/; HttpOnly) on responses to clients "
                                        "without it; not written as a header rule"))
    return name


def emit(svc, findings, source, cfg_path):
    """The config lines and the pen command line of one service."""
    words = ["pen"]
    if svc.backlog:
        words += ["-q", str(svc.backlog)]
    listen = listen_address(svc.bindto, svc.port)
    words += ["-F", cfg_path, listen]
    command = shell_line(words)
    lines = [f"# Crossroads service {svc.name} ({source} line {svc.block.line}), "
             "imported by pen-import",
             f"# run: {command}",
             "# Crossroads does not remember clients: plain round robin, no tracking",
             "roundrobin"]
    if svc.debug:
        lines.append("debug 1")
    if svc.type != "any":
        lines.append("http")
        if svc.type == "stickyhttp":
            findings.append(Finding(_stmt_where(svc, "type"), NOTE,
                                    "type stickyhttp is read as type http"))
    mode = MODES.get(svc.mode)
    if mode:
        lines.append(f"{mode} over {svc.over}" if svc.over else mode)
    if svc.revive:
        lines.append(f"check_interval {svc.revive}")
    if svc.conn_max:
        lines.append(f"conn_max {svc.conn_max}")
    if svc.idle:
        lines.append(f"idle_timeout {svc.idle}")
    lines += svc.lines
    cookie = _sticky(svc, findings)
    if cookie:
        lines.append(f"sticky_cookie {cookie}")
    weights = pen_weights(svc.backends, findings)
    for i, (be, weight) in enumerate(zip(svc.backends, weights)):
        lines.append(f"# backend {be.name} (line {be.block.line})")
        lines.append(f"server {i} address {be.host} port {be.port} max {be.max} "
                     f"hard {be.max} weight {weight}")
        if be.decay:
            lines.append(f"server {i} decay {be.decay}")
        if be.cookie:
            lines.append(f"server {i} cookie {word(be.cookie[1])}")
        lines += [f"server {i} {text}" for text in be.lines]
    return lines, command


def _stmt_where(svc, keyword):
    for stmt in svc.block.statements:
        if stmt.keyword == keyword:
            return stmt.where
    return svc.block.where


def convert(text, source="crossroads.conf", cfg_dir=""):
    """Every service of a Crossroads configuration as a Converted."""
    out = []
    for block in parse(text, KEYWORDS):
        findings = []
        svc = read_service(block, findings)
        filename = f"{svc.name}.cfg"
        lines, command = emit(svc, findings, source, os.path.join(cfg_dir, filename))
        out.append(Converted(svc.name, filename, lines, command, findings))
    return out
