"""TLS termination: certificate checks, the server SSLContext, SNI, handshake steps.

Certificates and keys are checked with `cryptography` before the daemon
detaches (`check_certificates`), so a bad file is one clear line on the
terminal; the context itself is the stdlib `ssl` module's.

The relay (pen/tlsrelay.py) does not use an SSLSocket: it drives an
SSLObject over two MemoryBIOs (`ctx.wrap_bio`), for one reason: a
half-close.  Sending close_notify is SSL_shutdown(), and CPython's unwrap()
always calls it a second time, which reads from the socket; if the client's
next data record is already there, OpenSSL fails with
APPLICATION_DATA_AFTER_CLOSE_NOTIFY and the rest of the upload is lost
(reproduced on OpenSSL 3.0 with both TLS 1.2 and 1.3).  With memory BIOs
the relay takes the unread ciphertext out of the incoming BIO around the
call, so the second SSL_shutdown() finds nothing and the upload goes on.
See pen/tlsrelay.py for the handshake, backpressure and resume rules.

-H / X-Forwarded-For works on the decrypted bytes, as for plain TCP;
X-Forwarded-Proto is https.  os.splice cannot be used on TLS sockets.

Reload (SIGHUP): `new = reload(settings, old)`; on ConfigError keep `old`
and log the message.  Connections already accepted keep their context.
"""

import datetime
import getpass
import logging
import os
import re
import ssl
import sys
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .errors import ConfigError

log = logging.getLogger("pen")

# Why no OCSP stapling: stapling needs OpenSSL's SSL_CTX_set_tlsext_status_cb,
# which the stdlib ssl module does not expose (CPython has no server-side OCSP
# API).  The maintained binding that has it, pyOpenSSL's
# Context.set_ocsp_server_callback, works on OpenSSL.SSL.Connection objects,
# i.e. a second TLS stack instead of ssl.SSLSocket, which SPEC 1 rules out.
# Calling libssl through ctypes on the SSL_CTX inside an ssl.SSLContext does
# work on a dynamically linked CPython, but it reads CPython's private struct
# layout and must hit the very libssl copy _ssl uses (else memory corruption),
# so it is not something to ship.  Hence: refuse clearly.
OCSP_UNSUPPORTED = ("ssl_ocsp_response: OCSP stapling is not supported: Python's "
                    "ssl module has no server-side stapling hook")

MAX_FILE = 4 * 1024 * 1024          # no certificate file is this big
MAX_CA_DIR_FILES = 2000             # files read from -A for the chain check
MAX_CHAIN = 10
OP_LEGACY_SERVER_CONNECT = getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
LEGACY_SECLEVEL = "@SECLEVEL=0"     # OpenSSL 3 needs it for TLS < 1.2 and SHA-1

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
                       re.S)
SNI_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?:\.(?!-)[a-z0-9_-]{1,63})*$")

V = ssl.TLSVersion
VERSION_ORDER = (V.SSLv3, V.TLSv1, V.TLSv1_1, V.TLSv1_2, V.TLSv1_3)
VERSION_AVAILABLE = {
    V.SSLv3: ssl.HAS_SSLv3, V.TLSv1: ssl.HAS_TLSv1, V.TLSv1_1: ssl.HAS_TLSv1_1,
    V.TLSv1_2: ssl.HAS_TLSv1_2, V.TLSv1_3: ssl.HAS_TLSv1_3,
}
VERSION_NAMES = {V.SSLv3: "SSLv3", V.TLSv1: "TLS 1.0", V.TLSv1_1: "TLS 1.1",
                 V.TLSv1_2: "TLS 1.2", V.TLSv1_3: "TLS 1.3"}
VERSION_NO_OPTION = {V.SSLv3: ssl.OP_NO_SSLv3, V.TLSv1: ssl.OP_NO_TLSv1,
                     V.TLSv1_1: ssl.OP_NO_TLSv1_1, V.TLSv1_2: ssl.OP_NO_TLSv1_2,
                     V.TLSv1_3: ssl.OP_NO_TLSv1_3}

# -L names: pen's (ssl23, ssl2, ssl3, tls1) plus the modern versions.  A
# version name alone means exactly that version (pen's tls1 was TLSv1_method);
# "NAME+" means that version or newer.
PROTOCOLS = {"ssl3": V.SSLv3, "tls1": V.TLSv1, "tls1.0": V.TLSv1,
             "tls1.1": V.TLSv1_1, "tls1.2": V.TLSv1_2, "tls1.3": V.TLSv1_3}
PROTOCOL_HELP = "ssl23, tls1, tls1.1, tls1.2, tls1.3, or one of them with + (e.g. tls1.2+)"

# ssl_option words (pen's, plus no_tlsv1.3) -> the protocol version they switch off.
SSL_OPTION_VERSIONS = {"no_sslv2": None, "no_sslv3": V.SSLv3, "no_tlsv1": V.TLSv1,
                       "no_tlsv1.1": V.TLSv1_1, "no_tlsv1.2": V.TLSv1_2,
                       "no_tlsv1.3": V.TLSv1_3}
SSL_OPTION_NAMES = tuple(SSL_OPTION_VERSIONS) + ("cipher_server_preference",)


class PenSSLContext(ssl.SSLContext):
    """An SSLContext that remembers what was loaded into it (for ssl_info).

    `pen_certs`: [(label, path, [x509 certs of the file])];
    `pen_sni`: {name: PenSSLContext} on the default context.
    """


# --- small checks, usable by the command parser ------------------------------

def tls_enabled(settings):
    return bool(settings.ssl_cert)


def check_ssl_option(word):
    """ConfigError unless `word` is one of pen's ssl_option words."""
    if word not in SSL_OPTION_NAMES:
        raise ConfigError("ssl_option: unknown option '%s' (use %s)"
                          % (word, ", ".join(SSL_OPTION_NAMES)))


def parse_protocol(name):
    """-L NAME -> (lowest, highest) TLSVersion, or (None, None) for ssl23.

    Raises ConfigError for unknown names and for versions this platform's
    OpenSSL cannot offer.
    """
    if name is None or name == "ssl23":
        return None, None
    plus = name.endswith("+")
    base = name[:-1] if plus else name
    if base == "ssl2":
        raise ConfigError("-L %s: SSLv2 is not supported by %s (nor by any "
                          "current TLS library)" % (name, ssl.OPENSSL_VERSION))
    version = PROTOCOLS.get(base)
    if version is None:
        raise ConfigError("-L %s: protocol version not known (use %s)"
                          % (name, PROTOCOL_HELP))
    if not VERSION_AVAILABLE[version]:
        raise ConfigError("-L %s: %s is not supported by this platform's %s"
                          % (name, VERSION_NAMES[version], ssl.OPENSSL_VERSION))
    if plus:
        return version, max(v for v in VERSION_ORDER if VERSION_AVAILABLE[v])
    return version, version


def version_range(settings):
    """(min, max, holes) from -L, -Z and ssl_option no_*; ConfigError if empty."""
    for word in settings.ssl_options:
        check_ssl_option(word)
    low, high = parse_protocol(settings.ssl_protocol)
    if low is None:
        # ssl23: the best both sides have; Python's own floor is TLS 1.2,
        # -Z (compatibility) reaches down to TLS 1.0 for old clients.
        low = V.TLSv1 if settings.ssl_compat else V.TLSv1_2
        high = V.TLSv1_3
    disabled = {SSL_OPTION_VERSIONS[w] for w in settings.ssl_options
                if SSL_OPTION_VERSIONS.get(w) is not None}
    allowed = [v for v in VERSION_ORDER if low <= v <= high
               and VERSION_AVAILABLE[v] and v not in disabled]
    if not allowed:
        raise ConfigError("-L %s: no protocol version left after ssl_option %s"
                          % (settings.ssl_protocol or "ssl23",
                             " ".join(settings.ssl_options) or "(none)"))
    holes = [v for v in VERSION_ORDER
             if allowed[0] < v < allowed[-1] and v not in allowed]
    return allowed[0], allowed[-1], holes


# --- reading files ---------------------------------------------------------------

def _read(label, path):
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE:
            raise ConfigError("%s %s: too big for a certificate or key file (%d bytes)"
                              % (label, path, size))
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("%s %s: cannot read: %s" % (label, path, e.strerror or e))


def _blocks(label, path, data):
    """[(pem label, whole block bytes)]; ConfigError if the file is not PEM."""
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in PEM_BLOCK.finditer(data)]
    if not blocks:
        if not data.strip():
            raise ConfigError("%s %s: the file is empty" % (label, path))
        hint = ""
        if data[:1] == b"\x30":
            hint = " (it looks like DER: convert it with 'openssl x509 -inform der')"
        raise ConfigError("%s %s: not a PEM file, no -----BEGIN ...----- block%s"
                          % (label, path, hint))
    return blocks


def _load_certs(label, path, data, required=True):
    certs = []
    blocks = _blocks(label, path, data)
    for kind, block in blocks:
        if kind != "CERTIFICATE":
            continue
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise ConfigError("%s %s: certificate %d in the file is damaged: %s"
                              % (label, path, len(certs) + 1, _short(e)))
    if not certs and required:
        raise ConfigError("%s %s: no certificate in the file (found %s)"
                          % (label, path, ", ".join(sorted({k for k, _ in blocks}))))
    return certs


def _short(exc):
    return str(exc).split(". See https://")[0].strip() or type(exc).__name__


def _passphrase(settings, label, path, ask):
    """The key's passphrase: ssl_key_password_file, the one typed before, or a prompt."""
    if settings.ssl_key_password_file:
        data = _read("ssl_key_password_file", settings.ssl_key_password_file)
        data = data.rstrip(b"\r\n")
        if not data:
            raise ConfigError("ssl_key_password_file %s: the file is empty"
                              % settings.ssl_key_password_file)
        return data
    if settings.ssl_key_passphrase is not None:
        return settings.ssl_key_passphrase
    if ask is None and sys.stdin is not None and sys.stdin.isatty():
        ask = _ask_terminal
    if not ask:
        raise ConfigError("%s %s: the private key is encrypted; give its passphrase "
                          "with ssl_key_password_file FILE, or start pen on a terminal"
                          % (label, path))
    answer = ask("pen: passphrase for %s: " % path)
    if isinstance(answer, str):
        answer = answer.encode("utf-8")
    return answer


def _ask_terminal(prompt):
    return getpass.getpass(prompt)


def _load_key(settings, label, path, data, ask):
    """(private key, passphrase or None) from the PEM `data` of `path`."""
    blocks = _blocks(label, path, data)
    keys = [block for kind, block in blocks if kind.endswith("PRIVATE KEY")]
    if not keys:
        if label == "-E":
            raise ConfigError("-E %s: no private key in the file; give it with -K keyfile"
                              % path)
        raise ConfigError("%s %s: no private key in the file" % (label, path))
    block = keys[0]
    password = None
    try:
        key = serialization.load_pem_private_key(block, None)
    except TypeError:
        password = _passphrase(settings, label, path, ask)
        try:
            key = serialization.load_pem_private_key(block, password)
        except ValueError:
            raise ConfigError("%s %s: wrong passphrase for the encrypted private key"
                              % (label, path)) from None
        except TypeError as e:
            raise ConfigError("%s %s: %s" % (label, path, _short(e))) from None
        if not settings.ssl_key_password_file:
            settings.ssl_key_passphrase = password    # for SIGHUP, when no terminal
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError("%s %s: the private key is damaged or of an unsupported "
                          "type: %s" % (label, path, _short(e))) from None
    return key, password


def _spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _subject(cert):
    return cert.subject.rfc4514_string() or "(empty subject)"


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _check_validity(settings, label, path, certs, now):
    if settings.ssl_allow_expired:
        return
    for cert in certs:
        if now > cert.not_valid_after_utc:
            raise ConfigError(
                "%s %s: certificate '%s' expired on %s; to use it anyway set "
                "ssl_allow_expired (-o ssl_allow_expired)"
                % (label, path, _subject(cert), _when(cert.not_valid_after_utc)))
        if now < cert.not_valid_before_utc:
            raise ConfigError(
                "%s %s: certificate '%s' is not valid before %s; to use it anyway "
                "set ssl_allow_expired (-o ssl_allow_expired)"
                % (label, path, _subject(cert), _when(cert.not_valid_before_utc)))


def _signed_by(cert, issuer):
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:   # wrong name, bad signature, unsupported key type
        return False


class _Issuers:
    """Where the leaf's issuer may be found besides the file: -G, -A, system."""

    def __init__(self, cafiles, cadirs):
        self.cafiles, self.cadirs = cafiles, cadirs
        self._loaded = None

    def certs(self):
        if self._loaded is None:
            found = []
            paths = list(self.cafiles)
            for d in self.cadirs:
                try:
                    names = sorted(os.listdir(d))[:MAX_CA_DIR_FILES]
                except OSError:
                    continue
                paths.extend(os.path.join(d, n) for n in names)
            default = ssl.get_default_verify_paths()
            if default.cafile:
                paths.append(default.cafile)
            elif default.capath and os.path.isdir(default.capath):
                names = sorted(os.listdir(default.capath))[:MAX_CA_DIR_FILES]
                paths.extend(os.path.join(default.capath, n) for n in names)
            for p in paths:
                try:
                    if not os.path.isfile(p) or os.path.getsize(p) > MAX_FILE:
                        continue
                    with open(p, "rb") as f:
                        data = f.read()
                    with warnings.catch_warnings():
                        # some old system roots have non-positive serials
                        warnings.simplefilter("ignore")
                        found.extend(x509.load_pem_x509_certificates(data))
                except (OSError, ValueError):
                    continue
            self._loaded = found
        return self._loaded


def _check_chain(label, path, certs, issuers):
    """The leaf's issuer must be in the file, -G/-A or the system trust store."""
    leaf = certs[0]
    others = certs[1:]
    cur = leaf
    for _ in range(MAX_CHAIN):
        if cur.issuer == cur.subject:
            return                                  # reached a self-signed cert
        named = [c for c in others if c.subject == cur.issuer and c is not cur]
        signer = next((c for c in named if _signed_by(cur, c)), None)
        if signer is None and named:
            raise ConfigError("%s %s: certificate '%s' is not signed by the '%s' "
                              "certificate that follows it in the file"
                              % (label, path, _subject(cur), cur.issuer.rfc4514_string()))
        if signer is None:
            if cur is not leaf:
                return      # the file ends at an intermediate; clients have its root
            if any(c.subject == cur.issuer and _signed_by(cur, c)
                   for c in issuers.certs()):
                return      # OpenSSL completes the chain from -G/-A; or a known root
            raise ConfigError(
                "%s %s: the intermediate certificate is missing: the issuer '%s' of "
                "'%s' is not in the file, in -G/-A or among the trusted roots; append "
                "the issuer's certificate to the file after the server certificate "
                "(or give a private CA with -G)"
                % (label, path, cur.issuer.rfc4514_string(), _subject(cur)))
        cur = signer
    raise ConfigError("%s %s: certificate chain longer than %d" % (label, path, MAX_CHAIN))


def _check_pair(settings, cert_label, cert_path, key_label, key_path, issuers, ask, now):
    """Check one certificate file and its key; returns (certs, passphrase)."""
    cert_data = _read(cert_label, cert_path)
    certs = _load_certs(cert_label, cert_path, cert_data)
    if key_path and key_path != cert_path:
        key, password = _load_key(settings, key_label, key_path,
                                  _read(key_label, key_path), ask)
    else:
        key_label, key_path = cert_label, cert_path
        key, password = _load_key(settings, cert_label, cert_path, cert_data, ask)
    if _spki(key.public_key()) != _spki(certs[0].public_key()):
        where = "" if key_path == cert_path else " in %s" % cert_path
        raise ConfigError("%s %s: the private key does not match the certificate '%s'%s"
                          % (key_label, key_path, _subject(certs[0]), where))
    _check_validity(settings, cert_label, cert_path, certs, now)
    _check_chain(cert_label, cert_path, certs, issuers)
    return certs, password


def _check_cafile(label, path):
    _load_certs(label, path, _read(label, path))


def _check_cadir(label, path):
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise ConfigError("%s %s: no such directory" % (label, path))
        raise ConfigError("%s %s: not a directory" % (label, path))
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError("%s %s: cannot read the directory" % (label, path))


def _sni_entries(settings):
    """[(name, crt, key or None, ca or None)] found in ssl_sni_path."""
    d = settings.ssl_sni_path
    label = "ssl_sni_path"
    _check_cadir(label, d)
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        raise ConfigError("%s %s: cannot read: %s" % (label, d, e.strerror))
    entries = []
    for fname in names:
        if not fname.endswith(".crt"):
            continue
        name = fname[:-4].lower()
        if not SNI_NAME.match(name):
            log.warning("ssl_sni_path %s: ignoring %s: not a host name", d, fname)
            continue
        crt = os.path.join(d, fname)
        key = os.path.join(d, fname[:-4] + ".key")
        ca = os.path.join(d, fname[:-4] + ".ca")
        entries.append((name, crt, key if os.path.exists(key) else None,
                        ca if os.path.exists(ca) else None))
    if not entries:
        log.warning("ssl_sni_path %s: no NAME.crt files; every client gets the "
                    "default certificate", d)
    return entries


def _check_all(settings, ask):
    """Every check; returns the material build_context needs."""
    s = settings
    if not s.ssl_cert:
        for value, what in ((s.ssl_key, "-K"), (s.ssl_cafile, "-G"), (s.ssl_cadir, "-A"),
                            (s.ssl_require_cert, "-R"), (s.ssl_sni_path, "ssl_sni_path")):
            if value:
                raise ConfigError("%s needs a server certificate: give it with -E certfile"
                                  % what)
        return None
    version_range(s)
    if s.ssl_cafile:
        _check_cafile("-G", s.ssl_cafile)
    if s.ssl_cadir:
        _check_cadir("-A", s.ssl_cadir)
    now = datetime.datetime.now(datetime.timezone.utc)
    cafiles = [s.ssl_cafile] if s.ssl_cafile else []
    cadirs = [s.ssl_cadir] if s.ssl_cadir else []
    issuers = _Issuers(cafiles, cadirs)
    certs, password = _check_pair(s, "-E", s.ssl_cert, "-K", s.ssl_key, issuers, ask, now)
    material = {"default": (s.ssl_cert, s.ssl_key or s.ssl_cert, password, certs,
                            s.ssl_cafile, s.ssl_cadir), "sni": []}
    if s.ssl_sni_path:
        for name, crt, key, ca in _sni_entries(s):
            label = "ssl_sni_path"
            if ca:
                _check_cafile(label, ca)
            sni_issuers = _Issuers(([ca] if ca else []) + cafiles, cadirs)
            c, pw = _check_pair(s, label, crt, label, key, sni_issuers, ask, now)
            material["sni"].append((name, crt, key or crt, pw, c,
                                    ca or s.ssl_cafile, None if ca else s.ssl_cadir))
    return material


# --- building contexts -----------------------------------------------------------

def _new_context(settings, label, cert, key, password, cafile, cadir):
    low, high, holes = version_range(settings)
    ctx = PenSSLContext(ssl.PROTOCOL_TLS_SERVER)
    options = ctx.options | ssl.OP_NO_COMPRESSION | ssl.OP_IGNORE_UNEXPECTED_EOF
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        # Client renegotiation is a DoS vector; the stdlib offers no hook to
        # rate-limit it (pen's ssl_client_renegotiation_interval), so it is
        # refused outright: "never more often than N seconds" holds for any N.
        options |= ssl.OP_NO_RENEGOTIATION
    if settings.ssl_compat:
        options |= ssl.OP_ALL | OP_LEGACY_SERVER_CONNECT
    if "cipher_server_preference" in settings.ssl_options:
        options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    for v in holes:
        options |= VERSION_NO_OPTION[v]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # OP_NO_TLS* holes
        ctx.options = options
        try:
            ctx.minimum_version = low
            ctx.maximum_version = high
        except (ValueError, ssl.SSLError) as e:
            raise ConfigError("-L %s: cannot set the protocol range: %s"
                              % (settings.ssl_protocol or "ssl23", e)) from None
    # The security level must be lowered before the certificate is loaded
    # (OpenSSL checks key sizes at load time).
    ciphers = settings.ssl_ciphers
    legacy = settings.ssl_compat or low < V.TLSv1_2
    if legacy and (not ciphers or "@SECLEVEL" not in ciphers):
        ciphers = (ciphers + ":" if ciphers else "DEFAULT:") + LEGACY_SECLEVEL
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ConfigError("ssl_ciphers %s: no cipher can be selected from this list"
                              % (settings.ssl_ciphers or ciphers)) from None
    try:
        ctx.load_cert_chain(cert, None if key == cert else key, password)
    except ssl.SSLError as e:
        raise ConfigError("%s %s: OpenSSL refused the certificate or key: %s"
                          % (label, cert, e.reason or e)) from None
    except OSError as e:
        raise ConfigError("%s %s: cannot read: %s" % (label, cert, e.strerror or e)) from None
    if cafile or cadir:
        try:
            ctx.load_verify_locations(cafile=cafile, capath=cadir)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError("-G/-A %s: cannot load the CA certificates: %s"
                              % (cafile or cadir, getattr(e, "reason", None) or e)) from None
    if settings.ssl_require_cert:
        if not (cafile or cadir):
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)   # as pen: default paths
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _sni_callback(table):
    """sni_callback for the default context: switch to the name's context."""
    def on_sni(sslobj, server_name, ctx):
        if server_name:
            sub = table.get(server_name.lower().rstrip("."))
            if sub is not None:
                sslobj.context = sub
        return None       # unknown names keep the default certificate
    return on_sni


def _build(settings, material):
    cert, key, password, certs, cafile, cadir = material["default"]
    ctx = _new_context(settings, "-E", cert, key, password, cafile, cadir)
    ctx.pen_certs = [("default", cert, certs)]
    table = {}
    for name, crt, k, pw, c, ca, cadir2 in material["sni"]:
        sub = _new_context(settings, "ssl_sni_path", crt, k, pw, ca, cadir2)
        sub.pen_certs = [("sni:" + name, crt, c)]
        table[name] = sub
        ctx.pen_certs.append(("sni:" + name, crt, c))
    ctx.pen_sni = table
    if table:
        ctx.sni_callback = _sni_callback(table)
    return ctx


def check_certificates(settings, ask=None):
    """Check every TLS file before detaching; returns the context (None if no -E).

    `ask(prompt) -> passphrase` is called for an encrypted key when there is
    no ssl_key_password_file; by default pen asks on the terminal if stdin is
    one.  The typed passphrase is kept in settings.ssl_key_passphrase so a
    SIGHUP reload can use it.  Raises ConfigError: one line, file and problem.
    """
    material = _check_all(settings, ask)
    if material is None:
        return None
    return _build(settings, material)


def build_context(settings, ask=False):
    """The server-side SSLContext for -E/-K/-G/-A/-R/-L/-Z and the ssl_* commands.

    Checks everything first, like check_certificates; never prompts unless
    `ask` is given.  ConfigError if TLS is not configured or anything is wrong.
    """
    if not tls_enabled(settings):
        raise ConfigError("TLS is not configured: give a certificate with -E certfile")
    return check_certificates(settings, ask)


PATH_FIELDS = ("ssl_cert", "ssl_key", "ssl_cafile", "ssl_cadir", "ssl_sni_path",
               "ssl_key_password_file")


def _reach_and_check(settings):
    """check_certificates for a reload: every file named as at startup,
    although pen has detached (chdir /) and maybe chrooted (anchor.reach).
    OpenSSL takes path names only, so the files are read with the real root
    as working directory and the names made relative to it; messages and
    ssl_info still show the names as given."""
    import copy
    from .anchor import reach
    with reach.outside() as where:
        view = copy.copy(settings)
        names = {}
        for name in PATH_FIELDS:
            value = getattr(settings, name)
            if value:
                setattr(view, name, where(value))
                names[where(value)] = value
        try:
            ctx = check_certificates(view, ask=False)
        except ConfigError as e:
            text = str(e)
            for seen, given in names.items():
                text = text.replace(seen, given) if seen != given else text
            raise ConfigError(text) from None
    if ctx is not None and names:
        def shown(path):
            for seen, given in names.items():
                if path == seen or path.startswith(seen + "/"):
                    return given + path[len(seen):]
            return path
        ctx.pen_certs = [(label, shown(path), certs) for label, path, certs in ctx.pen_certs]
    return ctx


def reload(settings, old_ctx):
    """A fresh context for SIGHUP.  On any problem raise ConfigError (keep old_ctx).

    Never prompts for a passphrase (the daemon has no terminal): it uses
    ssl_key_password_file or the passphrase typed at startup.
    """
    try:
        if not tls_enabled(settings):
            raise ConfigError("TLS is not configured: give a certificate with -E certfile")
        return _reach_and_check(settings)
    except ConfigError as e:
        what = "keeping the certificates in use" if old_ctx is not None else "TLS stays off"
        raise ConfigError("TLS reload failed, %s: %s" % (what, e)) from None


# --- ssl_info ---------------------------------------------------------------------

def _sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "(none)"
    except ValueError:
        return "(unreadable)"
    out = []
    for gn in ext.value:
        if isinstance(gn, x509.DNSName):
            out.append("DNS:" + gn.value)
        elif isinstance(gn, x509.IPAddress):
            out.append("IP:" + str(gn.value))
        elif isinstance(gn, x509.RFC822Name):
            out.append("email:" + gn.value)
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append("URI:" + gn.value)
        else:
            out.append(type(gn).__name__)
    return " ".join(out) or "(none)"


def _describe(label, path, certs, now):
    leaf = certs[0]
    left = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    return ["%s file %s" % (label, path),
            "%s subject %s" % (label, _subject(leaf)),
            "%s issuer %s" % (label, leaf.issuer.rfc4514_string()),
            "%s san %s" % (label, _sans(leaf)),
            "%s not_before %s" % (label, _when(leaf.not_valid_before_utc)),
            "%s not_after %s" % (label, _when(leaf.not_valid_after_utc)),
            "%s days_left %d" % (label, int(left // 1))]


def cert_info(settings, ctx=None):
    """Lines for `ssl_info`: each certificate's file, subject, issuer, SANs, dates.

    With `ctx` (the context in use) it describes what is loaded; without, it
    reads the files named in `settings` (no key, no passphrase needed).
    Every line starts with the certificate's label ("default", "sni:NAME").
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    if ctx is not None and getattr(ctx, "pen_certs", None):
        records = ctx.pen_certs
    elif not tls_enabled(settings):
        return ["ssl not enabled (no -E certfile)"]
    else:
        records = []
        try:
            records.append(("default", settings.ssl_cert,
                            _load_certs("-E", settings.ssl_cert,
                                        _read("-E", settings.ssl_cert))))
            if settings.ssl_sni_path:
                for name, crt, _key, _ca in _sni_entries(settings):
                    records.append(("sni:" + name, crt,
                                    _load_certs("ssl_sni_path", crt,
                                                _read("ssl_sni_path", crt))))
        except ConfigError as e:
            return [str(e)]
    lines = []
    for label, path, certs in records:
        lines.extend(_describe(label, path, certs, now))
    return lines
