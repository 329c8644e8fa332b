"""The one package every Goblin service shares: settings, logging, telemetry, gRPC bootstrap, errors."""
