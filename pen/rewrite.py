"""PURE header rules and cookies for HTTP mode (SPEC §10.3).

A `Rule` is one `header ACTION server|client "Name: value"` line, checked
when it is made (RuleError, one line) and applied to a parsed head (any
object with add/append/set/delete/get_all, as pen.http.Head).  `server`
rules change requests going to servers, `client` rules responses going to
clients.  Values expand %r (client IP), %t (local time), %T (GMT), %v
(pen's version), %% and %x -> x.

`Rewriter` is what one connection hands to its two framers: the rules for
its server, X-Forwarded-For/-Proto while `http` is on, and the sticky
cookie.
"""

import re
import time

from . import VERSION
from .errors import CommandError

ACTIONS = ("add", "append", "set", "delete")
DIRECTIONS = ("server", "client")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6265 cookie-octet: visible ASCII but for " , ; and backslash.
COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


class RuleError(CommandError):
    """A header rule or cookie that cannot be made; nothing was changed."""


class Context:
    """The facts a value may expand, per connection."""

    __slots__ = ("client_ip",)

    def __init__(self, client_ip):
        self.client_ip = client_ip.encode("ascii", "replace") \
            if isinstance(client_ip, str) else bytes(client_ip)


def local_time():
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime()).encode()


def gmt_time():
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode()


EXPANSIONS = {"r": lambda ctx: ctx.client_ip,
              "t": lambda ctx: local_time(),
              "T": lambda ctx: gmt_time(),
              "v": lambda ctx: VERSION.encode()}
CLOCK = (EXPANSIONS["t"], EXPANSIONS["T"])     # differ from request to request


def compile_value(text):
    """`text` as a list of bytes and expansion functions."""
    parts, literal, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "%" and i + 1 < len(text):
            code = text[i + 1]
            if code in EXPANSIONS:
                if literal:
                    parts.append("".join(literal).encode("latin-1"))
                    literal = []
                parts.append(EXPANSIONS[code])
            else:
                literal.append(code)        # %% -> %, %x -> x
            i += 2
        else:
            literal.append(c)
            i += 1
    if literal:
        parts.append("".join(literal).encode("latin-1"))
    return parts


class Rule:
    """One header rule.  `Rule("set", "server", "X-Real-IP: %r")`;
    delete takes just the name."""

    __slots__ = ("action", "direction", "name", "text", "parts", "static", "sep")

    def __init__(self, action, direction, text):
        if action not in ACTIONS:
            raise RuleError("header: action %r is not one of %s" % (action, ", ".join(ACTIONS)))
        if direction not in DIRECTIONS:
            raise RuleError("header: direction %r is not server or client" % direction)
        if "\r" in text or "\n" in text or "\0" in text:
            raise RuleError("header: %r contains CR, LF or NUL" % text)
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise RuleError("header: %r is not Latin-1 text" % text) from None
        if action == "delete":
            name, value = text.strip(), None
        else:
            name, sep, value = text.partition(":")
            if not sep:
                raise RuleError('header: %r has no colon; expected "Name: value"' % text)
            value = value.strip(" \t")
            if not FIELD_VALUE.fullmatch(value):
                raise RuleError("header: value %r contains control characters" % value)
        if not TOKEN.fullmatch(name):
            raise RuleError("header: %r is not a valid header name" % name)
        self.action, self.direction, self.name = action, direction, name.encode("latin-1")
        self.sep = b"; " if self.name.lower() == b"cookie" else b", "   # for append
        self.text = name if value is None else "%s: %s" % (name, value)
        if value is None:
            self.parts, self.static = (), b""
        else:
            self.parts = compile_value(value)
            self.static = self.parts[0] if len(self.parts) == 1 and \
                isinstance(self.parts[0], bytes) else (b"" if not self.parts else None)

    def __repr__(self):
        return "Rule(%r, %r, %r)" % (self.action, self.direction, self.text)

    def __eq__(self, other):
        return isinstance(other, Rule) and (self.action, self.direction, self.text) == \
            (other.action, other.direction, other.text)

    def __hash__(self):
        return hash((self.action, self.direction, self.text))

    def line(self):
        """The rule as `header` lists it and `write` dumps it (after `header `)."""
        text = self.text.replace("\\", "\\\\").replace('"', '\\"')
        return '%s %s "%s"' % (self.action, self.direction, text)

    def value(self, ctx):
        static = self.static
        if static is not None:
            return static
        parts = self.parts
        if len(parts) == 1:         # just %r, say
            return parts[0](ctx)
        return b"".join(p if isinstance(p, bytes) else p(ctx) for p in parts)

    def apply(self, head, ctx):
        action = self.action
        if action == "set":
            head.set(self.name, self.value(ctx))
        elif action == "append":
            head.append(self.name, self.value(ctx), self.sep)
        elif action == "add":
            head.add(self.name, self.value(ctx))
        else:
            head.delete(self.name)


def parse_rule(words):
    """`["set", "server", "X-Real-IP: %r"]` (the words after `header`)."""
    if len(words) != 3:
        raise RuleError('header: expected ACTION server|client "Name: value", got %d words'
                        % len(words))
    return Rule(*words)


def forwarded_rules(proto="http"):
    """What `http` (-H) adds to each request: X-Forwarded-Proto (the truth
    pen knows, replacing what the client said) and X-Forwarded-For (the
    client appended to what came before)."""
    return (Rule("set", "server", "X-Forwarded-Proto: " + proto),
            Rule("append", "server", "X-Forwarded-For: %r"))


def rule_from_words(word, args):
    """A Rule from a command's words after `header`: ACTION DIRECTION then
    the text, one quoted word (or, from a splitter without quotes, the
    pieces, joined and unquoted)."""
    if len(args) < 3 or (args[0] == "delete" and len(args) > 3):
        raise RuleError('%s: expected add|append|set|delete server|client "Name: value" '
                        "(delete takes just the name)" % word)
    text = " ".join(args[2:])
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    try:
        return Rule(args[0], args[1], text)
    except RuleError as e:
        raise RuleError(str(e).replace("header:", word + ":", 1)) from None


def http_mode(settings):
    """HTTP processing is on while `http` is, or any rule or sticky_cookie."""
    return bool(settings.http or settings.header_rules or settings.server_header_rules
                or settings.sticky_cookie)


def server_cookie(settings, idx):
    """Server idx's sticky cookie value: `server N cookie VALUE`, else sN."""
    return settings.server_cookies.get(idx) or "s%d" % idx


def server_for_cookie(settings, head, count):
    """The index of the server (of `count`) whose cookie the request's
    sticky_cookie names, or None.  Whether that server can take the client
    is the caller's question; if not, balance as usual (and the response
    gets the new server's cookie, as its value differs)."""
    if not settings.sticky_cookie:
        return None
    value = find_cookie(head, settings.sticky_cookie)
    if value is None:
        return None
    value = value.decode("latin-1")
    for idx in range(count):
        if server_cookie(settings, idx) == value:
            return idx
    return None


def rules_for(settings, idx):
    """(server rules, client rules) for a connection to server idx: the
    global rules, then that server's, each in the order they were made."""
    rules = settings.header_rules + settings.server_header_rules.get(idx, ())
    return (tuple(r for r in rules if r.direction == "server"),
            tuple(r for r in rules if r.direction == "client"))


def rewriter_for(settings, idx, client_ip, tls=False):
    """The Rewriter of one connection to server idx."""
    server_rules, client_rules = rules_for(settings, idx)
    cookie = None
    if settings.sticky_cookie:
        cookie = (settings.sticky_cookie, server_cookie(settings, idx))
    return Rewriter(client_ip, server_rules, client_rules, forwarded=settings.http,
                    proto="https" if tls else "http", cookie=cookie)


def check_cookie_name(name):
    if not TOKEN.fullmatch(name):
        raise RuleError("sticky_cookie: %r is not a valid cookie name" % name)
    return name


def check_cookie_value(value):
    if not value or not COOKIE_VALUE.fullmatch(value):
        raise RuleError("cookie: %r is not a valid cookie value "
                        "(visible ASCII without space, quote, comma, semicolon, backslash)" % value)
    return value


def find_cookie(head, name):
    """The value of cookie `name` in the request's Cookie headers, or None
    (the first one wins, as browsers send the most specific first)."""
    if isinstance(name, str):
        name = name.encode("latin-1")
    for header in head.get_all(b"cookie"):
        for item in header.split(b";"):
            key, sep, value = item.strip(b" \t").partition(b"=")
            if sep and key.strip(b" \t") == name:
                return value.strip(b" \t").strip(b'"')
    return None


def set_cookie(name, value):
    """The Set-Cookie header (name, value) that pins a client to a server."""
    if isinstance(name, str):
        name = name.encode("latin-1")
    if isinstance(value, str):
        value = value.encode("latin-1")
    return b"Set-Cookie", b"%s=%s; Path=/; HttpOnly" % (name, value)


def quick(rules, ctx):
    """A quick(raw, low) for `rules`, or None.  For a head that has none of
    their headers, set, add and append each add their line and delete does
    nothing, in order: that is raw with the lines before its blank line.
    Only when every value is the same all connection long (not %t, %T) and
    no header is named twice (add X then set X replaces the first)."""
    if not rules:
        return None
    probes, lines = [], []
    for rule in rules:
        probe = b"\n" + rule.name.lower() + b":"
        if probe in probes or any(part in CLOCK for part in rule.parts):
            return None
        probes.append(probe)
        if rule.action != "delete":
            lines.append(rule.name + b": " + rule.value(ctx) + b"\r\n")
    tail = b"".join(lines) + b"\r\n"
    probes = tuple(probes)

    def quick_head(raw, low):
        for probe in probes:
            if probe in low:
                return None
        return raw[:-2] + tail
    return quick_head


class Rewriter:
    """The two head callbacks of one connection.

    server_rules / client_rules: Rules (global ones first, then the
    server's own), forwarded: apply X-Forwarded-Proto/-For (`http` on),
    proto: "https" behind TLS, cookie: (NAME, VALUE) with sticky_cookie on,
    VALUE being the chosen server's cookie."""

    __slots__ = ("server_rules", "client_rules", "context", "cookie",
                 "quick_request", "quick_response")

    def __init__(self, client_ip, server_rules=(), client_rules=(), forwarded=False,
                 proto="http", cookie=None):
        rules = list(forwarded_rules(proto)) if forwarded else []
        self.server_rules = tuple(rules + [r for r in server_rules])
        self.client_rules = tuple(client_rules)
        self.context = Context(client_ip)
        self.cookie = None
        if cookie is not None:
            name, value = cookie
            self.cookie = (name.encode("latin-1") if isinstance(name, str) else name,
                           value.encode("latin-1") if isinstance(value, str) else value)
        # quick_request(raw, low) / quick_response: the head as the rules
        # make it when it has none of their headers (then each rule adds its
        # line), or None for the general way; None when a head's rules need
        # the general way anyway (no rules: nothing to do).
        self.quick_request = self.quick_response = None
        if self.cookie is None:
            self.quick_request = quick(self.server_rules, self.context)
            self.quick_response = quick(self.client_rules, self.context)

    def hooks(self):
        """(on_head, quick) for the request framer, then for the response
        framer; None where that direction has nothing to change."""
        cookie = self.cookie is not None
        return ((self.on_request, self.quick_request) if self.server_rules or cookie
                else (None, None),
                (self.on_response, self.quick_response) if self.client_rules or cookie
                else (None, None))

    def on_request(self, head):
        ctx = self.context
        for rule in self.server_rules:
            rule.apply(head, ctx)
        if self.cookie is not None:
            name, value = self.cookie
            head.note = find_cookie(head, name) == value     # no Set-Cookie needed
        return head

    def on_response(self, head):
        ctx = self.context
        for rule in self.client_rules:
            rule.apply(head, ctx)
        if self.cookie is not None and not head.note and head.status >= 200:
            head.add(*set_cookie(*self.cookie))
        return head
