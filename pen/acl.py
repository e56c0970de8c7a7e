"""PURE access control lists, as pen 0.34.1's acl.c (ACLs 0..9).

An ACL is an ordered list of rules.  `match()` walks the rules in order and
the first rule that matches the client decides (permit -> True, deny ->
False).  When no rule matches, pen returns the *opposite of the last rule*
of the list (whatever its kind), so an ACL ending in `deny` lets everyone
else in and one ending in `permit` keeps everyone else out; an empty ACL
permits everybody.  We keep those semantics, with three deliberate fixes:

- the rule's own address is masked too, so `permit 10.1.2.3 255.0.0.0`
  matches all of 10/8 (pen compares the masked client with the unmasked
  rule address, which then never matches);
- an IPv4-mapped IPv6 client (::ffff:a.b.c.d, seen on a [::] listener) is
  matched against the IPv4 rules, as the same client would be on 0.0.0.0;
- an ACL number outside 0..9 never matches (pen reads past its table for 10).

Unix-socket clients (no IP) are always permitted, as in pen.  Country rules
need a GeoIP lookup function; without one they never match, as in a pen
built without GeoIP.
"""

import ipaddress
import re
import socket

from .errors import CommandError

ACLS_MAX = 10
V4_ALL = 0xFFFFFFFF
NUMBER = re.compile(r"-?[0-9]+")
PREFIX_LENGTH = re.compile(r"[0-9]{1,3}")


class Rule:
    """One ACL entry: kind is 'ipv4', 'ipv6' or 'country'."""

    __slots__ = ("permit", "kind", "addr", "mask", "country")

    def __init__(self, permit, kind, addr=0, mask=0, country=None):
        self.permit = permit      # True: permit, False: deny
        self.kind = kind
        self.addr = addr          # int (v4: 32 bits, v6: 128 bits)
        self.mask = mask          # int; for v6 built from the prefix length
        self.country = country    # 'SE' for country rules

    @property
    def prefixlen(self):
        return bin(self.mask).count("1")

    def text(self):
        """The rule as pen's `write` prints it (after `acl N `)."""
        word = "permit" if self.permit else "deny"
        if self.kind == "ipv4":
            return (f"{word} {ipaddress.IPv4Address(self.addr)} "
                    f"{ipaddress.IPv4Address(self.mask)}")
        if self.kind == "ipv6":
            packed = self.addr.to_bytes(16, "big")
            return f"{word} {socket.inet_ntop(socket.AF_INET6, packed)}/{self.prefixlen}"
        return f"{word} country {self.country}"

    def __eq__(self, other):
        return isinstance(other, Rule) and self.text() == other.text()

    def __repr__(self):
        return f"Rule({self.text()!r})"


class Acls:
    """ACLs 0..9 and the country lookup they use: `match(n, ip)`."""

    def __init__(self):
        self.tables = [[] for _ in range(ACLS_MAX)]
        self.country_of = None    # a geoip.GeoIP (callable ip -> 'SE'), or None

    def add(self, n, rule):
        self.tables[n].append(rule)

    def clear(self, n):
        self.tables[n] = []

    def match(self, n, ip):
        return match(self.tables, n, ip, self.country_of)

    def dump(self):
        return dump(self.tables)

    def __getitem__(self, n):
        return self.tables[n]


def check_number(word, text):
    """An ACL number 0..9 from `text`, or CommandError naming `word`."""
    if not NUMBER.fullmatch(text):
        raise CommandError(f"{word}: ACL number must be a whole number, got {text!r}")
    if len(text) > 4 or not 0 <= int(text) < ACLS_MAX:     # int() of 5000 digits raises
        raise CommandError(f"{word}: ACL number {text[:12]} out of range (0-{ACLS_MAX - 1})")
    n = int(text)
    return n


def _v4(text, what):
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise CommandError(f"acl: bad IPv4 {what} {text!r} "
                           "(expected dotted quad like 192.168.1.0)") from None


def parse_rule(words):
    """The words after `acl N` -> Rule, or CommandError.

    permit|deny a.b.c.d [mask]     mask defaults to 255.255.255.255
    permit|deny a.b.c.d/len        (extension: CIDR length for IPv4)
    permit|deny v6addr[/len]       len defaults to 128
    permit|deny country CC         two-letter ISO country code
    """
    usage = "(expected permit|deny ADDRESS [MASK], ADDRESS6[/LEN] or country CC)"
    if len(words) < 2:
        raise CommandError(f"acl: missing arguments {usage}")
    action, target, rest = words[0], words[1], words[2:]
    if action not in ("permit", "deny"):
        raise CommandError(f"acl: expected permit or deny, got {action!r}")
    permit = action == "permit"
    if target == "country":
        if len(rest) != 1:
            raise CommandError("acl: country needs exactly one two-letter code, "
                               f"got {' '.join(rest) or 'nothing'!r}")
        code = rest[0]
        if len(code) != 2 or not code.isascii() or not code.isalpha():
            raise CommandError(f"acl: country code must be two letters (like SE), got {code!r}")
        return Rule(permit, "country", country=code.upper())
    if ":" in target:
        if rest:
            raise CommandError(f"acl: unexpected {rest[0]!r} after IPv6 address "
                               "(write the length as ADDRESS/LEN)")
        addr, _, length = target.partition("/")
        try:
            ip = ipaddress.IPv6Address(addr)
        except ValueError:
            raise CommandError(f"acl: bad IPv6 address {addr!r}") from None
        if length == "" and "/" not in target:
            length = "128"
        if not PREFIX_LENGTH.fullmatch(length) or int(length) > 128:
            raise CommandError(f"acl: IPv6 prefix length must be 0-128, got {length[:12]!r}")
        plen = int(length)
        mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
        return Rule(permit, "ipv6", int(ip), mask)
    if "/" in target:
        if rest:
            raise CommandError("acl: give either ADDRESS/LEN or ADDRESS MASK, not both")
        addr, _, length = target.partition("/")
        ip = _v4(addr, "address")
        if not PREFIX_LENGTH.fullmatch(length) or int(length) > 32:
            raise CommandError(f"acl: IPv4 prefix length must be 0-32, got {length[:12]!r}")
        mask = V4_ALL ^ ((1 << (32 - int(length))) - 1)
        return Rule(permit, "ipv4", ip, mask)
    if len(rest) > 1:
        raise CommandError(f"acl: unexpected {rest[1]!r} after the mask")
    ip = _v4(target, "address")
    mask = _v4(rest[0], "mask") if rest else V4_ALL
    return Rule(permit, "ipv4", ip, mask)


def _client(ip):
    """('ipv4'|'ipv6', int) for a client IP string; None for non-IP clients."""
    if not ip or not isinstance(ip, str):
        return None
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return "ipv4", int(addr.ipv4_mapped), str(addr.ipv4_mapped)
        return "ipv6", int(addr), ip
    return "ipv4", int(addr), ip


def match(acls, n, ip, country_of=None):
    """True if ACL `n` lets client `ip` in (pen's match_acl).

    `country_of(ip)` -> 'SE' or None is used for country rules; it is
    called at most once per match."""
    if not 0 <= n < ACLS_MAX:
        return False
    client = _client(ip)
    if client is None:
        return True               # Unix socket clients: pen has no Unix ACLs
    kind, value, text = client
    permit = False
    country = None
    looked_up = False
    for rule in acls[n]:
        permit = rule.permit
        if rule.kind == kind:
            if value & rule.mask == rule.addr & rule.mask:
                return permit
        elif rule.kind == "country" and country_of is not None:
            if not looked_up:
                country = country_of(text)
                looked_up = True
            if country and country.upper() == rule.country:
                return permit
    return not permit


def dump(acls):
    """pen's save_acls: `no acl N` then each rule, for every ACL."""
    lines = []
    for n, rules in enumerate(acls):
        lines.append(f"no acl {n}")
        lines.extend(f"acl {n} {rule.text()}" for rule in rules)
    return lines
