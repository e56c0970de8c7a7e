"""pen.tls: certificate checks, protocol mapping, SNI, ssl_info, reload.

No sockets: handshakes run over ssl.MemoryBIO pairs pumped in a bounded loop.
Certificates are generated per session by tests/certs.py (never committed).
"""

import os
import ssl
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import certs as certgen  # noqa: E402  (tests/certs.py)

from pen import tls  # noqa: E402
from pen.errors import ConfigError  # noqa: E402
from pen.state import Settings  # noqa: E402

V = ssl.TLSVersion


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    return certgen.make_certs(tmp_path_factory.mktemp("certs"))


def settings(c, **kw):
    """Settings for the CA-signed server certificate unless told otherwise."""
    kw.setdefault("ssl_cert", c.server_cert)
    kw.setdefault("ssl_key", c.server_key if kw["ssl_cert"] == c.server_cert else None)
    kw.setdefault("ssl_cafile", c.ca_cert)
    return Settings(**kw)


def client_context(c, cert=None, key=None, low=None, high=None, seclevel0=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(c.ca_cert)
    if cert:
        ctx.load_cert_chain(cert, key)
    if seclevel0:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if low:
        ctx.minimum_version = low
    if high:
        ctx.maximum_version = high
    return ctx


def handshake(server_ctx, client_ctx, server_name="localhost"):
    """Run a handshake over memory BIOs; returns (server, client) SSLObjects.

    Raises the first ssl.SSLError either side hits.
    """
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False,
                                 server_hostname=server_name)
    done = set()
    for _ in range(50):
        for name, obj in (("client", client), ("server", server)):
            if name in done:
                continue
            try:
                obj.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            # TLS 1.3: the server learns about a refused client certificate
            # only now; a round of application data surfaces the alert.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return server, client
    raise AssertionError("handshake did not finish in 50 rounds")


def peer_cert(client):
    return client.getpeercert(binary_form=True)


def der(cert_obj):
    from cryptography.hazmat.primitives import serialization
    return cert_obj.public_bytes(serialization.Encoding.DER)


def error_of(s, **kw):
    with pytest.raises(ConfigError) as info:
        tls.check_certificates(s, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- certificate checks -------------------------------------------------------------

def test_good_certificates_build_a_context(c):
    for s in (settings(c),
              settings(c, ssl_cert=c.server_combined),
              settings(c, ssl_cert=c.selfsigned_combined, ssl_cafile=None),
              settings(c, ssl_cert=c.chain_cert, ssl_key=c.chain_key, ssl_cafile=None),
              settings(c, ssl_cert=c.nochain_cert, ssl_key=c.chain_key,
                       ssl_cafile=c.intermediate_cert)):
        ctx = tls.check_certificates(s)
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_NONE


def test_no_tls_means_no_context(c):
    assert tls.check_certificates(Settings()) is None


@pytest.mark.parametrize("kw, words", [
    (dict(ssl_cert="missing"), ["-E", "does-not-exist.pem", "cannot read",
                                "No such file"]),
    (dict(ssl_cert="der_cert", ssl_key="server_key"), ["-E", "server.der",
                                                       "not a PEM file", "DER"]),
    (dict(ssl_cert="garbage"), ["-E", "garbage.pem", "not a PEM file"]),
    (dict(ssl_cert="empty"), ["-E", "empty.pem", "empty"]),
    (dict(ssl_cert="key_only"), ["-E", "server.key", "no certificate"]),
    (dict(ssl_cert="server_cert", ssl_key=None), ["-E", "server.crt",
                                                  "no private key", "-K"]),
    (dict(ssl_cert="server_cert", ssl_key="missing"), ["-K", "does-not-exist.pem",
                                                       "cannot read"]),
    (dict(ssl_cert="server_cert", ssl_key="garbage"), ["-K", "garbage.pem",
                                                       "not a PEM file"]),
    (dict(ssl_cert="server_cert", ssl_key="ca_cert"), ["-K", "ca.pem",
                                                       "no private key"]),
    (dict(ssl_cert="mismatch_cert", ssl_key="mismatch_key"),
     ["-K", "mismatch.key", "does not match", "CN=localhost", "server.crt"]),
    (dict(ssl_cert="expired_cert", ssl_key="expired_key"),
     ["-E", "expired.crt", "expired on", "ssl_allow_expired"]),
    (dict(ssl_cert="future_cert", ssl_key="future_key"),
     ["-E", "future.crt", "not valid before", "ssl_allow_expired"]),
    (dict(ssl_cert="nochain_cert", ssl_key="chain_key", ssl_cafile=None),
     ["-E", "nochain.crt", "intermediate certificate is missing",
      "CN=pen test intermediate"]),
    (dict(ssl_cert="server_cert", ssl_key="server_key", ssl_cafile=None),
     ["-E", "server.crt", "intermediate certificate is missing", "-G"]),
    (dict(ssl_cafile="garbage"), ["-G", "garbage.pem", "not a PEM file"]),
    (dict(ssl_cafile="missing"), ["-G", "cannot read"]),
    (dict(ssl_cadir="missing"), ["-A", "no such directory"]),
    (dict(ssl_cadir="ca_cert"), ["-A", "ca.pem", "not a directory"]),
    (dict(ssl_cert="encrypted_cert", ssl_key="encrypted_key"),
     ["-K", "encrypted.key", "encrypted", "ssl_key_password_file"]),
    (dict(ssl_cert="encrypted_cert", ssl_key="encrypted_key",
          ssl_key_password_file="wrong_password_file"),
     ["-K", "encrypted.key", "wrong passphrase"]),
    (dict(ssl_cert="encrypted_cert", ssl_key="encrypted_key",
          ssl_key_password_file="missing"),
     ["ssl_key_password_file", "cannot read"]),
])
def test_each_broken_certificate_has_its_one_line_error(c, kw, words):
    kw = {k: (getattr(c, v) if isinstance(v, str) else v) for k, v in kw.items()}
    msg = error_of(settings(c, **kw))
    for w in words:
        assert w in msg, (w, msg)


def test_expired_or_future_allowed_when_the_user_insists(c):
    for cert, key in ((c.expired_cert, c.expired_key), (c.future_cert, c.future_key)):
        s = settings(c, ssl_cert=cert, ssl_key=key, ssl_allow_expired=True)
        assert tls.check_certificates(s) is not None


def test_intermediate_signed_by_the_wrong_ca_is_reported(c, tmp_path):
    # leaf + an unrelated certificate named like its issuer
    key = certgen.new_key()
    fake_inter = certgen.make_cert("pen test intermediate", key, ca=True)
    with open(c.nochain_cert, "rb") as f:
        leaf = f.read()
    path = certgen.write(tmp_path / "wrongchain.crt", leaf + certgen.cert_pem(fake_inter))
    msg = error_of(settings(c, ssl_cert=path, ssl_key=c.chain_key, ssl_cafile=None))
    assert "not signed by" in msg and "wrongchain.crt" in msg


def test_encrypted_key_from_password_file(c):
    s = settings(c, ssl_cert=c.encrypted_cert, ssl_key=c.encrypted_key,
                 ssl_key_password_file=c.password_file)
    assert tls.check_certificates(s) is not None
    assert s.ssl_key_passphrase is None          # the file is re-read on reload


def test_encrypted_key_asks_and_remembers_for_reload(c):
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return certgen.PASSWORD.decode()
    s = settings(c, ssl_cert=c.encrypted_cert, ssl_key=c.encrypted_key)
    old = tls.check_certificates(s, ask=ask)
    assert prompts and c.encrypted_key in prompts[0]
    assert s.ssl_key_passphrase == certgen.PASSWORD
    new = tls.reload(s, old)            # no terminal now: uses the typed passphrase
    assert new is not old and len(prompts) == 1


def test_wrong_typed_passphrase_is_not_remembered(c):
    s = settings(c, ssl_cert=c.encrypted_cert, ssl_key=c.encrypted_key)
    msg = error_of(s, ask=lambda prompt: "nope")
    assert "wrong passphrase" in msg
    assert s.ssl_key_passphrase is None


def test_build_context_never_prompts(c):
    s = settings(c, ssl_cert=c.encrypted_cert, ssl_key=c.encrypted_key)
    with pytest.raises(ConfigError, match="encrypted"):
        tls.build_context(s)


def test_tls_options_without_a_certificate_are_refused():
    for kw, word in ((dict(ssl_key="k.pem"), "-K"), (dict(ssl_require_cert=True), "-R"),
                     (dict(ssl_cafile="ca.pem"), "-G"),
                     (dict(ssl_sni_path="/tmp"), "ssl_sni_path")):
        with pytest.raises(ConfigError, match="needs a server certificate") as info:
            tls.check_certificates(Settings(**kw))
        assert str(info.value).startswith(word)
    with pytest.raises(ConfigError, match="-E"):
        tls.build_context(Settings())


# --- protocols, options, ciphers ------------------------------------------------------

@pytest.mark.parametrize("name, low, high", [
    (None, None, None), ("ssl23", None, None),
    ("tls1", V.TLSv1, V.TLSv1), ("tls1.0", V.TLSv1, V.TLSv1),
    ("tls1.1", V.TLSv1_1, V.TLSv1_1), ("tls1.2", V.TLSv1_2, V.TLSv1_2),
    ("tls1.3", V.TLSv1_3, V.TLSv1_3), ("tls1.2+", V.TLSv1_2, V.TLSv1_3),
    ("tls1+", V.TLSv1, V.TLSv1_3),
])
def test_protocol_names(name, low, high):
    assert tls.parse_protocol(name) == (low, high)


@pytest.mark.parametrize("name, words", [
    ("ssl2", ["-L ssl2", "SSLv2 is not supported"]),
    ("bogus", ["-L bogus", "not known", "tls1.2"]),
    ("TLS1.2", ["not known"]),
    ("tls1.4", ["not known"]),
])
def test_bad_protocol_names(name, words):
    with pytest.raises(ConfigError) as info:
        tls.parse_protocol(name)
    for w in words:
        assert w in str(info.value)


def test_protocol_the_platform_lacks_is_refused(monkeypatch):
    monkeypatch.setitem(tls.VERSION_AVAILABLE, V.SSLv3, False)
    monkeypatch.setitem(tls.VERSION_AVAILABLE, V.TLSv1_3, False)
    for name, what in (("ssl3", "SSLv3"), ("tls1.3", "TLS 1.3")):
        with pytest.raises(ConfigError, match="%s is not supported by this platform"
                           % what):
            tls.parse_protocol(name)
    assert tls.parse_protocol("tls1.2+") == (V.TLSv1_2, V.TLSv1_2)


def test_context_versions_follow_L_and_Z(c):
    ctx = tls.check_certificates(settings(c))
    assert (ctx.minimum_version, ctx.maximum_version) == (V.TLSv1_2, V.TLSv1_3)
    ctx = tls.check_certificates(settings(c, ssl_protocol="tls1.2"))
    assert (ctx.minimum_version, ctx.maximum_version) == (V.TLSv1_2, V.TLSv1_2)
    ctx = tls.check_certificates(settings(c, ssl_compat=True))
    assert (ctx.minimum_version, ctx.maximum_version) == (V.TLSv1, V.TLSv1_3)
    assert ctx.options & tls.OP_LEGACY_SERVER_CONNECT


def test_ssl_options_narrow_the_version_range(c):
    s = settings(c, ssl_protocol="tls1+", ssl_options=["no_sslv2", "no_tlsv1"])
    ctx = tls.check_certificates(s)
    assert (ctx.minimum_version, ctx.maximum_version) == (V.TLSv1_1, V.TLSv1_3)
    s = settings(c, ssl_protocol="tls1+", ssl_options=["no_tlsv1.1"])
    assert tls.version_range(s) == (V.TLSv1, V.TLSv1_3, [V.TLSv1_1])
    assert tls.check_certificates(s).options & ssl.OP_NO_TLSv1_1
    s = settings(c, ssl_options=["no_tlsv1.2"])
    assert tls.version_range(s) == (V.TLSv1_3, V.TLSv1_3, [])
    s = settings(c, ssl_protocol="tls1.2", ssl_options=["no_tlsv1.2"])
    assert "no protocol version left" in error_of(s)


def test_ssl_option_words(c):
    for word in tls.SSL_OPTION_NAMES:
        tls.check_ssl_option(word)
    with pytest.raises(ConfigError, match="unknown option 'no_tlsv1.4'"):
        tls.check_ssl_option("no_tlsv1.4")
    s = settings(c, ssl_options=["no_tlsv1.3"])
    assert tls.version_range(s) == (V.TLSv1_2, V.TLSv1_2, [])
    ctx = tls.check_certificates(settings(c, ssl_options=["cipher_server_preference"]))
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert "unknown option" in error_of(settings(c, ssl_options=["bogus"]))


def test_renegotiation_is_refused_and_eof_is_plain(c):
    ctx = tls.check_certificates(settings(c))
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_IGNORE_UNEXPECTED_EOF


def test_ciphers(c):
    msg = error_of(settings(c, ssl_ciphers="NO-SUCH-CIPHER"))
    assert msg.startswith("ssl_ciphers NO-SUCH-CIPHER")
    ctx = tls.check_certificates(settings(c, ssl_ciphers="ECDHE+AESGCM"))
    names = {x["name"] for x in ctx.get_ciphers() if x["protocol"] != "TLSv1.3"}
    assert names and all("GCM" in n for n in names)


# --- handshakes over memory BIOs ------------------------------------------------------

def test_handshake_with_the_default_certificate(c):
    ctx = tls.check_certificates(settings(c))
    _server, client = handshake(ctx, client_context(c))
    assert peer_cert(client) == der(c.server_obj)


def test_L_tls12_refuses_a_tls13_only_client_and_vice_versa(c):
    ctx12 = tls.check_certificates(settings(c, ssl_protocol="tls1.2"))
    with pytest.raises(ssl.SSLError):
        handshake(ctx12, client_context(c, low=V.TLSv1_3))
    server, _ = handshake(ctx12, client_context(c))
    assert server.version() == "TLSv1.2"
    ctx13 = tls.check_certificates(settings(c, ssl_protocol="tls1.3"))
    with pytest.raises(ssl.SSLError):
        handshake(ctx13, client_context(c, high=V.TLSv1_2))
    server, _ = handshake(ctx13, client_context(c))
    assert server.version() == "TLSv1.3"


def test_L_tls1_really_offers_tls10(c):
    ctx = tls.check_certificates(settings(c, ssl_protocol="tls1"))
    cctx = client_context(c, low=V.TLSv1, high=V.TLSv1, seclevel0=True)
    server, _ = handshake(ctx, cctx)
    assert server.version() == "TLSv1"


def test_R_requires_a_client_certificate_from_the_G_ca(c):
    ctx = tls.check_certificates(settings(c, ssl_require_cert=True))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_context(c))
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_context(c, c.stranger_cert, c.stranger_key))
    server, _ = handshake(ctx, client_context(c, c.client_cert, c.client_key))
    assert dict(x[0] for x in server.getpeercert()["subject"])["commonName"] == \
        "pen test client"


def test_sni_picks_the_certificate_for_the_name(c):
    ctx = tls.check_certificates(settings(c, ssl_sni_path=c.sni_dir))
    assert sorted(ctx.pen_sni) == sorted(c.sni_names)
    for name in c.sni_names:
        _s, client = handshake(ctx, client_context(c), server_name=name)
        assert peer_cert(client) == der(c.sni_objs[name])
    _s, client = handshake(ctx, client_context(c), server_name="A.EXAMPLE.TEST")
    assert peer_cert(client) == der(c.sni_objs["a.example.test"])
    # unknown names and IP literals (no SNI sent) keep the default certificate
    cctx = client_context(c)
    cctx.check_hostname = False
    for name in ("unknown.example.test", "127.0.0.1"):
        _s, client = handshake(ctx, cctx, server_name=name)
        assert peer_cert(client) == der(c.server_obj)


def test_sni_directory_problems(c, tmp_path):
    msg = error_of(settings(c, ssl_sni_path=str(tmp_path / "nope")))
    assert msg.startswith("ssl_sni_path") and "no such directory" in msg
    d = tmp_path / "sni"
    d.mkdir()
    certgen.copy(c.expired_cert, d / "old.example.test.crt")
    certgen.copy(c.expired_key, d / "old.example.test.key")
    certgen.write(d / "..evil.crt", b"ignored: not a host name")
    msg = error_of(settings(c, ssl_sni_path=str(d)))
    assert "old.example.test.crt" in msg and "expired" in msg
    os.remove(d / "old.example.test.key")      # key missing and not in the .crt
    msg = error_of(settings(c, ssl_sni_path=str(d)))
    assert "old.example.test.crt" in msg and "no private key" in msg


# --- ssl_info and reload --------------------------------------------------------------

def test_cert_info_lines(c):
    ctx = tls.check_certificates(settings(c, ssl_sni_path=c.sni_dir))
    lines = tls.cert_info(settings(c), ctx)
    assert "default file %s" % c.server_cert in lines
    assert "default subject CN=localhost" in lines
    assert "default issuer CN=pen test CA" in lines
    assert "default san DNS:localhost IP:127.0.0.1 IP:::1" in lines
    days = [int(x.split()[-1]) for x in lines if x.startswith("default days_left")]
    assert days and 88 <= days[0] <= 90
    assert any(x.startswith("default not_after ") and x.endswith(" UTC") for x in lines)
    for name in c.sni_names:
        assert "sni:%s subject CN=%s" % (name, name) in lines
        assert "sni:%s san DNS:%s" % (name, name) in lines
    # without a context: read from the files
    assert tls.cert_info(settings(c, ssl_sni_path=c.sni_dir)) == lines
    assert tls.cert_info(Settings()) == ["ssl not enabled (no -E certfile)"]


def test_cert_info_shows_negative_days_for_an_allowed_expired_cert(c):
    s = settings(c, ssl_cert=c.expired_cert, ssl_key=c.expired_key, ssl_allow_expired=True)
    days = [x for x in tls.cert_info(s, tls.check_certificates(s)) if "days_left" in x]
    assert int(days[0].split()[-1]) < 0


def live_certificate(c, tmp_path):
    """A certificate file that can be replaced; (path, settings, context in use)."""
    path = certgen.copy(c.server_combined, tmp_path / "live.pem")
    s = settings(c, ssl_cert=path, ssl_key=None)
    return path, s, tls.check_certificates(s)


def test_reload_picks_up_a_renewed_certificate(c, tmp_path):
    path, s, old = live_certificate(c, tmp_path)
    certgen.copy(c.renewed_combined, path)
    new = tls.reload(s, old)
    _s, client = handshake(new, client_context(c))
    assert peer_cert(client) == der(c.renewed_obj)


def test_reload_keeps_the_old_context_on_a_broken_certificate(c, tmp_path):
    path, s, old = live_certificate(c, tmp_path)
    certgen.write(path, b"-----BEGIN CERTIFICATE-----\ntruncated")
    with pytest.raises(ConfigError) as info:
        tls.reload(s, old)
    msg = str(info.value)
    assert "keeping the certificates in use" in msg and path in msg and "\n" not in msg
    _s, client = handshake(old, client_context(c))      # old one still serves
    assert peer_cert(client) == der(c.server_obj)
