"""``databricks-nats doctor``: where each setting came from, what this compute can publish, then the checks —
credentials (and an identity's token, never its value), connectivity, the server, what it granted
(``$SYS.REQ.USER.INFO``), JetStream, the stream against the settings, and publish permission (probes no stream
stores). One ``ok`` line per check; each problem on stderr, exit 1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

__all__ = ["cmd_doctor"]


def _doctor_settings(args: argparse.Namespace) -> Any:
    """Settings as the publisher would resolve them, with the Databricks context applied."""
    from databricks_nats.integrations.databricks import apply_context, detect_context
    from databricks_nats.settings import explain_settings

    given = {
        "url": args.url,
        "workspace": args.workspace or args.nats_workspace_id,
        "env": args.env or args.nats_env,
        "secret_scope": args.secret_scope,
    }
    settings, origins = explain_settings(**{k: v for k, v in given.items() if v and "{{" not in v})
    context = detect_context(settings)
    return apply_context(settings, context), context, origins


def _shown(settings: Any, name: str) -> str:
    """A setting's value as doctor prints it: secrets never, URLs without passwords."""
    from databricks_nats.settings import describe
    from databricks_nats.values import redact_url

    if dict((n, secret) for n, _, secret, _ in describe())[name]:
        return "(secret)"
    value = getattr(settings, name)
    text = ",".join(value) if name == "url" else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return redact_url(text)[:80]


def _presented(token: str, expires_at: float | None) -> str:
    """What the identity token says of itself (unverified: the auth service verifies), never the token."""
    from databricks_nats.integrations.identity.unverified import jwt_claims

    left = f", expires in {expires_at - time.time():.0f} s" if expires_at is not None else ""
    if token.startswith("aws-iam:"):
        return f"AWS IAM proof (signed sts:GetCallerIdentity){left}"
    if token.startswith("databricks:"):
        from databricks_nats.integrations.identity.databricks import decode_proof

        host, inner = decode_proof(token)
        inner_claims = jwt_claims(inner)
        if inner_claims is None:
            return f"Databricks token of {host} (the auth service asks the workspace whose it is){left}"
        token, host_note = inner, f" (Databricks, {host})"
    else:
        host_note = ""
    claims = jwt_claims(token) or {}
    who = f"{claims.get('sub', '?')} from {claims.get('iss', '?')} for {claims.get('aud', '?')}"
    return f"OIDC token of {who}{host_note}{left}"


async def _granted(nc: Any, timeout: float) -> list[tuple[str, str]]:
    """Who the server says this connection is and what it may do (``$SYS.REQ.USER.INFO``, nats-server 2.10+)."""
    try:
        reply = await nc.request("$SYS.REQ.USER.INFO", b"", timeout=min(timeout, 2.0))
        data = json.loads(reply.data).get("data") or {}
    except Exception:  # noqa: BLE001 - an older server, or no permission to ask: nothing to show
        return []
    expires = data.get("expires")
    lines = [
        (
            "granted",
            f"user {data.get('user', '?')} in account {data.get('account_name') or data.get('account', '?')}"
            + (f", expires in {expires / 1e9:.0f} s" if isinstance(expires, (int, float)) and expires else ""),
        )
    ]
    perms = data.get("permissions") or {}
    for kind in ("publish", "subscribe"):
        rules = perms.get(kind) or {}
        allow, deny = rules.get("allow") or [], rules.get("deny") or []
        if allow or deny:
            text = f"allow {', '.join(allow) or '-'}" + (f"; deny {', '.join(deny)}" if deny else "")
            lines.append((kind, text[:400]))
    return lines


_PROBE_SOURCES = ("mlflow", "spark", "data")  # what the library publishes under a namespace


async def _probe_publish(
    nc: Any, namespace: str, timeout: float, errors: list[str], denied: asyncio.Event, say: Any, problem: Any
) -> None:
    """Publish probes the server refuses or not (a stream refuses a message naming another stream: never
    stored). The whole namespace first; when refused (an identity granted some sources), each source."""

    async def refused(subjects: list[str]) -> set[str]:
        denied.clear()
        seen = len(errors)
        inbox, answered = nc.new_inbox(), asyncio.Event()

        async def on_reply(msg: Any) -> None:
            answered.set()

        await nc.subscribe(inbox, cb=on_reply, max_msgs=len(subjects))
        headers = {"Nats-Expected-Stream": "databricks-nats-doctor-probe"}
        for subject in subjects:
            await nc.publish(subject, b"", reply=inbox, headers=headers)
        await nc.flush(timeout=max(1, int(timeout)))
        waits = [asyncio.ensure_future(e.wait()) for e in (answered, denied)]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if len(subjects) > 1:
            await nc.flush(timeout=max(1, int(timeout)))  # the server's -ERR for each refused one
        text = " ".join(errors[seen:]).lower()
        return {s for s in subjects if f'"{s.lower()}"' in text}

    if not await refused([f"{namespace}._doctor.probe"]):
        say("permission", f"may publish to {namespace}.>")
        return
    whole = errors[-1][:200] if errors else "refused"
    subjects = {source: f"{namespace}.{source}._doctor.probe" for source in _PROBE_SOURCES}
    no = await refused(list(subjects.values()))
    allowed = [source for source, subject in subjects.items() if subject not in no]
    if allowed:
        say("permission", f"may publish to {namespace}.{{{','.join(allowed)}}}.> (not all of {namespace}.>)")
    else:
        problem(f"no permission to publish to {namespace}.> ({whole})")


async def _doctor(settings: Any, timeout: float, say: Any, problem: Any) -> None:
    import nats
    from nats.js.errors import NotFoundError

    from databricks_nats._factory import default_identity
    from databricks_nats.integrations.databricks import DatabricksSecrets
    from databricks_nats.transport.auth import credentials_source
    from databricks_nats.transport.credential_provider import CredentialProvider
    from databricks_nats.transport.stream import _differences, wanted_config
    from databricks_nats.values import redact_url

    try:
        identity = default_identity(settings)
    except Exception as e:  # noqa: BLE001 - a missing extra (botocore): one problem line
        problem(str(e))
        return
    provider = CredentialProvider(settings, secrets=DatabricksSecrets(), identity=identity)
    await asyncio.get_running_loop().run_in_executor(None, provider.refresh)
    if provider.last_error:
        problem(f"credentials from {credentials_source(settings)}: {provider.last_error}")
    else:
        say("credentials", provider.current.describe())
        if identity is not None and provider.current.token is not None:
            say("identity", _presented(provider.current.token.reveal(), provider.current.expires_at))
    errors: list[str] = []
    denied = asyncio.Event()

    async def on_error(e: Exception) -> None:
        errors.append(str(e))
        if "permissions violation" in str(e).lower():
            denied.set()

    urls = ", ".join(redact_url(u) for u in settings.url)
    try:
        nc = await nats.connect(
            list(settings.url),
            allow_reconnect=False,
            max_reconnect_attempts=1,  # nats-py retries each server forever-ish otherwise, even without reconnect
            reconnect_time_wait=0,
            connect_timeout=timeout,
            error_cb=on_error,
            name=f"{settings.client_name}-doctor",
            **provider.connect_options(),
        )
    except Exception as e:  # noqa: BLE001 - every failure to connect is one problem line
        problem(f"cannot connect to {urls}: {type(e).__name__}: {str(e) or 'no detail'}"[:300])
        return
    try:
        trips = []
        for _ in range(3):
            t0 = time.perf_counter()
            await nc.flush(timeout=max(1, int(timeout)))
            trips.append((time.perf_counter() - t0) * 1000)
        say("connection", f"{redact_url(str(nc.connected_url.geturl() if nc.connected_url else urls))}, "
            f"round trip {min(trips):.2f} ms")  # fmt: skip
        version = nc.connected_server_version
        say("server", f"nats-server {version.major}.{version.minor}.{version.patch}, max payload {nc.max_payload}")
        for check, detail in await _granted(nc, timeout):
            say(check, detail)
        js: Any = nc.jetstream(timeout=timeout)
        try:
            await js.account_info()
            say("jetstream", "available")
        except Exception as e:  # noqa: BLE001 - no responders, disabled for the account, …
            problem(f"JetStream is not available on the server or for this account ({type(e).__name__})")
            js = None
        if js is not None:
            name = settings.stream_name
            try:
                info = await js.stream_info(name)
                cfg = info.config
                say("stream", f"{name} on {', '.join(cfg.subjects or [])}: max age {cfg.max_age or 0:g} s, "
                    f"max bytes {cfg.max_bytes}, {info.state.messages} messages")  # fmt: skip
                for field, (have, want) in _differences(cfg, wanted_config(settings)).items():
                    problem(f"stream {name}: {field} is {have!r}, settings want {want!r}")
            except NotFoundError:
                if settings.auto_create_stream:
                    say("stream", f"{name} does not exist yet; the publisher creates it at first connect")
                else:
                    problem(f"stream {name} does not exist (auto_create_stream off): databricks-nats streams ensure")
        await _probe_publish(nc, settings.namespace, timeout, errors, denied, say, problem)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def cmd_doctor(args: argparse.Namespace) -> int:
    from databricks_nats.errors import ConfigurationError

    problems: list[str] = []

    def say(check: str, detail: str) -> None:
        print(f"ok       {check:<12} {detail}", flush=True)

    def problem(text: str) -> None:
        problems.append(text)
        print(f"PROBLEM  {text}", flush=True)

    try:
        settings, context, origins = _doctor_settings(args)
    except ConfigurationError as e:
        print(f"databricks-nats: doctor: {e}", file=sys.stderr)
        return 1
    for name, origin in origins.items():
        say("setting", f"{name} = {_shown(settings, name)} from {origin}")
    say("namespace", f"{settings.namespace}.> (stream {settings.stream_name})")
    known = ", ".join(f"{k}={getattr(context, k)} ({v})" for k, v in context.sources) or "not on Databricks"
    say("context", known[:300])
    from databricks_nats.status import compute_families
    from databricks_nats.transport.loop import run_sync

    for family, state in compute_families().items():
        say("events", f"{family}: {'live' if state['live'] else 'not available'} ({state['detail']})")
    run_sync(_doctor(settings, args.timeout, say, problem))
    for text in problems:
        print(f"databricks-nats doctor: {text}", file=sys.stderr)
    return 1 if problems else 0
