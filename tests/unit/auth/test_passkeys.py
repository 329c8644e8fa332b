"""Passkey ceremonies through AuthService with a software authenticator and in-memory stores."""

from __future__ import annotations

import json

import pytest

from services.auth.context import Context
from services.auth.service import AuthService
from services.auth.webauthn_ceremonies import CHALLENGE_TTL_S, sign_count_regressed
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tests.integration.webauthn_authenticator import SoftAuthenticator
from tests.unit.auth.fakes import ORIGIN, FakeEphemeral, FakeStore, signed_in


async def user_context(service: AuthService, email: str = "alice@example.com") -> Context:
    return await signed_in(service, email)


async def enrol(service: AuthService, ctx: Context, authenticator: SoftAuthenticator, name: str = "laptop") -> str:
    options = await service.passkeys.registration_options(ctx)
    credential = authenticator.create(json.loads(options.options_json))
    passkey = await service.passkeys.registration_verify(
        ctx, challenge_id=options.challenge_id, credential_json=json.dumps(credential), name=name
    )
    return passkey.id


async def sign_in(
    service: AuthService, authenticator: SoftAuthenticator, *, email: str = "", **assert_options: object
) -> object:
    options = await service.passkeys.login_options(Context(), email=email)
    assertion = authenticator.get(json.loads(options.options_json), **assert_options)
    return await service.passkeys.login_verify(
        Context(), challenge_id=options.challenge_id, credential_json=json.dumps(assertion)
    )


async def test_register_then_sign_in_with_email_or_discoverably(
    service: AuthService, store: FakeStore, ephemeral: FakeEphemeral
) -> None:
    ctx = await user_context(service)
    authenticator = SoftAuthenticator(ORIGIN)
    options = await service.passkeys.registration_options(ctx)
    assert ephemeral.challenge_ttls[options.challenge_id] == CHALLENGE_TTL_S == 300
    parsed = json.loads(options.options_json)
    assert parsed["rp"]["id"] == "localhost" and parsed["authenticatorSelection"]["userVerification"] == "required"
    credential = authenticator.create(parsed)
    passkey = await service.passkeys.registration_verify(
        ctx, challenge_id=options.challenge_id, credential_json=json.dumps(credential), name="Laptop"
    )
    assert passkey.name == "Laptop" and passkey.transports == ["internal"]
    pair = await sign_in(service, authenticator, email="alice@example.com")
    principal = await service.credentials.authenticate(pair.access_token)  # type: ignore[attr-defined]
    assert principal.user_id == ctx.user_id
    assert (await sign_in(service, authenticator)).user.id == ctx.user_id  # type: ignore[attr-defined]
    assert store.passkeys[passkey.id].sign_count == 2
    assert [e.details["method"] for e in store.events("login_succeeded")] == ["passkey", "passkey"]
    assert store.events("passkey_registered")[0].details["passkey_id"] == passkey.id


async def test_a_challenge_works_once(service: AuthService) -> None:
    ctx = await user_context(service)
    authenticator = SoftAuthenticator(ORIGIN)
    options = await service.passkeys.registration_options(ctx)
    credential = json.dumps(authenticator.create(json.loads(options.options_json)))
    await service.passkeys.registration_verify(
        ctx, challenge_id=options.challenge_id, credential_json=credential, name=""
    )
    with pytest.raises(InvalidArgument, match="already used"):
        await service.passkeys.registration_verify(
            ctx, challenge_id=options.challenge_id, credential_json=credential, name=""
        )
    login = await service.passkeys.login_options(Context(), email="")
    assertion = json.dumps(authenticator.get(json.loads(login.options_json)))
    await service.passkeys.login_verify(Context(), challenge_id=login.challenge_id, credential_json=assertion)
    with pytest.raises(Unauthenticated) as replayed:
        await service.passkeys.login_verify(Context(), challenge_id=login.challenge_id, credential_json=assertion)
    assert replayed.value.code == "challenge_invalid"


async def test_a_registration_challenge_is_no_login_challenge(service: AuthService) -> None:
    ctx = await user_context(service)
    authenticator = SoftAuthenticator(ORIGIN)
    await enrol(service, ctx, authenticator)
    registration = await service.passkeys.registration_options(ctx)
    assertion = authenticator.get(json.loads(registration.options_json) | {"allowCredentials": []})
    with pytest.raises(Unauthenticated, match="challenge"):
        await service.passkeys.login_verify(
            Context(), challenge_id=registration.challenge_id, credential_json=json.dumps(assertion)
        )


async def test_wrong_origin_or_rp_id_is_refused(service: AuthService) -> None:
    ctx = await user_context(service)
    authenticator = SoftAuthenticator(ORIGIN)
    options = await service.passkeys.registration_options(ctx)
    phished = authenticator.create(json.loads(options.options_json), origin="https://goblin.evil.example")
    with pytest.raises(InvalidArgument, match="origin"):
        await service.passkeys.registration_verify(
            ctx, challenge_id=options.challenge_id, credential_json=json.dumps(phished), name=""
        )
    options = await service.passkeys.registration_options(ctx)
    other_rp = authenticator.create(json.loads(options.options_json), rp_id="evil.example")
    with pytest.raises(InvalidArgument, match="RP ID"):
        await service.passkeys.registration_verify(
            ctx, challenge_id=options.challenge_id, credential_json=json.dumps(other_rp), name=""
        )
    honest = SoftAuthenticator(ORIGIN)
    await enrol(service, ctx, honest)
    with pytest.raises(Unauthenticated, match="origin"):
        await sign_in(service, honest, origin="https://goblin.evil.example")


async def test_a_counter_going_back_means_a_clone_and_is_refused(service: AuthService, store: FakeStore) -> None:
    ctx = await user_context(service)
    original = SoftAuthenticator(ORIGIN)
    await enrol(service, ctx, original)
    clone = original.clone()  # the attacker copies the key while the counter is at 0
    for _ in range(3):
        await sign_in(service, original)
    with pytest.raises(Unauthenticated) as refused:
        await sign_in(service, clone)  # presents counter 1 after the server saw 3
    assert refused.value.code == "passkey_cloned"
    [event] = store.events("passkey_clone_suspected")
    assert event.details["stored"] == 3 and event.details["presented"] == 1


def test_sign_count_rule() -> None:
    assert not sign_count_regressed(0, 0), "authenticators without a counter always send 0"
    assert not sign_count_regressed(3, 4)
    assert sign_count_regressed(3, 3) and sign_count_regressed(3, 1) and sign_count_regressed(3, 0)
    assert not sign_count_regressed(0, 1)


async def test_several_passkeys_listed_excluded_and_removed(service: AuthService) -> None:
    ctx = await user_context(service)
    phone, laptop = SoftAuthenticator(ORIGIN), SoftAuthenticator(ORIGIN)
    phone_id = await enrol(service, ctx, phone, "phone")
    await enrol(service, ctx, laptop, "laptop")
    assert [p.name for p in await service.passkeys.list_own(ctx)] == ["phone", "laptop"]
    options = json.loads((await service.passkeys.registration_options(ctx)).options_json)
    assert len(options["excludeCredentials"]) == 2, "the browser is told not to register one twice"
    login = json.loads((await service.passkeys.login_options(Context(), email="alice@example.com")).options_json)
    assert login["allowCredentials"] == [], "sign-in options never name an account's passkeys"
    assert await service.passkeys.delete(ctx, phone_id)
    with pytest.raises(Unauthenticated, match="unknown passkey"):
        await sign_in(service, phone)
    await sign_in(service, laptop)
    other = await user_context(service, "bob@example.com")
    with pytest.raises(NotFound):
        await service.passkeys.delete(other, phone_id)


async def test_an_assertion_for_another_account_is_refused(service: AuthService) -> None:
    alice, bob = await user_context(service), await user_context(service, "bob@example.com")
    alices_key = SoftAuthenticator(ORIGIN)
    await enrol(service, alice, alices_key)
    await enrol(service, bob, SoftAuthenticator(ORIGIN))
    options = await service.passkeys.login_options(Context(), email="bob@example.com")
    assertion = alices_key.get(json.loads(options.options_json) | {"allowCredentials": []})
    with pytest.raises(Unauthenticated, match="another account"):
        await service.passkeys.login_verify(
            Context(), challenge_id=options.challenge_id, credential_json=json.dumps(assertion)
        )


async def test_unknown_emails_get_ordinary_looking_options(service: AuthService) -> None:
    options = json.loads((await service.passkeys.login_options(Context(), email="nobody@example.com")).options_json)
    assert options["allowCredentials"] == [] and options["challenge"]


async def test_registration_needs_a_signed_in_caller_with_the_keys_scope(service: AuthService) -> None:
    with pytest.raises(Unauthenticated):
        await service.passkeys.registration_options(Context())
    ctx = await user_context(service)
    with pytest.raises(PermissionDenied):
        await service.passkeys.registration_options(Context(user_id=ctx.user_id, scopes=("chat",)))


@pytest.mark.parametrize("scopes", [("keys",), ("keys", "admin"), ("*",)])
async def test_no_api_key_enrols_a_passkey(service: AuthService, scopes: tuple[str, ...]) -> None:
    """A passkey signs in to a full session: enrolling one with a key would widen the key."""
    ctx = await user_context(service)
    as_key = Context(user_id=ctx.user_id, tenant_id=ctx.tenant_id, api_key_id="k1", scopes=scopes)
    with pytest.raises(PermissionDenied):
        await service.passkeys.registration_options(as_key)
    options = await service.passkeys.registration_options(ctx)
    credential = SoftAuthenticator(ORIGIN).create(json.loads(options.options_json))
    with pytest.raises(PermissionDenied):
        await service.passkeys.registration_verify(
            as_key, challenge_id=options.challenge_id, credential_json=json.dumps(credential), name="k"
        )


@pytest.mark.parametrize("credential_json", ["", "[]", "{}", '{"id": "x", "rawId": "y"}', "x" * 70_000])
async def test_garbage_credentials_are_a_client_error(service: AuthService, credential_json: str) -> None:
    options = await service.passkeys.login_options(Context(), email="")
    with pytest.raises((InvalidArgument, Unauthenticated)):
        await service.passkeys.login_verify(
            Context(), challenge_id=options.challenge_id, credential_json=credential_json
        )
