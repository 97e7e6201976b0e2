"""AWS IAM proofs: signed by botocore from real credential providers, verified through a loopback STS.

The client signs with botocore's own credential chain (environment variables, the EC2 instance profile
through a loopback IMDS, the container credentials endpoint); the verifier forwards to ``StsStub``, which
recomputes the SigV4 signature with botocore as STS would. Nothing of botocore or the verifier is mocked.
"""

from __future__ import annotations

import base64
import calendar
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.aws import (
    AUDIENCE_HEADER,
    TOKEN_PREFIX,
    AwsIamVerifier,
    sign_identity_request,
)
from databricks_nats.integrations.identity.identity import Identity, Refused
from tests.identity.sts_stub import ImdsStub, StsStub

ACCOUNT = "123456789012"
ROLE_KEY, ROLE_SECRET, ROLE_TOKEN = "ASIAROLEKEY000000001", "role-secret-0123456789", "role-session-token-abc"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/nats-publisher/i-0abc123"
USER_KEY, USER_SECRET = "AKIAUSERKEY000000001", "user-secret-0123456789"
USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/ci-bot"
AUDIENCE = "nats://prod.example.com"

AWS_VARIABLES = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_CREDENTIAL_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS credentials anywhere: no variables, empty config and credentials files, IMDS off."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def sts() -> Iterator[StsStub]:
    identities = {
        ROLE_KEY: (ROLE_SECRET, ROLE_TOKEN, ROLE_ARN, ACCOUNT, "AROAROLEID:i-0abc123"),
        USER_KEY: (USER_SECRET, None, USER_ARN, ACCOUNT, "AIDAUSERID"),
    }
    with StsStub(identities) as stub:
        yield stub


@pytest.fixture
def user_env(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", USER_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", USER_SECRET)


def decode(token: str) -> dict[str, Any]:
    raw = token[len(TOKEN_PREFIX) :]
    proof: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return proof


def encode(proof: dict[str, Any]) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(json.dumps(proof).encode()).decode().rstrip("=")


def refused(verifier: AwsIamVerifier, token: str) -> str:
    with pytest.raises(Refused) as info:
        verifier.verify(token)
    return info.value.reason


def test_instance_profile_credentials_prove_the_role(aws_env: pytest.MonkeyPatch, sts: StsStub) -> None:
    with ImdsStub("nats-publisher", ROLE_KEY, ROLE_SECRET, ROLE_TOKEN, time.time() + 6 * 3600) as imds:
        aws_env.setenv("AWS_EC2_METADATA_DISABLED", "false")
        aws_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url + "/")
        before = time.time()
        proof = sign_identity_request(audience=AUDIENCE, endpoint=sts.url)
        assert imds.served == 1
    assert before + 600 <= proof.expires_at <= time.time() + 600
    identity = AwsIamVerifier(sts_endpoint=sts.url, audience=AUDIENCE).verify(proof.token)
    assert identity == Identity(
        kind="aws_iam",
        issuer="127.0.0.1",
        subject=ROLE_ARN,
        claims={
            "account": ACCOUNT,
            "arn": ROLE_ARN,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/nats-publisher",
            "user_id": "AROAROLEID:i-0abc123",
        },
    )
    assert identity.name == f"aws_iam:{ROLE_ARN}"
    assert sts.requests == 1


def test_proof_expires_with_credentials_that_expire_sooner(aws_env: pytest.MonkeyPatch, sts: StsStub) -> None:
    expiration = int(time.time()) + 480  # inside botocore's refresh window: it refreshes, then uses them
    with ImdsStub("nats-publisher", ROLE_KEY, ROLE_SECRET, ROLE_TOKEN, expiration) as imds:
        aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", imds.container_url)
        proof = sign_identity_request(endpoint=sts.url)
    assert proof.expires_at == expiration
    assert AwsIamVerifier(sts_endpoint=sts.url).verify(proof.token).subject == ROLE_ARN


def test_environment_credentials_and_the_token_is_never_printed(user_env: None, sts: StsStub) -> None:
    proof = sign_identity_request(endpoint=sts.url, region="us-east-1")
    assert proof.token.startswith(TOKEN_PREFIX)
    assert proof.token not in repr(proof)
    assert "Signature" not in repr(proof)
    identity = AwsIamVerifier(sts_endpoint=sts.url).verify(proof.token)
    assert (identity.subject, identity.claims["role_arn"], identity.claims["account"]) == (USER_ARN, USER_ARN, ACCOUNT)


def test_forged_signature_is_refused_by_sts(user_env: None, sts: StsStub) -> None:
    proof = decode(sign_identity_request(endpoint=sts.url).token)
    auth = proof["headers"]["Authorization"]
    signature = auth.rsplit("Signature=", 1)[1]
    proof["headers"]["Authorization"] = auth.replace(signature, "0" * 64)
    reason = refused(AwsIamVerifier(sts_endpoint=sts.url), encode(proof))
    assert reason == "STS refused: SignatureDoesNotMatch"
    assert sts.requests == 1


def test_wrong_secret_and_unknown_key_are_refused(aws_env: pytest.MonkeyPatch, sts: StsStub) -> None:
    verifier = AwsIamVerifier(sts_endpoint=sts.url)
    aws_env.setenv("AWS_ACCESS_KEY_ID", USER_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert refused(verifier, sign_identity_request(endpoint=sts.url).token) == "STS refused: SignatureDoesNotMatch"
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    reason = refused(verifier, sign_identity_request(endpoint=sts.url).token)
    assert reason == "STS refused: InvalidClientTokenId"
    assert "not-the-secret" not in reason
    assert "AKIA" not in reason


def test_expired_session_credentials_are_refused_by_sts(aws_env: pytest.MonkeyPatch, sts: StsStub) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", ROLE_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", ROLE_SECRET)
    aws_env.setenv("AWS_SESSION_TOKEN", ROLE_TOKEN)
    token = sign_identity_request(endpoint=sts.url).token
    sts.expire(ROLE_KEY)
    reason = refused(AwsIamVerifier(sts_endpoint=sts.url), token)
    assert reason == "STS refused: ExpiredToken"
    assert ROLE_TOKEN not in reason


def test_audience_must_be_present_equal_and_signed(user_env: None, sts: StsStub) -> None:
    verifier = AwsIamVerifier(sts_endpoint=sts.url, audience=AUDIENCE)
    assert refused(verifier, sign_identity_request(endpoint=sts.url).token) == "AWS proof has no audience"
    other = sign_identity_request(endpoint=sts.url, audience="nats://dev.example.com").token
    assert refused(verifier, other) == "AWS proof audience mismatch"
    # an audience header added after signing (not in SignedHeaders) does not count
    unsigned = decode(sign_identity_request(endpoint=sts.url).token)
    unsigned["headers"][AUDIENCE_HEADER] = AUDIENCE
    assert refused(verifier, encode(unsigned)) == "AWS proof audience not signed"
    # the signed audience cannot be changed either: STS recomputes the signature over it
    changed = decode(other)
    changed["headers"][AUDIENCE_HEADER] = AUDIENCE
    assert refused(verifier, encode(changed)) == "STS refused: SignatureDoesNotMatch"
    assert sts.requests == 1


def test_old_and_future_dates_are_refused(user_env: None, sts: StsStub) -> None:
    token = sign_identity_request(endpoint=sts.url).token
    signed_at = calendar.timegm(time.strptime(decode(token)["headers"]["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    assert AwsIamVerifier(sts_endpoint=sts.url, clock=lambda: signed_at + 900).verify(token).subject == USER_ARN
    assert AwsIamVerifier(sts_endpoint=sts.url, clock=lambda: signed_at - 300).verify(token).subject == USER_ARN
    assert sts.requests == 2
    later = AwsIamVerifier(sts_endpoint=sts.url, clock=lambda: signed_at + 901)
    assert refused(later, token) == "AWS proof expired"
    earlier = AwsIamVerifier(sts_endpoint=sts.url, clock=lambda: signed_at - 301)
    assert refused(earlier, token) == "AWS proof dated in the future"
    assert sts.requests == 2
    # a lenient verifier forwards it; STS itself refuses a signature older than 15 minutes
    sts.clock = lambda: signed_at + 901
    lenient = AwsIamVerifier(sts_endpoint=sts.url, max_age=3600, clock=lambda: signed_at + 901)
    assert refused(lenient, token) == "STS refused: SignatureDoesNotMatch"


def test_token_url_is_never_the_destination(user_env: None, sts: StsStub) -> None:
    with StsStub({}) as elsewhere:
        proof = decode(sign_identity_request(endpoint=sts.url).token)
        proof["url"] = elsewhere.url + "/steal"
        proof["headers"]["X-Forwarded-For"] = "10.0.0.1"
        proof["headers"]["Cookie"] = "session=abc"
        identity = AwsIamVerifier(sts_endpoint=sts.url).verify(encode(proof))
        assert identity.subject == USER_ARN
        assert (sts.requests, elsewhere.requests) == (1, 0)
        assert "cookie" not in sts.last_headers
        assert "x-forwarded-for" not in sts.last_headers
        assert {"authorization", "x-amz-date", "host", "content-type"} <= set(sts.last_headers)


@pytest.mark.parametrize(
    "change",
    [
        {"body": "Action=AssumeRole&Version=2011-06-15"},
        {"body": "Action=GetCallerIdentity&Version=2011-06-15&Action=AssumeRole"},
        {"body": "Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x"},
        {"body": "X=Action=GetCallerIdentity&Version=2011-06-15"},
        {"method": "GET"},
        {"headers": {"Authorization": "AWS4-HMAC-SHA1 Credential=x"}},
        {"headers": {"X-Amz-Date": "yesterday"}},
        {"headers": {"X-Note": "a\r\nHost: evil.example.com"}},
        {"headers": {"X-Note": ["a", "b"]}},
    ],
    ids=[
        "other-action",
        "two-actions",
        "extra-parameter",
        "substring",
        "get",
        "other-algorithm",
        "bad-date",
        "header-injection",
        "list-value",
    ],
)
def test_anything_but_a_signed_get_caller_identity_is_malformed(
    user_env: None, sts: StsStub, change: dict[str, Any]
) -> None:
    proof = decode(sign_identity_request(endpoint=sts.url).token)
    for key, value in change.items():
        proof[key] = {**proof[key], **value} if isinstance(value, dict) else value
    assert refused(AwsIamVerifier(sts_endpoint=sts.url), encode(proof)) == "malformed AWS proof"
    assert sts.requests == 0


@pytest.mark.parametrize(
    "token", ["", "aws-iam:", "aws-iam:!!!", "aws-iam:bnVsbA", "eyJhbGciOiJub25lIn0.e30.", "x" * 20000]
)
def test_garbage_is_malformed(token: str) -> None:
    assert refused(AwsIamVerifier(sts_endpoint="http://127.0.0.1:9"), token) == "malformed AWS proof"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (the stub's server context, a client context trusting it)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sts stub")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))


def test_https_endpoint_is_verified_with_the_given_ca(
    user_env: None, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    with StsStub({USER_KEY: (USER_SECRET, None, USER_ARN, ACCOUNT, "AIDAUSERID")}, tls=server) as sts:
        token = sign_identity_request(endpoint=sts.url).token
        assert AwsIamVerifier(sts_endpoint=sts.url, ssl_context=client).verify(token).subject == USER_ARN
        # the system's CAs do not trust the stub's certificate: nothing is sent
        assert refused(AwsIamVerifier(sts_endpoint=sts.url), token) == "STS unreachable"
        assert sts.requests == 1


def test_sts_down_is_unreachable(user_env: None) -> None:
    with StsStub({}) as gone:
        url = gone.url
    token = sign_identity_request(endpoint=url).token
    assert refused(AwsIamVerifier(sts_endpoint=url, timeout=2), token) == "STS unreachable"


def test_plain_http_only_on_loopback() -> None:
    with pytest.raises(ConfigurationError):
        AwsIamVerifier(sts_endpoint="http://sts.amazonaws.com")
    assert AwsIamVerifier().issuer == "sts.amazonaws.com"


def test_no_credentials_is_a_clear_error(aws_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="no AWS credentials found") as info:
        sign_identity_request()
    assert info.value.setting == "aws_iam"


def test_missing_botocore_names_the_extra() -> None:
    script = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "botocore" or name.startswith("botocore."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
from databricks_nats.integrations.identity import aws  # importing needs no botocore
from databricks_nats.errors import ConfigurationError
try:
    aws.sign_identity_request()
except ConfigurationError as e:
    print(e.setting, e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("aws_iam ")
    assert "pip install 'databricks-nats[aws]'" in out
