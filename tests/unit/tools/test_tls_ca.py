"""The suite CA that ``goblin up`` issues: name constraints, short lives, renewal, private files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from services.common import tls
from services.common.settings import ConfigError, Environment, GoblinSettings
from services.common.tls import (
    CA_FILE,
    CA_KEY_FILE,
    CA_LIFETIME,
    GRPC_PEERS,
    LEAF_LIFETIME,
    grpc_cert_files,
    issue_suite_certificates,
    load_grpc_tls,
    replace_private,
    write_private,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_ca_permits_only_the_names_it_issues_for_and_lives_briefly(tmp_path: Path) -> None:
    ca = load(issue_suite_certificates(tmp_path / "tls"))
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = constraints.value.permitted_subtrees or []
    assert set(GRPC_PEERS) | {"localhost"} == {n.value for n in permitted if isinstance(n, x509.DNSName)}
    assert {n.value for n in permitted if isinstance(n, x509.IPAddress)} == {
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=30) <= life <= dt.timedelta(days=91) and life <= CA_LIFETIME + dt.timedelta(hours=1)


def test_each_service_gets_a_short_lived_certificate_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    ca = load(issue_suite_certificates(directory))
    for service in GRPC_PEERS:
        cert_path, key_path = grpc_cert_files(directory, service)
        cert = load(cert_path)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName)[0] == service
        assert cert.issuer == ca.subject
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, _ecdsa(cert))
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= LEAF_LIFETIME + dt.timedelta(hours=1)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_files_are_private_and_reused_while_fresh(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    issue_suite_certificates(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / CA_KEY_FILE).stat().st_mode) == 0o600
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    issue_suite_certificates(directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


@pytest.mark.parametrize("how", ["near expiry", "key lost", "long-lived"])
def test_an_unusable_ca_is_replaced_with_every_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    directory = tmp_path / "tls"
    if how == "near expiry":
        # Made with a one-day life: less than a third of the normal life left, so the next run renews.
        with monkeypatch.context() as patch:
            patch.setattr(tls, "CA_LIFETIME", dt.timedelta(days=1))
            issue_suite_certificates(directory)
    elif how == "long-lived":
        # A CA from before this change: ten years, no name constraints. It must not be kept.
        issue_suite_certificates(directory)
        _plant_old_ca(directory)
    else:
        issue_suite_certificates(directory)
        (directory / CA_KEY_FILE).unlink()
    old_router = grpc_cert_files(directory, "router")[0].read_bytes()
    old_ca = (directory / CA_FILE).read_bytes()
    issue_suite_certificates(directory)
    assert (directory / CA_FILE).read_bytes() != old_ca
    ca = load(directory / CA_FILE)
    router = load(grpc_cert_files(directory, "router")[0])
    assert grpc_cert_files(directory, "router")[0].read_bytes() != old_router
    assert router.issuer == ca.subject
    ca.public_key().verify(router.signature, router.tbs_certificate_bytes, _ecdsa(router))


def _plant_old_ca(directory: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Goblin development CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    tls.replace_private(directory / CA_KEY_FILE, tls.key_pem(key))
    tls.replace_private(directory / CA_FILE, tls.cert_pem(cert))


def test_a_symlink_planted_at_a_key_path_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    planted = tmp_path / "ca-key.pem"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_private(planted, b"secret")
    assert victim.read_text() == "untouched"
    # Renewal replaces the link itself, and the new file is private.
    replace_private(planted, b"secret")
    assert victim.read_text() == "untouched" and not planted.is_symlink()
    assert planted.read_bytes() == b"secret" and stat.S_IMODE(planted.stat().st_mode) == 0o600


def test_a_planted_key_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "admin.key"
    existing.write_text("someone else's")
    with pytest.raises(FileExistsError):
        write_private(existing, b"secret")
    assert existing.read_text() == "someone else's"


def test_production_requires_explicit_grpc_tls_files(tmp_path: Path) -> None:
    issue_suite_certificates(tmp_path / "tls")
    dev = GoblinSettings(goblin_home=tmp_path)
    assert load_grpc_tls(dev, "router").cert == grpc_cert_files(tmp_path / "tls", "router")[0].read_bytes()
    production = GoblinSettings(goblin_home=tmp_path, goblin_env=Environment.production)
    with pytest.raises(ConfigError, match="GOBLIN_GRPC_TLS_CA_FILE.*required in production"):
        load_grpc_tls(production, "router")


def test_a_missing_file_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GOBLIN_GRPC_TLS_CA_FILE: cannot read"):
        load_grpc_tls(GoblinSettings(goblin_home=tmp_path), "router")


def _ecdsa(cert: x509.Certificate):  # noqa: ANN202
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(cert.signature_hash_algorithm)
