"""The monitor's terminal view: a snapshot as rich tables (rates and latency, publishers, consumers).

Red rows crossed a threshold (their reasons are in the last column); a publisher that is not connected is
yellow while its heartbeats still arrive. rich is the optional ``monitor`` extra: imported only here.
"""

from __future__ import annotations

import time
from typing import Any

from databricks_nats.monitor.model import Snapshot, short_source

__all__ = ["INSTALL_HINT", "render"]

INSTALL_HINT = (
    "the live view needs rich: pip install 'databricks-nats[monitor]' (from a checkout: pip install '.[monitor]'); "
    "--json works without it"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _num(value: int | float | None) -> str:
    return "-" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def render(snap: Snapshot) -> Any:
    """A rich renderable of ``snap``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    limits = snap.thresholds
    reds = sum(r.red for r in snap.rates) + sum(p.red for p in snap.publishers) + sum(c.red for c in snap.consumers)
    reasons = [*snap.why, *([f"{reds} row(s) over a threshold"] if reds else [])]
    status = Text("RED: " + "; ".join(reasons), style="bold red") if reasons else Text("ok", style="green")
    head = Text.assemble(
        ("databricks-nats monitor", "bold"),
        f"  {snap.namespace}  stream {snap.stream}  window {snap.window_s:g} s  ",
        time.strftime("%H:%M:%S", time.localtime(snap.at)),
        "\n",
        f"{snap.events:,} events  {snap.per_s:,.2f}/s  publish→stream p50 {_ms(snap.p50_ms)} ms  "
        f"p99 {_ms(snap.p99_ms)} ms",
        f" (bound {limits.max_p99_ms:g} ms)" if limits.max_p99_ms is not None else "",
        f"  alerts sent {snap.alerts}" if snap.alerts else "",
        "\n",
        status,
    )

    rates = Table(title="Events by source and type", title_justify="left", expand=False)
    rates.add_column("source", no_wrap=True)
    rates.add_column("type", no_wrap=True)
    rates.add_column("events", justify="right")
    rates.add_column("/s", justify="right")
    rates.add_column("p50 ms", justify="right")
    rates.add_column("p99 ms", justify="right")
    rates.add_column("", style="red")
    for r in snap.rates:
        rates.add_row(
            short_source(r.source),
            r.type,
            _num(r.events),
            f"{r.per_s:,.2f}",
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            "; ".join(r.why),
            style="red" if r.red else None,
        )

    pubs = Table(title="Publishers (heartbeats)", title_justify="left")
    pubs.add_column("publisher", no_wrap=True)
    pubs.add_column("state", no_wrap=True)
    for col in ("last seen", "queue", "spool", "unacked age", "acked", "dropped"):
        pubs.add_column(col, justify="right")
    for p in snap.publishers:
        state = f"STALE ({'; '.join(p.why)})" if p.stale else p.state + (f" ({p.reason})" if p.reason else "")
        style = "red" if p.red else ("dim" if p.state == "stopped" else None if p.state == "connected" else "yellow")
        pubs.add_row(
            p.publisher_id,
            state,
            f"{p.age_s:,.0f} s ago",
            _num(p.queue_depth),
            _bytes(p.spool_bytes),
            "-" if p.oldest_unacked_age_s is None else f"{p.oldest_unacked_age_s:,.1f} s",
            _num(p.acked),
            _num(p.dropped),
            style=style,
        )

    cons = Table(title="Durable consumers", title_justify="left")
    cons.add_column("consumer", no_wrap=True)
    cons.add_column("filter")
    for col in ("pending", "ack pending", "redelivered", "lag"):
        cons.add_column(col, justify="right")
    cons.add_column("")
    for c in snap.consumers:
        cons.add_row(
            c.name,
            ", ".join(f.removeprefix(snap.namespace + ".") for f in c.filter.split(", ")),
            _num(c.pending),
            _num(c.ack_pending),
            _num(c.redelivered),
            _num(c.lag),
            "; ".join(c.why),
            style="red" if c.red else None,
        )
    parts: list[Any] = [head, rates]
    parts.append(pubs if snap.publishers else Text("no publisher heartbeats in the stream", style="dim"))
    parts.append(cons if snap.consumers else Text("no durable consumers", style="dim"))
    return Group(*parts)
