"""GenAI events (MLflow 3): traces and assessments, described from the store calls MLflow makes.

``TRACKING_CALLS`` names the tracking store methods the hook wraps, each with its describer
``describe(hook, store, result, *args, **kwargs)``, which publishes through ``hook.emit``:

* ``start_trace(trace_info)``: MLflow's exporter makes this call once per finished trace (on its own async
  thread), carrying the trace's state, timings, size stats (span count) and token usage: one
  ``mlflow.trace.logged``, never inputs, outputs or previews. ``traces_mode`` = ``sample:<rate>`` keeps a
  trace when a hash of its id falls under the rate (the same trace is in or out in every process);
  ``off`` announces none. Beyond ``TRACES_PER_SECOND`` per experiment, traces are counted, not announced:
  the next announced trace of that experiment carries the count (``coalesced``).
* ``create_assessment(assessment)``: ``mlflow.log_feedback`` / ``log_expectation`` / ``log_assessment``:
  one ``mlflow.assessment.logged`` with the name, kind, source, the value's type and the value only when a
  number or boolean, never free text or rationale.

Events go out through ``hook.publish``: what a call does not carry (the experiment of a trace this process did
not see end, a workspace URL) is looked up on the hook's worker thread (``later.py``), against the store the call
used, never on the caller's path. ``uninstall()`` forgets the traces seen. Evaluations (``mlflow.run.evaluated``)
are ``evaluation.py``'s.
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from databricks_nats.integrations.mlflow.later import NeedsLookup
from databricks_nats.integrations.mlflow.settings import sample_rate

__all__ = ["TRACES_PER_SECOND", "TRACKING_CALLS", "trace_url", "uninstall"]

TRACES_PER_SECOND = 100  # per experiment: more traces than this in one second are coalesced
_KNOWN_MAX = 4096  # traces remembered for their assessments (trace id -> experiment, run)
_TOKEN_KEYS = ("input_tokens", "output_tokens", "total_tokens")


# ---- traces ----------------------------------------------------------------------------------------


class _Gate:
    """Which traces are announced: the sample, then a per-experiment rate cap; counts what was held back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # experiment -> traces not announced since its last announced one
        self._second = 0
        self._sent: dict[str, int] = {}  # experiment -> traces announced in the current second

    def admit(self, experiment_id: str, trace_id: str, rate: float) -> int | None:
        """The ``coalesced`` count to announce this trace with, or None when it is held back."""
        sampled = rate >= 1.0 or zlib.crc32(trace_id.encode()) / 0x1_0000_0000 < rate
        with self._lock:
            now = int(time.monotonic())
            if now != self._second:
                self._second = now
                self._sent.clear()
            sent = self._sent.get(experiment_id, 0)
            if sampled and sent < TRACES_PER_SECOND:
                self._sent[experiment_id] = sent + 1
                return self._held.pop(experiment_id, 0)
            if experiment_id not in self._held and len(self._held) >= _KNOWN_MAX:
                self._held.pop(next(iter(self._held)))  # bounded: the oldest experiment's count is dropped
            self._held[experiment_id] = self._held.get(experiment_id, 0) + 1
            return None


_gate = _Gate()
_traces: dict[str, tuple[str, str | None]] = {}  # trace id -> (experiment id, run id), the newest last


_traces_lock = threading.Lock()  # MLflow exports traces on several threads


def _remember_trace(trace_id: str, experiment_id: str, run_id: str | None) -> None:
    with _traces_lock:
        if len(_traces) >= _KNOWN_MAX:
            _traces.pop(next(iter(_traces)), None)
        _traces[trace_id] = (experiment_id, run_id)


def _trace_info(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The stored TraceInfo (MLflow 3: it has ``trace_id``), else the one MLflow sent; None on MLflow 2."""
    for info in (result, kwargs.get("trace_info", args[0] if args else None)):
        if isinstance(getattr(info, "trace_id", None), str) and hasattr(info, "trace_metadata"):
            return info
    return None


def _experiment_of(info: Any) -> str | None:
    location = getattr(getattr(info, "trace_location", None), "mlflow_experiment", None)
    experiment_id = getattr(location, "experiment_id", None)
    return str(experiment_id) if experiment_id else None


def _json_field(metadata: dict[str, str], key: str) -> Any:
    raw = metadata.get(key)
    if not isinstance(raw, str) or len(raw) > 4096:  # bounded work per trace
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _int_or_none(value: Any) -> int | None:
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None
    )


def trace_url(hook: Any, store: Any, experiment_id: str, trace_id: str) -> str | None:
    """The trace's page in the UI of its tracking server (the experiment's Traces tab), when known."""
    ui = hook._store_ui(store)  # off the worker, NeedsLookup while a workspace URL is not known yet
    if not ui.base:
        return None
    page = "ml/experiments" if ui.kind == "databricks" else "#/experiments"
    return f"{ui.base}/{page}/{experiment_id}/traces?selectedEvaluationId={trace_id}"


def _start_trace(hook: Any, store: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    mode = hook._settings.traces_mode
    info = _trace_info(result, args, kwargs)
    if info is None:
        return
    trace_id: str = info.trace_id
    experiment_id = _experiment_of(info)
    if experiment_id is None:  # a trace kept elsewhere (an inference table): not an experiment's
        return
    metadata = dict(getattr(info, "trace_metadata", None) or {})
    run_id = metadata.get("mlflow.sourceRun") or None
    _remember_trace(trace_id, experiment_id, run_id)
    if mode == "off":
        return
    rate = sample_rate(mode)
    coalesced = _gate.admit(experiment_id, trace_id, rate)
    if coalesced is None:
        return
    state = getattr(info, "state", None)
    stats = _json_field(metadata, "mlflow.trace.sizeStats")
    usage = _json_field(metadata, "mlflow.trace.tokenUsage")
    tokens = {k: _int_or_none(usage.get(k)) for k in _TOKEN_KEYS} if isinstance(usage, dict) else {}
    data = {
        "experiment_id": experiment_id,
        "trace_id": trace_id,
        "status": str(getattr(state, "value", state) or "STATE_UNSPECIFIED"),
        "duration_ms": _int_or_none(getattr(info, "execution_duration", None)),
        "span_count": _int_or_none(stats.get("num_spans")) if isinstance(stats, dict) else None,
        "token_usage": {k: v for k, v in tokens.items() if v is not None} or None,
        "run_id": run_id,
        "model_id": metadata.get("mlflow.modelId") or None,
        "request_time": _int_or_none(getattr(info, "request_time", None)),
        "sample_rate": rate,
        "coalesced": coalesced,
    }
    hook.publish(
        ("trace", trace_id),
        lambda: ("mlflow.trace.logged", {**data, "trace_url": trace_url(hook, store, experiment_id, trace_id)}),
    )


# ---- assessments -----------------------------------------------------------------------------------


def _value_of(value: Any) -> tuple[str, float | None]:
    """The value's type name, and the value itself only when a number or a boolean (as 1/0)."""
    if isinstance(value, bool):
        return "boolean", 1.0 if value else 0.0
    if isinstance(value, int | float):
        return "number", float(value)
    if value is None:
        return "null", None
    if isinstance(value, str):
        return "string", None
    if isinstance(value, dict):
        return "object", None
    if isinstance(value, list | tuple):
        return "array", None
    return type(value).__name__, None


def _create_assessment(hook: Any, store: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    assessment = result if hasattr(result, "assessment_id") else kwargs.get("assessment", args[0] if args else None)
    trace_id = getattr(assessment, "trace_id", None)
    if not isinstance(trace_id, str) or not trace_id:
        return
    feedback = getattr(assessment, "feedback", None)
    expectation = getattr(assessment, "expectation", None)
    kind = "feedback" if feedback is not None else "expectation" if expectation is not None else "issue"
    value_type, value = _value_of(getattr(feedback if feedback is not None else expectation, "value", None))
    source = getattr(assessment, "source", None)
    source_type = getattr(source, "source_type", None)
    data: dict[str, Any] = {
        "trace_id": trace_id,
        "assessment_id": getattr(assessment, "assessment_id", None),
        "name": str(getattr(assessment, "name", "")),
        "kind": kind,
        "source_type": str(getattr(source_type, "value", source_type)) if source_type else None,
        "source_id": getattr(source, "source_id", None) or None,
        "value_type": value_type if kind != "issue" else None,
        "value": value,
        "error": getattr(feedback, "error", None) is not None,
        "run_id": getattr(assessment, "run_id", None) or None,
    }

    def build() -> tuple[str, dict[str, Any]] | None:
        known: tuple[str | None, str | None] | None = _traces.get(trace_id)
        if known is None:  # a trace not seen ending in this process: its experiment, from the same store
            if not hook.later.on_worker():
                raise NeedsLookup
            info = store.get_trace_info(trace_id)
            known = (_experiment_of(info), (getattr(info, "trace_metadata", None) or {}).get("mlflow.sourceRun"))
        experiment_id, run_id = known
        if not experiment_id:
            return None
        url = trace_url(hook, store, experiment_id, trace_id)
        described = {"experiment_id": experiment_id, **data, "trace_url": url, "run_id": data["run_id"] or run_id}
        return "mlflow.assessment.logged", described

    hook.publish(("trace", trace_id), build)


TRACKING_CALLS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("start_trace", _start_trace),
    ("create_assessment", _create_assessment),
)


def uninstall() -> None:
    """Forget the traces seen and the counts held back (the hook was removed)."""
    global _gate
    _traces.clear()
    _gate = _Gate()
