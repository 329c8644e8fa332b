"""The committed stubs in goblin/v1 must be exactly what `make proto` generates now."""

from __future__ import annotations

from pathlib import Path

from goblin_tools import protogen


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    generated = protogen.generate(tmp_path)
    assert generated, "protoc produced nothing"
    stale = []
    for relative in generated:
        committed = protogen.ROOT / relative
        if not committed.exists() or committed.read_bytes() != (tmp_path / relative).read_bytes():
            stale.append(str(relative))
    committed_files = {p.relative_to(protogen.ROOT) for p in (protogen.ROOT / "goblin").rglob("*.py*") if p.is_file()}
    extra = sorted(str(p) for p in committed_files - set(generated) if "__pycache__" not in str(p))
    assert not stale, f"stale stubs, run `make proto`: {stale}"
    assert not extra, f"stubs without a .proto, delete them: {extra}"


def test_every_service_is_defined() -> None:
    from goblin.v1 import auth_pb2, executor_pb2, inference_pb2, rag_pb2, router_pb2

    services = {
        d.services_by_name[n].full_name
        for d, n in (
            (router_pb2.DESCRIPTOR, "Router"),
            (inference_pb2.DESCRIPTOR, "Inference"),
            (rag_pb2.DESCRIPTOR, "Rag"),
            (auth_pb2.DESCRIPTOR, "Auth"),
            (executor_pb2.DESCRIPTOR, "Executor"),
        )
    }
    assert services == {f"goblin.v1.{n}" for n in ("Router", "Inference", "Rag", "Auth", "Executor")}


def test_chat_streams_are_server_streaming() -> None:
    from goblin.v1 import inference_pb2, router_pb2

    for descriptor, service in ((router_pb2.DESCRIPTOR, "Router"), (inference_pb2.DESCRIPTOR, "Inference")):
        method = descriptor.services_by_name[service].methods_by_name["ChatStream"]
        assert method.output_type.name == "ChatChunk"
