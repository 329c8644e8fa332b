"""Run the gateway: HTTPS with the configured certificate, or the generated dev one."""

from __future__ import annotations

import logging
import sys

import uvicorn

from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.principal import load_signer
from services.common.settings import ConfigError, load_or_exit
from services.common.telemetry import setup_telemetry
from services.common.tls import load_grpc_tls
from services.gateway.config import GatewaySettings
from services.gateway.main import create_app
from services.gateway.tls import ensure_dev_certificates, https_config


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
    config = https_config(
        create_app(settings), settings.bind_host, settings.port, cert_file, key_file, settings.max_connections
    )
    uvicorn.Server(config).run()


main()
