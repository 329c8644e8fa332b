"""LiteLLM's proxy for the throughput sweep: from PyPI, in a venv of its own, sending nothing out.

``litellm[proxy]`` does not fit the project's venv: it pins older rich, python-dateutil and websockets than
ours (``pip install --dry-run 'litellm[proxy]'`` would downgrade them). So the bench installs it, pinned,
into bench/.work/litellm-venv (``make bench`` does it first: ``python -m bench.throughput_litellm
--install``) and runs ``litellm`` from there; the project's venv is never touched.

Offline: the cost map, Anthropic beta headers, blog posts, policy templates and autorouter presets come
from the package (``LITELLM_LOCAL_*``), their URLs point at a closed port on 127.0.0.1 anyway, every
HTTP(S) proxy variable does too (for any client that honours them; 127.0.0.1 is exempt), Hugging Face
is offline, and LiteLLM's telemetry flag is a no-op in this version. No database: keys are the master key.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from goblin_tools.suite import free_ports

VERSION = "1.108.7"
REQUIREMENT = f"litellm[proxy]=={VERSION}"
WORKERS = 2
VENV = Path(__file__).resolve().parent / ".work" / "litellm-venv"
STAMP = VENV / f".installed-{VERSION}"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_MODEL_COST_MAP_URL": f"{CLOSED}/cost-map.json",
    "LITELLM_BLOG_POSTS_URL": f"{CLOSED}/rss.xml",
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": f"{CLOSED}/beta-headers.json",
    "LITELLM_AUTOROUTER_PRESETS_URL": f"{CLOSED}/presets.json",
    "HTTP_PROXY": CLOSED,
    "HTTPS_PROXY": CLOSED,
    "ALL_PROXY": CLOSED,
    "http_proxy": CLOSED,
    "https_proxy": CLOSED,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOG": "ERROR",
    "PYTHONUNBUFFERED": "1",  # its log is read when it fails to start
}


def install() -> Path:
    """Make the venv and install the pinned ``litellm[proxy]`` from PyPI into it (once per version)."""
    if STAMP.exists():
        return VENV
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", REQUIREMENT], check=True)
    STAMP.touch()
    return VENV


def config(provider_base_url: str, provider_key: str, model: str, master_key: str) -> str:
    """The proxy's config: one model, ``model``, served by the OpenAI-compatible provider."""
    return f"""model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {provider_base_url}
      api_key: {provider_key}
general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
  drop_params: false
"""


@dataclass
class LiteLLM:
    process: subprocess.Popen[bytes]
    port: int
    master_key: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, model: str, timeout_s: float = 600) -> None:
        """Until a chat completion through the proxy answers 200 (its workers import for about 30 s of CPU
        each: minutes on a busy machine)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        body = {"model": model, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 1}
        headers = {"Authorization": f"Bearer {self.master_key}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                reply = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
                if reply.status_code == 200:
                    return
                last = f"HTTP {reply.status_code} {reply.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise TimeoutError(f"litellm not ready after {timeout_s}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # Its own session (started so): the group is the proxy and its workers, nothing else.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    @classmethod
    def spawn(cls, provider_base_url: str, provider_key: str, model: str) -> LiteLLM:
        """Start the proxy on a free 127.0.0.1 port with ``WORKERS`` workers (not yet ready: its workers
        take tens of seconds to import, so start it first and :meth:`wait_ready` later)."""
        if not STAMP.exists():
            raise RuntimeError(f"LiteLLM is not installed: run `python -m bench.throughput_litellm --install` ({VENV})")
        home = VENV.parent / "litellm"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        master_key = f"sk-bench-{secrets.token_hex(12)}"
        (home / "config.yaml").write_text(config(provider_base_url, provider_key, model, master_key))
        port = free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "OPENAI", "DATABASE_URL"))}
        env.update(OFFLINE_ENV)
        env.pop("PYTHONPATH", None)  # its own venv: nothing of ours on its path
        log = home / "litellm.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(VENV / "bin" / "litellm"),
                    *("--config", str(home / "config.yaml")),
                    *("--host", "127.0.0.1", "--port", str(port)),
                    *("--num_workers", str(WORKERS)),
                    # uvicorn's supervisor kills a worker that does not answer its health check within 5 s,
                    # and a worker still importing LiteLLM on a busy machine does not: it would be killed
                    # and respawned forever.
                    *("--timeout_worker_healthcheck", "600"),
                ],
                cwd=home,  # no .env of ours is loaded (LiteLLM reads one from its working directory)
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, port, master_key, log)

    @classmethod
    @contextmanager
    def started(cls, provider_base_url: str, provider_key: str, model: str) -> Iterator[LiteLLM]:
        """The proxy, ready; stopped afterwards."""
        proxy = cls.spawn(provider_base_url, provider_key, model)
        try:
            proxy.wait_ready(model)
            yield proxy
        finally:
            proxy.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput_litellm")
    parser.add_argument("--install", action="store_true", help=f"install {REQUIREMENT} into {VENV}")
    args = parser.parse_args(argv)
    if args.install:
        print(install())


if __name__ == "__main__":
    main(sys.argv[1:])
