"""bench/skeleton.py's plain and secure skeletons as real processes in front of the fake provider (in a
thread here): both answer a chat completion end to end, and the secure skeleton's router refuses what the
real router refuses (no client certificate, no principal, a forged or a replayed one). No timing asserted."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.router_bench import Skeleton, skeleton_home, start_skeletons
from goblin.v1 import common_pb2, router_pb2_grpc
from goblin_tools.fakes.providers import FakeProviders
from services.common.principal import PRINCIPAL_METADATA_KEY, SIGNING_KEY_NAME, Principal, PrincipalSigner
from services.common.tls import CA_FILE, GrpcTls, grpc_cert_files

pytestmark = pytest.mark.timeout(120)

REQUEST = common_pb2.ChatRequest(
    model="openai/gpt-4o-mini",
    messages=[common_pb2.ChatMessage(role="user", content="Say hello to the skeleton.")],
    params=common_pb2.SamplingParams(max_tokens=16),
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as providers:
        yield providers


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return skeleton_home(tmp_path_factory.mktemp("skeleton") / "home")


@pytest.fixture(scope="module")
def skeletons(home: Path, fake: FakeProviders) -> Iterator[dict[str, Skeleton]]:
    running = start_skeletons(home, fake.port, ("skeleton", "secure skeleton"))
    try:
        yield running
    finally:
        for skeleton in running.values():
            skeleton.stop()


def signer(home: Path) -> PrincipalSigner:
    """The signer the secure skeleton's gateway holds (the home's principal key pair)."""
    return PrincipalSigner.from_pem((home / "tls" / SIGNING_KEY_NAME).read_bytes())


def router_channel(home: Path, skeleton: Skeleton, *, identity: str | None = "gateway") -> grpc.Channel:
    """A channel to the skeleton's router: mutual TLS as ``identity`` (a suite certificate), or TLS without a
    client certificate when None."""
    tls_dir = home / "tls"
    ca = (tls_dir / CA_FILE).read_bytes()
    if identity is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        cert, key = grpc_cert_files(tls_dir, identity)
        credentials = GrpcTls(ca, cert.read_bytes(), key.read_bytes()).channel_credentials()
    return grpc.secure_channel(
        f"127.0.0.1:{skeleton.router_port}", credentials, options=[("grpc.ssl_target_name_override", "router")]
    )


@pytest.mark.parametrize("name", ["skeleton", "secure skeleton"])
def test_a_skeleton_answers_a_chat_completion_end_to_end(
    name: str, skeletons: dict[str, Skeleton], fake: FakeProviders
) -> None:
    fake.reset()
    skeleton = skeletons[name]
    reply = httpx.post(
        skeleton.url,
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16},
        verify=ssl.create_default_context(cafile=str(skeleton.ca_file)),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "openai/gpt-4o-mini"
    assert answer["choices"][0]["message"]["content"].startswith("Hello from the fake openai model")
    assert answer["usage"]["total_tokens"] > 0
    assert len(fake.requests("openai")) == 1


def test_the_secure_router_answers_a_signed_principal_once(home: Path, skeletons: dict[str, Skeleton]) -> None:
    assertion = signer(home).sign(Principal(user_id="test", tenant_id="default"))
    with router_channel(home, skeletons["secure skeleton"]) as channel:
        router = router_pb2_grpc.RouterStub(channel)
        reply = router.Chat(REQUEST, metadata=((PRINCIPAL_METADATA_KEY, assertion),), timeout=10)
        assert reply.message.content.startswith("Hello from the fake")
        with pytest.raises(grpc.RpcError) as replayed:
            router.Chat(REQUEST, metadata=((PRINCIPAL_METADATA_KEY, assertion),), timeout=10)
    assert replayed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "replayed" in replayed.value.details()


def test_the_secure_router_refuses_a_call_without_a_principal(home: Path, skeletons: dict[str, Skeleton]) -> None:
    with router_channel(home, skeletons["secure skeleton"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            router_pb2_grpc.RouterStub(channel).Chat(REQUEST, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_secure_router_refuses_a_principal_signed_by_another_key(
    home: Path, skeletons: dict[str, Skeleton]
) -> None:
    forged = PrincipalSigner(Ed25519PrivateKey.generate(), 60).sign(Principal(user_id="test", tenant_id="default"))
    with router_channel(home, skeletons["secure skeleton"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            router_pb2_grpc.RouterStub(channel).Chat(REQUEST, metadata=((PRINCIPAL_METADATA_KEY, forged),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "does not verify" in refused.value.details()


def test_the_secure_router_refuses_a_client_without_a_suite_certificate(
    home: Path, skeletons: dict[str, Skeleton]
) -> None:
    assertion = signer(home).sign(Principal(user_id="test", tenant_id="default"))
    with router_channel(home, skeletons["secure skeleton"], identity=None) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            router_pb2_grpc.RouterStub(channel).Chat(
                REQUEST, metadata=((PRINCIPAL_METADATA_KEY, assertion),), timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_plain_skeleton_router_takes_plaintext_and_no_principal(skeletons: dict[str, Skeleton]) -> None:
    """The control: the plain skeleton is the floor without the security, so it checks nothing."""
    with grpc.insecure_channel(f"127.0.0.1:{skeletons['skeleton'].router_port}") as channel:
        reply = router_pb2_grpc.RouterStub(channel).Chat(REQUEST, timeout=10)
    assert reply.message.content.startswith("Hello from the fake")
