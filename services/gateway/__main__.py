"""Run the gateway: HTTPS with the configured certificate, or the generated dev one."""

from __future__ import annotations

import logging
import ssl
import sys

import uvicorn

from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.principal import load_signer
from services.common.settings import ConfigError, load_or_exit
from services.common.telemetry import setup_telemetry
from services.common.tls import load_grpc_tls
from services.gateway.config import GatewaySettings
from services.gateway.http_protocol import BoundedHttpToolsProtocol
from services.gateway.main import create_app
from services.gateway.tls import ensure_dev_certificates


def main() -> None:
    settings = load_or_exit(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    setup_telemetry("gateway")
    if settings.tls_cert_file is None:
        ca, cert, key = ensure_dev_certificates(settings.tls_dir)
        settings.tls_cert_file, settings.tls_key_file = cert, key
        logging.getLogger(__name__).info("using the development certificate", extra={"ca_file": str(ca)})
    cert_file, key_file = settings.require_tls_files()
    try:
        load_grpc_tls(settings, "gateway")  # refuse here, in one line, rather than in the app's lifespan
    except ConfigError as exc:
        print(f"goblin: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # The signer is built once and cached: a production gateway without its key stops here, at start,
    # not at its first authenticated request.
    load_signer()
    if settings.metrics_port:
        start_metrics_server(settings.bind_host, settings.metrics_port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.bind_host,
        port=settings.port,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_config=None,
        timeout_graceful_shutdown=10,
        server_header=False,
        # Bounds a flood cannot push past: the request head's size and time (http_protocol.py), idle
        # keep-alive, and connections plus in-flight requests (beyond it: 503 at once).
        http=BoundedHttpToolsProtocol,
        timeout_keep_alive=5,
        limit_concurrency=settings.max_connections,
        backlog=2048,
        # X-Forwarded-For is judged by the rate limiter against GOBLIN_TRUSTED_PROXIES, nowhere else:
        # uvicorn's own handling would believe any client on 127.0.0.1.
        proxy_headers=False,
        # TLS 1.2 suites with forward secrecy and AEAD only (uvicorn's default string also allows CBC-SHA1).
        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
    )
    config.load()
    # Explicit rather than left to the platform's OpenSSL policy: no TLS 1.0 or 1.1, whatever the distro.
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()


main()
