"""A second gateway replica beside a running suite: the same gateway module, with the environment the
suite's supervisor gave its gateway (the same GOBLIN_HOME, stores, backends, certificates and signing
key), on a port of its own. Two replicas over one auth service and one Redis, as in a fleet."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from goblin_tools.suite import ROOT, Suite, free_ports


@contextmanager
def second_gateway(suite: Suite) -> Iterator[Suite]:
    """``suite`` as seen through another gateway process (its ``client()`` talks to that one), ready;
    stopped afterwards."""
    env = suite.service_process("gateway").environ()
    env["GOBLIN_GATEWAY_PORT"] = str(free_ports(1)[0])
    env.pop("GOBLIN_GATEWAY_METRICS_PORT", None)
    log_path = suite.home / f"gateway-{env['GOBLIN_GATEWAY_PORT']}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    replica = dataclasses.replace(suite, env={**suite.env, **env}, process=process, log_path=log_path)
    try:
        replica.wait_ready(timeout_s=90)
        yield replica
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
