from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509

from services.gateway.tls import ensure_dev_certificates


def test_dev_ca_signs_a_localhost_certificate(tmp_path: Path) -> None:
    ca, cert, key = ensure_dev_certificates(tmp_path / "tls")
    server = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    # A client trusting only ca.pem accepts the server certificate for 127.0.0.1.
    context = ssl.create_default_context(cafile=str(ca))
    context.load_verify_locations(cafile=str(ca))
    authority = x509.load_pem_x509_certificate(ca.read_bytes())
    assert server.issuer == authority.subject
    authority.public_key().verify(server.signature, server.tbs_certificate_bytes, _ecdsa(server))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca-key.pem").stat().st_mode) == 0o600


def test_certificates_are_reused_while_valid(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in ensure_dev_certificates(tmp_path)]
    second = [p.read_bytes() for p in ensure_dev_certificates(tmp_path)]
    assert first == second


def _ecdsa(cert: x509.Certificate):  # noqa: ANN202
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(cert.signature_hash_algorithm)
