"""``read_events``: the JetStream event log as a Spark DataFrame, read in parallel on the executors.

The driver only resolves the range (stream sequence numbers from ``start``/``end``) and splits it into
disjoint sequence ranges; each partition opens its own connection and reads its range with an
ephemeral, ack-less consumer (``mapInArrow``, so it works on classic and Spark Connect sessions alike).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from databricks_nats import _api
from databricks_nats.integrations.databricks import DatabricksSecrets
from databricks_nats.integrations.identity.sources import token_source
from databricks_nats.model import catalog
from databricks_nats.model.position import Start, StartPosition
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.transport import reader
from databricks_nats.transport.errors import nats_errors

__all__ = ["EVENT_LOG_SCHEMA", "read_events", "row_of"]

EVENT_LOG_SCHEMA = (
    "id STRING, time TIMESTAMP, type STRING, source STRING, subject STRING, workspace STRING, env STRING, "
    "mlflow_run_id STRING, job_run_id STRING, dataref STRING, data STRING, stream_seq BIGINT"
)
PER_PARTITION = 10_000
MAX_PARTITIONS = 64
Bound = Start | None


def row_of(seq: int, payload: bytes, subject: str) -> dict[str, Any]:
    """One event-log row from a stored CloudEvent (unreadable payloads keep their raw text in ``data``)."""
    try:
        env = json.loads(payload)
    except ValueError:
        env = {"data": payload.decode("utf-8", "replace")}
    data = env.get("data")
    d = data if isinstance(data, dict) else {}
    etype = str(env.get("type") or "").removeprefix("databricks.")
    run = d.get("mlflow_run_id") or (d.get("run_id") or d.get("source_run_id") if etype.startswith("mlflow.") else None)
    context = d.get("context")
    context = context if isinstance(context, dict) else {}
    return {
        "id": env.get("id"),
        "time": _parse_time(env.get("time")),
        "type": etype or None,
        "source": env.get("source"),
        "subject": subject,
        "workspace": env.get("workspace"),
        "env": env.get("env"),
        "mlflow_run_id": run,
        "job_run_id": _str(context.get("job_run_id")),
        "dataref": env.get("dataref"),
        "data": json.dumps(data, separators=(",", ":"), allow_nan=False) if data is not None else None,
        "stream_seq": seq,
    }


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _parse_time(value: Any) -> _dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _filters(settings: Settings, subjects: str | Sequence[str] | None, types: Sequence[str] | None) -> list[str]:
    out = [subjects] if isinstance(subjects, str) else list(subjects or [])
    for name in types or ():
        t = catalog.lookup(name)
        out.append(".".join([settings.namespace, t.source, t.entity, *("*" * len(t.keys)), t.action]))
    return out or [f"{settings.namespace}.>"]


async def _plan(
    settings: Settings, filters: list[str], start: StartPosition | None, end: StartPosition | None
) -> tuple[int, int]:
    nc = await reader.connect(settings, "eventlog", DatabricksSecrets(), token_source(settings))
    try:
        js = nc.jetstream()
        with nats_errors(f"read stream {settings.stream_name!r}"):
            first, last = await reader.bounds(js, settings.stream_name)

        async def seq(position: StartPosition | None, default: int) -> int:
            if position is None:
                return default
            if position.seq is not None:
                return position.seq
            if position.time is not None:
                found = await reader.seq_at(js, settings.stream_name, position.time)
                return last + 1 if found is None else found
            return {"all": first, "last": last, "new": last + 1}[position.kind]

        lo = max(first, await seq(start, first))
        hi = min(last, await seq(end, last + 1) - 1)
        return lo, hi
    finally:
        await nc.close()


def _ranges(lo: int, hi: int, partitions: int | None) -> list[tuple[int, int]]:
    count = hi - lo + 1
    if count <= 0:
        return []
    n = partitions or min(MAX_PARTITIONS, math.ceil(count / PER_PARTITION))
    n = max(1, min(n, count))
    step = math.ceil(count / n)
    return [(a, min(hi, a + step - 1)) for a in range(lo, hi + 1, step)]


def _partition_reader(settings: Settings, filters: list[str], ranges: list[tuple[int, int]], timeout: float) -> Any:
    """The function each partition runs: read its sequence ranges and yield Arrow record batches."""

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        async def rows(lo: int, hi: int) -> list[dict[str, Any]]:
            nc = await reader.connect(settings, "eventlog", DatabricksSecrets(), token_source(settings))
            try:
                js = nc.jetstream()
                return [
                    row_of(m.metadata.sequence.stream, m.data, m.subject)
                    async for m in reader.read_range(js, settings.stream_name, filters, lo, hi)
                ]
            finally:
                await nc.close()

        for batch in batches:
            for index in batch.column(0).to_pylist():
                lo, hi = ranges[index]
                found = reader.run_sync(rows(lo, hi), timeout)
                if found:
                    yield pa.RecordBatch.from_pylist(found, schema=_arrow_schema())

    return read


def _arrow_schema() -> Any:
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [("id", text), ("time", pa.timestamp("us", tz="UTC"))]
        + [(n, text) for n in ("type", "source", "subject", "workspace", "env", "mlflow_run_id", "job_run_id")]
        + [("dataref", text), ("data", text), ("stream_seq", pa.int64())]
    )


def read_events(
    spark: Any,
    subjects: str | Sequence[str] | None = None,
    *,
    types: Sequence[str] | None = None,
    start: Bound = None,
    end: Bound = None,
    partitions: int | None = None,
    timeout: float = 300.0,
    **settings: Any,
) -> Any:
    """The stored events of this workspace/env as a DataFrame with ``EVENT_LOG_SCHEMA``.

    ``subjects`` are subject filters (wildcards allowed; default the whole namespace); ``types`` adds
    one filter per catalogued event type. ``start`` (inclusive) and ``end`` (exclusive) are stream
    positions (``StartPosition``): sequence numbers, datetimes, ISO-8601 strings, durations ago ("2h"),
    ``"all"`` (the first stored event), ``"last"`` or ``"new"`` (after the last one).
    ``partitions`` splits the range into that many disjoint sequence ranges read in parallel (default: one
    per 10,000 messages, at most 64). Keyword settings (``url``, ``workspace``, ``env``…) override the
    configured ones; executors use the same.
    Raises ``StreamError`` when the stream cannot be read.
    """
    resolved = resolve_settings(**settings) if settings else _api.get_settings()
    filters = _filters(resolved, subjects, types)
    bounds = [None if b is None else StartPosition.parse(b, name) for b, name in ((start, "start"), (end, "end"))]
    lo, hi = reader.run_sync(_plan(resolved, filters, *bounds), timeout)
    ranges = _ranges(lo, hi, partitions)
    if not ranges:
        return spark.createDataFrame([], EVENT_LOG_SCHEMA)
    seeds = spark.range(0, len(ranges), 1, len(ranges))
    return seeds.mapInArrow(_partition_reader(resolved, filters, ranges, timeout), EVENT_LOG_SCHEMA)
