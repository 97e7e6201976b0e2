"""JetStream stream provisioning: create the namespace's stream, or check it and report differences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from databricks_nats.errors import StreamMismatch
from databricks_nats.settings import Settings
from databricks_nats.transport.errors import nats_errors

__all__ = ["StreamReport", "ensure_stream_async", "wanted_config"]


@dataclass
class StreamReport:
    """What ``ensure_stream`` found or did: ``created``, ``unchanged``, ``updated`` or ``differs``."""

    name: str
    action: str
    subjects: list[str]
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def wanted_config(settings: Settings) -> StreamConfig:
    """The stream this namespace wants: every subject under ``prefix.workspace.env``."""
    return StreamConfig(
        name=settings.stream_name,
        description=f"databricks-nats events for {settings.namespace}",
        subjects=[f"{settings.namespace}.>"],
        max_age=settings.stream_max_age,
        max_bytes=settings.stream_max_bytes,
        duplicate_window=settings.stream_duplicate_window,
        num_replicas=settings.stream_replicas,
        storage=StorageType(settings.stream_storage),
    )


_COMPARED = ("subjects", "max_age", "max_bytes", "duplicate_window", "num_replicas", "storage")


def _differences(have: StreamConfig, want: StreamConfig) -> dict[str, tuple[Any, Any]]:
    out = {}
    for name in _COMPARED:
        a, b = getattr(have, name), getattr(want, name)
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and abs(float(a) - float(b)) < 1e-3
        elif name == "subjects":
            same = sorted(a or []) == sorted(b or [])
        else:
            same = a == b
        if not same:
            out[name] = (a.value if hasattr(a, "value") else a, b.value if hasattr(b, "value") else b)
    return out


async def ensure_stream_async(
    js: JetStreamContext, settings: Settings, *, update: bool = False, check: bool = True
) -> StreamReport:
    """Create the stream if missing; otherwise compare it and update only when ``update`` is true.

    With ``check`` false a differing stream is reported, not raised (the publisher's start-up path).
    """
    want = wanted_config(settings)
    name = settings.stream_name
    with nats_errors(f"read stream {name!r}"):
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            info = None
    with nats_errors(f"provision stream {name!r}"):
        if info is None:
            created = await js.add_stream(want)
            return StreamReport(name, "created", list(want.subjects or []), config=created.config.as_dict())
        diff = _differences(info.config, want)
        if not diff:
            return StreamReport(name, "unchanged", list(want.subjects or []), config=info.config.as_dict())
        if update:
            updated = await js.update_stream(want)
            return StreamReport(name, "updated", list(want.subjects or []), diff, updated.config.as_dict())
    if check:
        raise StreamMismatch(name, diff)
    return StreamReport(name, "differs", list(want.subjects or []), diff, info.config.as_dict())
