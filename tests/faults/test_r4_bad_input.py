"""R4: bad input, fuzzed with hypothesis, through the real MLflow hook, the Spark stream listener and ``emit``.

Names with ``.``, ``*``, ``>``, whitespace, unicode, the empty string and 10,000 characters; NaN and ±Inf
metrics; megabyte params; a 10,000-file artifact directory. Every event produced must have a valid subject
(tokens of ``[A-Za-z0-9_-]``, ``%XX``, ``~``; at most 96 characters each), be strict RFC 8259 JSON valid
against its schema, fit ``max_event_bytes``; no exception may come out of the library into the caller, and
the library may not have swallowed a failure either (no "failed" warning logged). The fuzz loops use
``testing.capture()`` (the exact encoder the publisher uses, no network); one pass goes through a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import databricks_nats
from databricks_nats.model import catalog
from databricks_nats.testing import NatsServer, capture

mlflow = pytest.importorskip("mlflow")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

MAX_EVENT_BYTES = 8192
_TOKEN = re.compile(r"^[A-Za-z0-9_%~-]{1,96}$")
FUZZ = settings(
    max_examples=int(os.environ.get("R4_MAX_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

NASTY = [
    "",
    " ",
    ".",
    "..",
    "*",
    ">",
    "a.b.c",
    "a.*.>",
    "with space",
    "tab\there",
    "new\nline",
    "\x00nul",
    "ünïcødé.模型.🚀",
    "%2E",
    "~e",
    "x" * 10_000,
    "é" * 10_000,
    ".*> " * 2_500,
]
names = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.text(alphabet=". *>\t\n%~-_aZ9é模🚀", max_size=60),
    st.text(alphabet=".*> é\t", min_size=1, max_size=20).map(lambda s: (s * 10_000)[:10_000]),
)
metric_values = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
)
big_values = st.one_of(
    st.sampled_from(["", "x" * 1_000_000, "é" * 500_000, "\x00" * 1000, '"\\' * 300_000]),
    st.text(max_size=200),
)


# ---- checks ------------------------------------------------------------------------------------------


_validators: dict[str, Draft202012Validator] = {}


def _validator(name: str) -> Draft202012Validator:
    if name not in _validators:
        schema = catalog.envelope_schema() if name == "envelope" else catalog.lookup(name).schema()
        _validators[name] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return _validators[name]


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name}")


def check_event(subject: str, payload: bytes, max_bytes: int = MAX_EVENT_BYTES, data_schema: bool = True) -> Any:
    """Assert one published event is well-formed; return its envelope.

    ``data_schema``: also validate the data against its type's schema (for events the integrations build;
    ``emit`` passes the caller's data through as given).
    """
    assert len(payload) <= max_bytes, f"{len(payload)} bytes > cap {max_bytes} ({subject[:200]})"
    assert len(subject) <= 1024, subject[:200]
    tokens = subject.split(".")
    bad = [t for t in tokens if not _TOKEN.match(t)]
    assert not bad, f"invalid subject tokens {[t[:100] for t in bad]} in {subject[:300]!r}"
    envelope = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    assert envelope["subject"] == subject
    errors = [e.message[:300] for e in _validator("envelope").iter_errors(envelope)]
    assert not errors, f"envelope of {envelope['type']}: {errors}"
    event_type = envelope["type"].removeprefix("databricks.")
    if not data_schema:
        return envelope
    with contextlib.suppress(KeyError):  # custom types have no schema of their own
        data_errors = [
            f"{list(e.path)}: {e.message[:300]}" for e in _validator(event_type).iter_errors(envelope["data"])
        ]
        assert not data_errors, f"data of {event_type}: {data_errors}"
    return envelope


def check_captured(events: list[Any], data_schema: bool = True) -> None:
    for e in events:
        check_event(e.subject, e.payload, data_schema=data_schema)


class _Failures(logging.Handler):
    """Collects every warning the library logs (a swallowed failure is logged as '... failed ...')."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:500])


@contextlib.contextmanager
def no_swallowed_failures() -> Iterator[None]:
    handler = _Failures()
    logger = logging.getLogger("databricks_nats")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    failures = [m for m in handler.messages if "failed" in m]
    assert not failures, failures[:5]


def user_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call MLflow as user code would: MLflow may reject the input itself, but nothing may come from us."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args, **kwargs)
    except MlflowException as e:  # MLflow's own validation (empty name, value too long, ...)
        frames = traceback.extract_tb(e.__traceback__)
    assert frames
    assert "databricks_nats" not in frames[-1].filename, f"raised by the library: {frames[-1]}"
    return None


def _mlflow_session(
    client: Any, run_name: str, experiment_name: str, model_name: str, metric: float, param: str, tag: str
) -> None:
    """One run, as user code would write it, with the fuzzed inputs everywhere they can go."""
    experiment_id = user_call(client.create_experiment, experiment_name)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run:
        user_call(mlflow.log_metric, "loss", metric, step=1)
        user_call(mlflow.log_metrics, {f"m{i}": metric for i in range(300)}, step=2)  # one big metrics event
        user_call(mlflow.log_param, "p", param)  # MLflow itself refuses values over its limit
        user_call(mlflow.log_params, {f"p{i}": param[:6000] or "v" for i in range(100)})
        user_call(mlflow.set_tag, "t", tag)
        user_call(mlflow.set_tag, tag[:250] or "k", param[:5000])
        user_call(mlflow.log_dict, {"name": run_name[:1000], "v": str(metric)}, "info.json")
    registered = user_call(client.create_registered_model, model_name)
    if registered is not None:
        version = user_call(client.create_model_version, model_name, f"{run.info.artifact_uri}/x", run.info.run_id)
        if version is not None:
            user_call(client.set_registered_model_alias, model_name, "champion", version.version)
            user_call(client.set_model_version_tag, model_name, version.version, tag[:250] or "k", param[:5000])
            user_call(client.delete_registered_model_alias, model_name, "champion")
        user_call(client.delete_registered_model, model_name)


@FUZZ
@given(
    run_name=names,
    experiment_name=names,
    model_name=names,
    metric=metric_values,
    param=big_values,
    tag=names,
)
def test_fuzzed_mlflow_names_and_values_give_valid_bounded_events_and_no_errors(
    mlflow_sqlite: str,
    namespace: dict[str, str],
    run_name: str,
    experiment_name: str,
    model_name: str,
    metric: float,
    param: str,
    tag: str,
) -> None:
    """Fuzzed run/experiment/model names, NaN/±Inf metrics, huge params through MLflow: every event is valid."""
    from databricks_nats.integrations import mlflow as nats_mlflow

    client = mlflow.MlflowClient()
    with capture(metrics_mode="every", **namespace) as events, no_swallowed_failures():
        nats_mlflow.install()
        _mlflow_session(client, run_name, experiment_name, model_name, metric, param, tag)
    check_captured(events)
    types = events.types()
    assert types.count("mlflow.run.started") == types.count("mlflow.run.finished") == 1
    assert "mlflow.run.metrics" in types


@FUZZ
@given(
    name=names,
    query_id=st.one_of(st.uuids().map(str), names),
    path=names,
    metric=metric_values,
    error=big_values,
)
def test_fuzzed_stream_query_names_give_valid_bounded_events(
    namespace: dict[str, str], name: str, query_id: str, path: str, metric: float, error: str
) -> None:
    """Fuzzed streaming query names, ids, sink paths, observed NaN/Inf metrics and errors: valid events."""
    from databricks_nats.integrations.spark.streaming import NatsStreamingListener

    listener = NatsStreamingListener(progress_interval=0.0, tables={name: name})
    source = SimpleNamespace(description=path, numInputRows=3, inputRowsPerSecond=metric)
    progress = SimpleNamespace(
        id=query_id,
        runId=query_id,
        name=name,
        batchId=1,
        numInputRows=3,
        inputRowsPerSecond=metric,
        processedRowsPerSecond=metric,
        batchDuration=12,
        sources=[source] * 50,
        sink=SimpleNamespace(description=f"DeltaSink[{path}]", numOutputRows=3),
        stateOperators=[],
        observedMetrics={name[:100] or "k": {"v": metric, "name": name}},
    )
    with capture(**namespace) as events, no_swallowed_failures():
        listener.onQueryStarted(SimpleNamespace(id=query_id, runId=query_id, name=name))
        listener.onQueryProgress(SimpleNamespace(progress=progress))
        listener.onQueryIdle(SimpleNamespace(id=query_id, runId=query_id))
        listener.onQueryTerminated(
            SimpleNamespace(id=query_id, runId=query_id, exception=error or None, errorClassOnException=None)
        )
    check_captured(events)
    assert events.types()[0] == "spark.stream.started"
    assert events.types()[-1] == "spark.stream.terminated"


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    metric_values,
    st.sampled_from([*NASTY, "y" * 1_000_000]),
    st.text(max_size=20),
)
json_data = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=30) | st.dictionaries(names, children, max_size=30),
    max_leaves=60,
)


@FUZZ
@given(
    event_type=st.one_of(st.sampled_from(["myteam.features.refreshed", "mlflow.run.metrics"]), names),
    keys=st.lists(names, max_size=6),
    data=st.dictionaries(st.one_of(st.sampled_from(NASTY), st.text(max_size=20)), json_data, max_size=20),
    dataref=st.one_of(st.none(), names, big_values),
)
def test_fuzzed_emit_never_raises_and_every_accepted_event_is_valid(
    namespace: dict[str, str], event_type: str, keys: list[str], data: dict[str, Any], dataref: str | None
) -> None:
    """``emit`` with fuzzed types, keys, nested data (NaN, megabyte strings) and pointers never raises."""
    with capture(**namespace) as events:
        result = databricks_nats.emit(event_type, data, keys=keys, dataref=dataref)
    assert (result is None) == (len(events) == 0)
    check_captured(events, data_schema=False)


def test_ten_thousand_file_artifact_directory_is_one_bounded_event(
    mlflow_sqlite: str, namespace: dict[str, str], tmp_path: Path
) -> None:
    """``mlflow.log_artifacts`` of a 10,000-file directory (nasty file names) gives one valid event within the cap."""
    from databricks_nats.integrations import mlflow as nats_mlflow

    src = tmp_path / "many"
    for d in range(10):
        sub = src / f"dir {d}.*>"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"f.{i} é*>.txt").write_bytes(b"x")
    with capture(**namespace) as events, no_swallowed_failures():
        nats_mlflow.install()
        with mlflow.start_run():
            mlflow.log_artifacts(str(src), "many.dirs")
    check_captured(events)
    (artifacts,) = events.of_type("mlflow.run.artifacts")
    data = artifacts.data
    assert json.dumps(data).count("f.") >= 1
    assert 10_000 in [v for v in data.values() if isinstance(v, int)], data


# ---- one pass through a real server -----------------------------------------------------------------


def _read_raw(url: str, stream: str) -> list[tuple[str, bytes]]:
    """(subject, raw payload) of every message in the stream."""

    async def read() -> list[tuple[str, bytes]]:
        import nats

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                out.append((msg.subject, msg.data or b""))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def test_bad_input_end_to_end_through_a_real_server(
    mlflow_sqlite: str, namespace: dict[str, str], tmp_path: Path
) -> None:
    """The nastiest inputs through the real publisher and nats-server: all stored, each valid and within the cap."""
    from databricks_nats.integrations import mlflow as nats_mlflow

    with NatsServer() as server:
        settings = databricks_nats.configure(
            url=server.url, spool_dir=str(tmp_path / "spool"), metrics_mode="every", **namespace
        )
        client = mlflow.MlflowClient()
        with no_swallowed_failures():
            nats_mlflow.install()
            for i, name in enumerate(NASTY):
                metric = [math.nan, math.inf, -math.inf][i % 3]
                _mlflow_session(client, name, name, name, metric, "x" * 1_000_000 if i % 2 else name, name)
                databricks_nats.emit(
                    "myteam.features.refreshed",
                    {"name": name, "blob": "y" * 1_000_000, "v": metric},
                    keys=[name, name],
                    dataref=name,
                )
        result = databricks_nats.flush(60)
        stats = databricks_nats.stats()
        assert result.ok, stats
        stored = _read_raw(server.url, settings.stream_name)
        databricks_nats.shutdown(timeout=0)
    assert stats["dropped_total"] == 0, stats
    assert len(stored) == stats["emitted"] > 10 * len(NASTY)
    for subject, payload in stored:
        check_event(subject, payload, settings.max_event_bytes, data_schema=b'"myteam' not in payload[:200])
