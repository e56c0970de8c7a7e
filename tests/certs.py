"""Test certificates, generated with `cryptography` into a temporary directory.

Nothing here is committed: every key is made fresh by `make_certs(directory)`.
EC P-256 keys keep generation fast (the whole set takes a few milliseconds).

    c = make_certs(tmp_path)
    c.server_cert, c.server_key      # localhost + 127.0.0.1 + ::1, signed by c.ca_cert
    c.sni_dir                        # a.example.test.{crt,key}, b.example.test.{crt,key}
    c.client_cert, c.client_key      # client certificate signed by c.ca_cert
    c.expired_cert, c.future_cert    # not valid now (keys next to them)
    c.mismatch_cert, c.mismatch_key  # a certificate with somebody else's key
    c.encrypted_key (+ c.password, c.password_file) for c.encrypted_cert
    c.chain_cert / c.nochain_cert    # leaf from an intermediate, with and without it
"""

import datetime
import ipaddress
import os
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)
PASSWORD = b"correct horse battery staple"
SNI_NAMES = ("a.example.test", "b.example.test")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn, key, issuer_cert=None, issuer_key=None, ca=False,
              sans=(), not_before=None, not_after=None, client=False):
    """A certificate for `key`; self-signed unless issuer_cert/issuer_key."""
    start = not_before or now() - DAY
    end = not_after or now() + 90 * DAY
    issuer = issuer_cert.subject if issuer_cert is not None else name(cn)
    signer = issuer_key if issuer_key is not None else key
    builder = (x509.CertificateBuilder()
               .subject_name(name(cn))
               .issuer_name(issuer)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                   key.public_key()), critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else \
            ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]),
                                        critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer, hashes.SHA256())


def cert_pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key, password=None):
    algo = (serialization.BestAvailableEncryption(password) if password
            else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8, algo)


def write(path, data):
    """Write `data`; private keys are readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def copy(src, dst):
    """Copy a certificate/key file (keeping it owner-only)."""
    with open(src, "rb") as f:
        return write(dst, f.read())


def dns_sans(*names):
    return [x509.DNSName(n) for n in names]


def local_sans():
    return [x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]


def make_certs(directory):
    """Generate the whole set under `directory`; returns paths (and a few objects)."""
    d = str(directory)
    j = lambda *parts: os.path.join(d, *parts)   # noqa: E731
    c = SimpleNamespace(dir=d, password=PASSWORD, sni_names=SNI_NAMES)

    ca_key = new_key()
    ca = make_cert("pen test CA", ca_key, ca=True, not_after=now() + 3650 * DAY)
    c.ca_obj, c.ca_key_obj = ca, ca_key
    c.ca_cert = write(j("ca.pem"), cert_pem(ca))

    # the server certificate: separate files, and one file with both
    key = new_key()
    cert = make_cert("localhost", key, ca, ca_key, sans=local_sans())
    c.server_obj = cert
    c.server_cert = write(j("server.crt"), cert_pem(cert))
    c.server_key = write(j("server.key"), key_pem(key))
    c.server_combined = write(j("server-combined.pem"), cert_pem(cert) + key_pem(key))
    # a renewed certificate for the same names (for reload tests)
    key2 = new_key()
    cert2 = make_cert("localhost", key2, ca, ca_key, sans=local_sans())
    c.renewed_obj = cert2
    c.renewed_combined = write(j("renewed-combined.pem"), cert_pem(cert2) + key_pem(key2))
    # a self-signed one (pen's classic test setup)
    skey = new_key()
    c.selfsigned_combined = write(
        j("selfsigned.pem"),
        cert_pem(make_cert("localhost", skey, sans=local_sans())) + key_pem(skey))

    # SNI directory: NAME.crt + NAME.key, signed by the CA
    c.sni_dir = j("sni")
    os.mkdir(c.sni_dir)
    c.sni_objs = {}
    for n in SNI_NAMES:
        k = new_key()
        crt = make_cert(n, k, ca, ca_key, sans=dns_sans(n))
        c.sni_objs[n] = crt
        write(os.path.join(c.sni_dir, n + ".crt"), cert_pem(crt))
        write(os.path.join(c.sni_dir, n + ".key"), key_pem(k))

    # client certificates: one signed by the CA, one self-signed stranger
    k = new_key()
    c.client_cert = write(j("client.crt"),
                          cert_pem(make_cert("pen test client", k, ca, ca_key, client=True)))
    c.client_key = write(j("client.key"), key_pem(k))
    k = new_key()
    c.stranger_cert = write(j("stranger.crt"),
                            cert_pem(make_cert("stranger", k, client=True)))
    c.stranger_key = write(j("stranger.key"), key_pem(k))

    # not valid now
    k = new_key()
    c.expired_cert = write(j("expired.crt"), cert_pem(make_cert(
        "localhost", k, ca, ca_key, sans=local_sans(),
        not_before=now() - 400 * DAY, not_after=now() - 30 * DAY)))
    c.expired_key = write(j("expired.key"), key_pem(k))
    k = new_key()
    c.future_cert = write(j("future.crt"), cert_pem(make_cert(
        "localhost", k, ca, ca_key, sans=local_sans(),
        not_before=now() + 30 * DAY, not_after=now() + 400 * DAY)))
    c.future_key = write(j("future.key"), key_pem(k))

    # a certificate paired with the wrong key
    c.mismatch_cert = c.server_cert
    c.mismatch_key = write(j("mismatch.key"), key_pem(new_key()))

    # an encrypted private key
    k = new_key()
    c.encrypted_cert = write(j("encrypted.crt"), cert_pem(make_cert(
        "localhost", k, ca, ca_key, sans=local_sans())))
    c.encrypted_key = write(j("encrypted.key"), key_pem(k, PASSWORD))
    c.password_file = write(j("password.txt"), PASSWORD + b"\n")
    c.wrong_password_file = write(j("wrong-password.txt"), b"not it\n")

    # an intermediate CA: leaf with the chain in the file, and without it
    ikey = new_key()
    inter = make_cert("pen test intermediate", ikey, ca, ca_key, ca=True)
    c.intermediate_obj = inter
    c.intermediate_cert = write(j("intermediate.pem"), cert_pem(inter))
    k = new_key()
    leaf = make_cert("localhost", k, inter, ikey, sans=local_sans())
    c.chain_cert = write(j("chain.crt"), cert_pem(leaf, inter))
    c.nochain_cert = write(j("nochain.crt"), cert_pem(leaf))
    c.chain_key = write(j("chain.key"), key_pem(k))

    # files that are not what they claim
    c.der_cert = write(j("server.der"), cert.public_bytes(serialization.Encoding.DER))
    c.garbage = write(j("garbage.pem"), b"this is not a certificate\n")
    c.empty = write(j("empty.pem"), b"")
    c.key_only = c.server_key
    c.missing = j("does-not-exist.pem")
    return c
