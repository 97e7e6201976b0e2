"""``databricks-nats monitor``: the environment's event rates, latency, publisher health and consumer lag.

A live rich view by default; ``--json`` prints one JSON document per refresh (exactly one with ``--once``);
``--once`` prints the last ``--window`` seconds and exits 1 when any row is red (for CI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

__all__ = ["add_parser", "cmd_monitor"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="event rates, publish latency, publisher health and consumer lag of an environment (live, or --once)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url")
    p.add_argument("--workspace")
    p.add_argument("--env")
    p.add_argument("--json", action="store_true", help="print JSON (one document per refresh; one with --once)")
    p.add_argument("--once", action="store_true", help="print the last --window seconds and exit (1 when red)")
    p.add_argument("--window", type=float, default=60.0, metavar="SECONDS", help="rates and latency over (60)")
    p.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS", help="seconds between updates (2)")
    p.add_argument("--max-p99-ms", type=float, metavar="N", help="red when publish→stream p99 exceeds N ms")
    p.add_argument("--max-lag", type=int, metavar="N", help="red when a durable consumer has more than N unfinished")
    p.add_argument(
        "--stale-after", type=float, metavar="SECONDS", help="a publisher is stale after this long without heartbeat "
        "(default: 3 x its own interval)"
    )  # fmt: skip
    p.add_argument("--alert", action="store_true", help="publish system.latency.degraded when p99 > --max-p99-ms")
    p.set_defaults(func=cmd_monitor)


def _fail(message: str, code: int = 2) -> int:
    print(f"databricks-nats monitor: {message}", file=sys.stderr)
    return code


def cmd_monitor(args: argparse.Namespace) -> int:
    from databricks_nats.monitor.model import Thresholds
    from databricks_nats.monitor.view import INSTALL_HINT
    from databricks_nats.settings import resolve_settings

    if args.alert and args.max_p99_ms is None:
        return _fail("--alert needs --max-p99-ms (the bound whose crossing is announced)")
    if args.window <= 0 or args.refresh <= 0:
        return _fail("--window and --refresh must be positive")
    if not args.json:
        try:
            import rich  # noqa: F401
        except ImportError:
            return _fail(INSTALL_HINT)
    overrides = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    settings = resolve_settings(**overrides)
    limits = Thresholds(max_p99_ms=args.max_p99_ms, max_lag=args.max_lag, stale_after_s=args.stale_after)
    try:
        return asyncio.run(_run(args, settings, limits))
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        return _fail(f"cannot monitor {settings.stream_name}: {type(e).__name__}: {e}", 1)


async def _run(args: argparse.Namespace, settings: Any, limits: Any) -> int:
    from databricks_nats.monitor.collect import Alerter, Collector

    collector = Collector(settings, args.window, limits)
    alerter = Alerter(settings, args.max_p99_ms if args.alert else None)
    try:
        await collector.open()
        await collector.catch_up()
        if args.once:
            snap = await collector.snapshot()
            alerter.check(snap)
            _print(snap, args.json)
            return 1 if snap.red else 0
        if args.json:
            while True:
                snap = await collector.snapshot()
                alerter.check(snap)
                _print(snap, True)
                await collector.poll(args.refresh)
        await _live(collector, alerter, args.refresh)
        return 0
    finally:
        await collector.close()
        if not await asyncio.to_thread(alerter.close):
            print("databricks-nats monitor: an alert was not acknowledged by the stream", file=sys.stderr)


def _print(snap: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(snap.as_dict(), default=str), flush=True)
        return
    from rich.console import Console

    from databricks_nats.monitor.view import render

    Console(width=None if sys.stdout.isatty() else 140).print(render(snap))  # a CI log is wider than 80


async def _live(collector: Any, alerter: Any, refresh: float) -> None:
    from rich.live import Live

    from databricks_nats.monitor.view import render

    snap = await collector.snapshot()
    with Live(render(snap), auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
        while True:
            await collector.poll(refresh)
            snap = await collector.snapshot()
            alerter.check(snap)
            live.update(render(snap), refresh=True)
