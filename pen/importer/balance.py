"""PURE: a balance 3.34 command line -> pen's (SPEC §10.6).

    convert(args) -> (pen words, [Finding])   (ImportSyntaxError if unreadable)

balance [-b addr] [-B addr] [-t sec] [-T sec] [-adfpHM] port
        host1[:port1[:maxc]] [!|%] [... hostn[:portn[:maxc]]]

Channel groups separated by `!` become pen priorities (group g -> prio g,
with `prio` on): pen takes the lowest prio among available servers, as
balance goes to the next group only when a group is used up.  A `%` marks
the group before it as a hash group: with one group that is pen's `-h`
(and `-s` unless balance's -H, since balance does not fail over from a
hashed channel without it).  Without hashing, `-r`: balance keeps no
client table.  Findings are placed as `argument N` (from 1).
"""

import re

from .common import IGNORED, NOTE, UNSUPPORTED, Finding, ImportSyntaxError

FLAGS = "adfpHMi"
VALUED = "bBtTc"
PORT_RE = re.compile(r"[0-9]+|[A-Za-z][A-Za-z0-9_-]*")


def _where(n):
    return f"argument {n}"


def _options(args):
    """(options dict letter -> (value or True, position), index of the port)."""
    opts = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and len(args[i]) > 1:
        arg, pos = args[i], i + 1
        if arg == "--":
            return opts, i + 1
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in FLAGS:
                opts[letter] = (True, pos)
                j += 1
            elif letter in VALUED:
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(args):
                        raise ImportSyntaxError(_where(pos), f"option -{letter} needs a value")
                    value = args[i]
                opts[letter] = (value, pos)
                break
            else:
                raise ImportSyntaxError(_where(pos), f"unknown balance option -{letter} "
                                        f"(expected one of -{FLAGS} or -{VALUED} VALUE)")
        i += 1
    return opts, i


def _channel(text, pos):
    """host[:port[:maxc]] -> (host, port or '', maxc)."""
    host, rest = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ImportSyntaxError(_where(pos), f"channel {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ImportSyntaxError(_where(pos), f"channel {text!r}: expected [ADDR]:PORT")
        rest = rest[1:]
    elif ":" in text:
        host, rest = text.split(":", 1)
    parts = rest.split(":") if rest else []
    if not host or len(parts) > 2:
        raise ImportSyntaxError(_where(pos), f"channel {text!r}: expected host[:port[:maxc]]")
    port = parts[0] if parts else ""
    if port and not PORT_RE.fullmatch(port):
        raise ImportSyntaxError(_where(pos), f"channel {text!r}: port {port!r} is not a "
                                "port number or service name")
    maxc = parts[1] if len(parts) > 1 else ""
    if maxc and not maxc.isdigit():
        raise ImportSyntaxError(_where(pos), f"channel {text!r}: maxc {maxc!r} is not a "
                                "non-negative number")
    return host, port, int(maxc or 0)


def _groups(args, start):
    """[(channels, hashed, position)] from the channel arguments."""
    groups, current = [], []
    for i in range(start, len(args)):
        pos, text = i + 1, args[i]
        if text in ("!", "%"):
            if not current:
                raise ImportSyntaxError(_where(pos), f"{text} after an empty channel group "
                                        "(expected a channel before it)")
            groups.append((current, text == "%", pos))
            current = []
        else:
            current.append((_channel(text, pos), pos))
    if current:
        groups.append((current, False, len(args)))
    elif groups and not groups[-1][1]:
        raise ImportSyntaxError(_where(len(args)), "! at the end (expected a channel group "
                                "after it)")
    if not groups:
        raise ImportSyntaxError(_where(start + 1), "no channel (expected "
                                "host[:port[:maxc]] after the port)")
    return groups


def _spec(host, port, maxc, prio=None):
    host = f"[{host}]" if ":" in host else host
    if prio is not None:
        return f"{host}:{port}:{maxc}:0:0:{prio}"
    if maxc:
        return f"{host}:{port}:{maxc}"
    return f"{host}:{port}" if port else host


def convert(args):
    """balance's arguments -> (pen's arguments, findings)."""
    args = list(args)
    findings = []
    opts, i = _options(args)
    for letter in ("i", "c"):
        if letter in opts:
            raise ImportSyntaxError(_where(opts[letter][1]), f"balance -{letter} talks to a "
                                    "running balance; with pen that is penctl CTL COMMAND "
                                    "(or penctl -i CTL) against pen's -C control port")
    if i >= len(args):
        raise ImportSyntaxError(_where(i + 1), "missing the port (expected "
                                "balance [options] port host1[:port1[:maxc]] ...)")
    port = args[i]
    if not PORT_RE.fullmatch(port):
        raise ImportSyntaxError(_where(i + 1), f"port {port!r} is not a port number or "
                                "service name")
    groups = _groups(args, i + 1)
    words = ["pen"]
    for letter in "fd":
        if letter in opts:
            words.append(f"-{letter}")
    hashed = [g for g in groups if g[1]]
    if len(groups) == 1 and hashed:
        words.append("-h")
        if "H" not in opts:
            words.append("-s")
    else:
        words.append("-r")
        if "H" in opts:
            findings.append(Finding(_where(opts["H"][1]), IGNORED, "-H (hash failover) "
                                    "without a hash group means nothing"))
    for _, _, pos in hashed if len(groups) > 1 else ():
        findings.append(Finding(_where(pos), UNSUPPORTED, "% in front of another group: pen "
                                "cannot hash inside a priority group; that group is "
                                "written as plain prio"))
    if "t" in opts:
        value, pos = opts["t"]
        if not value.isdigit() or int(value) < 1:
            raise ImportSyntaxError(_where(pos), f"-t {value!r}: expected a whole number "
                                    "of seconds >= 1")
        words += ["-t", value]
    if "a" in opts:
        words += ["-o", "autodisable"]
    if "B" in opts:
        words += ["-o", f"source {opts['B'][0]}"]
    if "p" in opts:
        words += ["-a", "-o", "trafficlog /dev/stdout"]
        findings.append(Finding(_where(opts["p"][1]), NOTE, "-p (packet dump on stdout) is "
                                "written as pen's trafficlog /dev/stdout in ascii (-a)"))
    if "T" in opts:
        findings.append(Finding(_where(opts["T"][1]), IGNORED, f"-T {opts['T'][0]} (select "
                                "timeout) means nothing in pen; see idle_timeout"))
    if "M" in opts:
        findings.append(Finding(_where(opts["M"][1]), IGNORED, "-M (memory mapped IPC) means "
                                "nothing in pen (it has a control port, -C)"))
    if len(groups) > 1:
        words += ["-o", "prio"]
        for channels, _, pos in groups:
            if len(channels) > 1:
                findings.append(Finding(_where(channels[0][1]), NOTE, "a group of "
                                        f"{len(channels)} channels: pen's prio takes the "
                                        "first available of equal prio, balance rotates "
                                        "within the group"))
    bind = opts.get("b", (None, 0))[0]
    words.append(f"{bind}:{port}" if bind and ":" not in bind
                 else f"[{bind}]:{port}" if bind else port)
    for g, (channels, _, _) in enumerate(groups):
        for (host, cport, maxc), _ in channels:
            words.append(_spec(host, cport, maxc, g if len(groups) > 1 else None))
    return words, findings
