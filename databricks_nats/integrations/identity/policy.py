"""The policy file: which verified identity gets which NATS permissions, for how long.

A policy (TOML, or YAML with PyYAML) holds defaults and an ordered list of rules; the **first rule whose
conditions all hold decides**, and an identity no rule matches is refused (deny by default)::

    prefix = "dbx"              # subject prefix (default "dbx"); also workspace, env, stream defaults
    max_ttl = "1h"              # no credentials live longer (seconds, or 30m / 1h / 1d)

    [[rules]]
    name = "team-a-prod"
    when = { issuer = "https://dbc-1.cloud.databricks.com/oidc", sub = "6f1c…" }   # every condition must hold
    workspace = "1234567890123456"
    env = "prod"                # or a list: ["dev", "staging"] expands every subject once per value
    publish = ["{prefix}.{workspace}.{env}.mlflow.>", "{prefix}.{workspace}.{env}.spark.>"]
    jetstream = "publisher"     # none | publisher | consumer | admin: the JetStream API subjects it needs

Conditions (``when``): the keys ``kind``, ``issuer`` and ``subject`` are the ``Identity`` fields; any other key
is a claim, a dotted key a nested claim (``realm_access.roles``; a claim whose name holds dots is found too;
``claims.<name>`` reaches a claim named like a field). A value is a case-sensitive glob (``fnmatch``: ``*``
matches any characters, ``/`` and ``:`` included) or a list of globs (any of them). A list-valued claim
matches when any element matches; a missing claim never matches. An empty ``when`` is refused (it would match
everyone); ``when = { any = true }`` says so explicitly. ``effect = "deny"`` refuses the identities it matches.

Subjects are templates over static values only: ``{prefix}``, ``{workspace}``, ``{env}`` and ``{stream}``
(by default the stream databricks-nats uses for that namespace, ``DBX_<WORKSPACE>_<ENV>``) come from the rule
or the policy's defaults, never from a token, so nothing an identity presents can widen a grant. Each value is
checked at load (one token of ``[A-Za-z0-9_-]``, the prefix dotted tokens; never ``*`` or ``>``), and so is
every expanded subject (no empty token, wildcards as whole tokens, ``>`` last).

Every allowed identity may publish ``$SYS.REQ.USER.INFO`` (``databricks-nats doctor`` shows the permissions
it got; the reply comes on ``_INBOX.>``, which a core-only rule must list in ``subscribe``). ``_INBOX.>`` in a
subscribe allow list stands for *the client's own inboxes*: the service narrows it to ``_INBOX.<h>.>`` for the
token presented (``Permissions.with_inbox``, ``transport.auth.inbox_prefix``) unless configured ``inbox =
"shared"``, so no identity reads another's replies. The profiles add,
per stream: *publisher* ``$JS.API.INFO`` and ``$JS.API.STREAM.INFO.<stream>`` and subscribe ``_INBOX.>``
(acks and API replies; the stream is provisioned by an admin); *consumer* also creates, reads, deletes and
pulls consumers of the stream and acks its messages (JetStream read access is per stream, whatever the
filter: ``subscribe`` lists govern core NATS, live, subscriptions only); *admin* manages the stream and its
consumers. An empty allow list means *nothing* (``as_nats`` writes it as ``deny: [">"]``, since NATS reads a
missing list as everything). Rules are compiled at load: a decision is a few regex matches.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.identity.identity import Identity

__all__ = ["INBOXES", "PROFILES", "USER_INFO", "Decision", "Permissions", "Policy", "Rule"]

USER_INFO = "$SYS.REQ.USER.INFO"
INBOXES = "_INBOX.>"  # in a subscribe allow list: the client's own inboxes (narrowed per token by the service)
_JS_PUBLISH = "$JS.API.INFO $JS.API.STREAM.INFO.{stream}"
_JS_CONSUME = (
    "$JS.API.CONSUMER.CREATE.{stream} $JS.API.CONSUMER.CREATE.{stream}.> $JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"
    " $JS.API.CONSUMER.INFO.{stream}.* $JS.API.CONSUMER.DELETE.{stream}.* $JS.API.CONSUMER.MSG.NEXT.{stream}.*"
    " $JS.ACK.{stream}.>"
)
_JS_ADMIN = (  # "$JS.API.CONSUMER.*.<stream>[.>]" covers the consumer's create, info and delete
    "$JS.API.STREAM.NAMES $JS.API.STREAM.LIST $JS.API.STREAM.*.{stream} $JS.API.STREAM.MSG.*.{stream}"
    " $JS.API.DIRECT.GET.{stream} $JS.API.DIRECT.GET.{stream}.> $JS.API.CONSUMER.*.{stream}"
    " $JS.API.CONSUMER.*.{stream}.> $JS.API.CONSUMER.DURABLE.CREATE.{stream}.* $JS.API.CONSUMER.MSG.NEXT.{stream}.*"
    " $JS.ACK.{stream}.>"
)
PROFILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # profile: (publish, subscribe) it adds
    "none": ((), ()),
    "publisher": (tuple(_JS_PUBLISH.split()), (INBOXES,)),
    "consumer": (tuple(f"{_JS_PUBLISH} {_JS_CONSUME}".split()), (INBOXES,)),
    "admin": (tuple(f"$JS.API.INFO {_JS_ADMIN}".split()), (INBOXES,)),
}
_TOP = {"prefix", "workspace", "env", "stream", "max_ttl", "rules"}
_LISTS = ("publish", "subscribe", "deny_publish", "deny_subscribe")
_RULE = {"name", "effect", "when", "jetstream", "max_ttl", "prefix", "workspace", "env", "stream", *_LISTS}
_FIELDS = ("kind", "issuer", "subject")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64})*")
_VAR = re.compile(r"\{([^{}]*)\}")
_TTL = re.compile(r"(?:\d+[smhd])+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MISSING = object()


@dataclass(frozen=True)
class Permissions:
    """Allow and deny lists of NATS subjects; an empty allow list allows nothing."""

    pub_allow: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_allow: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()

    def with_inbox(self, prefix: str) -> Permissions:
        """These permissions with the subscribe grant ``_INBOX.>`` narrowed to ``<prefix>.>`` (a connection's own
        inboxes, ``transport.auth.inbox_prefix``); other subjects, and the deny lists, stay as written."""
        if INBOXES not in self.sub_allow:
            return self
        own = f"{prefix}.>"
        return dataclasses.replace(
            self, sub_allow=tuple(dict.fromkeys(own if s == INBOXES else s for s in self.sub_allow))
        )

    def as_nats(self) -> dict[str, Any]:
        """``{"pub": {"allow": [...], "deny": [...]}, "sub": {...}}`` as in a NATS user JWT (empty lists omitted;
        an empty allow list becomes ``deny: [">"]``, NATS reading no allow list as everything)."""
        out: dict[str, Any] = {}
        for key, allow, deny in (("pub", self.pub_allow, self.pub_deny), ("sub", self.sub_allow, self.sub_deny)):
            deny = deny if allow else (">",)
            out[key] = {k: list(v) for k, v in (("allow", allow), ("deny", deny)) if v}
        return out


@dataclass(frozen=True)
class Decision:
    """What the policy says about one identity; ``reason`` names the rule (never token material)."""

    allowed: bool
    rule: str | None
    permissions: Permissions | None
    ttl: float
    reason: str


@dataclass(frozen=True)
class Rule:
    """A compiled rule: conditions (all must hold) and, for ``effect == "allow"``, the permissions."""

    name: str
    effect: str
    conditions: tuple[tuple[Callable[[Identity], Any], re.Pattern[str]], ...]
    permissions: Permissions | None
    max_ttl: float

    def matches(self, identity: Identity) -> bool:
        return all(any(p.match(t) for t in _texts(get(identity))) for get, p in self.conditions)


class Policy:
    """An ordered list of rules; ``decide`` returns the first match's decision, or a refusal."""

    def __init__(self, rules: tuple[Rule, ...], max_ttl: float, source: str) -> None:
        self.rules, self.max_ttl, self.source = rules, max_ttl, source
        self._decisions = {
            r.name: Decision(False, r.name, None, 0.0, f"rule {r.name} denies")
            if r.effect == "deny"
            else Decision(True, r.name, r.permissions, min(r.max_ttl, max_ttl), f"rule {r.name}")
            for r in rules
        }

    def __repr__(self) -> str:
        return f"Policy({self.source!r}, {len(self.rules)} rules, max_ttl={self.max_ttl:g})"

    def decide(self, identity: Identity) -> Decision:
        for rule in self.rules:
            if rule.matches(identity):
                return self._decisions[rule.name]
        return Decision(False, None, None, 0.0, "no rule matches (deny by default)")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a ``.toml``, ``.yaml`` or ``.yml`` policy file (YAML needs PyYAML)."""
        name = os.fspath(path)
        ext = os.path.splitext(name)[1].lower()
        if ext == ".toml":
            reader: Callable[[Any], Any] = _toml_reader(name)
        elif ext in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                raise ConfigurationError("policy", f"{name}: reading YAML needs PyYAML: pip install pyyaml") from None
            reader = yaml.safe_load
        else:
            raise ConfigurationError("policy", f"{name}: a policy file ends in .toml, .yaml or .yml")
        try:
            with open(name, "rb") as f:
                data = reader(f)
        except Exception as e:  # noqa: BLE001 - OSError, TOMLDecodeError, yaml.YAMLError (PyYAML is optional)
            raise ConfigurationError("policy", f"{name}: cannot read the policy: {e}") from None
        if not isinstance(data, Mapping):
            raise ConfigurationError("policy", f"{name}: the policy must be a table of settings and [[rules]]")
        return cls.from_dict(data, name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Policy:
        def fail(what: str) -> ConfigurationError:
            return ConfigurationError("policy", f"{source}: {what}")

        unknown = sorted(set(data) - _TOP)
        if unknown:
            raise fail(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_TOP))})")
        max_ttl = _ttl(data.get("max_ttl", 3600), fail)
        rules_data = data.get("rules", [])
        if not isinstance(rules_data, list) or not all(isinstance(r, Mapping) for r in rules_data):
            raise fail("rules must be a list of tables ([[rules]])")
        rules: list[Rule] = []
        for i, raw in enumerate(rules_data, 1):
            name = raw.get("name")
            label = f"rule {name}" if isinstance(name, str) and name else f"rule #{i}"
            rule = _rule(raw, data, max_ttl, lambda what, label=label: fail(f"{label}: {what}"))  # type: ignore[misc]
            if any(r.name == rule.name for r in rules):
                raise fail(f"{label}: the name is used by an earlier rule")
            rules.append(rule)
        return cls(tuple(rules), max_ttl, source)


def _toml_reader(path: str) -> Callable[[Any], Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser as the tomli backport (as config_file does)
        try:
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            problem = f"{path}: reading TOML on Python 3.10 needs tomli: pip install tomli"
            raise ConfigurationError("policy", problem) from None
    load: Callable[[Any], Any] = tomllib.load
    return load


Fail = Callable[[str], ConfigurationError]


def _rule(raw: Mapping[str, Any], top: Mapping[str, Any], policy_ttl: float, fail: Fail) -> Rule:
    unknown = sorted(set(raw) - _RULE)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_RULE))})")
    name, effect = raw.get("name"), raw.get("effect", "allow")
    if not isinstance(name, str) or not name.strip():
        raise fail("every rule needs a name")
    if effect not in ("allow", "deny"):
        raise fail(f'effect must be "allow" or "deny", not {effect!r}')
    conditions = _conditions(raw.get("when"), fail)
    if effect == "deny":
        extra = sorted(k for k in raw if k not in ("name", "effect", "when"))
        if extra:
            raise fail(f"a deny rule grants nothing: remove {', '.join(extra)}")
        return Rule(name, effect, conditions, None, 0.0)
    profile = raw.get("jetstream", "none")
    if profile not in PROFILES:
        raise fail(f"jetstream must be one of {', '.join(PROFILES)}, not {profile!r}")
    lists = {k: _strings(raw.get(k, []), k, fail) for k in _LISTS}
    if not lists["publish"] and not lists["subscribe"] and profile == "none":
        raise fail("grants nothing: give publish, subscribe or a jetstream profile")
    combos = _combos(raw, top, fail)
    pub, sub = PROFILES[profile]

    def expand(templates: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for t in templates for s in _expand(t, combos, fail)))

    permissions = Permissions(
        pub_allow=expand((USER_INFO, *lists["publish"], *pub)),
        pub_deny=expand(lists["deny_publish"]),
        sub_allow=expand((*lists["subscribe"], *sub)),
        sub_deny=expand(lists["deny_subscribe"]),
    )
    return Rule(name, effect, conditions, permissions, _ttl(raw.get("max_ttl", policy_ttl), fail))


def _conditions(when: Any, fail: Fail) -> tuple[tuple[Callable[[Identity], Any], re.Pattern[str]], ...]:
    if not isinstance(when, Mapping) or not when:
        raise fail("needs conditions (when); an empty one matches every identity: write when = { any = true }")
    if "any" in when:
        if when["any"] is not True or len(when) > 1:
            raise fail("when = { any = true } matches every identity and stands alone")
        return ()
    out = []
    for key, value in when.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise fail(f"condition key {key!r} is not a field or claim name")
        globs = _strings(value, f"condition {key}", fail, scalars=True)
        if not globs:
            raise fail(f"condition {key} lists no value")
        pattern = re.compile("|".join(fnmatch.translate(g) for g in globs))
        out.append((_getter(key), pattern))
    return tuple(out)


def _getter(key: str) -> Callable[[Identity], Any]:
    if key in _FIELDS:
        return lambda identity: getattr(identity, key)
    path = key.removeprefix("claims.")
    return lambda identity: _claim(identity.claims, path)


def _claim(claims: Any, path: str) -> Any:
    """The claim at ``path``: the whole key first, then nested tables split at each dot."""
    if not isinstance(claims, Mapping):
        return _MISSING
    if path in claims:
        return claims[path]
    at = path.find(".")
    while at > 0:
        found = _claim(claims.get(path[:at]), path[at + 1 :])
        if found is not _MISSING:
            return found
        at = path.find(".", at + 1)
    return _MISSING


def _texts(value: Any) -> list[str]:
    """The strings a claim value is matched as: a scalar's text, each scalar element of a list."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        return [t for v in value if not isinstance(v, (list, tuple)) for t in _texts(v)]
    return []


def _strings(value: Any, what: str, fail: Fail, scalars: bool = False) -> tuple[str, ...]:
    """A string or a list of strings (``scalars``: integers and booleans too, as text)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if scalars and isinstance(v, (bool, int)):
            v = ("true" if v else "false") if isinstance(v, bool) else str(v)
        if not isinstance(v, str) or not v:
            raise fail(f"{what} must be a non-empty string or a list of them, not {v!r}")
        out.append(v)
    return tuple(out)


def _combos(raw: Mapping[str, Any], top: Mapping[str, Any], fail: Fail) -> list[dict[str, str | None]]:
    """Every (prefix, workspace, env, stream) the rule's templates expand over; None where nothing is set."""
    values: dict[str, tuple[str | None, ...]] = {}
    for var, shape in (("prefix", _PREFIX), ("workspace", _TOKEN), ("env", _TOKEN), ("stream", _TOKEN)):
        given = raw.get(var, top.get(var, "dbx" if var == "prefix" else None))
        if given is None:
            values[var] = (None,)
            continue
        texts = _strings(given, var, fail, scalars=True)
        for text in texts:
            if not shape.fullmatch(text):
                kind = "dot-separated tokens" if var == "prefix" else "one subject token"
                raise fail(f"{var} {text!r} must be {kind} of [A-Za-z0-9_-] (no '.', '*', '>' or spaces)")
        values[var] = texts
    combos = []
    for prefix, workspace, env in itertools.product(values["prefix"], values["workspace"], values["env"]):
        streams = values["stream"]
        if streams == (None,) and workspace is not None and env is not None:
            from databricks_nats.settings import Settings  # the very name the publisher uses

            streams = (Settings(subject_prefix=prefix or "dbx", workspace=workspace, env=env).stream_name,)
        combos += [{"prefix": prefix, "workspace": workspace, "env": env, "stream": s} for s in streams]
    return combos


def _expand(template: str, combos: list[dict[str, str | None]], fail: Fail) -> list[str]:
    names = _VAR.findall(template)
    for name in names:
        if name not in ("prefix", "workspace", "env", "stream"):
            raise fail(f"{template!r}: unknown variable {{{name}}} (known: prefix, workspace, env, stream)")
    out = []
    for combo in combos:
        for name in names:
            if combo[name] is None:
                needs = "stream, or workspace and env" if name == "stream" else name
                raise fail(f"{template!r} uses {{{name}}}: set {needs} in the rule or the policy")
        subject = _VAR.sub(lambda m, combo=combo: str(combo[m[1]]), template)  # type: ignore[misc]
        _check_subject(subject, template, fail)
        out.append(subject)
    return out


def _check_subject(subject: str, template: str, fail: Fail) -> None:
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token or "{" in token or "}" in token or any(c.isspace() for c in token):
            problem = "an empty token" if not token else f"the token {token!r}"
            raise fail(f"{template!r} gives {subject!r} with {problem}")
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            raise fail(f"{template!r} gives {subject!r}: '*' and '>' are whole tokens")
        if token == ">" and i != len(tokens) - 1:
            raise fail(f"{template!r} gives {subject!r}: '>' may only be the last token")


def _ttl(value: Any, fail: Fail) -> float:
    """Seconds: a positive number, or a duration such as ``"90s"``, ``"30m"``, ``"1h"``, ``"1h30m"``, ``"1d"``."""
    seconds: float = 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _TTL.fullmatch(value.strip()):
        seconds = float(sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", value)))
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = float(value.strip())
    if not seconds > 0 or seconds == float("inf"):
        raise fail(f"max_ttl must be positive seconds or a duration such as 30m, 1h, not {value!r}")
    return seconds
