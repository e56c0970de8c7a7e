"""The admin web listener (`admin_listen [addr:]port|PATH`), on the Reactor.

    GET  /               live status page (servers, state, connections,
                         counters); /admin.js refreshes it from /status.json
    GET  /status.json    stats.status_json
    GET  /metrics        stats.prometheus (text exposition 0.0.4)
    POST /server/N       action=enable|disable|drain|blacklist [seconds=S],
                         with the hidden `csrf` field of the page

Actions are command lines (`server N disable`) run through pen/commands.py
and the App's effects executor, exactly as penctl's.  The CSRF token is
random per process and compared with hmac.compare_digest.  `admin_acl N`
is checked on accept (as control_acl); with `admin_password_file FILE`
every request needs HTTP Basic credentials matching one of its lines,
which `pen --hash-password` makes (salted scrypt).  Without a password
file no login is asked.

Like the control socket, nothing here blocks the loop or grows without
bound: a request head is at most MAX_HEAD bytes and a body MAX_BODY, at
most MAX_CLIENTS are served at once (others are closed at once), a client
has the control socket's CLIENT_TIMEOUT in all, one request per connection
(the control socket's client classes do the accepting, sending, draining
and closing).  scrypt
(tens of milliseconds) runs in one worker thread, which releases the GIL;
its answer comes back to the loop through a socketpair.

The top half of this module is pure (parsing, hashing, rendering); the
I/O classes are at the bottom.
"""

import base64
import collections
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import secrets
import socket
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor   # at the top: nothing imports under -j

from . import commands, stats
from .anchor import Anchored
from .control import CLIENT_TIMEOUT, READING, WRITING, ControlClient, ControlServer
from .errors import ConfigError, PenError
from .listen import bind_listener
from .loop import EVENT_READ

log = logging.getLogger("pen")

MAX_HEAD = 16 * 1024
MAX_BODY = 4 * 1024
MAX_CLIENTS = 32
ACCEPT_BATCH = 16
RECV_SIZE = 16 * 1024
BACKLOG = 32
MAX_HEADERS = 100
MAX_FIELDS = 16
REFRESH_MS = 2000            # the page's /status.json poll
CONNS_SHOWN = 200            # connection rows on the page (all are in status.json)
AUTH_CACHE = 64              # accepted credentials remembered (scrypt is slow)
AUTH_CACHE_TTL = 300.0
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SCRYPT_SALT = 16
SCRYPT_LEN = 32
ACTIONS = ("enable", "disable", "drain", "blacklist")
REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}
SECURITY_HEADERS = (("Cache-Control", "no-store"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"),
                    ("Content-Security-Policy",
                     "default-src 'self'; frame-ancestors 'none'; form-action 'self'"))


# --- passwords --------------------------------------------------------------------------


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _scrypt(password, salt, n, r, p, dklen):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=SCRYPT_MAXMEM, dklen=dklen)


def hash_password(password, salt=None, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P):
    """One password file line: scrypt$N$r$p$SALT$HASH (base64)."""
    salt = secrets.token_bytes(SCRYPT_SALT) if salt is None else salt
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt),
                     _b64(_scrypt(password, salt, n, r, p, SCRYPT_LEN))))


def parse_hash(text):
    """(n, r, p, salt, digest) of a hash line; ValueError saying what is wrong."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$SALT$HASH (made by pen --hash-password)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("bad number or base64 in scrypt$N$r$p$SALT$HASH") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or not digest:
        raise ValueError(f"scrypt parameters N={n} r={r} p={p} out of range")
    if 128 * r * n > SCRYPT_MAXMEM // 2:
        raise ValueError(f"scrypt parameters N={n} r={r} need too much memory")
    return n, r, p, salt, digest


def verify_password(password, text):
    """True if `password` matches the hash line `text` (constant time)."""
    try:
        n, r, p, salt, digest = parse_hash(text)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def parse_password_file(text, path="password file"):
    """Lines `HASH` (any user name) or `NAME:HASH`; blank lines and #
    comments skipped.  A tuple of (name or None, hash); ValueError naming
    the line."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, hashed = line.rpartition(":")
        try:
            parse_hash(hashed)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        entries.append((name or None, hashed))
    if not entries:
        raise ValueError(f"{path}: no password hashes in it "
                         "(make one with pen --hash-password)")
    return tuple(entries)


def read_password_file(path):
    """The checked entries of a password file; ValueError saying what is wrong."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    return parse_password_file(text, path)


def check_credentials(user, password, entries):
    """True if one of the password file's entries accepts user/password."""
    ok = False
    for name, hashed in entries:
        if (name is None or hmac.compare_digest(name.encode(), user.encode())) \
                and verify_password(password, hashed):
            ok = True
    return ok


def basic_credentials(header):
    """(user, password) from an `Authorization: Basic ...` value, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    user, colon, password = text.partition(":")
    return (user, password) if colon else None


def hash_password_main(stdin=None, stdout=None):
    """`pen --hash-password`: read a password (first line of stdin, or
    typed without echo on a terminal), print its hash line."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    if stdin.isatty():
        import getpass
        password = getpass.getpass("Password: ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        print("pen: --hash-password: empty password (give it on stdin)", file=sys.stderr)
        return 1
    print(hash_password(password), file=stdout)
    return 0


# --- HTTP requests ------------------------------------------------------------------------


class HttpError(Exception):
    """A request we answer with `status` and a one-line reason."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Request:
    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method, path, query, headers):
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self.body = b""

    @property
    def content_length(self):
        value = self.headers.get("content-length")
        if value is None:
            return 0
        if not value.isdigit() or not value.isascii():
            raise HttpError(400, f"bad Content-Length {value!r}")
        return int(value)


def head_end(buf):
    """Length of the request head in `buf` (through the blank line), or -1."""
    i = buf.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    i = buf.find(b"\n\n")
    return i + 2 if i >= 0 else -1


def parse_head(data):
    """A Request from the head bytes (request line + headers); HttpError."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:      # latin-1 decodes anything; kept for clarity
        raise HttpError(400, "undecodable request head") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line (expected METHOD /path HTTP/1.x)")
    method, target, _ = parts
    if not target.startswith("/"):
        raise HttpError(400, f"bad request target {target[:80]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, f"bad header line {line[:80]!r}")
        name = name.lower()
        if name in headers and name in ("content-length", "authorization", "host"):
            raise HttpError(400, f"repeated {name} header")
        headers[name] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not accepted")
    path, _, query = target.partition("?")
    return Request(method, urllib.parse.unquote(path), query, headers)


def parse_form(body):
    """application/x-www-form-urlencoded -> {name: last value}; HttpError."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True,
                                       strict_parsing=False, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as e:
        raise HttpError(400, f"bad form: {e}") from None
    return dict(pairs)


def action_line(form, count):
    """The command line for a posted action form; HttpError if bad."""
    index, action = form.get("server", ""), form.get("action", "")
    if not (index.isascii() and index.isdigit() and len(index) <= 9) \
            or not int(index) < count:
        raise HttpError(400, f"bad server {index[:20]!r} (expected 0-{count - 1})")
    if action not in ACTIONS:
        raise HttpError(400, f"bad action {action[:20]!r} "
                             f"(expected {', '.join(ACTIONS)})")
    if action == "blacklist":
        seconds = form.get("seconds", "")
        if not seconds.isdigit() or not seconds.isascii():
            raise HttpError(400, f"bad seconds {seconds[:20]!r} (expected a whole number)")
        return f"server {int(index)} blacklist {int(seconds)}"
    return f"server {int(index)} {action}"


def response(status, body=b"", content_type="text/plain; charset=utf-8", extra=()):
    """The bytes of a complete HTTP/1.1 response (the connection closes)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close"]
    head += [f"{k}: {v}" for k, v in SECURITY_HEADERS]
    head += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def error_response(status, message, extra=()):
    return response(status, f"{status} {REASONS.get(status, 'Error')}: {message}\n",
                    extra=extra)


# --- the page -------------------------------------------------------------------------------


def _form(i, action, token, extra=""):
    return (f'<form method="post" action="/server/{i}">'
            f'<input type="hidden" name="csrf" value="{token}">'
            f'<input type="hidden" name="action" value="{action}">{extra}'
            f'<button type="submit" id="{action}-{i}" name="server" value="{i}">'
            f'{action}</button></form>')


def render_page(state, now, wall, token):
    """The status page.  Cells carry data-field so /admin.js can refresh them."""
    esc = html.escape
    st = state.settings
    rows = []
    for i, s in enumerate(state.servers):
        status = s.state(now)
        cells = [f'<td>{i}</td>', f'<td>{esc(str(s.addr))}:{s.port or 0}</td>',
                 f'<td class="state {status}" data-field="state">{status}</td>',
                 f'<td data-field="blacklisted_for">{stats.blacklisted_for(s, now)}</td>']
        cells += [f'<td data-field="{f}">{getattr(s, f)}</td>'
                  for f in ("conn", "max", "hard", "weight", "prio", "sx", "rx")]
        blacklist = ('<input type="number" name="seconds" min="0" value="'
                     f'{st.blacklist_time}" size="4" aria-label="seconds">')
        cells.append('<td class="actions">' + "".join(
            _form(i, a, token, blacklist if a == "blacklist" else "") for a in ACTIONS)
            + '</td>')
        rows.append(f'<tr id="server-{i}" data-server="{i}">' + "".join(cells) + "</tr>")
    conns = []
    for conn_id in sorted(state.conns)[:CONNS_SHOWN]:
        c = stats.conn_info(state.conns[conn_id])
        conns.append("<tr>" + "".join(f"<td>{esc(str(c[k]))}</td>" for k in CONN_FIELDS)
                     + "</tr>")
    counters = "".join(f'<tr><td>{esc(k)}</td><td data-counter="{esc(k)}">{v}</td></tr>'
                       for k, v in stats._counters(state).items())
    listen = esc(str(st.listen)) if st.listen is not None else "-"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pen admin</title>
<noscript><meta http-equiv="refresh" content="{REFRESH_MS // 1000 * 3}"></noscript>
<link rel="stylesheet" href="/admin.css">
<script src="/admin.js" defer></script>
</head><body data-servers="{len(state.servers)}">
<h1>pen on {listen}</h1>
<p id="summary">Mode <span id="mode">{esc(stats.mode_line(st))}</span>;
<span id="connections">{len(state.conns)}</span> connections
(max {st.conn_max}); <span id="clients">{len(state.clients)}</span> clients;
updated <span id="updated">{esc(stats.local_time(wall))}</span></p>
<h2>Servers</h2>
<table id="servers"><thead><tr><th>#</th><th>address</th><th>state</th>
<th>blacklisted (s)</th><th>conn</th><th>max</th><th>hard</th><th>weight</th>
<th>prio</th><th>sent</th><th>received</th><th>actions</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Connections</h2>
<table id="conns"><thead><tr>{"".join(f"<th>{k}</th>" for k in CONN_FIELDS)}</tr></thead>
<tbody>{"".join(conns)}</tbody></table>
<h2>Counters</h2>
<table id="counters">{counters}</table>
<p><a href="/status.json">status.json</a> &middot; <a href="/metrics">metrics</a></p>
</body></html>
"""


CONN_FIELDS = ("id", "phase", "client", "client_port", "server", "pending_up",
               "pending_down")

ADMIN_CSS = """\
body { font-family: sans-serif; margin: 1em 2em; background: #fafafa; color: #222; }
h1 { font-size: 1.4em; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th { background: #dde; }
td.state { font-weight: bold; text-align: center; }
td.up { background: #8e8; } td.blacklisted { background: #fc6; }
td.down { background: #f88; } td.disabled { background: #ccc; }
td.draining { background: #9cf; }
td.actions form { display: inline; margin-left: 0.3em; }
td.actions input[type=number] { width: 4em; }
"""

ADMIN_JS = """\
"use strict";
var FIELDS = %s;
function refresh() {
  fetch("/status.json", {cache: "no-store", credentials: "same-origin"})
    .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
    .then(function (doc) {
      if (doc.servers.length !== Number(document.body.dataset.servers)) {
        location.reload(); return;
      }
      doc.servers.forEach(function (s) {
        var row = document.getElementById("server-" + s.index);
        if (!row) return;
        row.querySelectorAll("[data-field]").forEach(function (cell) {
          var f = cell.dataset.field;
          if (f === "state") {
            var st = s.state;
            cell.textContent = st; cell.className = "state " + st;
          } else if (f in s) {
            cell.textContent = s[f];
          }
        });
      });
      document.querySelectorAll("[data-counter]").forEach(function (cell) {
        var k = cell.dataset.counter;
        if (k in doc.counters) cell.textContent = doc.counters[k];
      });
      document.getElementById("connections").textContent = doc.connections.length;
      var body = document.querySelector("#conns tbody");
      body.replaceChildren.apply(body, doc.connections.slice(0, %d).map(function (c) {
        var tr = document.createElement("tr");
        FIELDS.forEach(function (k) {
          var td = document.createElement("td");
          td.textContent = c[k]; tr.appendChild(td);
        });
        return tr;
      }));
      document.getElementById("clients").textContent = doc.clients.length;
      document.getElementById("updated").textContent =
        new Date(doc.time * 1000).toLocaleString();
    })
    .catch(function () {})
    .finally(function () { setTimeout(refresh, %d); });
}
setTimeout(refresh, %d);
""" % (json.dumps(CONN_FIELDS), CONNS_SHOWN, REFRESH_MS, REFRESH_MS)


def host_name(host):
    """The name part of a Host header value ('[::1]:80' -> '::1')."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.split(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host):
    """Without a login, only an IP address or localhost: a page reached by
    a DNS name could be a rebinding attack reading the CSRF token."""
    name = host_name(host)
    if not host or name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def route(state, request, token, now, wall):
    """(response bytes, command line to run or None) for a GET, or a
    checked POST; HttpError for everything refused."""
    path, method = request.path, request.method
    host = request.headers.get("host", "")
    if not state.settings.admin_passwords and not host_allowed(host):
        raise HttpError(403, f"Host {host[:80]!r} is neither an IP address nor "
                             "localhost; use one, or set admin_password_file "
                             "(a guard against DNS rebinding)")
    if method == "POST":
        if not path.startswith("/server/"):
            raise HttpError(404 if path not in ("/", "/status.json", "/metrics")
                            else 405, f"no POST on {path[:80]}")
        form = parse_form(request.body)
        sent = form.get("csrf", "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), token.encode()):
            raise HttpError(403, "missing or wrong csrf token (reload the page)")
        form.setdefault("server", path[len("/server/"):])
        if form["server"] != path[len("/server/"):]:
            raise HttpError(400, "server in the form and in the path differ")
        return None, action_line(form, len(state.servers))
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method[:20]} not allowed")
    if path == "/":
        return response(200, render_page(state, now, wall, token),
                        "text/html; charset=utf-8"), None
    if path == "/status.json":
        return response(200, stats.status_json(state, now, wall),
                        "application/json"), None
    if path == "/metrics":
        return response(200, stats.prometheus(state, now),
                        "text/plain; version=0.0.4; charset=utf-8"), None
    if path == "/admin.js":
        return response(200, ADMIN_JS, "text/javascript; charset=utf-8"), None
    if path == "/admin.css":
        return response(200, ADMIN_CSS, "text/css; charset=utf-8"), None
    raise HttpError(404, f"no page {path[:80]}")


# --- I/O ----------------------------------------------------------------------------------


def open_socket(addr):
    """(socket, anchor) for the admin ListenAddr, or ConfigError."""
    try:
        sock = bind_listener(addr, backlog=BACKLOG)
    except ConfigError as e:
        raise ConfigError(f"admin_listen {addr}: {e}") from None
    return sock, (Anchored(addr.path, claim=True) if addr.kind == "unix" else None)


class AuthWorker:
    """Runs check_credentials in one thread; results come back on the loop.
    Started on first use (so never before the daemon forks)."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.executor = None
        self.done = collections.deque()
        self.rx = self.tx = None

    def submit(self, fn, args, callback):
        if self.executor is None:
            self.rx, self.tx = socket.socketpair()
            self.rx.setblocking(False)
            self.tx.setblocking(False)
            self.reactor.register(self.rx, EVENT_READ, self.on_readable)
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="pen-admin-auth")
        future = self.executor.submit(fn, *args)
        future.add_done_callback(lambda f: self._finished(callback, f))

    def _finished(self, callback, future):       # in the worker thread
        self.done.append((callback, future))
        try:
            self.tx.send(b"x")
        except OSError:
            pass            # full: the loop has a wake-up pending anyway

    def on_readable(self, mask):
        try:
            while self.rx.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.done:
            callback, future = self.done.popleft()
            try:
                ok = future.result()
            except Exception:
                log.error("admin: password check failed", exc_info=True)
                ok = False
            callback(ok)

    def close(self):
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.reactor.unregister(self.rx)
            self.rx.close()
            self.tx.close()
            self.executor = None


class AdminServer(ControlServer):
    """The listening admin socket and its clients (the control socket's
    listener: its accept loop, resume and close are reused)."""

    name = "admin"
    max_clients = MAX_CLIENTS
    accept_batch = ACCEPT_BATCH

    def __init__(self, reactor, state, addr, run_effects, opened=None):
        self.reactor = reactor
        self.state = state
        self.addr = addr
        self.run_effects = run_effects
        self.token = secrets.token_urlsafe(32)
        self.clients = {}        # oldest first (ControlServer evicts the oldest)
        self.auth = AuthWorker(reactor)
        self.auth_cache = collections.OrderedDict()   # key -> expiry
        self.cache_key = secrets.token_bytes(32)
        self.sock, self.anchor = opened if opened is not None else open_socket(addr)
        reactor.register(self.sock, EVENT_READ, self.on_readable)

    def accepted(self, sock, ip):
        client = AdminClient(self, sock, ip)
        self.clients[client] = None
        n = self.state.settings.admin_acl
        if ip and not self.state.acls.match(n, ip):
            log.info("admin: connection from %s refused by admin_acl %d", ip, n)
            client.send(error_response(403, f"access from {ip} denied by admin_acl {n}"))

    # --- authentication ---
    def _key(self, header):
        return hmac.new(self.cache_key, header.encode("utf-8", "replace"),
                        hashlib.sha256).digest()

    def cached(self, header, now):
        key = self._key(header)
        expiry = self.auth_cache.get(key)
        if expiry is None or expiry < now:
            self.auth_cache.pop(key, None)
            return False
        return True

    def remember(self, header, now):
        self.auth_cache[self._key(header)] = now + AUTH_CACHE_TTL
        while len(self.auth_cache) > AUTH_CACHE:
            self.auth_cache.popitem(last=False)

    # --- actions ---
    def run_command(self, line):
        """Run one command line as penctl would: (ok, reply lines)."""
        try:
            cmd = commands.parse(line, self.state)
        except commands.CommandError as e:
            return False, [str(e)]
        lines, effects = commands.apply(self.state, cmd)
        lines = list(lines)
        if effects:
            try:
                lines += list(self.run_effects(effects) or [])
            except (PenError, OSError) as e:
                return False, lines + [f"{line.split()[0]}: {e}"]
        log.info("admin: %s", line)
        return True, lines

    def close(self):
        super().close()
        self.auth.close()


CHECKING = "CHECKING"        # waiting for the password check
DRAIN_TIME = 2.0            # seconds for a client to take a 408 and close


class AdminClient(ControlClient):
    """One request: read head (and body), answer, close.  The control
    socket's client does the sending, draining and closing."""

    __slots__ = ("request", "need")

    def __init__(self, server, sock, ip):
        super().__init__(server, sock, ip)
        self.request = None
        self.need = 0           # body bytes still expected

    def on_event(self, mask):
        if self.phase == WRITING:
            self.flush()
            return
        if self.phase != READING:
            self._discard()
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("admin: recv from %s: %s", self.ip, e)
            self.close()
            return
        if not data:
            self.close()
            return
        self.buf += data
        try:
            self._parse()
        except HttpError as e:
            self.send(error_response(e.status, str(e)))

    def _discard(self):
        """Bytes after the request (or after the reply) are read and dropped
        until the client closes, so a reply is not lost to a reset."""
        try:
            if not self.sock.recv(RECV_SIZE):
                self.close()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()

    def _parse(self):
        if self.request is None:
            end = head_end(self.buf)
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise HttpError(431, f"request head longer than {MAX_HEAD} bytes")
                return
            if end > MAX_HEAD:
                raise HttpError(431, f"request head longer than {MAX_HEAD} bytes")
            self.request = parse_head(bytes(self.buf[:end]))
            del self.buf[:end]
            self.need = self.request.content_length
            if self.need > MAX_BODY:
                raise HttpError(413, f"request body longer than {MAX_BODY} bytes")
        if len(self.buf) < self.need:
            return
        self.request.body = bytes(self.buf[:self.need])
        self.buf = bytearray()
        self.authenticate()

    def authenticate(self):
        entries = self.server.state.settings.admin_passwords
        if not entries:
            self.answer()
            return
        header = self.request.headers.get("authorization", "")
        now = time.monotonic()
        if header and self.server.cached(header, now):
            self.answer()
            return
        creds = basic_credentials(header)
        if creds is None:
            self.refuse_login()
            return
        self.phase = CHECKING
        self.server.auth.submit(check_credentials, (*creds, entries),
                                lambda ok: self.checked(ok, header))

    def checked(self, ok, header):
        if self.phase != CHECKING:
            return          # timed out or closed meanwhile
        if ok:
            self.server.remember(header, time.monotonic())
            self.answer()
        else:
            log.info("admin: wrong user or password from %s", self.ip or "unix")
            self.refuse_login()

    def refuse_login(self):
        self.send(error_response(401, "log in with a user and password of "
                                 "admin_password_file",
                                 extra=(("WWW-Authenticate",
                                         'Basic realm="pen admin", charset="UTF-8"'),)))

    def answer(self):
        server, request = self.server, self.request
        try:
            out, line = route(server.state, request, server.token,
                              time.monotonic(), time.time())
            if line is not None:
                ok, lines = server.run_command(line)
                if not ok:
                    raise HttpError(400, "; ".join(lines))
                out = response(303, "\n".join(lines + ["done: " + line, ""]),
                               extra=(("Location", "/"),))
        except HttpError as e:
            out = error_response(e.status, str(e))
        except Exception as e:      # a bug: say so, keep serving
            log.error("admin: %s %s failed", request.method, request.path, exc_info=True)
            out = error_response(500, f"internal error: {e}")
        if request.method == "HEAD":
            out = out[:out.find(b"\r\n\r\n") + 4]
        self.send(out)

    def send(self, data):
        self.out = data
        self.phase = WRITING
        self.flush()

    def on_timeout(self):
        self.timer = None
        if self.phase == READING and (self.buf or self.request is not None):
            log.debug("admin: %s sent no complete request in %.0fs", self.ip,
                      CLIENT_TIMEOUT)
            self.send(error_response(408, f"request not complete in {CLIENT_TIMEOUT:.0f}s"))
            self.timer = self.server.reactor.call_later(DRAIN_TIME, self.close)
            return
        self.close()
