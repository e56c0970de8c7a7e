"""The config file side of the command language: `write` and `-F`.

    dump(state, path) -> lines              what `write` puts in the file
    load_config(path, state) -> (effects, errors)   -F, SIGHUP, include

A config file is penctl commands, one per line, run through
commands.parse/apply like the control socket.  `dump` keeps pen's layout
(so a reference pen can read our files and the other way round), then adds
the settings pen 0.34.1 forgets to write, then our extensions.
"""

import os
import time

from . import commands, stats
from .effects import Include
from . import health, hooks   # issue 10
from .state import Settings   # issue 10: its defaults
from .state import CLIENTS_MAX, CONN_MAX

INCLUDE_DEPTH = 16
PENDING_MAX = 100
RENEGOTIATION_INTERVAL = 3600


def run_lines(state, lines, now=None, wall=None, opener=None, base=None, _stack=()):
    """The one command pipeline (control socket, -o/-O, -F, SIGHUP,
    include): parse and apply each (label, line) in order.  Returns
    (replies, effects, errors): the replies and effects of the good lines
    in order, and one `label: reason` per bad line (a bad line changes
    nothing).  An `include FILE` runs here, at once, through load_config:
    a relative FILE is taken from `base` (the including file's directory),
    or, from the control socket and -o, as given -- `opener` resolves it
    as at startup."""
    replies, effects, errors = [], [], []
    for label, line in lines:
        try:
            cmd = commands.parse(line, state)
        except commands.CommandError as e:
            errors.append(f"{label}: {e}" if label else str(e))
            continue
        if cmd is None:
            continue
        out, line_effects = commands.apply(state, cmd, now, wall)
        replies.extend(out)
        for effect in line_effects:
            if not isinstance(effect, Include):
                effects.append(effect)
                continue
            target = effect[1]
            if base is not None and not os.path.isabs(target):
                target = os.path.join(base, target)
            more, errs = load_config(target, state, now, wall, _stack, opener)
            effects.extend(more)
            errors.extend(f"{label}: {err}" if label else err for err in errs)
    return replies, effects, errors


def load_config(path, state, now=None, wall=None, _stack=(), opener=None, replies=None):
    """Run every line of a config file (run_lines, labelled `file:line`).
    Returns (effects, errors); the replies of its lines go to the list
    `replies` if one is given (pen prints them at startup), else nowhere.
    `opener` is open()'s: pen passes one that reads relative to a
    directory fd kept from before chroot."""
    real = os.path.realpath(path)
    if real in _stack:
        chain = " -> ".join(list(_stack) + [real])
        return [], [f"{path}: include loop ({chain})"]
    if len(_stack) >= INCLUDE_DEPTH:
        return [], [f"{path}: includes nested more than {INCLUDE_DEPTH} deep"]
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", opener=opener) as f:
            # Lines end at LF (and split() cuts at CR), as pen's fgets: not
            # at \v, \f, \x1c-\x1e, \x85 or \u2028, where splitlines() would
            # cut a comment or a quoted value and run the rest as a command.
            lines = f.read().split("\n")
    except OSError as e:
        return [], [f"{path}: cannot read: {e.strerror or e}"]
    labelled = ((f"{path}:{n}", line) for n, line in enumerate(lines, 1))
    out, effects, errors = run_lines(state, labelled, now, wall, opener,
                                     os.path.dirname(path), _stack + (real,))
    if replies is not None:
        replies.extend(out)
    return effects, errors


# --- write -----------------------------------------------------------------------------


def _q(text):
    return "'" + str(text).replace("'", "'\\''") + "'"


def command_line(state, path):
    """The `# pen ...` line of `write`, as pen builds it."""
    st = state.settings
    words = ["# pen"]
    words += [opt for opt, on in (("-U", st.udp), ("-f", st.foreground),
                                  ("-X", st.exit_enabled)) if on]
    if st.clients_max != CLIENTS_MAX:
        words.append(f"-c {st.clients_max}")
    if st.emergency:
        words.append(f"-e {st.emergency}")
    if st.abuse:
        words.append(f"-B {st.abuse}")
    for opt, value in (("-j", st.chroot), ("-p", st.pidfile), ("-u", st.user)):
        if value:
            words.append(f"{opt} {_q(value)}")
    if st.conn_max != CONN_MAX:
        words.append(f"-x {st.conn_max}")
    words.append(f"-F {_q(path)}")
    if st.control:
        words.append(f"-C {st.control}")
    if st.listen is not None:
        words.append(str(st.listen))
    return " ".join(words)


def _on(word, on):
    return word if on else f"no {word}"


def word(text):
    """A value as one command word: as it is when it splits as one (pen's
    lines stay pen's), else quoted as commands.split() reads it back (a
    path with a blank, a quote, or a leading '#').  None (unset) gives ""."""
    if not text:
        return ""
    if not text.startswith("#") and text.split() == [text] and '"' not in text:
        return text
    return hooks.quote(text)


def dump(state, path=None, wall=None):
    """The lines `write` emits: pen's layout, then what pen forgets."""
    st = state.settings
    wall = time.time() if wall is None else wall
    lines = [f"# Generated by pen {stats.local_time(wall)}",
             command_line(state, path or st.cfgfile or "")]
    lines += state.acls.dump()
    lines += [_on("ascii", st.ascii),
              f"blacklist {st.blacklist_time}",
              f"client_acl {st.client_acl}",
              f"control_acl {st.control_acl}",
              f"debug {st.debug}",
              _on("hash", st.hash),
              _on("http", st.http),
              f"log {word(st.logfile)}" if st.logfile else "no log",
              _on("roundrobin", st.roundrobin)]
    for i, s in enumerate(state.servers):
        # pen writes weight and prio only in -W / prio mode, so a round trip
        # lost them; we always write them.  acl -1 (none) is pen's acl 0.
        lines.append(f"server {i} acl {max(s.acl, 0)} address {s.host} port {s.port} "
                     f"max {s.max} hard {s.hard} weight {s.weight} prio {s.prio}")
    timeout = st.connect_timeout
    timeout = int(timeout) if float(timeout).is_integer() else timeout
    lines += [_on("stubborn", st.stubborn),
              f"tcp_fastclose {st.tcp_fastclose}",
              _on("tcp_nodelay", st.tcp_nodelay),
              f"timeout {timeout}",
              f"tracking {st.tracking}",
              f"web_stats {word(st.webfile)}" if st.webfile else "no web_stats",
              _on("weight", st.weight),
              _on("prio", st.prio)]
    # Settings pen 0.34.1 knows but does not write; only when not default.
    extra = [
        (st.clients_max != CLIENTS_MAX, f"clients_max {st.clients_max}"),
        (st.conn_max != CONN_MAX, f"conn_max {st.conn_max}"),
        (st.idle_timeout, f"idle_timeout {st.idle_timeout}"),
        (st.pending_max != PENDING_MAX, f"pending_max {st.pending_max}"),
        (st.idlers, f"idlers {st.idlers}"),
        (st.defer_accept, f"defer_accept {st.defer_accept}"),
        (st.tarpit_acl != -1, f"tarpit_acl {st.tarpit_acl}"),
        (st.abort_on_error, "abort_on_error"),
        (st.dummy, "dummy"),
        (st.keepalive, "keepalive"),
        (st.transparent, "transparent"),
        (st.peek, "peek"),
        (not st.splice, "no splice"),
        (st.source, f"source {st.source}"),
        (st.dsr_if, f"dsr_if {word(st.dsr_if)}"),
        (st.dsr_ip, f"dsr_ip {word(st.dsr_ip)}"),
        (st.ssl_ciphers, f"ssl_ciphers {word(st.ssl_ciphers)}"),
        (st.ssl_client_renegotiation_interval != RENEGOTIATION_INTERVAL,
         f"ssl_client_renegotiation_interval {st.ssl_client_renegotiation_interval}"),
        (st.ssl_sni_path, f"ssl_sni_path {word(st.ssl_sni_path)}"),
        (st.ssl_key_password_file, f"ssl_key_password_file {word(st.ssl_key_password_file)}"),
        (st.ssl_allow_expired, "ssl_allow_expired"),
    ]
    lines += [text for wanted, text in extra if wanted]
    lines += [f"ssl_option {option}" for option in st.ssl_options]
    # Our extensions (a reference pen would ignore these lines).
    if st.geoip_db:
        lines.append(f"geoip_db {word(st.geoip_db)}")
    if st.algorithm:
        lines.append(st.algorithm)
        if st.algorithm_over:                      # issue 11: bysize/byduration over N
            lines[-1] += f" over {st.algorithm_over}"
    # --- issue 11: decay, dumps ---
    lines += [f"server {i} decay {f.decay}" for i, f in sorted(state.loads.items())
              if f.decay and i < len(state.servers)]
    lines += [f"{name} {word(path)}" for name, path in (("trafficlog", st.trafficlog),
                                                  ("throughputlog", st.throughputlog)) if path]
    lines += [f"server {i} trafficlog {word(path)}"
              for i, path in sorted(st.server_trafficlogs.items()) if i < len(state.servers)]
    # --- end issue 11 ---
    # --- issue 12: HTTP mode header rules and sticky cookie ---
    lines += [f"header {rule.line()}" for rule in st.header_rules]
    lines += [f"server {i} header {rule.line()}"
              for i, rules in sorted(st.server_header_rules.items()) if i < len(state.servers)
              for rule in rules]
    if st.sticky_cookie:
        lines.append(f"sticky_cookie {st.sticky_cookie}")
    lines += [f"server {i} cookie {value}"
              for i, value in sorted(st.server_cookies.items()) if i < len(state.servers)]
    # --- end issue 12 ---
    # --- issue 10: health checks, failure rules, hooks ---
    lines += [text for wanted, text in (
        (st.check_interval, f"check_interval {st.check_interval}"),
        (st.check != health.TCP, " ".join(["check"] + st.check.words())),
        (st.check_rise != Settings.check_rise, f"check_rise {st.check_rise}"),
        (st.check_fall != Settings.check_fall, f"check_fall {st.check_fall}"),
        (st.server_retry != Settings.server_retry, f"server_retry {st.server_retry}"),
        (st.autodisable, "autodisable"),
        (st.hooks_max != Settings.hooks_max, f"hooks_max {st.hooks_max}"),
        (st.hook_timeout != Settings.hook_timeout, f"hook_timeout {st.hook_timeout}"),
    ) if wanted]
    lines += [f"{word} {hooks.quote(getattr(st, word))}" for word in hooks.HOOK_WORDS
              if getattr(st, word)]
    for i, s in enumerate(state.servers):
        if s.extra.get("check_port"):
            lines.append(f"server {i} check_port {s.extra['check_port']}")
        lines += [f"server {i} {word} {hooks.quote(s.extra[word])}"
                  for word in hooks.HOOK_WORDS if s.extra.get(word)]
    # --- end issue 10 ---
    # admin web listener (pen/admin.py)
    if st.admin_listen is not None:
        lines.append(f"admin_listen {word(str(st.admin_listen))}")
    if st.admin_acl:
        lines.append(f"admin_acl {st.admin_acl}")
    if st.admin_password_file:
        lines.append(f"admin_password_file {word(st.admin_password_file)}")
    lines += commands.proxy_protocol_dump(state)   # issue 14: PROXY protocol out
    lines += commands.client_limits_dump(state)    # issue 14: PROXY in, client limits
    lines += [f"server {i} disable" for i, s in enumerate(state.servers) if s.disabled]
    lines += [f"server {i} drain" for i, s in enumerate(state.servers) if s.draining]
    return lines

