"""A deployment's secrets, made with `cryptography` (a Flower dependency): a CA, the SuperLink's TLS certificate
signed by it, and one SuperNode authentication key pair per node.

Layout under APP/.flwr/ (never packed into the app bundle: Flower leaves .flwr/ out, and .gitignore too):

    certs/ca.crt         the CA certificate: every SuperNode host and `flwr` (root-certificates) need it
    certs/ca.key         the CA's private key: stays with the operator (signs a new SuperLink certificate)
    certs/superlink.crt  the SuperLink's certificate (SAN: 127.0.0.1, localhost and the given hosts)
    certs/superlink.key  its private key: stays on the SuperLink host
    keys/node-<i>        SuperNode i's private key (OpenSSH, EC P-384): goes to device i only
    keys/node-<i>.pub    its public key: registered at the SuperLink and written into nodes/node-<i>.toml

Private keys are written with mode 0600. Existing files are kept (a restart reuses them), except that a SuperLink
certificate that lacks a host now asked for is made again.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from budgetplan.integrations.flower.export import CA_CERT, KEYS_DIR, SERVER_CERT, SERVER_KEY

LOOPBACK = ("127.0.0.1", "localhost")
VALID_DAYS = 365
CURVE = ec.SECP384R1  # Flower's node authentication takes NIST curves; P-384 is what its docs use


@dataclass(frozen=True)
class Certificates:
    """Paths of the SuperLink's TLS files (ca_key stays with the operator)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "budgetplan deployment"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # in order, once each
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def make_ca(ca_cert: Path, ca_key: Path) -> None:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = ec.generate_private_key(CURVE())
    name = _name("budgetplan deployment CA")
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    _write(ca_key, _pem_key(key), private=True)
    _write(ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(certs: Certificates, hosts: tuple[str, ...]) -> None:
    """The SuperLink's certificate for `hosts` (its SAN), signed by the CA."""
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(CURVE())
    cert = (_builder(_name(hosts[0]), ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    _write(certs.server_key, _pem_key(key), private=True)
    _write(certs.server_cert, cert.public_bytes(serialization.Encoding.PEM))


def cert_hosts(path: Path) -> set[str]:
    """The host names and addresses a certificate's SAN holds."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def ensure_certificates(app: Path, hosts: tuple[str, ...] = ()) -> Certificates:
    """The app's CA and SuperLink certificate (made when missing, the certificate again when a host is new)."""
    ca_cert = app / CA_CERT
    certs = Certificates(ca_cert, ca_cert.with_suffix(".key"), app / SERVER_CERT, app / SERVER_KEY)
    if not (certs.ca_cert.is_file() and certs.ca_key.is_file()):
        make_ca(certs.ca_cert, certs.ca_key)
        certs.server_cert.unlink(missing_ok=True)
    wanted = (*LOOPBACK, *hosts)
    if not (certs.server_cert.is_file() and certs.server_key.is_file()) or not set(wanted) <= cert_hosts(
            certs.server_cert):
        make_server_cert(certs, wanted)
    return certs


def make_node_key(private_path: Path) -> str:
    """A SuperNode key pair: the private key (OpenSSH) at private_path, the public one beside it (.pub); returns the
    public key's OpenSSH text. An existing pair is kept."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.is_file() and public_path.is_file():
        return public_path.read_text().strip()
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(private_path, private, private=True)
    _write(public_path, public + b"\n")
    return public.decode("ascii")


def node_key_path(app: Path, index: int) -> Path:
    return app / KEYS_DIR / f"node-{index}"
