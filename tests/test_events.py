"""The CloudEvents envelope: schema validity of every built-in type, strict JSON, the size cap, and event ids."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from databricks_nats.errors import SubjectError
from databricks_nats.model import catalog, events
from databricks_nats.model.catalog import EventType
from databricks_nats.model.ids import uuid7, uuid7_time_ms
from databricks_nats.model.subjects import build_subject

NAMESPACE, WORKSPACE, ENV = "dbx.ws1.dev", "ws1", "dev"
CONTEXT = {"workspace": WORKSPACE, "env": ENV}
CAP = 8192

# --- format checking that does not depend on jsonschema's optional format extras ------------------------
FORMATS = FormatChecker()  # an instance copy: registering below never touches jsonschema's global checker
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+$")

if "date-time" not in FORMATS.checkers:

    @FORMATS.checks("date-time")
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            return False
        try:
            dt.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return False
        return True


if "uri" not in FORMATS.checkers:

    @FORMATS.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or bool(_URI.match(value))


ENVELOPE = Draft202012Validator(catalog.envelope_schema(), format_checker=FORMATS)
BUILTIN = catalog.all_types()


def _data_validator(etype: EventType) -> Draft202012Validator:
    return Draft202012Validator(etype.schema(), format_checker=FORMATS)


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(payload: bytes) -> Any:
    """Parse as RFC 8259 JSON: UTF-8 only, no NaN/Infinity literals."""
    return json.loads(payload.decode("utf-8"), parse_constant=_no_constant)


ENCODER = events.Encoder(namespace=NAMESPACE, workspace=WORKSPACE, env=ENV, context=CONTEXT)


def _encode(event: events.Event, max_bytes: int = CAP) -> tuple[str, bytes]:
    """Encode as the publisher does (``Encoder``), checking that it gives exactly the reference ``encode``'s bytes."""
    subject = event.subject
    fast = ENCODER(event, max_bytes=max_bytes)
    event.subject = subject
    reference = events.encode(
        event, namespace=NAMESPACE, workspace=WORKSPACE, env=ENV, context=CONTEXT, max_bytes=max_bytes
    )
    assert fast == reference
    return fast


def _check(subject: str, payload: bytes, etype: EventType, max_bytes: int = CAP) -> dict[str, Any]:
    """Assert the payload is within the cap, strict JSON, and valid against both schemas; return the envelope."""
    assert len(payload) <= max_bytes
    envelope = strict_loads(payload)
    ENVELOPE.validate(envelope)
    _data_validator(etype).validate(envelope["data"])
    assert envelope["subject"] == subject
    return envelope  # type: ignore[no-any-return]


# --- example data generated from each type's field kinds -------------------------------------------------
def _example_value(name: str, kind: str, variant: str) -> Any:
    optional = kind.endswith("?")
    if optional and variant == "minimal":
        return None
    base = kind.rstrip("?")
    if base == "string":
        return f"{name}-main.ml.churn v1/é ✓" if variant == "full" else f"{name}-1"
    if base == "integer":
        return 42
    if base == "number":
        return 0.25
    if base == "boolean":
        return True
    if base == "object":
        return {"lr": 0.01, "layers": [1, 2], "name": "x"} if variant == "full" else {}
    if base == "array":
        return [{"path": "model/MLmodel", "size": 1}, "s3://b/k"] if variant == "full" else []
    if base == "metrics":
        return {"loss": 0.5, "acc": 1, "per_class": {"a": 0.1}} if variant == "full" else {}
    raise AssertionError(f"no example for field kind {kind!r}")


def example_data(etype: EventType, variant: str = "full") -> dict[str, Any]:
    """An example data dict with a value of the right kind for every field of the type."""
    return {name: _example_value(name, kind, variant) for name, kind in etype.fields.items()}


_KIND_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=40),
    "integer": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "number": st.floats(),
    "boolean": st.booleans(),
    "object": st.dictionaries(
        st.text(max_size=8), st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8)), max_size=5
    ),
    "array": st.lists(st.one_of(st.text(max_size=8), st.integers(), st.floats()), max_size=5),
    "metrics": st.dictionaries(st.text(max_size=8), st.one_of(st.floats(), st.integers()), max_size=5),
}


def _kind_strategy(kind: str) -> st.SearchStrategy[Any]:
    base = _KIND_STRATEGIES[kind.rstrip("?")]
    return st.one_of(st.none(), base) if kind.endswith("?") else base


def data_for(etype: EventType) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _kind_strategy(kind) for name, kind in etype.fields.items()})


def test_builtin_catalogue_is_not_empty_and_every_kind_has_an_example() -> None:
    """The catalogue has the documented families and every field kind they use has an example generator."""
    names = {t.name for t in BUILTIN}
    families = ("mlflow.run.", "mlflow.model.", "mlflow.logged_model.", "spark.stream.", "spark.execution.")
    for family in (*families, "data.table."):
        assert any(n.startswith(family) for n in names), family
    for etype in BUILTIN:
        Draft202012Validator.check_schema(etype.schema())
        for kind in etype.fields.values():
            assert kind.rstrip("?") in _KIND_STRATEGIES
    Draft202012Validator.check_schema(catalog.envelope_schema())


def test_format_checking_is_active() -> None:
    """The envelope validator really checks the date-time and uri formats (not silently skipping them)."""
    event = events.new_event("custom.format.check", {}, keys=["k"])
    env = strict_loads(_encode(event)[1])
    ENVELOPE.validate(env)
    for key, bad in (("time", "2024-13-45T99:00:00Z"), ("time", "yesterday"), ("dataschema", "not a uri")):
        assert not ENVELOPE.is_valid({**env, key: bad}), (key, bad)


@pytest.mark.parametrize("variant", ["full", "minimal"])
@pytest.mark.parametrize("etype", BUILTIN, ids=[t.name for t in BUILTIN])
def test_every_builtin_type_encodes_to_a_valid_envelope(etype: EventType, variant: str) -> None:
    """Each catalogued type's example data yields an envelope and data valid against their JSON Schemas."""
    data = example_data(etype, variant)
    event = events.new_event(etype.name, data)
    subject, payload = _encode(event)
    env = _check(subject, payload, etype)
    assert env["specversion"] == "1.0"
    assert env["id"] == event.id
    assert env["type"] == f"databricks.{etype.name}"
    assert env["source"] == f"/databricks/{WORKSPACE}/{ENV}/{etype.source}"
    assert env["dataschema"] == f"urn:databricks-nats:schema:{etype.name}:1"
    assert env["datacontenttype"] == "application/json"
    assert (env["workspace"], env["env"]) == (WORKSPACE, ENV)
    keys = [str(data[k]) for k in etype.keys]
    assert subject == build_subject(NAMESPACE, etype.source, etype.entity, keys, etype.action)
    assert subject.startswith(f"{NAMESPACE}.{etype.source}.{etype.entity}.")
    assert subject.endswith(f".{etype.action}")
    assert env["data"]["context"] == CONTEXT
    assert "truncated" not in env["data"]
    for name in etype.fields:
        assert env["data"][name] == data[name]
    if etype.dataref and data.get(etype.dataref):
        assert env["dataref"] == data[etype.dataref]
    else:
        assert "dataref" not in env
    assert "traceparent" not in env


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BUILTIN).flatmap(lambda t: st.tuples(st.just(t), data_for(t))))
def test_generated_data_of_every_builtin_type_is_schema_valid(case: tuple[EventType, dict[str, Any]]) -> None:
    """Randomly generated field values of the declared kinds (NaN and infinities included) stay schema-valid."""
    etype, data = case
    subject, payload = _encode(events.new_event(etype.name, data))
    env = _check(subject, payload, etype)
    for name in etype.keys:
        assert env["data"][name] == data[name]


def test_non_finite_metrics_become_strings_and_payload_is_strict_json() -> None:
    """NaN, Infinity and -Infinity metric values are sent as the strings "NaN", "Infinity", "-Infinity"."""
    etype = catalog.lookup("mlflow.run.metrics")
    data = {
        **example_data(etype),
        "metrics": {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 0.5, "nested": {"x": math.nan}},
    }
    subject, payload = _encode(events.new_event(etype.name, data))
    assert b"NaN," not in payload.replace(b'"NaN"', b"")
    env = _check(subject, payload, etype)
    assert env["data"]["metrics"] == {
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
        "ok": 0.5,
        "nested": {"x": "NaN"},
    }
    with pytest.raises(ValueError, match="non-standard"):
        strict_loads(b'{"x": NaN}')  # the strict parser really is strict


def test_non_finite_optional_numbers_become_strings() -> None:
    """A non-finite rate on a streaming progress event is sent as a string the schema accepts."""
    etype = catalog.lookup("spark.stream.progress")
    data = {**example_data(etype), "input_rows_per_second": math.inf, "processed_rows_per_second": math.nan}
    subject, payload = _encode(events.new_event(etype.name, data))
    env = _check(subject, payload, etype)
    assert env["data"]["input_rows_per_second"] == "Infinity"
    assert env["data"]["processed_rows_per_second"] == "NaN"


MB = 1_000_000
BIG_CASES = [
    ("1MB-string", "spark.stream.terminated", "error", "E" * MB, MB),
    ("1MB-multibyte-string", "spark.stream.terminated", "error", "é✓" * (MB // 2), MB),
    ("1MB-string-in-params", "mlflow.run.params", "params", {"blob": "x" * MB}, None),
    ("10k-list", "mlflow.run.artifacts", "files", [f"model/part-{i:05d}.bin" for i in range(10_000)], 10_000),
    ("10k-dict", "mlflow.run.params", "params", {f"param_{i}": f"value-{i}" for i in range(10_000)}, 10_000),
    ("10k-metrics", "mlflow.run.metrics", "metrics", {f"m{i}": i / 7 for i in range(10_000)}, 10_000),
]


@pytest.mark.parametrize("max_bytes", [1024, CAP, 65536])
@pytest.mark.parametrize(("label", "type_name", "field", "value", "original"), BIG_CASES, ids=[c[0] for c in BIG_CASES])
def test_oversized_data_is_trimmed_under_the_cap_keeping_pointers(
    label: str, type_name: str, field: str, value: Any, original: int | None, max_bytes: int
) -> None:
    """Huge strings, lists and maps are trimmed to fit the cap, flagged as truncated, and the pointers survive."""
    etype = catalog.lookup(type_name)
    data = {**example_data(etype), field: value}
    if etype.dataref:
        data[etype.dataref] = "s3://bucket/path/to/artifacts"
    event = events.new_event(type_name, data)
    expected_subject = build_subject(
        NAMESPACE, etype.source, etype.entity, [str(data[k]) for k in etype.keys], etype.action
    )
    subject, payload = _encode(event, max_bytes)
    env = _check(subject, payload, etype, max_bytes)
    out = env["data"]
    assert out["truncated"] is True
    assert isinstance(out["truncated_fields"], dict)
    assert out["truncated_fields"]
    cut_paths = set(out["truncated_fields"])
    assert any(p == field or p.startswith((f"{field}.", f"{field}[")) for p in cut_paths), cut_paths
    if original is not None and field in out["truncated_fields"]:
        assert out["truncated_fields"][field] == original
    assert subject == expected_subject
    for key in etype.keys:
        assert out[key] == data[key]
    if etype.dataref:
        assert out[etype.dataref] == data[etype.dataref]
        assert env["dataref"] == data[etype.dataref]
    assert env["id"] == event.id


@pytest.mark.parametrize(("label", "type_name", "field", "value", "original"), BIG_CASES, ids=[c[0] for c in BIG_CASES])
def test_shrink_retrims_an_encoded_envelope_to_a_smaller_cap(
    label: str, type_name: str, field: str, value: Any, original: int | None
) -> None:
    """events.shrink re-trims an envelope encoded for a larger cap, keeping id, subject and pointers."""
    etype = catalog.lookup(type_name)
    data = {**example_data(etype), field: value}
    event = events.new_event(type_name, data)
    subject, big = _encode(event, 65536)
    small = events.shrink(big, 1024)
    env = _check(subject, small, etype, 1024)
    assert env["id"] == event.id
    assert env["data"]["truncated"] is True
    for key in etype.keys:
        assert env["data"][key] == data[key]


def test_data_within_the_cap_is_not_marked_truncated() -> None:
    """An event that fits is sent exactly as given, without truncation markers."""
    etype = catalog.lookup("mlflow.run.params")
    data = {**example_data(etype), "params": {f"p{i}": i for i in range(20)}}
    subject, payload = _encode(events.new_event(etype.name, data))
    env = _check(subject, payload, etype)
    assert "truncated" not in env["data"]
    assert "truncated_fields" not in env["data"]
    assert env["data"]["params"] == data["params"]


RESERVED = {"context", "truncated", "truncated_fields"}
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # includes nan, inf and -inf
    st.text(max_size=40),
    # Bulky values that are cheap to generate, so the cap and the trimming are exercised often.
    st.tuples(st.sampled_from('aé✓\x00"'), st.integers(0, 20_000)).map(lambda t: t[0] * t[1]),
    st.integers(0, 3_000).map(lambda n: list(range(n))),
    st.integers(0, 3_000).map(lambda n: {f"k{i}": math.nan if i % 3 == 0 else i for i in range(n)}),
)
JSONISH = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=16,
)
TOP_LEVEL = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in RESERVED), JSONISH, max_size=10)


FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
FUZZ_TYPES = st.sampled_from(["custom.fuzz.happened", "mlflow.run.params", "spark.stream.terminated"])


def _fuzz_event(extra: dict[str, Any], type_name: str) -> tuple[EventType, dict[str, Any], events.Event]:
    etype = catalog.lookup(type_name)
    base = example_data(etype) if etype.fields else {}
    data = {**base, **{k: v for k, v in extra.items() if k not in base}}
    return etype, data, events.new_event(type_name, data, keys=None if etype.fields else ["k1"])


@FUZZ
@given(extra=TOP_LEVEL, type_name=FUZZ_TYPES, max_bytes=st.sampled_from([1024, 2048, CAP]))
def test_fuzzed_data_always_fits_the_cap_as_strict_json(extra: dict[str, Any], type_name: str, max_bytes: int) -> None:
    """Arbitrary JSON-ish data (NaN, infinities, huge ints, nesting) always yields strict JSON within the cap."""
    _, _, event = _fuzz_event(extra, type_name)
    subject, payload = _encode(event, max_bytes)
    assert len(payload) <= max_bytes
    env = strict_loads(payload)
    ENVELOPE.validate(env)
    assert env["subject"] == subject
    assert env["id"] == event.id
    hypothesis_event("trimmed" if "truncated" in env["data"] else "fits untrimmed")
    if "truncated" in env["data"]:
        assert env["data"]["truncated"] is True
        assert all(isinstance(n, int) for n in env["data"]["truncated_fields"].values())


@FUZZ
@given(extra=TOP_LEVEL, type_name=FUZZ_TYPES)
def test_fuzzed_data_at_the_default_cap_keeps_pointers_and_schema(extra: dict[str, Any], type_name: str) -> None:
    """At the default 8 KiB cap, arbitrary extra data never costs the event its key fields or its schema validity."""
    etype, data, event = _fuzz_event(extra, type_name)
    subject, payload = _encode(event, CAP)
    env = _check(subject, payload, etype, CAP)
    for key in etype.keys:
        assert env["data"][key] == data[key]


def test_event_ids_are_uuid7_unique_and_time_ordered() -> None:
    """10k events get distinct UUIDv7 ids that sort in creation order with non-decreasing embedded times."""
    created = [events.new_event("custom.id.test", {}, keys=["k"]) for _ in range(10_000)]
    ids = [e.id for e in created]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    times = [uuid7_time_ms(i) for i in ids]
    assert times == sorted(times)
    pattern = re.compile(catalog.envelope_schema()["properties"]["id"]["pattern"])
    for i in ids[::97]:
        u = uuid.UUID(i)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert str(u) == i
        assert pattern.match(i)


def test_event_ids_are_unique_and_ordered_across_threads() -> None:
    """Ids made concurrently in 8 threads never collide and are increasing within each thread."""
    per_thread: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(per_thread))

    def work(out: list[str]) -> None:
        start.wait()
        for _ in range(2_000):
            out.append(uuid7())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for out in per_thread for i in out]
    assert len(all_ids) == 16_000
    assert len(set(all_ids)) == len(all_ids)
    for out in per_thread:
        assert out == sorted(out)
        assert len(set(out)) == len(out)


def test_event_id_and_time_are_fixed_at_creation() -> None:
    """Encoding the same event twice gives the same id, time and bytes, so a retry is de-duplicated."""
    etype = catalog.lookup("mlflow.run.started")
    event = events.new_event(etype.name, example_data(etype))
    first = _encode(event)
    second = _encode(event)
    assert first == second
    env1, env2 = strict_loads(first[1]), strict_loads(second[1])
    assert env1["id"] == env2["id"] == event.id
    assert env1["time"] == env2["time"]
    assert events.Event("custom.x.y", {}, keys=("a",), id="0190a6b0-0000-7000-8000-000000000000").id == (
        "0190a6b0-0000-7000-8000-000000000000"
    )


def test_envelope_time_is_the_event_creation_time() -> None:
    """The envelope time is the RFC 3339 UTC form of the event's creation time, to the microsecond."""
    event = events.new_event("custom.time.test", {}, keys=["k"])
    env = strict_loads(_encode(event)[1])
    assert env["time"].endswith("Z")
    parsed = dt.datetime.strptime(env["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert parsed == event.time.replace(microsecond=(event.time_ns // 1000) % 1_000_000)


def test_traceparent_absent_without_tracing() -> None:
    """With no active trace the envelope has no traceparent attribute."""
    event = events.new_event("custom.trace.test", {}, keys=["k"])
    assert event.traceparent is None
    env = strict_loads(_encode(event)[1])
    assert "traceparent" not in env
    ENVELOPE.validate(env)


def test_traceparent_present_inside_an_active_span() -> None:
    """Inside an active OpenTelemetry span the envelope carries that span's W3C traceparent."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk_trace.TracerProvider().get_tracer("databricks-nats-tests")
    with tracer.start_as_current_span("emit") as span:
        event = events.new_event("custom.trace.test", {}, keys=["k"])
        ctx = span.get_span_context()
    env = strict_loads(_encode(event)[1])
    ENVELOPE.validate(env)
    assert env["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def test_custom_types_take_keys_from_the_caller_and_an_explicit_dataref() -> None:
    """A custom type's subject keys come from ``keys`` and its dataref from the argument."""
    event = events.new_event(
        "myteam.features.refreshed", {"table": "main.features.users"}, keys=["users", 3], dataref="dbfs:/features/users"
    )
    subject, payload = _encode(event)
    assert subject == f"{NAMESPACE}.myteam.features.users.3.refreshed"
    env = _check(subject, payload, catalog.lookup("myteam.features.refreshed"))
    assert env["dataref"] == "dbfs:/features/users"


def test_missing_key_field_encodes_as_empty_token() -> None:
    """A catalogued event missing a key field still gets a well-formed subject (the empty-name token)."""
    subject, payload = _encode(events.new_event("data.table.updated", {}))
    assert subject == f"{NAMESPACE}.data.table.~e.updated"
    ENVELOPE.validate(strict_loads(payload))


@pytest.mark.parametrize("bad", ["bad", "a..b", "a.b.c d", "a.b", "a.*.c", ""])
def test_malformed_type_raises_subject_error_on_encode(bad: str) -> None:
    """events.encode refuses a malformed event type with SubjectError (a programming error)."""
    with pytest.raises(SubjectError):
        _encode(events.Event(bad, {}))


# --- known library bugs (reported); strict xfail flips to a failure once they are fixed ---------------------
def test_lone_surrogate_in_data_still_encodes() -> None:
    """A file name holding a lone surrogate (os.fsdecode of undecodable bytes) still yields valid strict JSON."""
    etype = catalog.lookup("mlflow.run.artifacts")
    data = {**example_data(etype), "files": ["model/\udcff.bin"]}
    subject, payload = _encode(events.new_event(etype.name, data))
    _check(subject, payload, etype)


def test_many_top_level_fields_still_fit_the_cap() -> None:
    """Data with thousands of top-level object fields is still trimmed under the cap."""
    etype = catalog.lookup("mlflow.run.params")
    data = {**example_data(etype), **{f"extra_{i}": {"a": i} for i in range(3_000)}}
    subject, payload = _encode(events.new_event(etype.name, data))
    _check(subject, payload, etype)


def test_many_top_level_scalars_keep_the_pointers() -> None:
    """Ten extra 40-character top-level fields under a 1 KiB cap do not cost the event its subject key fields."""
    etype = catalog.lookup("mlflow.run.params")
    data = {
        "experiment_id": "123",
        "run_id": "abc",
        "run_url": "https://adb-1.azuredatabricks.net/ml/experiments/123/runs/abc",
        "params": {"lr": 0.1},
        **{f"note_{i}": "x" * 40 for i in range(10)},
    }
    subject, payload = _encode(events.new_event(etype.name, data), 1024)
    env = _check(subject, payload, etype, 1024)
    assert (env["data"]["experiment_id"], env["data"]["run_id"]) == ("123", "abc")


def test_long_dataref_still_fits_the_cap() -> None:
    """A long pointer URI is trimmed so the envelope still fits a 1 KiB cap."""
    etype = catalog.lookup("mlflow.model.registered")
    data = {**example_data(etype), "model_uri": "s3://bucket/" + "k" * 3000}
    subject, payload = _encode(events.new_event(etype.name, data), 1024)
    _check(subject, payload, etype, 1024)


def test_deeply_nested_data_still_encodes() -> None:
    """Data nested thousands of levels deep is encoded (cut at a depth limit) instead of raising."""
    deep: list[Any] = []
    cur = deep
    for _ in range(5_000):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    _, payload = _encode(events.new_event("custom.deep.data", {"d": deep}, keys=["k"]))
    assert len(payload) <= CAP


def test_encoder_renders_plain_events_without_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary events (plain JSON data within the cap) never take the slow reference path."""
    reference = _encode(events.new_event("mlflow.run.metrics", {"experiment_id": "1", "run_id": "r", "metrics": {}}))
    monkeypatch.setattr(events, "encode", lambda *a, **k: pytest.fail("took the reference path"))
    for data in ({}, {"context": {"a": 1}}, {"experiment_id": "é ✓", "run_id": "r\n", "x": [1, None, True]}):
        event = events.new_event("mlflow.run.metrics", data)
        envelope = strict_loads(ENCODER(event, max_bytes=CAP)[1])
        assert envelope["id"] == event.id
        assert envelope["data"] == {"context": CONTEXT, **data}
    custom = events.new_event("custom.thing.done", {"n": 1}, keys=["a.b"], dataref="s3://x")
    assert strict_loads(ENCODER(custom, max_bytes=CAP)[1])["dataref"] == "s3://x"
    assert reference[0] == f"{NAMESPACE}.mlflow.run.1.r.metrics"
