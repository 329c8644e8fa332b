"""Inference service settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.common.process import usable_cores
from services.common.settings import ServiceSettings
from services.common.topology import GRPC_PORTS, METRICS_PORTS


class InferenceSettings(ServiceSettings):
    grpc_port: int = Field(GRPC_PORTS["inference"], alias="GOBLIN_INFERENCE_PORT", ge=1, le=65535)
    metrics_port: int = Field(METRICS_PORTS["inference"], alias="GOBLIN_INFERENCE_METRICS_PORT", ge=1, le=65535)
    probe_port: int = Field(0, alias="GOBLIN_INFERENCE_PROBE_PORT", ge=0, le=65535)
    model_path: Path | None = Field(None, alias="GOBLIN_MODEL_PATH", description="any GGUF chat model")
    # Default: from the file name (SmolLM2-135M-Instruct.Q4_1.gguf -> smollm2-135m-instruct).
    model_id: str | None = Field(None, alias="GOBLIN_MODEL_ID", pattern=r"^[a-z0-9][a-z0-9._\-]*$")
    embed_model_dir: Path | None = Field(None, alias="GOBLIN_EMBED_MODEL_DIR")
    max_queue: int = Field(16, alias="GOBLIN_INFERENCE_MAX_QUEUE", ge=1, le=4096)
    max_sequences: int = Field(4, alias="GOBLIN_INFERENCE_MAX_SEQUENCES", ge=1, le=64)
    n_ctx: int = Field(2048, alias="GOBLIN_INFERENCE_N_CTX", ge=256, le=131_072)
    # Decoding threads: at most `threads` (every usable core by default); with adaptive threads on, as few
    # as `min_threads` (default threads - 1) while other processes need a core (engine/threads.py).
    threads: int = Field(default_factory=usable_cores, alias="GOBLIN_INFERENCE_THREADS", ge=1, le=256)
    min_threads: int | None = Field(None, alias="GOBLIN_INFERENCE_MIN_THREADS", ge=1, le=256)
    adaptive_threads: bool = Field(True, alias="GOBLIN_INFERENCE_ADAPTIVE_THREADS")
    batch_threads: int = Field(default_factory=usable_cores, alias="GOBLIN_INFERENCE_BATCH_THREADS", ge=1, le=256)
    embed_threads: int = Field(1, alias="GOBLIN_EMBED_THREADS", ge=1, le=64)
    # A Unix-domain socket instead of the TCP port (one machine, systemd: deploy/systemd/). Mutual TLS
    # stays on: the file mode keeps other users off the socket, the certificate keeps other services of
    # this machine that are not the router's peers from pretending to be one.
    uds: Path | None = Field(None, alias="GOBLIN_INFERENCE_UDS")

    @field_validator("uds", mode="before")
    @classmethod
    def _absolute_socket(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.removeprefix("unix:") or None
        if value is not None and not Path(str(value)).is_absolute():
            raise ValueError("GOBLIN_INFERENCE_UDS: must be an absolute path, e.g. /run/goblin/inference.sock")
        return value

    @model_validator(mode="after")
    def _thread_floor(self) -> InferenceSettings:
        if self.min_threads is None:
            self.min_threads = max(1, self.threads - 1)
        elif self.min_threads > self.threads:
            raise ValueError(
                f"GOBLIN_INFERENCE_MIN_THREADS ({self.min_threads}) is above GOBLIN_INFERENCE_THREADS ({self.threads})"
            )
        return self

    def grpc_listen_address(self) -> str:
        return f"unix:{self.uds}" if self.uds else super().grpc_listen_address()
