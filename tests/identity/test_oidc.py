"""OidcVerifier against a loopback OIDC issuer (real HTTP, real PyJWT, keys made here with cryptography).

What a user of the auth-callout service relies on: a valid token becomes an Identity with its claims; every
kind of bad token is refused with its exact, audited reason and never with token material; key rotation at
the issuer is followed with one JWKS refresh, and a flood of unknown kids cannot hammer the issuer; an issuer
that is down at start is picked up once it is back; a dangerous configuration fails when it is built.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.oidc import OidcIssuer, OidcVerifier
from tests.identity.oidc_issuer import OidcIssuerStub, new_key

AUD = "nats-auth"
INTERVAL = 10.0
REASONS = {
    "malformed token",
    "algorithm not allowed",
    "unknown issuer",
    "unknown signing key",
    "bad signature",
    "token expired",
    "token not yet valid",
    "wrong audience",
    "issuer unreachable",
}


class FakeClock:
    """The verifier's clock for the cache and the refresh rate limit; moved by the test, never by time."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def issuer() -> Iterator[OidcIssuerStub]:
    with OidcIssuerStub() as stub:
        yield stub


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_verifier(stub: OidcIssuerStub, clock: FakeClock, **issuer_options: object) -> OidcVerifier:
    config = OidcIssuer(issuer=stub.url, audiences=(AUD,), **issuer_options)  # type: ignore[arg-type]
    return OidcVerifier([config], min_refresh_interval=INTERVAL, cache_ttl=300.0, clock=clock)


@pytest.fixture
def verifier(issuer: OidcIssuerStub, clock: FakeClock) -> OidcVerifier:
    v = make_verifier(issuer, clock)
    v.warm()
    return v


def refused(verifier: OidcVerifier, token: str) -> str:
    """The reason ``token`` is refused with, checked to be a known reason free of token material."""
    with pytest.raises(Refused) as caught:
        verifier.verify(token)
    reason = caught.value.reason
    assert reason in REASONS or reason.startswith("missing claim: "), reason
    for part in token.split("."):
        if len(part) >= 8:
            assert part not in str(caught.value)
    return reason


# -- accepted ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_valid_token_becomes_an_identity_with_its_claims(
    issuer: OidcIssuerStub, verifier: OidcVerifier, alg: str
) -> None:
    token = issuer.mint(sub="app-123", alg=alg, extra_claims={"groups": ["team-a", "publishers"], "ws": "42"})
    identity = verifier.verify(token)
    assert isinstance(identity, Identity)
    assert (identity.kind, identity.issuer, identity.subject) == ("oidc", issuer.url, "app-123")
    assert identity.claims["groups"] == ["team-a", "publishers"]
    assert identity.claims["ws"] == "42"
    assert identity.claims["aud"] == AUD
    assert identity.expires_at == identity.claims["exp"]
    assert identity.name == f"oidc:{issuer.url}#app-123"


def test_any_configured_audience_in_a_list_audience_is_accepted(issuer: OidcIssuerStub, clock: FakeClock) -> None:
    config = OidcIssuer(issuer=issuer.url, audiences=("other", AUD))
    verifier = OidcVerifier([config], clock=clock)
    assert verifier.verify(issuer.mint(aud=["api://x", AUD])).subject == "svc-1"


def test_expiry_within_leeway_is_accepted(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert verifier.verify(issuer.mint(exp_in=-5)).subject == "svc-1"  # leeway is 30 s
    assert verifier.verify(issuer.mint(nbf_in=5)).subject == "svc-1"


def test_tokens_of_two_issuers_are_told_apart_by_iss(clock: FakeClock) -> None:
    with OidcIssuerStub() as okta, OidcIssuerStub() as entra:
        verifier = OidcVerifier(
            [OidcIssuer(issuer=okta.url, audiences=("api://default",)), OidcIssuer(issuer=entra.url, audiences=(AUD,))],
            clock=clock,
        )
        assert verifier.verify(okta.mint(sub="okta-user", aud="api://default")).issuer == okta.url
        assert verifier.verify(entra.mint(sub="entra-oid")).issuer == entra.url
        # Entra's key does not vouch for an Okta token, even under a kid Okta publishes.
        assert refused(verifier, okta.mint(key=new_key(), aud="api://default")) == "bad signature"
        assert refused(verifier, entra.mint(aud="api://default")) == "wrong audience"


# -- refused -----------------------------------------------------------------------------------------------
def test_expired_token(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint(exp_in=-120)) == "token expired"


def test_not_yet_valid_token(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint(nbf_in=600)) == "token not yet valid"


def test_wrong_audience(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint(aud="another-service")) == "wrong audience"


def test_wrong_issuer(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    with OidcIssuerStub() as other:
        assert refused(verifier, other.mint()) == "unknown issuer"
    assert refused(verifier, issuer.mint(iss=issuer.url + "/")) == "unknown issuer"  # exact match only


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_forged_signature(issuer: OidcIssuerStub, verifier: OidcVerifier, alg: str) -> None:
    assert refused(verifier, issuer.forge(alg=alg)) == "bad signature"


def test_tampered_payload(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    header, _payload, signature = issuer.mint(sub="reader").split(".")
    _h, payload, _s = issuer.mint(sub="admin", key=new_key()).split(".")
    assert refused(verifier, f"{header}.{payload}.{signature}") == "bad signature"


def test_alg_none(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint_none()) == "algorithm not allowed"


def test_hs256_keyed_with_the_public_key(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint_hs256_with_public_key()) == "algorithm not allowed"


def test_algorithm_outside_the_issuers_list(issuer: OidcIssuerStub, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock, algorithms=("ES256",))
    assert refused(verifier, issuer.mint(alg="RS256")) == "algorithm not allowed"
    assert verifier.verify(issuer.mint(alg="ES256")).subject == "svc-1"


def test_key_of_another_type_under_the_header_alg(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    # An ES256 token naming the kid of the published RSA key.
    token = issuer.mint(alg="ES256", kid=issuer.signing_kid("RS256"))
    assert refused(verifier, token) == "bad signature"


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJSUzI1NiJ9.eyJ.x", "x" * 40_000, "é.é.é"],
)
def test_garbage(verifier: OidcVerifier, token: str) -> None:
    assert refused(verifier, token) == "malformed token"


@pytest.mark.parametrize("claim", ["sub", "exp", "aud", "iss"])
def test_required_claims(issuer: OidcIssuerStub, verifier: OidcVerifier, claim: str) -> None:
    if claim == "iss":
        token = issuer.mint(extra_claims={"iss": None})
    else:
        token = issuer.mint(**{"exp_in" if claim == "exp" else claim: None})  # type: ignore[arg-type]
    assert refused(verifier, token) == f"missing claim: {claim}"


def test_empty_subject_is_missing(issuer: OidcIssuerStub, verifier: OidcVerifier) -> None:
    assert refused(verifier, issuer.mint(sub="")) == "missing claim: sub"


def test_refusals_log_no_token_material(
    issuer: OidcIssuerStub, verifier: OidcVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [issuer.forge(), issuer.mint(exp_in=-120), issuer.mint(kid="nope"), issuer.mint_none()]
    for token in tokens:
        refused(verifier, token)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for token in tokens:
        for part in token.split("."):
            assert not part or part not in logged


# -- keys: rotation, refresh, rate limit -------------------------------------------------------------------
def test_unknown_kid_after_rotation_is_accepted_after_one_refresh(
    issuer: OidcIssuerStub, verifier: OidcVerifier, clock: FakeClock
) -> None:
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)  # warm()
    clock.advance(INTERVAL)
    issuer.rotate()
    identity = verifier.verify(issuer.mint(sub="after-rotation"))
    assert identity.subject == "after-rotation"
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 2)
    verifier.verify(issuer.mint())
    assert issuer.jwks_fetches == 2  # the new key is cached now


def test_rotation_right_after_a_fetch_waits_for_the_interval(
    issuer: OidcIssuerStub, verifier: OidcVerifier, clock: FakeClock
) -> None:
    issuer.rotate()
    token = issuer.mint()
    assert refused(verifier, token) == "unknown signing key"
    assert issuer.jwks_fetches == 1
    clock.advance(INTERVAL)
    assert verifier.verify(token).subject == "svc-1"
    assert issuer.jwks_fetches == 2


def test_a_flood_of_unknown_kids_refreshes_at_most_once_per_interval(
    issuer: OidcIssuerStub, verifier: OidcVerifier, clock: FakeClock
) -> None:
    known = issuer.mint()
    for round_ in (1, 2, 3):
        clock.advance(INTERVAL)
        for _ in range(40):
            assert refused(verifier, issuer.mint(kid=uuid.uuid4().hex)) == "unknown signing key"
            assert verifier.verify(known).subject == "svc-1"  # known keys keep working, no fetch
        assert issuer.jwks_fetches == 1 + round_
    clock.advance(INTERVAL / 2)
    refused(verifier, issuer.mint(kid="still-unknown"))
    assert issuer.jwks_fetches == 4


def test_concurrent_verifies_share_one_refresh(issuer: OidcIssuerStub, clock: FakeClock) -> None:
    # No rate limit here: only the per-issuer refresh lock keeps 64 threads from fetching 64 times.
    config = OidcIssuer(issuer=issuer.url, audiences=(AUD,))
    verifier = OidcVerifier([config], min_refresh_interval=0, clock=clock)
    verifier.warm()
    issuer.rotate()
    issuer.jwks_delay = 0.2  # every thread arrives while the one refresh is under way
    tokens = [issuer.mint(sub=f"svc-{i}") for i in range(64)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        subjects = list(pool.map(lambda t: verifier.verify(t).subject, tokens))
    assert subjects == [f"svc-{i}" for i in range(64)]
    assert issuer.jwks_fetches == 2


def test_stale_jwks_is_refreshed_and_a_retired_key_refused(
    issuer: OidcIssuerStub, verifier: OidcVerifier, clock: FakeClock
) -> None:
    old_kid = issuer.signing_kid()
    token = issuer.mint()
    verifier.verify(token)
    issuer.rotate()
    issuer.retire(old_kid)
    clock.advance(299)
    verifier.verify(token)  # cache still fresh: the old key is still trusted, no fetch
    assert issuer.jwks_fetches == 1
    clock.advance(1)
    assert refused(verifier, token) == "unknown signing key"
    assert issuer.jwks_fetches == 2
    assert verifier.verify(issuer.mint()).subject == "svc-1"


def test_cached_keys_serve_while_the_issuer_is_down(
    issuer: OidcIssuerStub, verifier: OidcVerifier, clock: FakeClock
) -> None:
    token = issuer.mint()
    issuer.stop()
    clock.advance(600)  # stale, and the refresh fails
    assert verifier.verify(token).subject == "svc-1"
    clock.advance(INTERVAL)
    assert refused(verifier, issuer.mint(kid="rotated-while-down")) == "issuer unreachable"


def test_issuer_down_at_start_then_up(clock: FakeClock) -> None:
    stub = OidcIssuerStub()
    stub.start()
    stub.stop()  # the port is known, nothing listens
    verifier = make_verifier(stub, clock)
    verifier.warm()  # logs, does not raise
    token = stub.mint()
    assert refused(verifier, token) == "issuer unreachable"
    stub.start()
    try:
        assert refused(verifier, token) == "issuer unreachable"  # rate-limited: no request yet
        assert stub.discovery_fetches == 0
        clock.advance(INTERVAL)
        assert verifier.verify(token).subject == "svc-1"
        assert (stub.discovery_fetches, stub.jwks_fetches) == (1, 1)
    finally:
        stub.stop()


def test_discovery_naming_another_issuer_is_not_trusted(clock: FakeClock) -> None:
    with OidcIssuerStub(discovery_issuer="https://evil.example.com") as stub:
        verifier = make_verifier(stub, clock)
        verifier.warm()
        assert refused(verifier, stub.mint()) == "issuer unreachable"
        assert stub.jwks_fetches == 0


def test_configured_jwks_uri_skips_discovery(issuer: OidcIssuerStub, clock: FakeClock) -> None:
    verifier = make_verifier(issuer, clock, jwks_uri=issuer.jwks_uri)
    assert verifier.verify(issuer.mint()).subject == "svc-1"
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (0, 1)


# -- configuration -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"audiences": ()}, "oidc.audiences"),
        ({"audiences": ("",)}, "oidc.audiences"),
        ({"audiences": "nats-auth"}, "oidc.audiences"),
        ({"algorithms": ("none",)}, "oidc.algorithms"),
        ({"algorithms": ("RS256", "None")}, "oidc.algorithms"),
        ({"algorithms": ("HS256",)}, "oidc.algorithms"),
        ({"algorithms": ("hs512",)}, "oidc.algorithms"),
        ({"algorithms": ()}, "oidc.algorithms"),
        ({"algorithms": ("RS1",)}, "oidc.algorithms"),
        ({"issuer": "http://idp.example.com"}, "oidc.issuer"),
        ({"issuer": "idp.example.com"}, "oidc.issuer"),
        ({"discovery_url": "http://idp.example.com/.well-known/openid-configuration"}, "oidc.discovery_url"),
        ({"jwks_uri": "http://10.0.0.5/jwks"}, "oidc.jwks_uri"),
        ({"leeway": -1}, "oidc.leeway"),
    ],
)
def test_configure_time_errors(options: dict[str, object], setting: str) -> None:
    fields: dict[str, object] = {"issuer": "https://idp.example.com", "audiences": (AUD,), **options}
    with pytest.raises(ConfigurationError) as caught:
        OidcIssuer(**fields)  # type: ignore[arg-type]
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    "issuer",
    [
        "https://dev-123.okta.com/oauth2/default",
        "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0",
        "https://adb-1.2.azuredatabricks.net/oidc",
        "https://accounts.cloud.databricks.com/oidc/accounts/00000000-0000-0000-0000-000000000000",
        "http://127.0.0.1:8080",
        "http://localhost:8080/realm",
        "http://[::1]:8080",
    ],
)
def test_accepted_issuer_urls(issuer: str) -> None:
    config = OidcIssuer(issuer=issuer, audiences=[AUD])  # type: ignore[arg-type]  # a list from a config file
    assert config.audiences == (AUD,)
    assert config.discovery == issuer + "/.well-known/openid-configuration"


def test_verifier_configuration_errors(issuer: OidcIssuerStub) -> None:
    config = OidcIssuer(issuer=issuer.url, audiences=(AUD,))
    for issuers, kwargs in (
        ([], {}),
        ([config, config], {}),
        ([config], {"timeout": 0}),
        ([config], {"cache_ttl": -1}),
    ):
        with pytest.raises(ConfigurationError):
            OidcVerifier(issuers, **kwargs)  # type: ignore[arg-type]
