"""NATS JWT v2 encoding and xkey sealing, proven against a real nats-server configured for auth callout.

The unit half checks what a verifier must refuse (tampered claims or signature, another ``alg``, another
issuer, a forged authorization request). The wire half starts nats-server with ``auth_callout`` (plain and
with ``xkey``) and answers ``$SYS.REQ.USER.AUTH`` from a tiny nats-py responder built on these modules: the
server must accept our user JWTs and responses, enforce their permissions and expiry, and refuse on ``error``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.natsjwt import AuthorizationRequest
from databricks_nats.testing import NatsServer
from tests.identity.callout_server import callout_config

AUTH_USER, AUTH_PASSWORD = "auth", "auth-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _resign(header: dict[str, Any], claims: dict[str, Any], seed: str) -> str:
    """A token with exactly this header and these claims, really signed by ``seed``."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(nkeys.from_seed(seed.encode()).sign(signing_input.encode()))}"


def _server_key() -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER).decode()
    return seed, nkeys.from_seed(seed.encode()).public_key.decode()


# --- encoding ----------------------------------------------------------------------------------------------


def test_encode_decode_round_trip_sets_issuer_iat_and_jti() -> None:
    seed, public = natsjwt.new_account_key()
    _, user = natsjwt.new_user_key()
    token = natsjwt.encode({"sub": user, "aud": "APP", "nats": {"type": "user", "version": 2}}, seed)
    header = json.loads(_unb64(token.split(".")[0]))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = natsjwt.decode(token, issuer=public)
    assert (claims["iss"], public[0], user[0]) == (public, "A", "U")
    assert (claims["sub"], claims["aud"], claims["nats"]["type"]) == (user, "APP", "user")
    assert abs(claims["iat"] - time.time()) < 60
    assert len(claims["jti"]) == 52  # unpadded base32 of a 32-byte SHA-512/256
    assert claims["jti"].isalnum()
    assert "=" not in token


def test_user_jwt_carries_account_permissions_expiry_and_tags() -> None:
    seed, public = natsjwt.new_account_key()
    _, user = natsjwt.new_user_key()
    token = natsjwt.user_jwt(
        user_nkey=user, account="APP", issuer_seed=seed, name="sp-1", expires_at=2_000_000_000,
        pub_allow=["a.>"], pub_deny=["a.b"], sub_allow=["_INBOX.>"], tags=["team:a"],
    )  # fmt: skip
    claims = natsjwt.decode(token, issuer=public)
    assert (claims["aud"], claims["sub"], claims["name"], claims["exp"]) == ("APP", user, "sp-1", 2_000_000_000)
    nats_claims = claims["nats"]
    assert nats_claims["pub"] == {"allow": ["a.>"], "deny": ["a.b"]}
    assert nats_claims["sub"] == {"allow": ["_INBOX.>"]}
    assert (nats_claims["subs"], nats_claims["data"], nats_claims["payload"]) == (-1, -1, -1)
    assert (nats_claims["type"], nats_claims["version"], nats_claims["tags"]) == ("user", 2, ["team:a"])
    bare = natsjwt.decode(natsjwt.user_jwt(user_nkey=user, account="APP", issuer_seed=seed, name="x", expires_at=None))
    assert bare["nats"]["pub"] == bare["nats"]["sub"] == {"deny": [">"]}  # deny by default, not NATS's "all"
    assert "exp" not in bare
    with pytest.raises(ValueError, match="user public key"):
        natsjwt.user_jwt(user_nkey=public, account="APP", issuer_seed=seed, name="x", expires_at=None)


@pytest.fixture
def signed() -> tuple[str, str, str]:
    seed, public = natsjwt.new_account_key()
    return natsjwt.encode({"sub": natsjwt.new_user_key()[1], "name": "alice"}, seed), seed, public


def test_tampered_payload_is_refused(signed: tuple[str, str, str]) -> None:
    token, _, public = signed
    head, body, sig = token.split(".")
    claims = json.loads(_unb64(body))
    claims["name"] = "mallory"
    with pytest.raises(ValueError, match="bad signature"):
        natsjwt.decode(f"{head}.{_b64(json.dumps(claims).encode())}.{sig}", issuer=public)


def test_tampered_signature_is_refused(signed: tuple[str, str, str]) -> None:
    token, _, _ = signed
    head, body, sig = token.split(".")
    raw = bytearray(_unb64(sig))
    raw[0] ^= 1
    with pytest.raises(ValueError, match="bad signature"):
        natsjwt.decode(f"{head}.{body}.{_b64(bytes(raw))}")
    with pytest.raises(ValueError, match="bad signature"):
        natsjwt.decode(f"{head}.{body}.")


def test_claims_naming_another_issuer_do_not_verify(signed: tuple[str, str, str]) -> None:
    token, _, _ = signed
    _, other = natsjwt.new_account_key()
    head, body, sig = token.split(".")
    claims = json.loads(_unb64(body))
    claims["iss"] = other  # the signature is still the first key's
    with pytest.raises(ValueError, match="bad signature"):
        natsjwt.decode(f"{head}.{_b64(json.dumps(claims).encode())}.{sig}")


@pytest.mark.parametrize("alg", ["ed25519", "none", "HS256", "RS256"])
def test_other_algorithms_are_refused(signed: tuple[str, str, str], alg: str) -> None:
    token, seed, _ = signed
    claims = json.loads(_unb64(token.split(".")[1]))
    with pytest.raises(ValueError, match="unsupported alg"):
        natsjwt.decode(_resign({"typ": "JWT", "alg": alg}, claims, seed))


def test_unexpected_issuer_is_refused(signed: tuple[str, str, str]) -> None:
    token, _, _ = signed
    _, other = natsjwt.new_account_key()
    with pytest.raises(ValueError, match="unexpected issuer"):
        natsjwt.decode(token, issuer=other)


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.", "W10.W10.AA"])
def test_garbage_is_refused_with_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match=r"JWT|alg|issuer"):
        natsjwt.decode(garbage)


def _request_claims(server_public: str, **nats_overrides: Any) -> dict[str, Any]:
    nats_claims: dict[str, Any] = {
        "server_id": {"name": "n1", "host": "127.0.0.1", "id": server_public},
        "user_nkey": natsjwt.new_user_key()[1],
        "client_info": {"host": "127.0.0.1", "id": 7},
        "connect_opts": {"auth_token": "tok-123", "protocol": 1},
        "type": "authorization_request",
        "version": 2,
    }
    nats_claims.update(nats_overrides)
    return {"aud": "nats-authorization-request", "sub": server_public, "nats": nats_claims}


def test_authorization_request_parses_and_keeps_the_token_out_of_its_repr() -> None:
    seed, public = _server_key()
    request = AuthorizationRequest.from_jwt(natsjwt.encode(_request_claims(public), seed))
    assert (request.server_id, request.server_name, request.token) == (public, "n1", "tok-123")
    assert (request.user_nkey[0], request.client_info["id"], request.client_tls) == ("U", 7, None)
    assert "tok-123" not in repr(request)


def test_forged_authorization_requests_are_refused() -> None:
    seed, public = _server_key()
    account_seed, account_public = natsjwt.new_account_key()
    _, other_server = _server_key()
    with pytest.raises(ValueError, match="server key"):  # signed by an account, not a server
        AuthorizationRequest.from_jwt(natsjwt.encode(_request_claims(account_public), account_seed))
    with pytest.raises(ValueError, match="server it names"):  # signed by one server, naming another
        AuthorizationRequest.from_jwt(natsjwt.encode(_request_claims(other_server), seed))
    with pytest.raises(ValueError, match="user_nkey"):
        AuthorizationRequest.from_jwt(natsjwt.encode(_request_claims(public, user_nkey=account_public), seed))
    with pytest.raises(ValueError, match="not an authorization request"):
        AuthorizationRequest.from_jwt(natsjwt.encode(_request_claims(public, type="user"), seed))


# --- xkey --------------------------------------------------------------------------------------------------


def test_xkey_seal_opens_only_for_the_right_keys() -> None:
    alice_seed, alice = xkey.new_xkey()
    bob_seed, bob = xkey.new_xkey()
    _, eve = xkey.new_xkey()
    assert (alice_seed[:2], alice[0], xkey.public_key(alice_seed)) == ("SX", "X", alice)
    sealed = xkey.seal(b"hello", alice_seed, bob)
    assert sealed[:4] == b"xkv1"
    assert len(sealed) == 4 + 24 + 16 + 5  # version, nonce, MAC, ciphertext
    assert b"hello" not in sealed
    assert xkey.open_sealed(sealed, bob_seed, alice) == b"hello"
    with pytest.raises(ValueError, match="does not open"):
        xkey.open_sealed(sealed, bob_seed, eve)  # not from the sender we expect
    with pytest.raises(ValueError, match="does not open"):
        xkey.open_sealed(sealed[:-1] + bytes([sealed[-1] ^ 1]), bob_seed, alice)
    with pytest.raises(ValueError, match="not an xkv1"):
        xkey.open_sealed(b"hello", bob_seed, alice)
    with pytest.raises(ValueError, match="curve seed"):
        xkey.public_key(natsjwt.new_account_key()[0])  # an account seed is no curve seed


# --- a real nats-server with auth callout ------------------------------------------------------------------


@dataclass
class Callout:
    server: NatsServer
    issuer_seed: str
    xkey_seed: str | None
    requests: list[AuthorizationRequest]


@pytest.fixture(params=["plain", "xkey"])
def callout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callout]:
    issuer_seed, issuer_public = natsjwt.new_account_key()
    xkey_seed, xkey_public = xkey.new_xkey() if request.param == "xkey" else (None, None)
    config = callout_config(
        tmp_path / "callout.conf", issuer_public=issuer_public, auth_user=AUTH_USER, auth_password=AUTH_PASSWORD,
        xkey_public=xkey_public,
    )  # fmt: skip
    with NatsServer(config=config) as server:
        yield Callout(server, issuer_seed, xkey_seed, [])


Decide = Callable[[AuthorizationRequest], str]  # -> an authorization response JWT


@asynccontextmanager
async def responder(callout: Callout, decide: Decide) -> AsyncIterator[None]:
    """Answer ``$SYS.REQ.USER.AUTH`` as the callout service would (opening and sealing with xkey if set)."""
    service = await nats.connect(callout.server.url, user=AUTH_USER, password=AUTH_PASSWORD)

    async def answer(msg: Any) -> None:
        data = msg.data
        server_xkey: str = (msg.headers or {}).get("Nats-Server-Xkey", "")
        if callout.xkey_seed is not None:
            assert server_xkey, "an xkey server encrypts its requests and names its curve key"
            data = xkey.open_sealed(data, callout.xkey_seed, server_xkey)
        request = AuthorizationRequest.from_jwt(data.decode())
        callout.requests.append(request)
        response = decide(request).encode()
        if callout.xkey_seed is not None:
            response = xkey.seal(response, callout.xkey_seed, server_xkey)
        await msg.respond(response)

    await service.subscribe("$SYS.REQ.USER.AUTH", cb=answer)
    await service.flush()
    try:
        yield
    finally:
        await service.close()


PUB_ALLOW = ["dbx.ws.dev.>", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.CREATE.*", "$SYS.REQ.USER.INFO"]
SUB_ALLOW = ["_INBOX.>"]


async def connect(callout: Callout, token: str, **options: Any) -> Any:
    """A client presenting ``token``; one attempt, no reconnect (a refusal fails at once, not after retries)."""
    return await nats.connect(
        callout.server.url, token=token, allow_reconnect=False, max_reconnect_attempts=0, **options
    )


def grant(callout: Callout, *, expires_in: int = 600) -> Decide:
    """Admit ``good-token`` as user ``job-a`` in APP (publish under ``dbx.ws.dev``), refuse any other token."""

    def decide(request: AuthorizationRequest) -> str:
        if request.token != "good-token":
            return natsjwt.authorization_response(
                user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=callout.issuer_seed,
                error="unknown token",
            )  # fmt: skip
        user = natsjwt.user_jwt(
            user_nkey=request.user_nkey, account="APP", issuer_seed=callout.issuer_seed, name="job-a",
            expires_at=int(time.time()) + expires_in, pub_allow=PUB_ALLOW, sub_allow=SUB_ALLOW,
        )  # fmt: skip
        return natsjwt.authorization_response(
            user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=callout.issuer_seed, user_jwt=user
        )

    return decide


def test_callout_user_publishes_where_allowed_and_is_refused_elsewhere(callout: Callout) -> None:
    async def run() -> None:
        async with responder(callout, grant(callout)):
            errors: list[Exception] = []
            violated = asyncio.Event()

            async def on_error(e: Exception) -> None:
                errors.append(e)
                violated.set()

            nc = await connect(callout, "good-token", name="job-a", error_cb=on_error)
            try:
                js = nc.jetstream()
                await js.add_stream(name="EVENTS", subjects=["dbx.ws.dev.>"])
                ack = await js.publish("dbx.ws.dev.mlflow.run", b"{}")  # JetStream in APP, acked
                assert (ack.stream, ack.seq) == ("EVENTS", 1)
                await nc.publish("dbx.ws.prod.mlflow.run", b"{}")
                await nc.flush()
                await asyncio.wait_for(violated.wait(), timeout=30)  # the server's -ERR arrives asynchronously
                assert any("permissions violation" in str(e) and "dbx.ws.prod" in str(e) for e in errors)
                assert nc.is_connected  # a publish violation does not close the connection
                info = json.loads((await nc.request("$SYS.REQ.USER.INFO", b"", timeout=5)).data)["data"]
                assert (info["user"], info["account"]) == ("job-a", "APP")
                assert set(info["permissions"]["publish"]["allow"]) == set(PUB_ALLOW)
                assert info["expires"] > 0  # time left, in nanoseconds
            finally:
                await nc.close()

        [request] = callout.requests
        assert (request.connect_opts["name"], request.client_info["name"]) == ("job-a", "job-a")
        assert request.client_info["user"] == "[REDACTED]"  # the server hides the token from client_info
        assert request.server_id.startswith("N")

    asyncio.run(run())


def test_a_user_jwt_without_allow_lists_may_do_nothing(callout: Callout) -> None:
    """Deny by default: no allow entries is not NATS's "everything" but ``deny: [">"]``."""

    def nothing(request: AuthorizationRequest) -> str:
        user = natsjwt.user_jwt(
            user_nkey=request.user_nkey, account="APP", issuer_seed=callout.issuer_seed, name="nobody", expires_at=None
        )
        return natsjwt.authorization_response(
            user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=callout.issuer_seed, user_jwt=user
        )

    async def run() -> None:
        async with responder(callout, nothing):
            errors: list[Exception] = []
            refused = asyncio.Event()

            async def on_error(e: Exception) -> None:
                errors.append(e)
                refused.set()

            nc = await connect(callout, "any-token", error_cb=on_error)
            try:
                await nc.publish("dbx.ws.dev.mlflow.run", b"{}")
                await nc.flush()
                await asyncio.wait_for(refused.wait(), timeout=30)
                assert "permissions violation for publish" in str(errors[0])
            finally:
                await nc.close()

    asyncio.run(run())


def test_callout_error_refuses_the_connection(callout: Callout) -> None:
    async def run() -> None:
        async with responder(callout, grant(callout)):
            with pytest.raises(Exception, match="Authorization Violation"):
                await connect(callout, "bad-token")
        assert [r.token for r in callout.requests] == ["bad-token"]

    asyncio.run(run())


def test_response_signed_by_another_account_key_is_refused(callout: Callout) -> None:
    rogue_seed, _ = natsjwt.new_account_key()

    def rogue(request: AuthorizationRequest) -> str:
        user = natsjwt.user_jwt(
            user_nkey=request.user_nkey, account="APP", issuer_seed=rogue_seed, name="x", expires_at=None
        )
        return natsjwt.authorization_response(
            user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=rogue_seed, user_jwt=user
        )

    async def run() -> None:
        async with responder(callout, rogue):
            with pytest.raises(Exception, match="Authorization Violation"):
                await connect(callout, "good-token")

    asyncio.run(run())


def test_expiring_user_jwt_is_disconnected_by_the_server(callout: Callout) -> None:
    async def run() -> None:
        async with responder(callout, grant(callout, expires_in=2)):
            closed = asyncio.Event()

            async def on_closed() -> None:
                closed.set()

            nc = await connect(callout, "good-token", closed_cb=on_closed)
            await asyncio.wait_for(closed.wait(), timeout=60)
            assert "authentication expired" in str(nc.last_error)
            assert callout.server.proc is not None
            assert callout.server.proc.poll() is None  # the server still runs: it closed this one client

    asyncio.run(run())
