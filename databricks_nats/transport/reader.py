"""Reading the stream back: short-lived connections, time→sequence lookup and ranged reads.

Used by the event log (``read_events``) and the consumers. Every read uses an ephemeral consumer with
no acks that the server deletes by itself shortly after the reader goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

from databricks_nats.model.position import StartPosition
from databricks_nats.ports import SecretSource, TokenSource
from databricks_nats.settings import Settings
from databricks_nats.transport.errors import nats_errors
from databricks_nats.transport.loop import run_sync  # re-exported for callers of reader.run_sync

__all__ = ["bounds", "connect", "deliver_options", "read_range", "run_sync", "seq_at"]

FETCH = 500
_IDLE = 30.0  # seconds before the server deletes an abandoned reader's consumer


async def connect(
    settings: Settings, name: str = "reader", secrets: SecretSource | None = None, identity: TokenSource | None = None
) -> Any:
    """A plain connection (no reconnect loop) with the configured credentials; ``secrets`` reads secret scopes,
    ``identity`` gets the identity token (``oidc_token``, ``aws_iam``), presented with the inbox prefix the auth
    service grants for it (``auth.inbox_prefix``: pulls and API replies come back there)."""
    import nats

    from databricks_nats.transport.auth import auth_options

    with nats_errors(f"connect to NATS at {settings.url}"):
        return await nats.connect(
            list(settings.url),
            name=f"{settings.client_name}-{name}",
            connect_timeout=settings.connect_timeout,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # without it nats-py retries an unreachable server for minutes
            reconnect_time_wait=0,
            error_cb=_quiet,  # failures surface as StreamError to the caller, not as nats-py's logged tracebacks
            **auth_options(settings, secrets=secrets, identity=identity),
        )


async def _quiet(_error: Exception) -> None:
    return None


def deliver_options(position: StartPosition) -> dict[str, Any]:
    """The ``ConsumerConfig`` fields that make a new consumer start at ``position``."""
    from nats.js.api import DeliverPolicy

    if position.kind == "seq":
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": position.seq}
    if position.kind == "time":
        return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": position.stamp}
    return {"deliver_policy": DeliverPolicy(position.kind)}


async def bounds(js: Any, stream: str) -> tuple[int, int]:
    """(first, last) sequence numbers of a stream; last < first when it is empty."""
    state = (await js.stream_info(stream)).state
    return int(state.first_seq), int(state.last_seq)


def _consumer_config(filters: Sequence[str], **start: Any) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig

    config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=_IDLE, mem_storage=True, **start)
    if len(filters) == 1:
        config.filter_subject = filters[0]
    elif filters:
        config.filter_subjects = list(filters)
    return config


async def seq_at(js: Any, stream: str, when: _dt.datetime, filters: Sequence[str] = ()) -> int | None:
    """The sequence of the first message stored at or after ``when``, or None when there is none."""
    config = _consumer_config(filters, **deliver_options(StartPosition.at(when)))
    info = await js.add_consumer(stream, config)
    try:
        sub = await js.pull_subscribe_bind(info.name, stream=stream)
        try:
            msgs = await sub.fetch(1, timeout=1.0)
        except asyncio.TimeoutError:
            return None
        finally:
            await sub.unsubscribe()
        return int(msgs[0].metadata.sequence.stream) if msgs else None
    finally:
        await _delete(js, stream, info.name)


async def read_range(js: Any, stream: str, filters: Sequence[str], lo: int, hi: int) -> AsyncIterator[Any]:
    """Yield the stored messages with ``lo <= sequence <= hi`` that match ``filters``, in order."""
    from nats.js.api import DeliverPolicy

    if hi < lo:
        return
    config = _consumer_config(filters, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=lo)
    info = await js.add_consumer(stream, config)
    sub = await js.pull_subscribe_bind(info.name, stream=stream)
    try:
        while True:
            try:
                msgs = await sub.fetch(min(FETCH, hi - lo + 1), timeout=1.0)
            except asyncio.TimeoutError:
                return
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.stream > hi:
                    return
                yield msg
                if meta.num_pending == 0:
                    return
    finally:
        await sub.unsubscribe()
        await _delete(js, stream, info.name)


async def _delete(js: Any, stream: str, name: str) -> None:
    with contextlib.suppress(Exception):  # the inactive threshold removes it anyway
        await js.delete_consumer(stream, name)
