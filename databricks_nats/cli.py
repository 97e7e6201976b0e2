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
        for k in ("run_id", "name", "version", "alias", "model_id", "query_id", "table")
        if data.get(k) not in (None, "")
    ]
    if envelope.get("dataref"):
        pointers.append(f"ref={envelope['dataref']}")
    stamp = str(envelope.get("time", ""))[11:23]
    etype = str(envelope.get("type", "")).removeprefix("databricks.")
    return f"{stamp}  {etype:<28} {subject}  {' '.join(pointers)[:160]}"


async def _tail(
    url: str, subject: str, as_json: bool, stop: threading.Event, ready: threading.Event, limit: int | None = None
) -> int:
    import nats

    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=True, max_reconnect_attempts=-1)
    seen = 0
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        nonlocal seen
        try:
            envelope = json.loads(msg.data)
        except ValueError:
            return
        print(json.dumps(envelope) if as_json else format_event(envelope, msg.subject), flush=True)
        seen += 1
        if limit is not None and seen >= limit:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    ready.set()
    while not stop.is_set() and not done.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), 0.2)
    await nc.drain()
    return seen


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from databricks_nats.testing import NatsServer

    with NatsServer() as srv:
        print(f"started an embedded nats-server with JetStream at {srv.url}")
        yield srv.url


def _demo_workload(dn: Any) -> None:
    """What a training run announces (simulated here; the MLflow hook emits the same from real runs)."""
    exp, run = "42", "3f2a9c0d1e"
    base = {
        "experiment_id": exp,
        "run_id": run,
        "run_name": "churn-xgb",
        "artifact_uri": f"dbfs:/databricks/mlflow/{exp}/{run}/artifacts",
    }
    dn.emit(
        "mlflow.run.started", {**base, "run_url": f"#mlflow/experiments/{exp}/runs/{run}", "user": "demo@example.com"}
    )
    dn.emit("mlflow.run.params", {**base, "params": {"max_depth": "6", "eta": "0.1"}})
    for step in range(1, 6):
        dn.emit(
            "mlflow.run.metrics",
            {
                **base,
                "metrics": {"auc": 0.80 + step / 100, "loss": float("nan") if step == 1 else 1 / step},
                "points": 2,
                "final": False,
            },
        )
        time.sleep(0.05)
    dn.emit(
        "mlflow.run.artifacts",
        {**base, "files": [{"path": "model/MLmodel", "size": 412}], "file_count": 1, "total_bytes": 412},
    )
    dn.emit(
        "mlflow.model.version_created",
        {
            "name": "main.ml.churn",
            "version": "3",
            "run_id": run,
            "model_uri": "models:/main.ml.churn/3",
            "catalog_name": "main",
            "is_unity_catalog": True,
        },
    )
    dn.emit(
        "mlflow.model.alias_set",
        {
            "name": "main.ml.churn",
            "alias": "champion",
            "version": "3",
            "model_uri": "models:/main.ml.churn@champion",
            "catalog_name": "main",
            "is_unity_catalog": True,
        },
    )
    dn.emit(
        "mlflow.run.finished",
        {
            **base,
            "status": "FINISHED",
            "duration_ms": 5230,
            "metrics": {"auc": 0.85},
            "run_url": f"#mlflow/experiments/{exp}/runs/{run}",
        },
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import databricks_nats as dn

    with _server(args.url) as url:
        spool = tempfile.mkdtemp(prefix="dbx-nats-demo-")
        settings = dn.configure(url=url, workspace=args.workspace, env=args.env, spool_dir=spool)
        stop, ready = threading.Event(), threading.Event()
        box: dict[str, int] = {}
        th = threading.Thread(
            target=lambda: box.update(n=asyncio.run(_tail(url, f"{settings.namespace}.>", False, stop, ready))),
            daemon=True,
        )
        th.start()
        if not ready.wait(10):
            return _fail(f"cannot subscribe at {url}", 1)
        print(f"listening on {settings.namespace}.>  (events arrive live below)\n")
        _demo_workload(dn)
        result = dn.flush(timeout=15)
        time.sleep(0.3)
        stop.set()
        th.join(5)
        stats = dn.stats()
        dn.shutdown()
        lat = stats["ack_latency_ms"]
        print(
            f"\n{stats['emitted']} events emitted, {stats['acked']} acked by JetStream stream {settings.stream_name}, "
            f"{box.get('n', 0)} received live; ack latency p50 {lat['p50']} ms, p99 {lat['p99']} ms"
        )
        return 0 if result.ok and box.get("n", 0) == stats["emitted"] else 1


def cmd_tail(args: argparse.Namespace) -> int:
    import databricks_nats as dn

    settings = dn.get_settings() if not args.url else None
    url = args.url or settings.url[0]  # type: ignore[union-attr]
    subject = args.filter or f"{(settings or dn.get_settings()).namespace}.>"
    stop, ready = threading.Event(), threading.Event()
    try:
        asyncio.run(_tail(url, subject, args.json, stop, ready, args.count))
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        return _fail(f"cannot tail {url}: {type(e).__name__}: {e}", 1)
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
    from databricks_nats.settings import resolve_settings

    given = {
        "url": args.url,
        "workspace": args.workspace or args.nats_workspace_id,
        "env": args.env or args.nats_env,
        "secret_scope": args.secret_scope,
    }
    settings = resolve_settings(**{k: v for k, v in given.items() if v and "{{" not in v})
    context = detect_context(settings)
    return apply_context(settings, context), context


async def _doctor(settings: Any, timeout: float, say: Any, problem: Any) -> None:
    import nats
    from nats.js.errors import NotFoundError

    from databricks_nats.settings import redact_url
    from databricks_nats.transport.auth import CredentialProvider, credentials_source
    from databricks_nats.transport.stream import _differences, wanted_config

    provider = CredentialProvider(settings)
    await asyncio.get_running_loop().run_in_executor(None, provider.refresh)
    if provider.last_error:
        problem(f"credentials from {credentials_source(settings)}: {provider.last_error}")
    else:
        say("credentials", provider.current.describe())
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
        subject = f"{settings.namespace}._doctor.probe"
        inbox, answered = nc.new_inbox(), asyncio.Event()

        async def on_reply(msg: Any) -> None:
            answered.set()

        await nc.subscribe(inbox, cb=on_reply, max_msgs=1)
        # A stream refuses a message that names another stream: the probe is never stored.
        headers = {"Nats-Expected-Stream": "databricks-nats-doctor-probe"}
        await nc.publish(subject, b"", reply=inbox, headers=headers)
        await nc.flush(timeout=max(1, int(timeout)))
        waits = [asyncio.ensure_future(e.wait()) for e in (answered, denied)]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if denied.is_set():
            problem(f"no permission to publish to {settings.namespace}.> ({errors[-1][:200]})")
        else:
            say("permission", f"may publish to {settings.namespace}.>")
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
        settings, context = _doctor_settings(args)
    except ConfigurationError as e:
        return _fail(f"doctor: {e}", 1)
    say("namespace", f"{settings.namespace}.> (stream {settings.stream_name})")
    known = ", ".join(f"{k}={getattr(context, k)} ({v})" for k, v in context.sources) or "not on Databricks"
    say("context", known[:300])
    asyncio.run(_doctor(settings, args.timeout, say, problem))
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
    demo.set_defaults(func=cmd_demo)
    tail = sub.add_parser("tail", help="print events as they arrive")
    tail.add_argument("filter", nargs="?", help="subject filter (default: this namespace's '>')")
    tail.add_argument("--url")
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
