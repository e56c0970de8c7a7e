"""penctl: talk to a running pen's control socket.

    penctl host:port|/path/to/socket command [words...]
    penctl -i host:port|/path/to/socket

The first form sends one command, prints the reply and exits 0 (as pen's
penctl), or 2 when pen answered with an error (a line starting with the
command's name and a colon, or pen's "ignoring command"), so scripts can
tell.  When the control socket cannot be reached it prints one line on
stderr naming the address and the reason, and exits 1.  The second form
is an interactive prompt (readline history) that sends one command per line
until `quit` or end of input, like balance's interactive mode.

Two commands are for MRTG (balance's format: two values, the uptime, the
target name).  Our pen answers them itself; for a pen that does not know
them (the reference pen), penctl works them out, with UNKNOWN uptime:

    mrtg_bytes N   bytes received from / sent to server N (from `servers`)
    mrtg_conns N   connections ever made to server N, and current ones
                   (from `status json`, so this needs our pen)
"""

import json
import os
import socket
import sys

TIMEOUT = 10.0
RECV_SIZE = 65536
HISTORY_FILE = "~/.penctl_history"
HISTORY_LENGTH = 1000
PROMPT = "penctl> "
USAGE = """\
usage: penctl host:port|/path/to/socket command [words...]
       penctl -i host:port|/path/to/socket

Sends one command to pen's control socket (pen -C) and prints the reply.
Exit status: 0 done, 1 pen could not be reached, 2 pen answered with an error.
Commands (pen(1) and penctl(1) describe them all; `penctl ADDR help` asks pen):
  servers, status, mode, recent, clients, conn_max, blacklist [N], timeout [N],
  server N enable|disable|drain|blacklist T, server N address A port P ...,
  acl N permit|deny ..., log [FILE], write [FILE], include FILE, exit
"""
ERROR_MARKS = ("do_cmd: ignoring command", "control: ")
INTERACTIVE_HELP = """\
Type a pen command (servers, mode, blacklist 30, server 1 disable, ...);
the reply is printed.  Also: mrtg_bytes N, mrtg_conns N, help, quit.
"""


class PenctlError(Exception):
    """A failure to report on stderr (prefixed with 'penctl: '), exit 1."""


def parse_address(text):
    """'host:port', '[v6]:port', 'v6:port' (the last ':' splits, as pen's
    penctl) or a path containing '/' -> ('unix', path) / ('inet', host, port)."""
    if "/" in text:
        return ("unix", text)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise PenctlError(f"no port given in {text!r} (expected [addr]:port)")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise PenctlError(f"no port given in {text!r} "
                              "(expected host:port or /path/to/socket)")
    if not port:
        raise PenctlError(f"no port given in {text!r} (expected host:port)")
    return ("inet", host or "localhost", port)


def format_address(addr):
    if addr[0] == "unix":
        return addr[1]
    host = addr[1]
    return f"[{host}]:{addr[2]}" if ":" in host else f"{host}:{addr[2]}"


def connect(addr, timeout=TIMEOUT):
    """A connected socket, or PenctlError('cannot connect to ADDR: reason')."""
    where = format_address(addr)
    if addr[0] == "unix":
        candidates = [(socket.AF_UNIX, socket.SOCK_STREAM, 0, addr[1])]
    else:
        try:
            infos = socket.getaddrinfo(addr[1], addr[2], 0, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise PenctlError(f"cannot connect to {where}: {reason}") from None
        candidates = [(family, kind, proto, sockaddr)
                      for family, kind, proto, _, sockaddr in infos]
    error = None
    for family, kind, proto, sockaddr in candidates:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            error = e
            sock.close()
    reason = (error.strerror if isinstance(error, OSError) and error.strerror
              else str(error) or "timed out")
    raise PenctlError(f"cannot connect to {where}: {reason}")


def send_command(addr, line, timeout=TIMEOUT):
    """Send one command line; the whole reply (bytes) once pen closes."""
    sock = connect(addr, timeout)
    where = format_address(addr)
    chunks = []
    try:
        sock.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                break
            chunks.append(data)
    except socket.timeout:
        raise PenctlError(f"no reply from {where} within {timeout:g} seconds") from None
    except OSError as e:
        if not chunks:
            raise PenctlError(f"error talking to {where}: {e.strerror or e}") from None
    finally:
        sock.close()
    return b"".join(chunks)


def server_number(word, args):
    if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()
                                and len(args[0]) <= 9):
        raise PenctlError(f"{word}: expected a server number (usage: {word} N)")
    return int(args[0])


def mrtg_bytes(servers_reply, n):
    """MRTG lines for server n from a `servers` reply: received, sent."""
    for line in servers_reply.splitlines():
        words = line.split()
        if words and words[0] == str(n):
            fields = dict(zip(words[1::2], words[2::2]))
            if "rx" in fields and "sx" in fields:
                return f"{fields['rx']}\n{fields['sx']}\nUNKNOWN\nserver {n}\n"
    raise PenctlError(f"mrtg_bytes: pen has no server {n}")


def mrtg_conns(json_reply, n):
    """MRTG lines for server n from a `status json` reply: connections
    made (a counter), connections now."""
    try:
        doc = json.loads(json_reply)
        servers = doc["servers"]
    except (ValueError, KeyError, TypeError):
        raise PenctlError("mrtg_conns: this pen does not answer 'status json' "
                          "(it needs the Python pen)") from None
    if not 0 <= n < len(servers):
        raise PenctlError(f"mrtg_conns: pen has no server {n}")
    s = servers[n]
    return f"{s.get('connects', 0)}\n{s.get('conn', 0)}\nUNKNOWN\nserver {n}\n"


def run_command(addr, words, timeout=TIMEOUT):
    """The text to print for one command (local MRTG commands included)."""
    word = words[0]
    if word in ("mrtg_bytes", "mrtg_conns"):
        server_number(word, words[1:])
        reply = send_command(addr, " ".join(words), timeout)
        if not reply.startswith(b"do_cmd: ignoring command"):
            return reply            # our pen: the four lines, uptime included
    if word == "mrtg_bytes":
        n = server_number(word, words[1:])
        return mrtg_bytes(send_command(addr, "servers", timeout).decode(
            "utf-8", "replace"), n).encode()
    if word == "mrtg_conns":
        n = server_number(word, words[1:])
        return mrtg_conns(send_command(addr, "status json", timeout).decode(
            "utf-8", "replace"), n).encode()
    return send_command(addr, " ".join(words), timeout)


def is_error(words, reply):
    """Did pen refuse the command?  Its errors start with the command's
    name and a colon ("blacklist: 'x' is not a number ...", "write: cannot
    write ..."), or are pen's "ignoring command"; `include` answers only
    with the problems it found."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    lines = text.splitlines()
    if not words or not lines:
        return False
    if words[0] == "include":
        return True
    mark = words[0] + ": "
    return any(line.startswith(mark) or line.startswith(ERROR_MARKS) for line in lines)


def _write(out, data):
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8", "replace"))
        out.flush()


def _readline_setup():
    """Readline with a history file, when stdin is a terminal."""
    try:
        import readline
    except ImportError:
        return None
    path = os.path.expanduser(HISTORY_FILE)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(HISTORY_LENGTH)
    return lambda: _save_history(readline, path)


def _save_history(readline, path):
    try:
        readline.write_history_file(path)
    except OSError:
        pass


def interactive(addr, stdin=None, stdout=None, stderr=None, timeout=TIMEOUT):
    """The `-i` prompt: one command per line until quit or end of input."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    tty = stdin is sys.stdin and stdin.isatty()
    save = _readline_setup() if tty else None
    try:
        while True:
            try:
                line = input(PROMPT) if tty else stdin.readline()
            except EOFError:
                break
            except KeyboardInterrupt:
                stdout.write("\n")
                continue
            if not tty and not line:
                break
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "help" and len(words) == 1:
                stdout.write(INTERACTIVE_HELP)       # then pen's own list
                stdout.flush()
            try:
                _write(stdout, run_command(addr, words, timeout))
            except PenctlError as e:
                stderr.write(f"penctl: {e}\n")
                stderr.flush()
    finally:
        if save is not None:
            save()
    if tty:
        stdout.write("\n")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    try:
        if argv[0] == "-i":
            if len(argv) != 2:
                raise PenctlError("-i takes exactly one control address "
                                  "(usage: penctl -i host:port|/path/to/socket)")
            return interactive(parse_address(argv[1]))
        if len(argv) < 2:
            sys.stdout.write(USAGE)   # as pen's penctl: usage, exit 0
            return 0
        addr = parse_address(argv[0])
        reply = run_command(addr, argv[1:])
        _write(sys.stdout, reply)
        if is_error(" ".join(argv[1:]).split(), reply):
            return 2
    except PenctlError as e:
        sys.stderr.write(f"penctl: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return 0
