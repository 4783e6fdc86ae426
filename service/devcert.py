"""A development CA, a server certificate and a client certificate, made with ``cryptography``
(no openssl needed): ``make cert`` or ``python -m service.devcert --out var/tls``.

Writes ``ca.pem`` (trust this: ``VIGIL_CA_BUNDLE``, tritonclient's ``ca_certs``, ``curl
--cacert``), ``server.pem`` + ``server.key`` (``server.tls.certfile`` / ``keyfile``) for
localhost, 127.0.0.1 and ::1 plus any ``--host``, and ``client.pem`` + ``client.key`` for mTLS
(``server.tls.ca_certs: ca.pem``). Keys are written mode 0600. For development and tests only:
the CA key is thrown away, so nothing else can ever be signed by it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Key, issuer: tuple[x509.Name, Key] | None, days: int,
          extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = _name(subject)
    issuer_name, signer = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def _leaf_usage(purpose: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    return [(x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(digital_signature=True, key_encipherment=False,
                           content_commitment=False, data_encipherment=False,
                           key_agreement=True, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([purpose]), False)]


def san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_dev_pki(out: Path, hosts: list[str] | None = None, days: int = 30) -> dict[str, Path]:
    """Write the CA, server and client certificates under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Vigil development CA", ca_key, None, days, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), True)])
    issuer = (ca.subject, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", server_key, issuer, days,
                   [*_leaf_usage(ExtendedKeyUsageOID.SERVER_AUTH),
                    (san(["localhost", "127.0.0.1", "::1", *(hosts or [])]), False)])
    client = _cert("vigil-client", client_key, issuer, days,
                   _leaf_usage(ExtendedKeyUsageOID.CLIENT_AUTH))
    paths = {k: out / k for k in ("ca.pem", "server.pem", "server.key", "client.pem",
                                   "client.key")}
    pem = serialization.Encoding.PEM
    _write(paths["ca.pem"], ca.public_bytes(pem))
    _write(paths["server.pem"], server.public_bytes(pem))
    _write(paths["server.key"], _pem_key(server_key), private=True)
    _write(paths["client.pem"], client.public_bytes(pem))
    _write(paths["client.key"], _pem_key(client_key), private=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.devcert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("var/tls"))
    parser.add_argument("--host", action="append", default=[],
                        help="another name or address of the server (repeatable)")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    paths = make_dev_pki(args.out, args.host, args.days)
    for name, path in paths.items():
        print(f"{name:11} {path}")
    print(f"serve with: VIGIL_SERVER__TLS__CERTFILE={paths['server.pem']} "
          f"VIGIL_SERVER__TLS__KEYFILE={paths['server.key']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
