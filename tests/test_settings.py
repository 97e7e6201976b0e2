"""Settings: resolution order, validation that names the setting, masked secrets, frozen object, derived names."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError, DatabricksNatsError
from databricks_nats.settings import Secret, Settings, resolve_settings
from databricks_nats.values import redact_url


def _resolve(environ: dict[str, str] | None = None, spark_conf: dict[str, str] | None = None, **kw: Any) -> Settings:
    return resolve_settings(environ=environ or {}, spark_conf=spark_conf or {}, **kw)


# (field, kwarg value, env value, spark value, expected parsed values for kwarg / env / spark)
ORDER_CASES = [
    ("env", "kw", "envvar", "spark", ("kw", "envvar", "spark")),
    ("workspace", "111", "222", "333", ("111", "222", "333")),
    ("mode", "core", "CORE", "jetstream", ("core", "core", "jetstream")),
    ("max_event_bytes", 4096, "2048", "16384", (4096, 2048, 16384)),
    ("ack_timeout", 1.5, "2.5", "3.5", (1.5, 2.5, 3.5)),
    ("disabled", True, "false", "yes", (True, False, True)),
    (
        "url",
        "nats://kw:4222",
        "nats://e1:4222, tls://e2:4222",
        "wss://spark:443",
        (("nats://kw:4222",), ("nats://e1:4222", "tls://e2:4222"), ("wss://spark:443",)),
    ),
    ("subject_prefix", "kw.p", "env_p", "spark-p", ("kw.p", "env_p", "spark-p")),
    ("user", "alice", "bob", "carol", ("alice", "bob", "carol")),
]


@pytest.mark.parametrize(("name", "kw", "env", "spark", "expected"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_resolution_order_kwargs_env_spark_defaults(name: str, kw: Any, env: Any, spark: Any, expected: tuple) -> None:
    """A keyword argument beats DATABRICKS_NATS_<NAME>, which beats the Spark conf, which beats the default."""
    env_key = f"DATABRICKS_NATS_{name.upper()}"
    default = {f.name: f.default for f in dataclasses.fields(Settings)}[name]
    environ = {env_key: env}
    conf = {name: spark}
    assert getattr(_resolve(environ, conf, **{name: kw}), name) == expected[0]
    assert getattr(_resolve(environ, conf), name) == expected[1]
    assert getattr(_resolve({}, conf), name) == expected[2]
    assert getattr(_resolve({}, {}), name) == default


def test_none_kwarg_falls_through_to_environment() -> None:
    """A keyword argument of None means "not given", so the environment value applies."""
    s = _resolve({"DATABRICKS_NATS_ENV": "staging"}, {"env": "spark"}, env=None)
    assert s.env == "staging"


def test_unrelated_environment_and_spark_keys_are_ignored() -> None:
    """Only DATABRICKS_NATS_* variables and known conf names are read; other keys change nothing."""
    s = _resolve({"NATS_URL": "nats://other:1", "DATABRICKS_NATS": "x", "ENV": "prod"}, {"spark.app.name": "x"})
    assert s == Settings()


def test_defaults() -> None:
    """With nothing configured the documented defaults apply."""
    s = _resolve()
    assert s.url == ("nats://127.0.0.1:4222",)
    assert (s.env, s.workspace, s.subject_prefix, s.mode) == ("dev", "local", "dbx", "jetstream")
    assert (s.disabled, s.strict) == (False, False)
    assert (s.token, s.password, s.creds, s.nkey_seed) == (None, None, None, None)
    assert s.max_event_bytes == 8192


INVALID = [
    ("url", "http://h:4222"),
    ("url", "h:4222"),
    ("url", ""),
    ("url", "nats://ok:1,ftp://bad:2"),
    ("mode", "foo"),
    ("env", "pr od"),
    ("env", "a.b"),
    ("env", ""),
    ("workspace", "*"),
    ("subject_prefix", "a..b"),
    ("subject_prefix", "a.>"),
    ("subject_prefix", ""),
    ("max_event_bytes", -1),
    ("max_event_bytes", "0"),
    ("max_event_bytes", 100),
    ("spool_max_bytes", "-5"),
    ("memory_max_events", -10),
    ("max_inflight", "many"),
    ("ack_timeout", -1.0),
    ("connect_timeout", "0"),
    ("stream_max_age", "-3600"),
    ("stream_replicas", 0),
    ("stream_storage", "tape"),
    ("stream", "bad name"),
    ("stream", "a.b"),
    ("disabled", "maybe"),
    ("queue_max_events", "-1"),
    ("metrics_mode", "sometimes"),
    ("metrics_interval", 0),
    ("strict", "perhaps"),
    ("auto_create_stream", "2"),
    ("stream_duplicate_window", 10 * 86400.0),  # larger than the default max age of 7 days
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
@pytest.mark.parametrize("origin", ["kwarg", "env", "spark"])
def test_invalid_values_raise_configuration_error_naming_the_setting(name: str, value: Any, origin: str) -> None:
    """Every invalid value, from any origin, raises ConfigurationError whose message and attribute name the setting."""
    if origin == "kwarg":
        call = lambda: _resolve(**{name: value})  # noqa: E731
    elif origin == "env":
        call = lambda: _resolve({f"DATABRICKS_NATS_{name.upper()}": str(value)})  # noqa: E731
    else:
        call = lambda: _resolve({}, {name: str(value)})  # noqa: E731
    with pytest.raises(ConfigurationError) as info:
        call()
    assert info.value.setting == name
    assert repr(name) in str(info.value)
    assert isinstance(info.value, DatabricksNatsError)
    assert isinstance(info.value, ValueError)


def test_unknown_kwarg_raises_configuration_error_naming_it() -> None:
    """A misspelt keyword argument is rejected with a ConfigurationError that names it."""
    with pytest.raises(ConfigurationError, match="'urll'") as info:
        _resolve(urll="nats://x:1")
    assert info.value.setting == "urll"
    assert "url" in str(info.value)


SECRETS = {
    "token": "tok-SUPERSECRET-1",
    "password": "pw-SUPERSECRET-2",
    "creds": "-----BEGIN NATS USER JWT-----\nCREDS-SUPERSECRET-3\n------END NATS USER JWT------",
    "nkey_seed": "SUAKSUPERSECRET4SEED",
}


def _assert_no_secret(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text
        assert "SUPERSECRET" not in text


@pytest.mark.parametrize("origin", ["kwarg", "env", "spark"])
def test_secrets_are_masked_in_repr_and_str(origin: str) -> None:
    """token, password, creds and nkey_seed never appear in repr(Settings) or str(Settings), whatever their origin."""
    if origin == "kwarg":
        s = _resolve(user="alice", **SECRETS)
    elif origin == "env":
        s = _resolve({f"DATABRICKS_NATS_{k.upper()}": v for k, v in SECRETS.items()}, user="alice")
    else:
        s = _resolve({}, dict(SECRETS), user="alice")
    for name, value in SECRETS.items():
        held = getattr(s, name)
        assert isinstance(held, Secret)
        assert held.reveal() == value
        assert value not in repr(held)
        assert value not in str(held)
    _assert_no_secret(repr(s))
    _assert_no_secret(str(s))
    _assert_no_secret(f"{s}")
    _assert_no_secret(repr(dataclasses.asdict(s)))
    assert "alice" in repr(s)  # non-secret settings are shown
    assert "token=" in repr(s)  # the secret is there, masked


@pytest.mark.parametrize(
    ("name", "value"),
    [("mode", "foo"), ("env", "pr od"), ("url", "http://x:1"), ("max_event_bytes", "-1"), ("disabled", "maybe")],
)
@pytest.mark.parametrize("origin", ["kwarg", "env"])
def test_secrets_are_absent_from_configuration_errors(name: str, value: str, origin: str) -> None:
    """When any setting is invalid, the ConfigurationError message never shows a secret that was also given."""
    if origin == "kwarg":
        call = lambda: _resolve(**SECRETS, **{name: value})  # noqa: E731
    else:
        environ = {f"DATABRICKS_NATS_{k.upper()}": v for k, v in {**SECRETS, name: value}.items()}
        call = lambda: _resolve(environ)  # noqa: E731
    with pytest.raises(ConfigurationError) as info:
        call()
    assert info.value.setting == name
    _assert_no_secret(str(info.value))
    _assert_no_secret(repr(info.value))
    _assert_no_secret(repr(info.value.args))


def test_secret_value_object_masks_itself() -> None:
    """A Secret masks its value in repr/str/format and compares by value."""
    sec = Secret("hunter2")
    for shown in (repr(sec), str(sec), f"{sec}"):
        assert "hunter2" not in shown
    assert sec == Secret("hunter2")
    assert sec != Secret("other")
    assert sec != "hunter2"
    assert hash(sec) == hash(Secret("hunter2"))


def test_empty_secret_means_no_secret() -> None:
    """An empty token or password (e.g. an unset-but-exported variable) resolves to None."""
    s = _resolve({"DATABRICKS_NATS_TOKEN": "", "DATABRICKS_NATS_PASSWORD": ""})
    assert (s.token, s.password) == (None, None)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after creation."""
    s = _resolve()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.env = "prod"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.token = Secret("x")  # type: ignore[misc]


def test_settings_constructor_validates_too() -> None:
    """Building Settings directly runs the same subject-part checks as resolve_settings."""
    with pytest.raises(ConfigurationError, match="'env'"):
        Settings(env="pr od")
    with pytest.raises(ConfigurationError, match="'subject_prefix'"):
        Settings(subject_prefix="a..b")


def test_namespace_derivation() -> None:
    """The namespace is prefix.workspace.env."""
    assert _resolve().namespace == "dbx.local.dev"
    assert _resolve(subject_prefix="org.ml", workspace="1234567890", env="prod").namespace == "org.ml.1234567890.prod"


@pytest.mark.parametrize(
    ("workspace", "env", "stream"),
    [
        ("local", "dev", "DBX_local_dev"),
        ("1234567890", "prod", "DBX_1234567890_prod"),
        ("my-ws", "pre-prod", "DBX_my-ws_pre-prod"),
    ],
)
def test_stream_name_derivation(workspace: str, env: str, stream: str) -> None:
    """Without an explicit stream the name is <PREFIX>_<workspace>_<env>, with the names' case kept."""
    s = _resolve(workspace=workspace, env=env)
    assert s.stream_name == stream
    assert all(c.isalnum() or c in "_-" for c in s.stream_name)


def test_stream_names_of_different_namespaces_never_collide() -> None:
    """Namespaces that differ only in where an underscore falls, or in case, get different streams."""
    names = {
        _resolve(workspace="a_b", env="c").stream_name,
        _resolve(workspace="a", env="b_c").stream_name,
        _resolve(workspace="ws", env="prod").stream_name,
        _resolve(workspace="WS", env="PROD").stream_name,
        _resolve(subject_prefix="acme", workspace="ws", env="prod").stream_name,
    }
    assert len(names) == 5


def test_explicit_stream_name_wins() -> None:
    """An explicit stream setting is used as the stream name unchanged."""
    assert _resolve(stream="My-Stream_1").stream_name == "My-Stream_1"
    assert _resolve({"DATABRICKS_NATS_STREAM": "FROM_ENV"}).stream_name == "FROM_ENV"


def test_spool_path_is_per_namespace(tmp_path: Any) -> None:
    """The spool directory ends with the namespace, so two namespaces never share a spool."""
    a = _resolve(spool_dir=str(tmp_path), env="a")
    b = _resolve(spool_dir=str(tmp_path), env="b")
    assert a.spool_path != b.spool_path
    assert a.spool_path.endswith("dbx.local.a")


@pytest.mark.parametrize("name", ["ack_timeout", "connect_timeout", "stream_max_age"])
def test_nan_durations_are_rejected(name: str) -> None:
    """A NaN duration is not a positive number and must be rejected."""
    with pytest.raises(ConfigurationError):
        _resolve({f"DATABRICKS_NATS_{name.upper()}": "nan"})


def test_url_credentials_are_masked_in_repr() -> None:
    """A password embedded in a server URL (nats://user:pass@host) is not shown by repr(Settings)."""
    s = _resolve(url="nats://alice:pw-SUPERSECRET@nats.internal:4222")
    assert "SUPERSECRET" not in repr(s)


def test_url_credentials_are_masked_in_configuration_errors() -> None:
    """A password embedded in an invalid server URL is not echoed by the ConfigurationError message."""
    with pytest.raises(ConfigurationError) as info:
        _resolve(url="http://alice:pw-SUPERSECRET@nats.internal:4222")
    assert "SUPERSECRET" not in str(info.value)


def test_secret_keys_parse_kind_key_pairs_and_reject_unknown_kinds() -> None:
    """secret_keys takes kind=key pairs (string or mapping); an unknown kind or a missing key names the setting."""
    s = _resolve({"DATABRICKS_NATS_SECRET_KEYS": "token=nats-tok, creds=svc-creds"})
    assert s.secret_keys == (("token", "nats-tok"), ("creds", "svc-creds"))
    assert _resolve(secret_keys={"password": "pw"}).secret_keys == (("password", "pw"),)
    assert dict(_resolve().secret_keys)["nkey_seed"] == "nats-nkey-seed"
    for bad in ("tokn=x", "token"):
        with pytest.raises(ConfigurationError, match="secret_keys"):
            _resolve(secret_keys=bad)


def test_tls_key_is_secret_and_tls_paths_and_scope_are_plain() -> None:
    """tls_key is masked like every credential; CA, certificate, host name and scope are plain settings."""
    s = _resolve({"DATABRICKS_NATS_TLS_KEY": "-----BEGIN PRIVATE KEY-----x", "DATABRICKS_NATS_SECRET_SCOPE": "nats"},
                 tls_ca="/etc/ca.pem", tls_hostname="nats.internal")  # fmt: skip
    assert isinstance(s.tls_key, Secret)
    assert "PRIVATE" not in repr(s)
    assert (s.tls_ca, s.tls_hostname, s.secret_scope) == ("/etc/ca.pem", "nats.internal", "nats")


URL_WITH_PASSWORDS = "nats://alice:pw-SUPERSECRET@h1:4222, tls://tok-SUPERSECRET@h2:4222"


def test_url_passwords_are_masked_wherever_the_url_setting_is_shown() -> None:
    """str, repr, format and slices of the url setting mask user:password; the client still gets the real URLs."""
    s = _resolve(url=URL_WITH_PASSWORDS)
    shown = [str(s.url), repr(s.url), f"{s.url}", "%s %r" % (s.url, s.url), str(s.url[:1]), repr(s), str(s)]  # noqa: UP031
    assert not [text for text in shown if "SUPERSECRET" in text]
    assert str(s.url) == "nats://****@h1:4222, tls://****@h2:4222"
    assert list(s.url) == ["nats://alice:pw-SUPERSECRET@h1:4222", "tls://tok-SUPERSECRET@h2:4222"]
    assert s.url == ("nats://alice:pw-SUPERSECRET@h1:4222", "tls://tok-SUPERSECRET@h2:4222")
    copied = pickle.loads(pickle.dumps(s))  # noqa: S301 - e.g. shipped to a Spark Connect listener process
    assert copied == s
    assert "SUPERSECRET" not in str(copied.url)
    built = Settings(url=("nats://bob:SUPERSECRET@h:1",))  # not resolved: masked all the same
    assert "SUPERSECRET" not in str(built.url) + repr(built)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://alice:p/SUPERSECRET@h:4222", "nats://****@h:4222"),
        ("nats://alice:p@SUPERSECRET@h:4222", "nats://****@h:4222"),
        ("wss://alice:SUPERSECRET@h/path", "wss://****@h/path"),
        ("alice:SUPERSECRET@h:4222", "****@h:4222"),
        ("('nats://a:SUPERSECRET@h1', 'nats://b:SUPERSECRET@h2')", "('nats://****@h1', 'nats://****@h2')"),
        ("nats://h:4222", "nats://h:4222"),
    ],
)
def test_redact_url_masks_the_whole_userinfo(url: str, shown: str) -> None:
    """A password holding "/" or "@", a URL without a scheme, several URLs in one text: all masked."""
    assert redact_url(url) == shown


def test_a_long_url_password_is_masked_in_configuration_errors() -> None:
    """The value an error shows is masked before it is shortened, so no part of a long password shows."""
    with pytest.raises(ConfigurationError) as info:
        _resolve(url="http://alice:" + "x" * 100 + "SUPERSECRET@nats.internal:4222")
    assert "SUPERSECRET" not in str(info.value)
    assert "xxx" not in str(info.value)


def test_a_password_in_the_url_connects_and_shows_nowhere(
    tmp_path: Any, namespace: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real nats-server that requires a password: the publisher connects with the URL's password, and
    neither the settings, stats(), the log nor ensure_stream's error for a failed connection shows it."""
    import nats

    import databricks_nats
    from databricks_nats.errors import StreamError
    from databricks_nats.testing import NatsServer, read_stream

    config = tmp_path / "auth.conf"
    config.write_text('authorization { user: alice, password: "pw-SUPERSECRET" }\n')
    with NatsServer(config=str(config)) as server, caplog.at_level(logging.DEBUG, logger="databricks_nats"):
        url = server.url.replace("nats://", "nats://alice:pw-SUPERSECRET@")
        settings = databricks_nats.configure(url=url, spool_dir=str(tmp_path / "spool"), **namespace)
        databricks_nats.emit("custom.auth.checked", {"ok": True}, keys=["k"])
        assert databricks_nats.flush(timeout=30).ok
        stats = json.dumps(databricks_nats.stats(), default=str)
        shown = [str(databricks_nats.get_settings().url), repr(databricks_nats.get_settings()), stats]
        databricks_nats.shutdown(timeout=5)
        assert [m["envelope"]["data"]["ok"] for m in _read(read_stream, url, settings.stream_name)] == [True]

        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError("refused")

        monkeypatch.setattr(nats, "connect", refused)
        with pytest.raises(StreamError) as failed:
            databricks_nats.ensure_stream(url=url)
        shown.append(str(failed.value))
    shown.append(caplog.text)
    assert not [text[:200] for text in shown if "SUPERSECRET" in text]


def _read(read_stream: Any, url: str, stream: str) -> list[dict[str, Any]]:
    return [m for m in read_stream(url, stream) if m["envelope"]["type"] == "databricks.custom.auth.checked"]


def test_a_client_error_quoting_a_url_never_shows_its_password_in_stats():
    """Errors from the NATS or websocket client may quote the server URL: ``stats()['last_error']`` masks it."""
    from databricks_nats.transport.stats import Stats

    stats = Stats()
    stats.error("connect", "WSServerHandshakeError: 401, url='wss://svc:pa55w0rd@nats.example.com:443/'")
    assert "pa55w0rd" not in stats.last_error
    assert "wss://****@nats.example.com:443/" in stats.last_error
