"""The suite CA and its certificates: mutual TLS between services, and the gateway's dev HTTPS cert.

``goblin up`` calls :func:`issue_suite_certificates` before it starts anything: a CA of its own under
``GOBLIN_HOME/tls/`` (its key stays there, 0600, and is never named to a service) and one certificate
per service, ``<service>.pem`` / ``<service>-key.pem``, each naming the service (DNS ``<service>``)
plus localhost (clients check the service name, whatever address they dial). The CA carries X.509
name constraints permitting only those names and loopback addresses, so its key, if stolen, cannot
vouch for anyone else's host; it lives 60 days and leaves 14, and each is re-issued when a third of
its life is left. Services load their files with
:func:`load_grpc_tls`; on Kubernetes the same three settings point at mounted Secrets.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.metrics import TLS_CERT_NOT_AFTER
from services.common.topology import BACKEND_SERVICES

if TYPE_CHECKING:
    import grpc

    from services.common.settings import GoblinSettings

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
# The gateway's HTTPS certificate (browsers and curl trust ca.pem).
HTTPS_CERT_FILE = "server.pem"
HTTPS_KEY_FILE = "server-key.pem"
GRPC_PEERS: tuple[str, ...] = (*BACKEND_SERVICES, "gateway")
LOCAL_NAMES: tuple[str, ...] = ("localhost",)
LOCAL_IPS: tuple[str, ...] = ("127.0.0.1", "::1")
# Loopback only: the dev CA cannot vouch for an address anywhere else.
PERMITTED_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
CA_LIFETIME = dt.timedelta(days=60)
LEAF_LIFETIME = dt.timedelta(days=14)
BACKDATE = dt.timedelta(minutes=5)  # clock skew between processes or containers


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: state folders hold keys and secrets."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` (0600 unless the file is public, like a public key) and write
    ``data``. Refuses (``FileExistsError``, ``OSError``) when anything is already there, a planted
    symlink included: O_EXCL|O_NOFOLLOW never write through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def replace_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh 0600 file beside ``path``, then rename it over ``path``: a reader sees the
    old or the new file, never half of one, and a symlink at ``path`` is replaced, not followed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    write_private(tmp, data)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fresh(cert: x509.Certificate, lifetime: dt.timedelta) -> bool:
    """Valid now with more than a third of ``lifetime`` left."""
    now = dt.datetime.now(dt.UTC)
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > lifetime / 3


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _name_constraints() -> x509.NameConstraints:
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in (*GRPC_PEERS, *LOCAL_NAMES)]
    permitted += [x509.IPAddress(ipaddress.ip_network(n)) for n in PERMITTED_NETWORKS]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def make_ca(common_name: str = "Goblin suite CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new name-constrained CA certificate and key, valid for :data:`CA_LIFETIME`."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Goblin"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_name_constraints(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    also: tuple[str, ...] = (),
    *,
    with_ips: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``name`` (DNS ``name`` and ``also``, and localhost), usable as server and client.

    ``with_ips`` adds the loopback addresses, for the HTTPS certificate (browsers and curl dial
    127.0.0.1). gRPC certificates carry none: gRPC's TLS (BoringSSL) refuses a chain whose CA constrains
    IP addresses when the leaf names one ("unsupported name constraint type"), and gRPC clients verify
    the service name anyway (``grpc.ssl_target_name_override``), never the address.
    """
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    dns = dict.fromkeys([name, *also, *LOCAL_NAMES])  # ordered, no duplicate when name is "localhost"
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    if with_ips:
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOCAL_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _is_current_kind(ca: x509.Certificate) -> bool:
    """Name-constrained and short-lived: a CA from before (ten years, unconstrained) is replaced."""
    try:
        ca.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return False
    return ca.not_valid_after_utc - ca.not_valid_before_utc <= CA_LIFETIME + BACKDATE


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return False
    return cert.issuer == ca.subject and key_id == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA in ``directory``, re-made when missing or a third of its life from expiry; True if new."""
    cert = _load_cert(directory / CA_FILE)
    if cert is not None and _fresh(cert, CA_LIFETIME) and _is_current_kind(cert):
        try:
            key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), password=None)
        except (OSError, ValueError):
            key = None
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == cert.public_key():
            return cert, key, False
    cert, key = make_ca()
    replace_private(directory / CA_KEY_FILE, key_pem(key))
    replace_private(directory / CA_FILE, cert_pem(cert))
    return cert, key, True


def _ensure_leaf(
    directory: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    name: str,
    cert_file: str,
    key_file: str,
    *,
    with_ips: bool = False,
) -> None:
    ca_cert, ca_key = ca
    current = _load_cert(directory / cert_file)
    if (
        current is not None
        and (directory / key_file).exists()
        and _issued_by(current, ca_cert)
        and _fresh(current, LEAF_LIFETIME)
    ):
        return
    cert, key = make_leaf(ca_cert, ca_key, name, with_ips=with_ips)
    replace_private(directory / key_file, key_pem(key))
    replace_private(directory / cert_file, cert_pem(cert))


def grpc_cert_files(directory: Path, service: str) -> tuple[Path, Path]:
    """(certificate, key) paths of ``service``'s gRPC identity in ``directory``."""
    return directory / f"{service}.pem", directory / f"{service}-key.pem"


def issue_suite_certificates(directory: Path) -> Path:
    """Create or renew the suite CA, every service's gRPC certificate and the gateway's HTTPS certificate
    in ``directory`` (mode 0700, files 0600). Returns the CA certificate's path."""
    private_dir(directory)
    ca_cert, ca_key, _ = _ensure_ca(directory)
    for name in GRPC_PEERS:
        cert_path, key_path = grpc_cert_files(directory, name)
        _ensure_leaf(directory, (ca_cert, ca_key), name, cert_path.name, key_path.name)
    _ensure_leaf(directory, (ca_cert, ca_key), "localhost", HTTPS_CERT_FILE, HTTPS_KEY_FILE, with_ips=True)
    return directory / CA_FILE


@dataclass(frozen=True)
class GrpcTls:
    """One process's gRPC identity: the suite CA it trusts and its own certificate and key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: present our certificate, and refuse at the handshake any client without one
        signed by the suite CA."""
        import grpc

        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: trust only the suite CA, and present our certificate."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def grpc_tls_paths(settings: GoblinSettings, service: str) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for ``service``: the settings' files, else those ``goblin up`` issued."""
    directory = settings.goblin_home / "tls"
    cert, key = grpc_cert_files(directory, service)
    return (
        settings.grpc_tls_ca_file or directory / CA_FILE,
        settings.grpc_tls_cert_file or cert,
        settings.grpc_tls_key_file or key,
    )


def load_grpc_tls(settings: GoblinSettings, service: str) -> GrpcTls:
    """Read ``service``'s gRPC TLS files; :class:`ConfigError` naming the variable when one is missing."""
    from services.common.settings import ConfigError

    names = ("GOBLIN_GRPC_TLS_CA_FILE", "GOBLIN_GRPC_TLS_CERT_FILE", "GOBLIN_GRPC_TLS_KEY_FILE")
    if settings.production:
        # The dev CA under GOBLIN_HOME is one machine's; a deployment names its own (mounted) files.
        given = (settings.grpc_tls_ca_file, settings.grpc_tls_cert_file, settings.grpc_tls_key_file)
        missing = [name for name, value in zip(names, given, strict=True) if value is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: required in production (mutual TLS between services)")
    contents = []
    for name, path in zip(names, grpc_tls_paths(settings, service), strict=True):
        try:
            contents.append(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"{name}: cannot read {path} ({exc.strerror}); `goblin up` issues the suite's certificates, "
                "a deployment mounts them"
            ) from None
    record_expiry(ca=contents[0], cert=contents[1])
    return GrpcTls(*contents)


def record_expiry(*, ca: bytes, cert: bytes) -> None:
    """Export the notAfter of the CA and of this process's certificate (``certificate="ca"|"service"``)."""
    for label, pem in (("ca", ca), ("service", cert)):
        try:
            not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        except ValueError:
            continue  # not PEM: the TLS handshake setup reports it, with the file's name
        TLS_CERT_NOT_AFTER.labels(label).set(not_after.timestamp())
