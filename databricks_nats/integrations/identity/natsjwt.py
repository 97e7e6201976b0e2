"""NATS JWT v2: the user JWT and authorization response an auth-callout service signs, the request it verifies.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` without padding; the header is
``{"typ":"JWT","alg":"ed25519-nkey"}`` and the signature is ed25519 over ``"header.claims"`` by the nkey named
in ``iss``. ``encode`` sets ``iss``, ``iat`` and ``jti`` as nats-io/jwt v2 does (``jti`` = unpadded base32 of
SHA-512/256 over the standard claims, ``jti`` left out). Claim layout per nats-io/jwt ``user_claims.go`` and
``authorization_claims.go``: everything NATS-specific lives under ``nats`` with ``type`` and ``version: 2``.

The auth callout (nats-server >= 2.10, ADR-26) in config mode: the server signs an ``authorization_request``
with its server nkey (``N...``, equal to its server id) and sends it on ``$SYS.REQ.USER.AUTH``; the service
answers with an ``authorization_response`` signed by the configured issuer account key, ``sub`` = the
request's ``user_nkey``, ``aud`` = the server id, and either ``nats.jwt`` (a user JWT whose ``aud`` is the
target account's name and whose issuer is the same account key) or ``nats.error``.

``nkeys`` (ed25519 via PyNaCl) is imported lazily; importing this module needs nothing beyond the standard
library. Errors are short ``ValueError`` reasons that never quote the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthorizationRequest",
    "authorization_response",
    "decode",
    "encode",
    "new_account_key",
    "new_user_key",
    "user_jwt",
]

ALGORITHM = "ed25519-nkey"
_HEADER = {"typ": "JWT", "alg": ALGORITHM}
_STANDARD = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")  # Go's ClaimsData field order
_PREFIX_SEED = 18 << 3
_PREFIX_ACCOUNT = 0
_PREFIX_USER = 20 << 3
_PREFIX_SERVER = 13 << 3
_PREFIX_OPERATOR = 14 << 3
_PUBLIC_PREFIXES = (_PREFIX_ACCOUNT, _PREFIX_USER, _PREFIX_SERVER, _PREFIX_OPERATOR)
REQUEST_AUDIENCE = "nats-authorization-request"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _jti(claims: dict[str, Any]) -> str:
    standard = {k: claims[k] for k in _STANDARD if k != "jti" and claims.get(k) not in (None, "", 0)}
    digest = hashlib.new("sha512_256", _json(standard)).digest()
    return base64.b32encode(digest).decode().rstrip("=")


def _keypair(seed: str) -> Any:
    import nkeys

    try:
        return nkeys.from_seed(seed.encode())
    except (nkeys.NkeysError, ValueError, TypeError, AttributeError):  # binascii/nacl errors are ValueErrors
        raise ValueError("invalid nkey seed") from None


def _public_raw(public: str) -> tuple[int, bytes]:
    """(prefix byte, raw ed25519 key) of an nkeys public key, its CRC16 checked."""
    import nkeys

    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("invalid public nkey") from None
    if len(raw) != 35 or int(nkeys.crc16(bytearray(raw[:-2]))).to_bytes(2, "little") != raw[-2:]:
        raise ValueError("invalid public nkey")
    if raw[0] not in _PUBLIC_PREFIXES:
        raise ValueError("invalid public nkey prefix")
    return raw[0], raw[1:-2]


def _new_key(prefix: int) -> tuple[str, str]:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), prefix).decode()
    return seed, _keypair(seed).public_key.decode()


def new_account_key() -> tuple[str, str]:
    """A fresh account nkey ``(seed "SA...", public "A...")``: the callout's issuer."""
    return _new_key(_PREFIX_ACCOUNT)


def new_user_key() -> tuple[str, str]:
    """A fresh user nkey ``(seed "SU...", public "U...")``."""
    return _new_key(_PREFIX_USER)


def encode(claims: dict[str, Any], signer_seed: str) -> str:
    """Sign ``claims`` (a copy gets ``iss``, ``iat`` and ``jti``) with the nkey seed; the JWT string."""
    kp = _keypair(signer_seed)
    body = dict(claims)
    body["iss"] = kp.public_key.decode()
    body["iat"] = int(time.time())
    body.pop("jti", None)
    body["jti"] = _jti(body)
    signing_input = f"{_b64(_json(_HEADER))}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(kp.sign(signing_input.encode()))}"


def decode(token: str, *, issuer: str | None = None) -> dict[str, Any]:
    """The claims of a NATS JWT whose signature by its ``iss`` key verifies (and ``iss == issuer`` if given).

    Raises ``ValueError`` with a short reason: malformed, wrong ``alg``, bad signature, unexpected issuer.
    Expiry is not checked here (callers decide what ``exp`` means to them).
    """
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("malformed JWT: expected 3 parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("malformed JWT: bad base64 or JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("malformed JWT: header and claims must be objects")
    if str(header.get("typ", "")).upper() != "JWT":
        raise ValueError("not a JWT (typ)")
    if header.get("alg") != ALGORITHM:
        raise ValueError(f"unsupported alg (expected {ALGORITHM})")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise ValueError("no issuer")
    if issuer is not None and iss != issuer:
        raise ValueError("unexpected issuer")
    _, raw_key = _public_raw(iss)
    try:
        VerifyKey(raw_key).verify(f"{parts[0]}.{parts[1]}".encode(), signature)
    except (BadSignatureError, ValueError):
        raise ValueError("bad signature") from None
    return claims


def _permission(allow: Iterable[str], deny: Iterable[str]) -> dict[str, list[str]]:
    """Deny by default: NATS reads a missing allow list as "everything", so no allow entries means deny ``>``."""
    allowed, denied = list(allow), list(deny)
    if not allowed:
        return {"deny": [">"]}
    return {"allow": allowed, "deny": denied} if denied else {"allow": allowed}


def user_jwt(
    *,
    user_nkey: str,
    account: str,
    issuer_seed: str,
    name: str,
    expires_at: int | None,
    pub_allow: Iterable[str] = (),
    pub_deny: Iterable[str] = (),
    sub_allow: Iterable[str] = (),
    sub_deny: Iterable[str] = (),
    tags: Iterable[str] = (),
) -> str:
    """A user JWT for ``user_nkey`` in ``account`` (config mode: the account NAME), signed by the issuer key.

    Deny by default: an empty allow list becomes ``deny: [">"]`` (in NATS a missing allow list would mean
    "everything"); pass ``[">"]`` to really allow everything.
    Limits are "no limit" (-1), as Go's ``NewUserClaims`` sets them.
    """
    if _public_raw(user_nkey)[0] != _PREFIX_USER:
        raise ValueError("user_nkey is not a user public key")
    nats: dict[str, Any] = {
        "pub": _permission(pub_allow, pub_deny),
        "sub": _permission(sub_allow, sub_deny),
        "subs": -1,
        "data": -1,
        "payload": -1,
        "type": "user",
        "version": 2,
    }
    tag_list = list(tags)
    if tag_list:
        nats["tags"] = tag_list
    claims: dict[str, Any] = {"aud": account, "name": name, "sub": user_nkey, "nats": nats}
    if expires_at is not None:
        claims["exp"] = int(expires_at)
    return encode(claims, issuer_seed)


def authorization_response(
    *,
    user_nkey: str,
    server_id: str,
    issuer_seed: str,
    user_jwt: str | None = None,
    error: str | None = None,
) -> str:
    """The callout's answer: ``user_jwt`` to admit the client, or ``error`` (a reason) to refuse it."""
    if (user_jwt is None) == (error is None):
        raise ValueError("exactly one of user_jwt and error")
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt is not None:
        nats["jwt"] = user_jwt
    else:
        nats["error"] = error
    return encode({"aud": server_id, "sub": user_nkey, "nats": nats}, issuer_seed)


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the server asks about a connecting client (the verified ``nats`` claims of its request JWT)."""

    server_id: str
    server_name: str
    user_nkey: str
    client_info: dict[str, Any]
    connect_opts: dict[str, Any]
    client_tls: dict[str, Any] | None
    request_nonce: str

    def __repr__(self) -> str:  # connect_opts may hold a token or password: never in a repr
        return (
            f"AuthorizationRequest(server_id={self.server_id!r}, server_name={self.server_name!r}, "
            f"user_nkey={self.user_nkey!r}, client_info={self.client_info!r})"
        )

    @property
    def token(self) -> str | None:
        """The ``auth_token`` the client presented in CONNECT, if any."""
        value = self.connect_opts.get("auth_token")
        return value if isinstance(value, str) and value else None

    @classmethod
    def from_jwt(cls, token: str) -> AuthorizationRequest:
        """Parse and verify a request JWT: signed by a server key that is the server id it names."""
        claims = decode(token)
        if _public_raw(claims["iss"])[0] != _PREFIX_SERVER:
            raise ValueError("request not issued by a server key")
        nats = claims.get("nats")
        if not isinstance(nats, dict) or nats.get("type") != "authorization_request":
            raise ValueError("not an authorization request")
        server = nats.get("server_id")
        if not isinstance(server, dict) or server.get("id") != claims["iss"]:
            raise ValueError("request issuer is not the server it names")
        user_nkey = nats.get("user_nkey")
        if not isinstance(user_nkey, str) or _public_raw(user_nkey)[0] != _PREFIX_USER:
            raise ValueError("request has no valid user_nkey")
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and 0 < exp < time.time():
            raise ValueError("request expired")
        tls = nats.get("client_tls")
        return cls(
            server_id=server["id"],
            server_name=str(server.get("name", "")),
            user_nkey=user_nkey,
            client_info=dict(nats.get("client_info") or {}),
            connect_opts=dict(nats.get("connect_opts") or {}),
            client_tls=dict(tls) if isinstance(tls, dict) else None,
            request_nonce=str(nats.get("request_nonce", "")),
        )
