"""``databricks-nats prefect-bridge``: the bridge (or a deployment runner) as a long-lived process.

    databricks-nats prefect-bridge --workspace 1234 --env prod                      # every event → Prefect
    databricks-nats prefect-bridge --type mlflow.model.alias_set --match alias=champion \\
        --deployment deploy-model/prod --param model=name --param version=version  # run a deployment

The Prefect API comes from Prefect's own settings (``PREFECT_API_URL``, ``PREFECT_API_KEY`` or the active
profile), the NATS settings from the usual ``DATABRICKS_NATS_*`` environment unless given here. SIGINT
or SIGTERM stops it after the event in hand (which is then acknowledged or handed back).

    databricks-nats prefect-forward --state-file /var/lib/prefect-forward/state.json --block prod

forwards Prefect flow-run and task-run state changes to NATS (``forwarder``) until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["add_parser", "cmd_prefect_bridge", "cmd_prefect_forward"]


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"databricks-nats prefect-bridge: {what} must be NAME=VALUE, not {item!r}")
        out[name] = value
    return out


def _start(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``prefect-bridge`` subcommand on the ``databricks-nats`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "prefect-bridge",
        help="forward events to Prefect as Prefect events (or run a deployment per event)",
        description="Forward NATS events to Prefect as Prefect events (durable consumer; ack after Prefect "
        "confirmed), or with --deployment run a deployment per event. Stops on SIGINT/SIGTERM.",
    )
    p.add_argument(
        "--type",
        dest="event_type",
        metavar="TYPE",
        help="event type, e.g. mlflow.model.alias_set (default: every event)",
    )
    p.add_argument("--match", action="append", metavar="FIELD=VALUE", help="keep events whose data has this value")
    p.add_argument("--durable", help="durable consumer name (default: prefect-bridge, or prefect-run-<deployment>)")
    p.add_argument("--start", type=_start, default="new", help="new (default), all or a stream sequence")
    _nats_options(p)
    p.add_argument("--deployment", help="run this deployment ('<flow>/<deployment>') per event instead of bridging")
    p.add_argument("--param", action="append", metavar="NAME=FIELD", help="flow parameter from a data field/template")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for each flow run to finish")
    p.add_argument("--max-events", type=int, help="exit after this many events")
    p.add_argument("--idle-timeout", type=float, help="exit when no event came for this many seconds")
    p.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    p.set_defaults(func=cmd_prefect_bridge)
    f: argparse.ArgumentParser = subparsers.add_parser(
        "prefect-forward",
        help="forward Prefect flow-run and task-run state changes to NATS",
        description="Publish Prefect flow-run and task-run state changes (running, completed, failed, crashed, "
        "cancelled) as prefect.flow_run.* / prefect.task_run.* events, resuming after a restart from --state-file. "
        "Stops on SIGINT/SIGTERM.",
    )
    f.add_argument("--state-file", required=True, help="file keeping the resume point (created if missing)")
    f.add_argument("--lookback", type=float, default=300.0, help="seconds re-read before the resume point")
    f.add_argument("--sweep-interval", type=float, default=30.0, help="seconds between catch-up reads")
    _nats_options(f)
    f.add_argument("--max-events", type=int, help="exit after this many events")
    f.add_argument("--idle-timeout", type=float, help="exit when no event came for this many seconds")
    f.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    f.set_defaults(func=cmd_prefect_forward)
    return p


def _nats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="NATS server URL(s) (default: DATABRICKS_NATS_URL)")
    p.add_argument("--workspace")
    p.add_argument("--env")
    p.add_argument("--block", help="a saved NatsSettings Prefect block with the NATS settings and credentials")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    found = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    if args.block:
        found["block"] = args.block
    return found


def _stopped_by(result: Any, stop: Any) -> str:
    if result.stopped_by == "stop":
        return getattr(stop, "received", "") or "signal"
    return result.stopped_by or "signal"


async def _run(args: argparse.Namespace) -> str:
    from databricks_nats.integrations.prefect import bridge_async, run_deployment_on_async, stop_on_signals

    stop = stop_on_signals()
    common: dict[str, Any] = {
        "match": _pairs(args.match, "--match") or None,
        "start": args.start,
        "max_events": args.max_events,
        "idle_timeout": args.idle_timeout,
        "stop": stop,
        **_settings(args),
    }
    if args.durable:
        common["durable"] = args.durable
    if args.deployment:
        params = _pairs(args.param, "--param")
        result = await run_deployment_on_async(
            args.deployment, args.event_type, parameters=params, wait=args.wait, **common
        )
    else:
        result = await bridge_async(args.event_type, **common)
    refused = f", {result.refused} refused as a loop" if result.refused else ""
    return f"{result.count} event(s) handled{refused} (stopped: {_stopped_by(result, stop)})"


async def _forward(args: argparse.Namespace) -> str:
    from databricks_nats.integrations.prefect import forward_async, stop_on_signals

    stop = stop_on_signals()
    result = await forward_async(
        args.state_file,
        lookback=args.lookback,
        sweep_interval=args.sweep_interval,
        max_events=args.max_events,
        idle_timeout=args.idle_timeout,
        stop=stop,
        **_settings(args),
    )
    return f"{result.count} event(s) forwarded (stopped: {_stopped_by(result, stop)})"


def _main(args: argparse.Namespace, command: str, banner: str, run: Any) -> int:
    try:
        import prefect  # noqa: F401 - a clear message when the extra is missing
    except ImportError:
        print(f"databricks-nats: {command} needs Prefect: pip install 'databricks-nats[prefect]'", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("databricks_nats.prefect").setLevel(logging.WARNING if args.quiet else logging.INFO)
    print(f"databricks-nats {command}: {banner}", file=sys.stderr, flush=True)
    try:
        from databricks_nats.transport.loop import run_sync

        summary = run_sync(run(args))
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        from databricks_nats.errors import DatabricksNatsError

        if isinstance(e, DatabricksNatsError):
            raise
        print(f"databricks-nats: {command} stopped: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(summary, flush=True)
    return 0


def cmd_prefect_bridge(args: argparse.Namespace) -> int:
    """Run the bridge until stopped; print what it did."""
    what = f"deployment {args.deployment}" if args.deployment else "Prefect events"
    return _main(args, "prefect-bridge", f"{args.event_type or 'every event'} → {what}", _run)


def cmd_prefect_forward(args: argparse.Namespace) -> int:
    """Run the forwarder until stopped; print what it did."""
    return _main(args, "prefect-forward", f"Prefect state changes → NATS (resume point: {args.state_file})", _forward)
