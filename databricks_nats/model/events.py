"""The event: a lean pointer wrapped in a CloudEvents 1.0 structured-mode JSON envelope.

An ``Event`` is created in the caller's thread (id and time fixed there, so every retry carries the same
id) and encoded later, off the caller's path, by ``encode``::

    {"specversion": "1.0", "id": "<uuidv7>", "source": "/databricks/<workspace>/<env>/<source>",
     "type": "databricks.<source>.<entity>.<action>", "subject": "<nats subject>", "time": "<RFC 3339>",
     "datacontenttype": "application/json", "dataschema": "urn:databricks-nats:schema:<type>:1",
     "dataref": "<main pointer URI, when there is one>", "traceparent": "<W3C, when a trace is active>",
     "workspace": "<workspace>", "env": "<env>", "data": {..., "context": {...}}}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from databricks_nats.model import catalog, jsonsafe, subjects
from databricks_nats.model.catalog import EventType
from databricks_nats.model.causation import Causation
from databricks_nats.model.causation import current as _current_causation
from databricks_nats.model.ids import uuid7

__all__ = ["CE_CONTENT_TYPE", "Encoder", "Event", "dead_letter", "encode", "new_event", "shrink"]

CE_CONTENT_TYPE = "application/cloudevents+json"
_ENVELOPE_KEYS = frozenset({"context"})


class Event:
    """One event: its type, its data, the subject keys and pointer, and its fixed id and time."""

    __slots__ = ("causation", "data", "dataref", "id", "keys", "subject", "time_ns", "traceparent", "type")

    def __init__(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        keys: tuple[str, ...] | None = None,
        dataref: str | None = None,
        id: str | None = None,
        time_ns: int | None = None,
        traceparent: str | None = None,
        subject: str | None = None,
        causation: Causation | None = None,
    ) -> None:
        self.type = type
        self.data = data
        self.keys = keys
        self.dataref = dataref
        self.id = id or uuid7()
        self.time_ns = time_ns if time_ns is not None else time.time_ns()
        self.traceparent = traceparent
        self.subject = subject
        self.causation = causation

    @property
    def time(self) -> _dt.datetime:
        """The event time as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.time_ns / 1e9, tz=_dt.timezone.utc)

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, id={self.id!r}, subject={self.subject!r})"


def _current_traceparent() -> str | None:
    """The W3C traceparent of the active OpenTelemetry span, if OpenTelemetry is in use."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        ctx = trace.get_current_span().get_span_context()
    except Exception:  # noqa: BLE001 - a tracing bug must never reach the caller
        return None
    if not getattr(ctx, "is_valid", False):
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def new_event(
    type: str,
    data: Mapping[str, Any],
    *,
    keys: Any = None,
    dataref: str | None = None,
    time_ns: int | None = None,
    causation: Causation | None = None,
    id: str | None = None,
) -> Event:
    """Create an event in the caller's thread (cheap: id, time, trace context and causation only).

    ``id``: a fixed id for a fact that may be announced twice (``ids.derived_id``), else a new UUIDv7.

    ``time_ns`` is when it happened, if not now (an event handed over later, in a batch). ``causation`` is the
    event it reacts to; by default the one being handled in this context (``causation.caused_by``), if any."""
    return Event(
        type,
        data,
        keys=tuple(str(k) for k in keys) if keys is not None else None,
        dataref=dataref,
        id=id,
        traceparent=_current_traceparent(),
        time_ns=time_ns,
        causation=causation if causation is not None else _current_causation(),
    )


_second = (-1, "")


def _rfc3339(time_ns: int) -> str:
    global _second
    secs, ns = divmod(time_ns, 1_000_000_000)
    if _second[0] != secs:  # formatting the date is the slow part; it changes once a second
        _second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{_second[1]}.{ns // 1000:06d}Z"


def encode(
    event: Event,
    *,
    namespace: str,
    workspace: str,
    env: str,
    context: Mapping[str, Any],
    max_bytes: int,
) -> tuple[str, bytes]:
    """Resolve the subject and return it with the envelope as strict JSON bytes no larger than ``max_bytes``.

    Raises SubjectError (a programming error in the caller) when the event type is malformed.
    """
    etype = catalog.lookup(event.type)
    data = dict(event.data)
    if event.subject is None:
        keys = event.keys if event.keys is not None else tuple(str(data.get(k, "")) for k in etype.keys)
        event.subject = subjects.build_subject(namespace, etype.source, etype.entity, keys, etype.action)
    dataref = event.dataref
    if dataref is None and etype.dataref and data.get(etype.dataref):
        dataref = str(data[etype.dataref])
    if context and "context" not in data:
        data["context"] = context  # shared, read-only: serialised, never mutated
    env_obj: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/databricks/{workspace}/{env}/{etype.source}",
        "type": f"databricks.{event.type}",
        "subject": event.subject,
        "time": _rfc3339(event.time_ns),
        "datacontenttype": "application/json",
        "dataschema": f"urn:databricks-nats:schema:{etype.name}:1",
        "workspace": workspace,
        "env": env,
    }
    if dataref:
        env_obj["dataref"] = dataref[: min(2048, max_bytes // 8)]
    if event.traceparent:
        env_obj["traceparent"] = event.traceparent
    if event.causation is not None:
        env_obj.update(event.causation.attributes())
    env_obj["data"] = data
    payload = jsonsafe.dumps(env_obj)
    if len(payload) <= max_bytes:
        return event.subject, payload

    def fits(candidate: dict[str, Any]) -> bool:
        env_obj["data"] = candidate
        return len(jsonsafe.dumps(env_obj)) <= max_bytes

    trimmed = jsonsafe.trim_to_fit(jsonsafe.sanitize(data), fits, protected=etype.protected | _ENVELOPE_KEYS)
    env_obj["data"] = trimmed
    return event.subject, jsonsafe.dumps(env_obj)


class Encoder:
    """``encode`` for one namespace and context, rendering the constant parts of each envelope once.

    Per event only the id, subject, time, pointer and data are serialised and spliced between the
    pre-rendered parts; the bytes are identical to ``encode``'s. Whatever is unusual (non-JSON values,
    NaN, lone surrogates, an event over the cap, data that is not a plain dict) takes ``encode`` itself.
    """

    def __init__(self, *, namespace: str, workspace: str, env: str, context: Mapping[str, Any]) -> None:
        self._args: dict[str, Any] = {"namespace": namespace, "workspace": workspace, "env": env, "context": context}
        self._namespace = namespace
        self._context = '"context":' + _json(context) if context else None
        self._tail = f',"workspace":{_str(workspace)},"env":{_str(env)}'
        self._parts: dict[str, tuple[EventType, str, str]] = {}  # type name -> (type, after id, after time)
        self._subjects: dict[tuple[str, tuple[str, ...]], str] = {}

    def _parts_of(self, etype: EventType) -> tuple[EventType, str, str]:
        ws, env = self._args["workspace"], self._args["env"]
        parts = (
            etype,
            f',"source":{_str(f"/databricks/{ws}/{env}/{etype.source}")},"type":{_str("databricks." + etype.name)}'
            ',"subject":',
            f'","datacontenttype":"application/json","dataschema":{_str(f"urn:databricks-nats:schema:{etype.name}:1")}'
            + self._tail,
        )
        self._parts[etype.name] = parts
        return parts

    def __call__(self, event: Event, *, max_bytes: int) -> tuple[str, bytes]:
        try:
            fast = self._fast(event, max_bytes)
        except (ValueError, TypeError, RecursionError):  # not plain JSON: the careful path below
            fast = None
        return fast or encode(event, max_bytes=max_bytes, **self._args)

    def _fast(self, event: Event, max_bytes: int) -> tuple[str, bytes] | None:
        etype = _lookup(event.type)
        parts = self._parts.get(etype.name)
        if parts is None or parts[0] is not etype:
            parts = self._parts_of(etype)
        data = event.data
        if type(data) is not dict:
            return None
        subject = event.subject
        if subject is None:
            keys = event.keys if event.keys is not None else tuple([str(data.get(k, "")) for k in etype.keys])
            subject = self._subjects.get((etype.name, keys))
            if subject is None:
                if len(self._subjects) >= 4096:
                    self._subjects.clear()
                subject = subjects.build_subject(self._namespace, etype.source, etype.entity, keys, etype.action)
                self._subjects[(etype.name, keys)] = subject
            event.subject = subject
        extra = ""
        dataref = event.dataref
        if dataref is None and etype.dataref and data.get(etype.dataref):
            dataref = str(data[etype.dataref])
        if dataref:
            extra = ',"dataref":' + _str(dataref[: min(2048, max_bytes // 8)])
        if event.traceparent:
            extra += ',"traceparent":' + _str(event.traceparent)
        if event.causation is not None:
            extra += "," + _json(event.causation.attributes())[1:-1]
        body = _json(data)
        if self._context is not None and "context" not in data:  # the context goes last, as in encode()
            body = f"{body[:-1]}{',' if len(body) > 2 else ''}{self._context}}}"
        text = (
            f'{{"specversion":"1.0","id":{_str(event.id)}{parts[1]}{_str(subject)},"time":"{_rfc3339(event.time_ns)}'
            f'{parts[2]}{extra},"data":{body}}}'
        )
        try:
            payload = text.encode()
        except UnicodeEncodeError:  # lone surrogates
            return None
        return (subject, payload) if len(payload) <= max_bytes else None


_json = jsonsafe.encode_compact
_lookup = catalog.lookup
_str = json.encoder.encode_basestring


def shrink(payload: bytes, max_bytes: int) -> bytes:
    """Re-trim an already encoded envelope to ``max_bytes`` (the server allows less than we encoded for)."""
    envelope = json.loads(payload)
    etype = catalog.lookup(str(envelope.get("type", "")).removeprefix("databricks."))

    def fits(candidate: dict[str, Any]) -> bool:
        envelope["data"] = candidate
        return len(jsonsafe.dumps(envelope)) <= max_bytes

    envelope["data"] = jsonsafe.trim_to_fit(
        envelope.get("data") or {}, fits, protected=etype.protected | _ENVELOPE_KEYS
    )
    return jsonsafe.dumps(envelope)


_DEAD_KEEP = ("specversion", "id", "source", "type", "time", "workspace", "env")


def dead_letter(payload: bytes, subject: str, reason: str, max_bytes: int) -> bytes:
    """The envelope of a dead letter: the event's own, with ``deadletterreason`` and ``deadlettersubject``
    (the subject it was meant for, in place of the envelope's ``subject``).

    Made to fit ``max_bytes``: the data is trimmed first (as ``shrink`` does), then long subjects are cut to
    200 characters followed by ``~`` and their 32-hex-digit SHA-256 prefix, then only the event's identity
    (id, type, source, time, namespace) is kept. An envelope that is not readable JSON keeps its first bytes
    as text (``deadletterpayload``).
    """
    try:
        envelope = json.loads(payload)
        if not isinstance(envelope, dict):
            raise ValueError("not an object")
    except ValueError:
        envelope = {"deadletterpayload": payload[:256].decode("utf-8", "replace")}
    if envelope.get("subject") == subject:
        del envelope["subject"]  # carried once, as deadlettersubject
    envelope["deadletterreason"] = reason
    envelope["deadlettersubject"] = subject
    out = jsonsafe.dumps(envelope)
    if len(out) <= max_bytes:
        return out
    for key in ("subject", "deadlettersubject"):
        value = envelope.get(key)
        if isinstance(value, str) and len(value) > 256:
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
            envelope[key] = f"{value[:200]}~{digest}"
    if isinstance(envelope.get("data"), dict):

        def fits(candidate: dict[str, Any]) -> bool:
            envelope["data"] = candidate
            return len(jsonsafe.dumps(envelope)) <= max_bytes

        try:
            etype = catalog.lookup(str(envelope.get("type", "")).removeprefix("databricks."))
            envelope["data"] = jsonsafe.trim_to_fit(envelope["data"], fits, protected=etype.protected | _ENVELOPE_KEYS)
        except Exception:  # noqa: BLE001 - an unknown or malformed type: keep its identity only (below)
            envelope["data"] = {"truncated": True}
    out = jsonsafe.dumps(envelope)
    if len(out) <= max_bytes:
        return out
    identity: dict[str, Any] = {k: str(envelope[k])[:200] for k in _DEAD_KEEP if k in envelope}
    identity.update(deadletterreason=reason, deadlettersubject=envelope["deadlettersubject"], data={"truncated": True})
    return jsonsafe.dumps(identity)[: max(0, max_bytes)]
