"""Settings: one frozen object, resolved from kwargs > ``DATABRICKS_NATS_*`` > settings file > Spark conf > defaults.

Each field knows its environment variable (``DATABRICKS_NATS_<NAME>``), its Spark conf key
(``spark.databricks_nats.<name>``) and whether it is a secret. Secrets are held as ``Secret``, whose
repr and str are masked, so no repr, log line or error message can show them.

``Settings`` holds what the core needs (server, credentials, namespace, spool, stream). An integration
declares its own knobs in a *section*: a frozen dataclass of ``setting(...)`` fields, registered here with
``@register_section`` when its module is imported. The package root declares ``integrations/sections.py``
(``_sections.declare``), which is imported the first time settings are built: this module names no
integration. A section's fields are settings like any other (same flat names, variables, file keys and
Spark conf keys), and every ``Settings`` carries one instance of each registered section: read
``settings.section(MlflowSettings).metrics_mode`` (typed) or ``settings.metrics_mode``.

Values are looked up by ``setting_sources``. The settings file (TOML, flat keys named like the settings) is
where serverless compute, which has no cluster environment variables, gets its settings: see
``settings_file``. A secret's value may be a ``{{secrets/<scope>/<key>}}`` reference, read at every
(re)connect through the client's secret source (``ports.SecretSource``; Databricks secret scopes by default).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from databricks_nats import _sections, config_file, setting_sources
from databricks_nats.errors import ConfigurationError, SubjectError
from databricks_nats.model.subjects import validate_name, validate_prefix
from databricks_nats.values import (
    DEFAULT_SECRET_KEYS,
    Secret,
    ServerUrls,
    boolean,
    choice,
    non_negative,
    parse_optional,
    parse_secret,
    parse_secret_keys,
    parse_token_locator,
    parse_urls,
    patterns,
    positive,
    redact_url,
)

__all__ = [
    "Secret",
    "ServerUrls",
    "Settings",
    "boolean",
    "choice",
    "explain_settings",
    "non_negative",
    "patterns",
    "positive",
    "register_section",
    "resolve_settings",
    "setting",
    "settings_file",
]

ENV_PREFIX, SPARK_PREFIX = setting_sources.ENV_PREFIX, setting_sources.SPARK_PREFIX
settings_file = setting_sources.settings_file
CONFIG_PARAMETER = config_file.CONFIG_PARAMETER


def _default_spool_dir() -> str:
    if os.path.isdir("/local_disk0") and os.access("/local_disk0", os.W_OK):  # Databricks driver's local SSD
        return "/local_disk0/tmp/databricks-nats/spool"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "databricks-nats", "spool")


def setting(default: Any, parse: Callable[[Any], Any], secret: bool = False, doc: str = "") -> Any:
    """A settings field (of ``Settings`` or of a section): its default, parser, secrecy and one-line doc."""
    return field(default=default, metadata={"parse": parse, "secret": secret, "doc": doc})


S = TypeVar("S")

# Registered sections by qualified class name, in registration order (the order ``describe`` lists them);
# a Settings holds its section instances sorted by that name, so equal settings compare and hash alike.
_SECTIONS: dict[str, type[Any]] = {}
_CONTAINER = "sections"  # the field of Settings that holds the section instances (not a setting)


def _key(kind: type[Any]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def register_section(kind: type[S]) -> type[S]:
    """Class decorator: make this frozen dataclass of ``setting(...)`` fields a section of ``Settings``.

    Its fields become settings with flat names (``DATABRICKS_NATS_<NAME>``, file key, Spark conf key); a name
    taken by the core or another section is refused. Registering the same class again (a reload) replaces it.
    """
    if not dataclasses.is_dataclass(kind) or not kind.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{kind.__qualname__}: a section is a frozen dataclass")
    taken = {f.name for f in dataclasses.fields(Settings)} | {
        f.name for k, other in _SECTIONS.items() if k != _key(kind) for f in dataclasses.fields(other)
    }
    for f in dataclasses.fields(kind):
        if f.name in taken or f.name.startswith("_") or hasattr(Settings, f.name):
            raise TypeError(f"{kind.__qualname__}.{f.name}: the setting name is already taken")
        if "parse" not in f.metadata:
            raise TypeError(f"{kind.__qualname__}.{f.name}: declare it with setting(default, parse, ...)")
    _SECTIONS[_key(kind)] = kind
    return kind


@dataclass(frozen=True)
class Settings:
    """Everything the publisher needs; build with ``resolve_settings`` (or ``configure``)."""

    url: ServerUrls = setting(
        ServerUrls(("nats://127.0.0.1:4222",)), parse_urls, doc="NATS server URLs, comma-separated"
    )
    env: str = setting("dev", str, doc="environment name; a subject token (dev, staging, prod…)")
    workspace: str = setting("local", str, doc="workspace token in subjects; the numeric workspace id on Databricks")
    subject_prefix: str = setting("dbx", str, doc="first token(s) of every subject")
    mode: str = setting("jetstream", choice("jetstream", "core"), doc="jetstream (acked, durable) or core")
    creds: Secret | None = setting(None, parse_secret, True, "NATS .creds: a file path or the content")
    token: Secret | None = setting(None, parse_secret, True, "NATS token")
    user: str | None = setting(None, parse_optional, doc="NATS user name")
    password: Secret | None = setting(None, parse_secret, True, "NATS password")
    nkey_seed: Secret | None = setting(None, parse_secret, True, "NKey seed: a file path or the seed")
    tls_ca: str | None = setting(
        None, parse_optional, doc="CA certificate(s) that verify the server: a PEM file path or PEM"
    )
    tls_cert: str | None = setting(None, parse_optional, doc="client certificate (mutual TLS): a PEM file path or PEM")
    tls_key: Secret | None = setting(
        None, parse_secret, True, "client certificate's private key: a PEM file path or PEM"
    )
    tls_hostname: str | None = setting(
        None, parse_optional, doc="server name expected in its certificate, if not the URL's"
    )
    secret_scope: str | None = setting(None, parse_optional, doc="Databricks secret scope holding the NATS credentials")
    secret_keys: tuple[tuple[str, str], ...] = setting(
        DEFAULT_SECRET_KEYS, parse_secret_keys, doc="credential=key pairs read from the secret scope (comma-separated)"
    )
    oidc_token: str | None = setting(
        None,
        parse_token_locator,
        doc="identity: the OIDC token presented to the auth service: env:VAR, file:PATH (re-read at every connect), "
        "command:CMD or databricks (the Databricks SDK's OAuth token)",
    )
    aws_iam: bool = setting(
        False, boolean, doc="identity: present a signed sts:GetCallerIdentity (the instance profile; the aws extra)"
    )
    aws_region: str | None = setting(
        None, parse_optional, doc="identity: the region of the STS endpoint aws_iam signs for (default: global)"
    )
    identity_audience: str | None = setting(
        None, parse_optional, doc="identity: the auth service's audience the aws_iam proof is bound to"
    )
    hop_limit: int = setting(
        8, positive(int), doc="reactions a chain of events may go through before reactors refuse it as a loop"
    )
    credentials_ttl: float = setting(5.0, positive(float), doc="seconds resolved credentials are reused by reconnects")
    detect_context: bool = setting(True, boolean, doc="detect the Databricks workspace, cluster, notebook and job")
    context_timeout: float = setting(
        2.0, positive(float), doc="seconds the Databricks SDK may take to name the workspace"
    )
    disabled: bool = setting(False, boolean, doc="true gives a no-op publisher")
    strict: bool = setting(False, boolean, doc="raise publishing errors instead of logging them (tests)")
    spool_dir: str = setting("", str, doc="directory of the durable spool; empty for the default cache dir")
    spool_max_bytes: int = setting(
        512 * 1024 * 1024, positive(int), doc="disk bound of the spool; oldest dropped beyond"
    )
    spool_sync: str = setting(
        "write-behind",
        choice("write-behind", "immediate"),
        doc="write-behind (an event may live only in memory for 50 ms) or immediate (on disk before emit returns)",
    )
    memory_max_events: int = setting(
        10_000, positive(int), doc="encoded events held in memory before spilling to disk only"
    )
    queue_max_events: int = setting(
        100_000, positive(int), doc="emitted events awaiting the worker; beyond it new ones are dropped"
    )
    max_event_bytes: int = setting(8192, positive(int), doc="size cap of one event; data is trimmed to fit")
    max_inflight: int = setting(1024, positive(int), doc="JetStream publishes awaiting their ack")
    ack_timeout: float = setting(5.0, positive(float), doc="seconds before an unacked publish is retried")
    exit_flush_timeout: float = setting(5.0, positive(float), doc="seconds the atexit flush waits")
    connect_timeout: float = setting(2.0, positive(float), doc="seconds per connection attempt")
    stream: str = setting("", str, doc="JetStream stream name; empty for DBX_<WORKSPACE>_<ENV>")
    auto_create_stream: bool = setting(True, boolean, doc="create the stream at first connect when it is missing")
    stream_max_age: float = setting(7 * 86400.0, positive(float), doc="stream retention in seconds")
    stream_max_bytes: int = setting(-1, int, doc="stream size bound in bytes (-1: unlimited)")
    stream_duplicate_window: float = setting(3600.0, positive(float), doc="JetStream de-duplication window in seconds")
    stream_replicas: int = setting(1, positive(int), doc="stream replicas (3 on a cluster)")
    stream_storage: str = setting("file", choice("file", "memory"), doc="stream storage")
    client_name: str = setting("databricks-nats", str, doc="connection name shown in NATS monitoring")
    # One instance of each registered section (the defaults for those not given), in a canonical order.
    sections: tuple[Any, ...] = field(default=(), repr=False)

    if TYPE_CHECKING:  # a section's settings read as attributes (``settings.metrics_mode``) are copies, typed Any

        def __getattr__(self, name: str) -> Any: ...

    def __post_init__(self) -> None:
        self._fill_sections()
        if not isinstance(self.url, ServerUrls):  # built directly (not resolved): masked all the same
            object.__setattr__(self, "url", ServerUrls((self.url,) if isinstance(self.url, str) else self.url))
        try:
            validate_prefix(self.subject_prefix)
        except SubjectError as e:
            raise ConfigurationError("subject_prefix", str(e)) from None
        for name in ("env", "workspace"):
            try:
                validate_name(name, getattr(self, name))
            except SubjectError as e:
                raise ConfigurationError(name, str(e)) from None
        if self.stream and not all(c.isalnum() or c in "_-" for c in self.stream):
            raise ConfigurationError("stream", "stream names may hold only letters, digits, '_' and '-'")
        if self.stream_duplicate_window > self.stream_max_age:
            raise ConfigurationError("stream_duplicate_window", "must not exceed stream_max_age")
        if self.max_event_bytes < 1024:
            raise ConfigurationError("max_event_bytes", "must be at least 1024")
        self._check_identity()

    def _check_identity(self) -> None:
        """An identity (``oidc_token`` or ``aws_iam``) is the whole credential: never mixed with a static one."""
        chosen = [n for n in ("oidc_token", "aws_iam") if getattr(self, n)]
        if len(chosen) > 1:
            raise ConfigurationError("aws_iam", "choose one identity: oidc_token or aws_iam, not both")
        static = [n for n in ("creds", "token", "password", "nkey_seed", "secret_scope") if getattr(self, n)]
        if chosen and static:
            raise ConfigurationError(
                chosen[0], f"an identity replaces static credentials: unset {', '.join(static)} or {chosen[0]}"
            )

    def _fill_sections(self) -> None:
        _sections.load()
        given = {_key(type(s)): s for s in self.sections}
        unknown = [k for k, s in given.items() if not dataclasses.is_dataclass(s) or k not in _SECTIONS]
        if unknown:
            raise ConfigurationError(_CONTAINER, f"not a registered settings section: {unknown[0]}")
        full = tuple(given[k] if k in given else _SECTIONS[k]() for k in sorted(_SECTIONS))
        object.__setattr__(self, _CONTAINER, full)
        for section in full:  # the flat names: plain attributes, so reads cost nothing and survive pickling
            for f in dataclasses.fields(section):
                object.__setattr__(self, f.name, getattr(section, f.name))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by value, each section by its registered name: unpickling (a Spark Connect listener's process)
        imports the section modules the way ``_sections.load`` does, not through their packages."""
        core = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != _CONTAINER}
        parts = {_key(type(x)): {f.name: getattr(x, f.name) for f in dataclasses.fields(x)} for x in self.sections}
        return (_unpickle, (core, parts))

    def section(self, kind: type[S]) -> S:
        """This settings' instance of the section ``kind`` (its defaults if it was registered after they were built)."""
        for found in self.sections:
            if type(found) is kind:
                return found
        return kind()

    @property
    def namespace(self) -> str:
        """``prefix.workspace.env``: the subject namespace this process publishes under."""
        return f"{self.subject_prefix}.{self.workspace}.{self.env}"

    @property
    def stream_name(self) -> str:
        if self.stream:
            return self.stream
        parts = [*self.subject_prefix.upper().split("."), self.workspace, self.env]
        name = "_".join(parts)
        if any("_" in p for p in parts):  # "a_b"+"c" and "a"+"b_c" must not share a stream
            import hashlib  # here: ``import databricks_nats`` resolves no stream name

            name += "_" + hashlib.sha256(self.namespace.encode()).hexdigest()[:8]
        return name

    @property
    def spool_path(self) -> str:
        """The spool directory of this namespace (separate namespaces never replay into each other)."""
        return os.path.join(self.spool_dir or _default_spool_dir(), self.namespace)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(owner, f.name)!r}"  # secrets and the URLs' passwords mask themselves
            for owner in (self, *self.sections)
            for f in dataclasses.fields(owner)
            if f.name != _CONTAINER and getattr(owner, f.name) != f.default
        )
        return f"Settings({shown})"


def _unpickle(core: dict[str, Any], parts: dict[str, dict[str, Any]]) -> Settings:
    _sections.load()
    return Settings(
        **core, sections=tuple(_SECTIONS[key](**values) for key, values in parts.items() if key in _SECTIONS)
    )


def _fields() -> dict[str, tuple[type[Any] | None, dataclasses.Field[Any]]]:
    """Every setting by name: (its section class, or None for the core; its field), core first."""
    _sections.load()
    out: dict[str, tuple[type[Any] | None, dataclasses.Field[Any]]] = {
        f.name: (None, f) for f in dataclasses.fields(Settings) if f.name != _CONTAINER
    }
    for kind in _SECTIONS.values():
        out.update((f.name, (kind, f)) for f in dataclasses.fields(kind))
    return out


def _resolve(
    environ: Mapping[str, str] | None, spark_conf: Mapping[str, str] | None, kwargs: Mapping[str, Any]
) -> tuple[Settings, dict[str, str]]:
    _sections.load()
    sources = setting_sources.sources(environ, spark_conf, kwargs, list(_fields()))
    values: dict[type[Any] | None, dict[str, Any]] = {None: {}, **{kind: {} for kind in _SECTIONS.values()}}
    origins: dict[str, str] = {}
    for name, (owner, f) in _fields().items():
        origin, raw = next(((o, v) for o, lookup in sources if (v := lookup(name)) is not None), ("", None))
        if raw is None:
            continue
        try:
            values[owner][name] = f.metadata["parse"](raw)
        except (TypeError, ValueError) as e:
            shown = "****" if f.metadata["secret"] else (redact_url(repr(raw)) if name == "url" else repr(raw))[:80]
            raise ConfigurationError(
                name, f"{e} (from {setting_sources.origin_name(origin, name)}, value {shown})"
            ) from None
        origins[name] = origin
    sections = tuple(kind(**given) for kind, given in values.items() if kind is not None)
    return Settings(**values[None], sections=sections), origins


def resolve_settings(
    environ: Mapping[str, str] | None = None, spark_conf: Mapping[str, str] | None = None, **kwargs: Any
) -> Settings:
    """Resolve settings: kwargs > environment > settings file > Spark conf > defaults; raise ConfigurationError."""
    return _resolve(environ, spark_conf, kwargs)[0]


def explain_settings(
    environ: Mapping[str, str] | None = None, spark_conf: Mapping[str, str] | None = None, **kwargs: Any
) -> tuple[Settings, dict[str, str]]:
    """The settings and where each non-default one came from (``argument``, ``environment``, ``file <path>``…)."""
    return _resolve(environ, spark_conf, kwargs)


def describe() -> list[tuple[str, str, bool, str]]:
    """(setting, environment variable, secret, description) for every setting, for docs and the CLI."""
    return [(n, ENV_PREFIX + n.upper(), f.metadata["secret"], f.metadata["doc"]) for n, (_, f) in _fields().items()]
