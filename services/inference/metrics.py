"""Inference metrics. Names are fixed by SPEC.md: dashboards and alerts use them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_LENGTH = Gauge("goblin_inference_queue_length", "Requests waiting for the model.")
QUEUE_CAPACITY = Gauge("goblin_inference_queue_capacity", "How many requests may wait before 429.")
ACTIVE_SEQUENCES = Gauge("goblin_inference_active_sequences", "Sequences being decoded now.")
LATENCY = Histogram(
    "goblin_inference_latency_seconds",
    "Time from admission to the last token.",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
TTFT = Histogram(
    "goblin_inference_time_to_first_token_seconds",
    "Time from admission to the first generated token.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
)
TOKENS = Counter("goblin_inference_tokens_total", "Tokens processed, by kind.", ["kind"])
MODEL_LOADED = Gauge("goblin_inference_model_loaded", "1 once the chat model is loaded, else 0.")
THREADS = Gauge(
    "goblin_inference_threads",
    "Threads decoding now: GOBLIN_INFERENCE_THREADS, fewer while other processes need a core.",
)
