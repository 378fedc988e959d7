"""Certificates for the TLS tests, made fresh in each test's folder (none is committed).

A CA, a server certificate for 127.0.0.1 (an IP name, as the peers dial the address) and client
certificates for trunks' PBXs, all signed by that CA; ECDSA P-256, valid for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    pem: Path  # the certificate, then its key, in one file (what baresip reads)
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: KeyPair
    clients: dict[str, KeyPair]  # by the name in the certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    (folder / f"{stem}.crt").write_bytes(cert_pem)
    (folder / f"{stem}.key").write_bytes(key_pem)
    (folder / f"{stem}.pem").write_bytes(cert_pem + key_pem)
    return KeyPair(folder / f"{stem}.pem", folder / f"{stem}.crt", folder / f"{stem}.key")


def _signed(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, names: list[x509.GeneralName] = (),
            usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path, client_names: tuple[str, ...] = ("pbx.acme.example",)) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _signed("plexline test CA", ca_key, "plexline test CA", ca_key, ca=True)
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _signed("127.0.0.1", server_key, "plexline test CA", ca_key,
                     names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
                     usage=ExtendedKeyUsageOID.SERVER_AUTH)
    clients = {}
    for name in client_names:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _signed(name, key, "plexline test CA", ca_key, names=[x509.DNSName(name)],
                              usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        clients[name] = _write(folder, name, certificate, key)
    return Certificates(folder / "ca.crt", _write(folder, "server", server, server_key), clients)
