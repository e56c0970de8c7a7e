"""Settings (what the user asked for) and State (everything pen knows).

One State is created in __main__ and passed explicitly; there are no mutable
module globals.  Commands (control socket, -F, -o) edit it; the relay reads it.
"""

import time
from dataclasses import dataclass, field

from .acl import Acls
from .health import TCP, CheckSpec   # issue 10
from .servers import ServerEvents
from .balance import ClientTable, Loads

# Defaults of pen 0.34.1 (pen's usage text).
BLACKLIST_TIME = 30
CLIENTS_MAX = 2048
CONNECT_TIMEOUT = 3
CONN_MAX = 500
MULTI_ACCEPT = 100
BACKLOG = 500


@dataclass
class Settings:
    """Everything set on the command line, by -o/-F, or by penctl."""

    listen: object = None            # addr.ListenAddr
    backends: list = field(default_factory=list)   # backend spec strings
    blacklist_time: int = BLACKLIST_TIME            # -b
    clients_max: int = CLIENTS_MAX                  # -c
    connect_timeout: float = CONNECT_TIMEOUT        # -t
    conn_max: int = CONN_MAX                        # -x
    tracking: int = 0                               # -T, 0 = forever
    idle_timeout: int = 0
    multi_accept: int = MULTI_ACCEPT                # -m
    backlog: int = BACKLOG                          # -q
    emergency: str = None                           # -e host:port
    abuse: str = None                               # -B host:port
    hash: bool = False                              # -h
    hash_nosave: bool = False                       # -N
    roundrobin: bool = False                        # -r
    stubborn: bool = False                          # -s
    weight: bool = False                            # -W
    prio: bool = False
    http: bool = False                              # -H
    udp: bool = False                               # -U
    foreground: bool = False                        # -f
    debug: int = 0                                  # -d (repeatable)
    ascii: bool = False                             # -a
    exit_enabled: bool = False                      # -X
    logfile: str = None                             # -l
    pidfile: str = None                             # -p
    webfile: str = None                             # -w
    chroot: str = None                              # -j
    user: str = None                                # -u
    cfgfile: str = None                             # -F
    control: str = None                             # -C
    options: list = field(default_factory=list)     # -o/-O penctl commands
    event_backend: str = "epoll"                    # -P poll, -Q kqueue
    # TLS (-E -K -G -A -Z -R -L)
    ssl_cert: str = None
    ssl_key: str = None
    ssl_cafile: str = None
    ssl_cadir: str = None
    ssl_compat: bool = False
    ssl_require_cert: bool = False
    ssl_protocol: str = None
    # TLS commands (penctl-style; checked in pen/tls.py)
    ssl_ciphers: str = None                         # ssl_ciphers LIST
    ssl_options: list = field(default_factory=list)  # ssl_option WORD, in order
    ssl_client_renegotiation_interval: int = 3600   # renegotiation is refused anyway
    ssl_sni_path: str = None                        # ssl_sni_path DIR
    ssl_key_password_file: str = None               # ssl_key_password_file FILE
    ssl_allow_expired: bool = False                 # ssl_allow_expired
    # passphrase typed on the terminal at startup, kept for SIGHUP reloads;
    # never dumped by `write`
    ssl_key_passphrase: bytes = field(default=None, repr=False, compare=False)
    argv: list = field(default_factory=list)        # the command line, for `write`
    # penctl commands (pen/commands.py)
    client_acl: int = 0                             # client_acl N
    control_acl: int = 0                            # control_acl N
    # --- admin web listener (pen/admin.py) ---
    admin_listen: object = None                     # admin_listen: ListenAddr, once bound
    admin_acl: int = 0                              # admin_acl N
    admin_password_file: str = None                 # admin_password_file FILE
    # its checked (name or None, scrypt hash) entries; never dumped
    admin_passwords: tuple = field(default=(), repr=False, compare=False)
    # --- end admin ---
    tarpit_acl: int = -1                            # tarpit_acl N (DSR only; stored)
    abort_on_error: bool = False                    # abort_on_error
    dummy: bool = False                             # dummy (act as a web server)
    keepalive: bool = False                         # keepalive (SO_KEEPALIVE upstream)
    transparent: bool = False                       # transparent
    tcp_nodelay: bool = False                       # tcp_nodelay
    tcp_fastclose: str = "off"                      # tcp_fastclose up|down|both|off
    peek: bool = False                              # peek (accepted, no effect)
    splice: bool = True                             # no splice: plain TCP through buffers
    pending_max: int = 100                          # pending_max N
    idlers: int = 0                                 # idlers N (wanted)
    defer_accept: int = 0                           # defer_accept SECONDS (TCP_DEFER_ACCEPT)
    source: str = None                              # source IP for upstream connects
    dsr_if: str = None                              # dsr_if IF (stored, no DSR)
    dsr_ip: str = None                              # dsr_ip IP (stored, no DSR)
    geoip_db: str = None                            # geoip_db FILE (extension)
    algorithm: str = None                           # leastconn|random|byorder (extension)
    server_retry: int = 1                           # failed connects before a blacklist
    autodisable: bool = False                       # a failing server is disabled instead
    # --- dispatch modes and traffic dumps (issue 11) ---
    algorithm_over: int = 0                         # bysize|byduration over N (0 = all)
    trafficlog: str = None                          # trafficlog FILE (pen/dumps.py)
    throughputlog: str = None                       # throughputlog FILE
    server_trafficlogs: dict = field(default_factory=dict)  # server N trafficlog FILE
    # --- end issue 11 ---
    # --- HTTP mode (issue 12; pen/rewrite.py) ---
    header_rules: tuple = ()                        # header ACTION server|client "N: v", in order
    server_header_rules: dict = field(default_factory=dict)  # server N header ...: idx -> Rules
    sticky_cookie: str = None                       # sticky_cookie NAME
    server_cookies: dict = field(default_factory=dict)  # server N cookie VALUE (default sN)
    # --- end issue 12 ---
    # --- health checks and hooks (issue 10; pen/health.py, pen/hooks.py) ---
    check_interval: float = 0                       # check_interval S, 0 = off
    check: CheckSpec = TCP                          # check tcp|http|expect|udp ...
    check_rise: int = 2                             # check_rise R
    check_fall: int = 3                             # check_fall F
    on_failure: str = None                          # on_failure "CMD" (global hooks)
    on_success: str = None
    on_down: str = None
    on_up: str = None
    hooks_max: int = 16                             # hooks_max N
    hook_timeout: float = 30                        # hook_timeout S
    # --- end issue 10 ---
    # --- PROXY protocol out (issue 14; pen/proxyproto.py) ---
    proxy_protocol: str = "off"                     # proxy_protocol v1|v2|off
    server_proxy_protocol: dict = field(default_factory=dict)  # server N proxy_protocol: idx -> v
    # issue 14: PROXY in and per-client limits (pen/stages.py, pen/service.py)
    accept_proxy: bool = False                      # read a PROXY header first
    accept_proxy_acl: int = -1                      # sources allowed to send one (-1: any)
    client_conn_max: int = 0                        # concurrent connections per client IP
    client_rate: int = 0                            # new connections per client IP ...
    client_rate_window: int = 1                     # ... per this many seconds
    client_timeout: int = 0                         # seconds to the client's first byte
    # --- end issue 14 ---

class Counters:
    """Totals for statistics."""

    __slots__ = ("accepted", "refused", "connect_failures", "conns_closed",
                 "socket_errors", "accept_errors",
                 "dump_lines_dropped",   # issue 11: trafficlog/throughputlog
                 "proxy_refused", "client_limited", "client_timeouts")   # issue 14

    def __init__(self):
        self.accepted = self.refused = self.connect_failures = 0
        self.conns_closed = self.socket_errors = self.accept_errors = 0
        self.dump_lines_dropped = 0      # issue 11: dump lines the disk could not take
        self.proxy_refused = 0           # bad PROXY headers, or from outside accept_proxy_acl
        self.client_limited = 0          # over client_conn_max or client_rate
        self.client_timeouts = 0         # closed by client_timeout


class State:
    """The balancer's whole mutable state."""

    def __init__(self, settings, servers, emergency=None, abuse=None):
        self.settings = settings
        self.servers = servers          # list[Server]; index == position
        self.emergency = emergency      # Server or None
        self.abuse = abuse              # Server or None
        self.server_events = ServerEvents()   # every server's transitions
        for server in [*servers, emergency, abuse]:
            if server is not None:
                server.events = self.server_events
        self.clients = ClientTable(settings.clients_max)
        self.last_server = 0            # round-robin cursor, as pen's
        self.counters = Counters()
        self.conns = {}                 # conn id -> relay.Conn, for penctl
        self.idlers_open = 0            # idle server connections open (pen/idlers.py)
        self.acls = Acls()              # ACLs 0..9 (pen/acl.py)
        self.loads = Loads()            # issue 11: bysize/byduration figures, decay
        self.started = time.monotonic() # issue 11: uptime for MRTG
