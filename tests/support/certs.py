"""Certificates made in the test: a CA, and server or client certificates it signs.

``server_tls(dns_names, ips)`` gives what cert-manager puts in a TLS Secret (``ca.crt``,
``tls.crt``, ``tls.key``; ``secret_data`` is that Secret's ``stringData``), for the
integration tests' stores and the kind e2e's alike. Keys are ECDSA P-256: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=2)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:  # Kubernetes reads a client certificate's O as its groups
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


@dataclass(frozen=True)
class KeyPair:
    cert: bytes
    """The certificate, PEM."""
    key: bytes
    """Its private key, PEM (PKCS #8, unencrypted)."""


class CertificateAuthority:
    """A self-signed CA that signs certificates for given names."""

    def __init__(self, common_name: str = "trackrelay test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._name = _name(common_name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert(self) -> bytes:
        """The CA's certificate, PEM (a Secret's ``ca.crt``)."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
        *,
        common_name: str | None = None,
        organization: str | None = None,
        client: bool = False,
    ) -> KeyPair:
        """A certificate for ``dns_names`` and ``ips`` (its subjectAltName), for a server
        or, with ``client``, a client (``common_name`` then names the user, ``organization``
        its group)."""
        if not (dns_names or ips or common_name):
            raise ValueError("a certificate needs a DNS name, an IP address or a common name")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cn = common_name or (dns_names[0] if dns_names else ips[0])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, organization))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class ServerTLS:
    """A CA, and a server certificate it signed: a cert-manager-style TLS Secret's content."""

    ca: CertificateAuthority
    server: KeyPair

    def secret_data(self) -> dict[str, str]:
        """The Secret's keys (``ca.crt``, ``tls.crt``, ``tls.key``), as ``stringData``."""
        return {
            "ca.crt": self.ca.cert.decode(),
            "tls.crt": self.server.cert.decode(),
            "tls.key": self.server.key.decode(),
        }

    def write(self, directory: Path) -> Path:
        """The three files in ``directory`` (the key 0600), as a Secret volume holds them."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.secret_data().items():
            path = directory / name
            path.write_text(text)
            path.chmod(0o600 if name == "tls.key" else 0o644)
        return directory


def server_tls(dns_names: Sequence[str] = (), ips: Sequence[str] = ()) -> ServerTLS:
    """A fresh CA and a server certificate for ``dns_names`` and ``ips``."""
    ca = CertificateAuthority()
    return ServerTLS(ca, ca.issue(dns_names, ips))
