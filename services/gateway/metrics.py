"""Gateway metrics. Names are fixed by SPEC.md: dashboards and alert rules use them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template and status.",
    ["method", "endpoint", "status_code"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration, to the last byte of the response.",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60),
)
HTTP_IN_PROGRESS = Gauge("http_requests_in_progress", "HTTP requests being served.", ["method"])
HTTP_ERRORS = Counter("http_errors_total", "HTTP responses with status >= 400.", ["method", "endpoint", "error_type"])
HTTP_429 = Counter("http_requests_429_total", "Requests refused with 429.", ["endpoint"])
SERVICE_HEALTH = Gauge(
    "service_health_status",
    "1 when the service answered SERVING to the last check, else 0.",
    ["service_name"],
)
CHAT_COMPLETIONS = Counter("chat_completions_total", "Chat completions answered.", ["provider", "model"])
CHAT_TOKENS = Counter(
    "chat_completion_tokens_total",
    "Tokens of answered chat completions.",
    ["provider", "model", "token_type"],
)
CHAT_ERRORS = Counter("chat_completion_errors_total", "Chat completions that failed.", ["provider", "error_type"])
