"""The ``databricks-nats`` command: demo, tail, streams, doctor (``doctor.py``), schema, monitor (``monitor/``), and the
integrations' own (``prefect-bridge``, ``prefect-forward``, ``auth-service``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from databricks_nats.eventlines import print_events

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> int:
    print(f"databricks-nats: {message}", file=sys.stderr)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from databricks_nats import _demo

    return _demo.run(args)


def cmd_tail(args: argparse.Namespace) -> int:
    from databricks_nats.consumer import subscribe
    from databricks_nats.model.position import StartPosition
    from databricks_nats.settings import resolve_settings

    overrides = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    try:
        settings = resolve_settings(**overrides)
        start = StartPosition.parse(args.since or "new", "--since")
        with subscribe(args.type, subjects=[args.filter] if args.filter else None, start=start, **overrides) as sub:
            print_events(sub, args.json, args.count)
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


def _run_doctor(args: argparse.Namespace) -> int:
    from databricks_nats.doctor import cmd_doctor

    return cmd_doctor(args)


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
    doctor.set_defaults(func=_run_doctor)
    schema = sub.add_parser("schema", help="print the JSON Schema of an event type ('envelope' for the envelope)")
    schema.add_argument("type", nargs="?")
    schema.set_defaults(func=cmd_schema)
    from databricks_nats.integrations.prefect.cli import add_parser as add_prefect_bridge

    add_prefect_bridge(sub)  # imports Prefect only when the command runs
    from databricks_nats.integrations.identity.cli import add_parser as add_auth_service

    add_auth_service(sub)
    from databricks_nats.monitor.cli import add_parser as add_monitor

    add_monitor(sub)  # imports rich only when the command runs
    from databricks_nats.integrations.webhooks.cli import add_parser as add_webhook_receiver

    add_webhook_receiver(sub)
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
