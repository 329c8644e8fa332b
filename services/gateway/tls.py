"""The gateway's development HTTPS certificate, from the suite CA (services.common.tls).

Clients trust ``.goblin/tls/ca.pem`` (``curl --cacert``); the server presents ``server.pem``. ``goblin up``
issues both before the gateway starts; a gateway started on its own issues them the same way. Production
refuses them (see config.py).
"""

from __future__ import annotations

from pathlib import Path

from services.common.tls import HTTPS_CERT_FILE, HTTPS_KEY_FILE, issue_suite_certificates

CERT_FILE, KEY_FILE = HTTPS_CERT_FILE, HTTPS_KEY_FILE


def ensure_dev_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Create (or reuse while fresh) the suite CA and the localhost certificate; returns (ca, cert, key)."""
    ca = issue_suite_certificates(directory)
    return ca, directory / HTTPS_CERT_FILE, directory / HTTPS_KEY_FILE
