"""pen-import: move a Crossroads or balance setup to pen (SPEC §10.6).

    pen-import crossroads FILE [-o DIR] [--force]
    pen-import balance [--force] [--] BALANCE-ARGUMENTS...

crossroads: writes SERVICE.cfg (in DIR, default the current directory) for
each service of FILE (`-` reads stdin) and prints, one a line, the pen
command that runs it.  balance: prints the pen command line.  Each
statement that means nothing in pen is reported as ignored, each one that
is mapped only approximately as a note, each one pen cannot express as
unsupported (on stderr, with its line and column or argument number).
Everything else is still written.  Exit status: 0, 1 for bad usage or
input that cannot be read (a syntax error, with its line and column;
nothing is written), 2 when something is unsupported (0 with --force).
"""

import os
import sys

from . import balance, crossroads
from .common import UNSUPPORTED, ImportSyntaxError, shell_line

PROG = "pen-import"
USAGE = f"""\
usage: {PROG} crossroads FILE [-o DIR] [--force]
       {PROG} balance [--force] [--] BALANCE-ARGUMENTS...
"""
HELP = USAGE + """
crossroads  write SERVICE.cfg for each Crossroads service of FILE (- is
            stdin) into DIR (default .) and print the pen command running it
balance     print the pen command line for a balance command line
--force     exit 0 even when something could not be expressed in pen
"""


def _usage(message):
    sys.stderr.write(f"{PROG}: {message}\n{USAGE}")
    return 1


def _report(findings, source, force):
    for f in findings:
        print(f.line(source), file=sys.stderr)
    if any(f.kind == UNSUPPORTED for f in findings) and not force:
        print(f"{PROG}: some of {source} cannot be expressed in pen (see above); "
              "the rest is written; --force to accept", file=sys.stderr)
        return 2
    return 0


def run_crossroads(args):
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    out_dir = None
    if "-o" in args:
        i = args.index("-o")
        if i + 1 >= len(args):
            return _usage("-o needs a directory")
        out_dir = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or (args[0].startswith("-") and args[0] != "-"):
        return _usage("crossroads takes one FILE" if len(args) != 1
                      else f"unknown option {args[0]}")
    path = args[0]
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError as e:
        print(f"{PROG}: {path}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        services = crossroads.convert(text, source, out_dir or "")
    except ImportSyntaxError as e:
        print(f"{PROG}: {source}:{e.where}: syntax error: {e.message}; nothing written",
              file=sys.stderr)
        return 1
    if not services:
        print(f"{PROG}: {source}: no service block (expected service NAME {{ ... }})",
              file=sys.stderr)
        return 1
    try:
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        for svc in services:
            target = os.path.join(out_dir or "", svc.filename)
            tmp = target + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("\n".join(svc.lines) + "\n")
            os.replace(tmp, target)
    except OSError as e:
        print(f"{PROG}: cannot write {e.filename or out_dir}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    findings = []
    for svc in services:
        print(svc.command)
        findings += svc.findings
    return _report(findings, source, force)


def run_balance(args):
    force = False
    while args and args[0] in ("--force", "--"):
        if args[0] == "--":
            args = args[1:]
            break
        force, args = True, args[1:]
    try:
        words, findings = balance.convert(args)
    except ImportSyntaxError as e:
        print(f"{PROG}: balance {e.where}: {e.message}", file=sys.stderr)
        return 1
    print(shell_line(words))
    return _report(findings, "balance", force)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        return _usage("missing what to import (crossroads or balance)")
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    kind, rest = argv[0], argv[1:]
    if kind == "crossroads":
        return run_crossroads(rest)
    if kind == "balance":
        return run_balance(rest)
    return _usage(f"unknown input {kind!r} (expected crossroads or balance)")


if __name__ == "__main__":
    sys.exit(main())
