"""The inference process: owns the chat and embedding models; exactly one per model and machine."""

from __future__ import annotations

import hashlib

import grpc

from goblin.v1 import inference_pb2_grpc
from services.common.grpc_server import StartupRefused
from services.common.process import AlreadyRunning, InstanceLock
from services.inference import metrics
from services.inference.config import InferenceSettings
from services.inference.embeddings import Embedder
from services.inference.engine import ChatEngine, EngineObserver, RequestStats
from services.inference.models import ModelNotFound, chat_model_path, embedding_model_files
from services.inference.service import InferenceService, model_id_from_path
from services.inference.servicer import InferenceServicer


class PrometheusObserver(EngineObserver):
    """Engine events -> the metrics of SPEC.md."""

    def model_loaded(self, loaded: bool) -> None:
        metrics.MODEL_LOADED.set(1 if loaded else 0)

    def queue_changed(self, length: int, capacity: int) -> None:
        metrics.QUEUE_LENGTH.set(length)
        metrics.QUEUE_CAPACITY.set(capacity)

    def threads_changed(self, threads: int) -> None:
        metrics.THREADS.set(threads)

    def first_token(self, seconds: float) -> None:
        metrics.TTFT.observe(seconds)

    def request_finished(self, stats: RequestStats) -> None:
        metrics.LATENCY.labels("chat").observe(stats.latency_seconds)
        metrics.TOKENS.labels("prompt").inc(stats.prompt_tokens)
        metrics.TOKENS.labels("completion").inc(stats.completion_tokens)


def single_instance_lock(settings: InferenceSettings, model_path: str) -> InstanceLock:
    """One inference process per model on this machine: two would fight over the cores and memory."""
    digest = hashlib.sha256(model_path.encode()).hexdigest()[:16]
    return InstanceLock(settings.goblin_home / "locks" / f"inference-{digest}.lock", f"inference for {model_path}")


class InferenceServer:
    name = "inference"
    grpc_service_names = ["goblin.v1.Inference"]

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        try:
            model_path = chat_model_path(settings.model_path)
            self.lock = single_instance_lock(settings, str(model_path.resolve()))
            self.lock.acquire()
        except (ModelNotFound, AlreadyRunning) as exc:
            raise StartupRefused(f"inference: {exc}") from None
        metrics.MODEL_LOADED.set(0)
        metrics.QUEUE_CAPACITY.set(settings.max_queue)
        metrics.THREADS.set(settings.threads)
        engine = ChatEngine(
            model_path,
            n_ctx=settings.n_ctx,
            n_threads=settings.threads,
            n_threads_batch=settings.batch_threads,
            min_threads=settings.min_threads,
            adaptive_threads=settings.adaptive_threads,
            max_queue=settings.max_queue,
            max_sequences=settings.max_sequences,
            observer=PrometheusObserver(),
        )
        files = embedding_model_files(settings.embed_model_dir)
        self.service = InferenceService(
            engine,
            lambda: Embedder.from_files(files, intra_op_threads=settings.embed_threads),
            settings.model_id or model_id_from_path(model_path),
        )
        metrics.ACTIVE_SEQUENCES.set_function(lambda: self.service.stats().active_sequences)

    def register(self, server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(self.service), server)

    async def start(self) -> None:
        await self.service.start()

    async def healthy(self) -> bool:
        return self.service.ready

    async def stop(self) -> None:
        await self.service.close()
        self.lock.release()
