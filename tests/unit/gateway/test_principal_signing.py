"""The gateway's side of the signed principal: the claims' JSON made once per principal, the rest per
assertion, and what is signed is what the old whole-dict JSON was."""

from __future__ import annotations

import base64
import contextvars
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from goblin.v1 import auth_pb2
from services.common.context import correlation_id_var
from services.common.principal import (
    PRINCIPAL_METADATA_KEY,
    Principal,
    PrincipalSigner,
    load_signer,
    outgoing_principal_var,
)
from services.gateway.clients.identity import act_as, metadata, sign_principal

NOW = 1_800_000_000.25


def claims_of(assertion: str) -> str:
    body = assertion.partition(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_the_signed_json_is_the_whole_dicts_json() -> None:
    signer = PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)
    caller = Principal("u1", "acme", "admin", ("chat", "admin"), "k1", "s1", 2.5, 1000, 50)
    text = claims_of(signer.sign(caller, now=NOW))
    claims = json.loads(text)
    expected = {
        "sub": "u1", "ten": "acme", "rol": "admin", "scp": ["chat", "admin"], "key": "k1", "sid": "s1",
        "bud": 2.5, "tpd": 1000, "rpd": 50, "iss": "goblin-gateway", "aud": "goblin-services",
        "iat": NOW, "exp": NOW + 60, "jti": claims["jti"],
    }  # fmt: skip
    assert text == json.dumps(expected, separators=(",", ":"))
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0
    verified = signer.verifier().verify(signer.sign(caller, now=NOW), now=NOW)
    assert (verified.user_id, verified.scopes, verified.tenant_daily_budget_usd) == ("u1", ("chat", "admin"), 2.5)


def test_every_assertion_is_fresh_and_a_changed_principal_is_a_new_one() -> None:
    principal = auth_pb2.Principal(user_id="u1", tenant_id="acme", scopes=["chat"], requests_per_day=5)
    first, second = sign_principal(principal), sign_principal(principal)
    assert first != second and json.loads(claims_of(first))["jti"] != json.loads(claims_of(second))["jti"]
    principal.scopes.append("admin")
    principal.tenant_daily_budget_usd = 1.5
    changed = json.loads(claims_of(sign_principal(principal)))
    assert changed["scp"] == ["chat", "admin"] and changed["bud"] == 1.5 and changed["rpd"] == 5


def test_calls_are_signed_lazily_each_with_an_assertion_of_its_own() -> None:
    def run() -> None:
        correlation_id_var.set("req-1")
        assert metadata() == (("x-correlation-id", "req-1"),)  # nobody verified yet: nothing signed
        act_as(auth_pb2.Principal(user_id="u1", tenant_id="acme"))
        first, second = dict(metadata()), dict(metadata())
        assert first["x-correlation-id"] == "req-1"
        verifier = load_signer().verifier()
        one, two = verifier.verify(first[PRINCIPAL_METADATA_KEY]), verifier.verify(second[PRINCIPAL_METADATA_KEY])
        assert (one.user_id, one.tenant_id) == ("u1", "acme") and one.jti != two.jti
        # A task acting for someone else set its own assertion: that one is sent.
        outgoing_principal_var.set("signed-elsewhere")
        assert dict(metadata())[PRINCIPAL_METADATA_KEY] == "signed-elsewhere"

    contextvars.Context().run(run)
