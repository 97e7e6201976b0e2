"""The ``databricks-nats`` command: demo, tail, streams, doctor, schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> int:
    print(f"databricks-nats: {message}", file=sys.stderr)
    return code


def format_event(envelope: dict[str, Any], subject: str) -> str:
    """One readable line: time, type, subject and the event's main pointers."""
    data = envelope.get("data") or {}
    pointers = [
        f"{k}={data[k]}"
        for k in ("run_id", "name", "version", "alias", "model_id", "query_id", "batch_id", "table", "duration_ms")
        if data.get(k) not in (None, "")
    ]
    if envelope.get("dataref"):
        pointers.append(f"ref={envelope['dataref']}")
    stamp = str(envelope.get("time", ""))[11:23]
    etype = str(envelope.get("type", "")).removeprefix("databricks.")
    return f"{stamp}  {etype:<28} {subject}  {' '.join(pointers)[:160]}"


def _print_events(
    sub: Any, as_json: bool, limit: int | None, stop: threading.Event | None = None, seen: list[int] | None = None
) -> int:
    """Print events from a subscription until ``limit`` events or ``stop``; return how many."""
    seen = seen if seen is not None else [0]
    while (limit is None or seen[0] < limit) and not (stop is not None and stop.is_set()):
        try:
            event = sub.next(timeout=0.5 if stop is not None else None)
        except TimeoutError:
            continue
        print(json.dumps(event.envelope) if as_json else format_event(event.envelope, event.subject or ""), flush=True)
        seen[0] += 1
    return seen[0]


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from databricks_nats.testing import NatsServer

    with NatsServer() as srv:
        print(f"started an embedded nats-server with JetStream at {srv.url}")
        yield srv.url


def cmd_demo(args: argparse.Namespace) -> int:
    import datetime as dt

    import databricks_nats as dn
    from databricks_nats import _demo
    from databricks_nats.consumer import subscribe

    with _server(args.url) as url:
        workdir = tempfile.mkdtemp(prefix="dbx-nats-demo-")
        settings = dn.configure(url=url, workspace=args.workspace, env=args.env, spool_dir=f"{workdir}/spool")
        dn.ensure_stream()
        stop, seen = threading.Event(), [0]
        sub = subscribe(start=dt.datetime.now(dt.timezone.utc))
        printer = threading.Thread(target=_print_events, args=(sub, False, None, stop, seen), daemon=True)
        print(f"listening on {settings.namespace}.>  (events arrive live below)\n")
        printer.start()
        (_demo.simulated if args.simulate else _demo.real)(dn, workdir)
        result = dn.flush(timeout=30)
        stats = dn.stats()
        deadline = time.monotonic() + 10
        while seen[0] < stats["acked"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        printer.join(5)
        sub.close()
        dn.shutdown()
        lat = stats["ack_latency_ms"]
        print(
            f"\n{stats['emitted']} events emitted, {stats['acked']} acked by JetStream stream {settings.stream_name}, "
            f"{seen[0]} received live; ack latency p50 {lat['p50']} ms, p99 {lat['p99']} ms"
        )
        return 0 if result.ok and seen[0] == stats["emitted"] == stats["acked"] else 1


def cmd_tail(args: argparse.Namespace) -> int:
    from databricks_nats.consumer import subscribe
    from databricks_nats.model.position import StartPosition
    from databricks_nats.settings import resolve_settings

    overrides = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    try:
        settings = resolve_settings(**overrides)
        start = StartPosition.parse(args.since or "new", "--since")
        with subscribe(args.type, subjects=[args.filter] if args.filter else None, start=start, **overrides) as sub:
            _print_events(sub, args.json, args.count)
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        return _fail(f"cannot tail {settings.stream_name}: {type(e).__name__}: {e}", 1)
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    import databricks_nats as dn

    overrides = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    try:
        report = dn.ensure_stream(update=args.update, **overrides) if args.action == "ensure" else _show(overrides)
    except dn.DatabricksNatsError as e:
        return _fail(str(e), 1)
    print(
        json.dumps(
            {
                "stream": report.name,
                "action": report.action,
                "subjects": report.subjects,
                "differences": report.differences,
                "config": report.config,
            },
            indent=2,
            default=str,
        )
    )
    return 0


def _show(overrides: dict[str, Any]) -> Any:
    import databricks_nats as dn

    try:
        return dn.ensure_stream(update=False, **overrides)
    except dn.StreamMismatch as e:
        from databricks_nats.transport.stream import StreamReport

        return StreamReport(e.stream, "differs", [], e.differences)


def cmd_schema(args: argparse.Namespace) -> int:
    from databricks_nats.model import catalog

    types = {t.name: t for t in catalog.all_types()}
    if args.type == "envelope":
        print(json.dumps(catalog.envelope_schema(), indent=2))
        return 0
    if args.type:
        name = args.type.removeprefix("databricks.")
        if name not in types:
            return _fail(f"unknown event type {args.type!r}; known: {', '.join(types)}")
        print(json.dumps(types[name].schema(), indent=2))
        return 0
    print(json.dumps({name: t.schema() for name, t in types.items()}, indent=2))
    return 0


# ---- doctor -------------------------------------------------------------------------------------------


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
    from databricks_nats.transport.auth import CredentialProvider, credentials_source
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
        return _fail(f"doctor: {e}", 1)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="databricks-nats", description="Databricks ML events on NATS.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demo on an embedded nats-server and show the events live")
    demo.add_argument("--url", help="use this NATS server instead of starting one")
    demo.add_argument("--workspace", default="1234567890")
    demo.add_argument("--env", default="dev")
    demo.add_argument("--simulate", action="store_true", help="emit a simulated run instead of training (fast)")
    demo.set_defaults(func=cmd_demo)
    tail = sub.add_parser("tail", help="print events as they arrive (or from a time or sequence in the stream)")
    tail.add_argument("filter", nargs="?", help="raw subject filter (default: this namespace's '>')")
    tail.add_argument("--type", help="event type, e.g. mlflow.model.alias_set or mlflow.run.* (instead of FILTER)")
    tail.add_argument("--since", help="new (default), all, last, a stream sequence, an ISO time or 10m / 2h / 1d ago")
    tail.add_argument("--url")
    tail.add_argument("--workspace")
    tail.add_argument("--env")
    tail.add_argument("--json", action="store_true", help="print raw CloudEvents JSON")
    tail.add_argument("--count", type=int, help="exit after this many events")
    tail.set_defaults(func=cmd_tail)
    streams = sub.add_parser("streams", help="provision or show the JetStream stream of a workspace/env")
    streams.add_argument("action", choices=["ensure", "show"])
    streams.add_argument("--url")
    streams.add_argument("--workspace")
    streams.add_argument("--env")
    streams.add_argument("--update", action="store_true", help="apply differences to an existing stream")
    streams.set_defaults(func=cmd_streams)
    doctor = sub.add_parser("doctor", help="check connectivity, JetStream, the stream, permissions and credentials")
    doctor.add_argument("--url")
    doctor.add_argument("--workspace")
    doctor.add_argument("--env")
    doctor.add_argument("--secret-scope", help="read the NATS credentials from this Databricks secret scope")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per network check")
    for name in ("nats_env", "nats_workspace_id", "nats_job_id", "nats_job_run_id", "nats_task_key"):
        doctor.add_argument(f"--{name}", help=argparse.SUPPRESS)  # job parameters a bundle pushes to tasks
    doctor.set_defaults(func=cmd_doctor)
    schema = sub.add_parser("schema", help="print the JSON Schema of an event type ('envelope' for the envelope)")
    schema.add_argument("type", nargs="?")
    schema.set_defaults(func=cmd_schema)
    from databricks_nats.integrations.prefect.cli import add_parser as add_prefect_bridge

    add_prefect_bridge(sub)  # imports Prefect only when the command runs
    from databricks_nats.integrations.identity.cli import add_parser as add_auth_service

    add_auth_service(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as e:
        from databricks_nats.errors import DatabricksNatsError

        if isinstance(e, DatabricksNatsError):
            return _fail(str(e))
        raise


if __name__ == "__main__":
    sys.exit(main())
