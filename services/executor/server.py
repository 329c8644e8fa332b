"""The executor process: the goblin catalog, Postgres (schema ``executor``: the task queue and its
events), the LISTEN connection, the workers, and ``goblin.v1.Executor``."""

from __future__ import annotations

import grpc

from goblin.v1 import executor_pb2_grpc
from services.common.audit import AuditLog
from services.common.errors import GoblinError
from services.common.grpc_server import StartupRefused
from services.common.journal import service_journal
from services.common.secrets import DetectionPoint, SecretGuard, SecretPolicy
from services.common.settings import ConfigError
from services.common.stores import PostgresStore, StoreBackedService
from services.executor.catalog import Catalog
from services.executor.config import ExecutorSettings
from services.executor.notifier import Notifier
from services.executor.repository import TaskRepository
from services.executor.runspec import RunSpecs
from services.executor.servicer import ExecutorServicer
from services.executor.worker import WorkerPool


class ExecutorServer(StoreBackedService):
    name = "executor"
    grpc_service_names = ["goblin.v1.Executor"]

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        try:
            catalog = Catalog.load()
            self.specs = RunSpecs(catalog, settings)
        except (ConfigError, GoblinError, ValueError, OSError) as exc:
            raise StartupRefused(f"executor catalog or sandbox: {exc}") from None
        dsn = settings.database_url.get_secret_value()
        self.postgres = PostgresStore(dsn, schema="executor")
        self.audit = AuditLog(self.postgres, journal=service_journal(settings.goblin_home, "executor", "audit_events"))
        self.repository = TaskRepository(self.postgres)
        self.notifier = Notifier(dsn)
        # Requests: a script or argument holding a secret is refused (it would be stored and run).
        self.request_guard = SecretGuard(
            DetectionPoint.request_creation,
            policy=SecretPolicy.block,
            audit=self.audit,
            enabled=settings.secret_scanning,
        )
        # Output: redacted (or withheld under the block policy) before it is stored or streamed.
        self.output_guard = SecretGuard(
            DetectionPoint.worker_processing,
            policy=settings.secret_policy,
            audit=self.audit,
            enabled=settings.secret_scanning,
        )
        self.workers = WorkerPool(self.repository, self.notifier, self.specs, self.output_guard, settings)
        # In start order; stopped in reverse: workers first (they hand their tasks back), Postgres last.
        self.stores = [self.postgres, self.audit, self.notifier, self.workers]

    def register(self, server: grpc.aio.Server) -> None:
        executor_pb2_grpc.add_ExecutorServicer_to_server(
            ExecutorServicer(self.repository, self.specs, self.notifier, self.request_guard, self.settings), server
        )
