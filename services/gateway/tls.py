"""The gateway's HTTPS: the development certificate, from the suite CA (services.common.tls), and the
uvicorn configuration the gateway serves with (TLS settings, HTTP/2 and HTTP/1.1, the bounds).

Clients trust ``.goblin/tls/ca.pem`` (``curl --cacert``); the server presents ``server.pem``. ``goblin up``
issues both before the gateway starts; a gateway started on its own issues them the same way. Production
refuses them (see config.py).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import uvicorn

from services.common.tls import HTTPS_CERT_FILE, HTTPS_KEY_FILE, issue_suite_certificates
from services.gateway.http2 import ALPN_PROTOCOLS, AlpnHttpProtocol

CERT_FILE, KEY_FILE = HTTPS_CERT_FILE, HTTPS_KEY_FILE


def ensure_dev_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Create (or reuse while fresh) the suite CA and the localhost certificate; returns (ca, cert, key)."""
    ca = issue_suite_certificates(directory)
    return ca, directory / HTTPS_CERT_FILE, directory / HTTPS_KEY_FILE


def https_config(
    app: Any, host: str, port: int, cert_file: Path, key_file: Path, max_connections: int | None
) -> uvicorn.Config:
    """uvicorn's configuration for the gateway serving ``app`` on ``host:port``, loaded (its SSL context
    built): what ``python -m services.gateway`` runs, and what the protocol tests run against."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_config=None,
        timeout_graceful_shutdown=10,
        server_header=False,
        # HTTP/2 when TLS negotiates it, else HTTP/1.1 (http2.py). Bounds a flood cannot push past: the
        # request head's size and time (http_protocol.py, http2.py), idle keep-alive, and connections
        # plus in-flight requests (beyond it: 503 at once).
        http=AlpnHttpProtocol,
        timeout_keep_alive=5,
        limit_concurrency=max_connections,
        backlog=2048,
        # X-Forwarded-For is judged by the rate limiter against GOBLIN_TRUSTED_PROXIES, nowhere else:
        # uvicorn's own handling would believe any client on 127.0.0.1.
        proxy_headers=False,
        # TLS 1.2 suites with forward secrecy and AEAD only (uvicorn's default string also allows CBC-SHA1).
        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
    )
    config.load()
    assert config.ssl is not None
    # Explicit rather than left to the platform's OpenSSL policy: no TLS 1.0 or 1.1, whatever the distro.
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/2 first for the clients that offer it (RFC 9113 3.2); the rest, and clients without ALPN, HTTP/1.1.
    config.ssl.set_alpn_protocols(ALPN_PROTOCOLS)
    return config
