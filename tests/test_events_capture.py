"""emit() publishes its data as it was at the call (issue 13 item 7), and values from numpy, pandas, the
standard library, dataclasses and pydantic arrive converted instead of dropping the event (item 8).

Through the real publisher (its worker thread encodes the events) and a real nats-server: what a reader
of the stream gets is checked. To make "the worker encodes later" certain rather than likely, the worker's
event loop is held while the events are emitted and their data changed, and released afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import databricks_nats
from databricks_nats import _api
from databricks_nats.model import catalog
from databricks_nats.testing import NatsServer, read_stream

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")


@contextlib.contextmanager
def worker_held() -> Iterator[None]:
    """Hold the publisher's event loop (so nothing emitted meanwhile is encoded) until the block ends."""
    loop = _api._current()._loop  # type: ignore[attr-defined]
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(60)

    loop.call_soon_threadsafe(hold)
    assert entered.wait(30), "the publisher's loop never ran the hold"
    try:
        yield
    finally:
        release.set()


def _no_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name}")


def _published(server: NatsServer, settings: Any) -> list[dict[str, Any]]:
    """Every envelope in the namespace's stream, parsed as strict RFC 8259 JSON."""
    flushed = databricks_nats.flush(timeout=60)
    assert flushed.ok, flushed
    msgs = read_stream(server.url, settings.stream_name)
    return [json.loads(json.dumps(m["envelope"]), parse_constant=_no_constant) for m in msgs]


def _assert_valid(envelope: dict[str, Any]) -> None:
    """Valid against the envelope schema and the data schema of its type."""
    errors = [e.message for e in Draft202012Validator(catalog.envelope_schema()).iter_errors(envelope)]
    etype = catalog.lookup(envelope["type"].removeprefix("databricks."))
    errors += [e.message for e in Draft202012Validator(etype.schema()).iter_errors(envelope["data"])]
    assert not errors, f"{envelope['type']}: {errors}"


@pytest.fixture
def publishing(nats_server: NatsServer, tmp_path: Path, namespace: dict[str, str]) -> Any:
    return databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)


def test_changing_the_data_after_emit_does_not_change_the_published_events(
    nats_server: NatsServer, publishing: Any
) -> None:
    """200 emits of one dict, changed (nested values too) after every call and cleared at the end, while the
    worker is held: each event in the stream holds the values of its own call."""
    data: dict[str, Any] = {"experiment_id": "7", "run_id": "r1", "metrics": {"loss": 0.0}, "points": 0, "seen": []}
    with worker_held():
        for i in range(200):
            data["metrics"]["loss"] = i / 10
            data["points"] = i
            data["seen"].append([i, {"step": i}])
            assert databricks_nats.emit("mlflow.run.metrics", data) is not None
        data["metrics"]["loss"] = -1.0
        data["seen"][0][1]["step"] = -1
        data["seen"].clear()
        data.clear()
    published = [e for e in _published(nats_server, publishing) if e["type"] == "databricks.mlflow.run.metrics"]
    assert [e["data"].get("points") for e in published] == list(range(200))
    for i, envelope in enumerate(published):
        assert envelope["data"]["metrics"] == {"loss": i / 10}
        assert envelope["data"]["seen"] == [[j, {"step": j}] for j in range(i + 1)]
        assert envelope["subject"].endswith(".mlflow.run.7.r1.metrics")
        _assert_valid(envelope)
    assert databricks_nats.stats()["dropped"] == {}


class Stage(enum.Enum):
    STAGING = "Staging"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Split:
    name: str
    rows: Any
    weights: Any


def test_numpy_pandas_and_standard_values_arrive_converted_and_valid(nats_server: NatsServer, publishing: Any) -> None:
    """numpy scalars, 0-d and n-d arrays, pandas values, Decimal, UUID, Path, Enum, dataclasses, pydantic models
    and datetimes are converted at emit: nothing is dropped, every event is strict JSON valid against its schema,
    non-finite floats are the strings of the protobuf JSON mapping, and a large array is cut like a long list."""
    run_id = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    metrics = {
        "loss": np.float32(0.5),
        "acc": np.float64(0.875),
        "lr": np.array(0.25),  # a 0-d array
        "nan": np.float32("nan"),
        "inf": np.array(np.inf),
        "ninf": decimal.Decimal("-Infinity"),
        "dec": decimal.Decimal("1.5"),
    }
    sent = [
        (
            "mlflow.run.metrics",
            {
                "experiment_id": np.str_("42"),
                "run_id": run_id.hex,
                "metrics": metrics,
                "points": np.int64(7),
                "final": np.bool_(True),
            },
            None,
        ),
        (
            "custom.numpy.values",
            {
                "flag": np.bool_(False),
                "small": np.arange(6, dtype=np.int32).reshape(2, 3),
                "big": np.arange(100_000, dtype=np.float64),
                "mask": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
                "when": np.datetime64("2026-05-01T12:30:00"),
                "never": np.datetime64("NaT"),
            },
            ["k"],
        ),
        (
            "custom.pandas.values",
            {
                "ts": pd.Timestamp("2026-05-01 12:30", tz="UTC"),
                "nat": pd.NaT,
                "na": pd.NA,
                "series": pd.Series({"loss": 0.5, "acc": np.nan}),
                "frame": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
            },
            ["k"],
        ),
        (
            "custom.std.values",
            {
                "id": run_id,
                "path": Path("/dbfs/models/churn"),
                "stage": Stage.STAGING,
                "level": Level.HIGH,
                "split": Split("train", np.int64(10), np.array([0.5, 0.5])),
                "day": dt.date(2026, 5, 1),
            },
            ["k"],
        ),
    ]
    pydantic = _pydantic_model()
    if pydantic is not None:
        sent.append(("custom.pydantic.values", {"model": pydantic}, ["k"]))
    with worker_held():  # encoded by the worker, after the calls, as in production
        for event_type, data, keys in sent:
            assert databricks_nats.emit(event_type, data, keys=keys) is not None
    published = {e["type"].removeprefix("databricks."): e for e in _published(nats_server, publishing)}
    assert set(published) == {t for t, _, _ in sent}
    assert databricks_nats.stats()["dropped"] == {}
    for envelope in published.values():
        _assert_valid(envelope)
        assert len(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()) <= 8192

    m = published["mlflow.run.metrics"]["data"]
    assert m["metrics"] == {
        "loss": 0.5,
        "acc": 0.875,
        "lr": 0.25,
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
        "dec": 1.5,
    }
    assert (m["experiment_id"], m["points"], m["final"]) == ("42", 7, True)
    assert m["final"] is True  # a JSON true, not 1
    assert published["mlflow.run.metrics"]["subject"].endswith(f".mlflow.run.42.{run_id.hex}.metrics")

    n = published["custom.numpy.values"]["data"]
    assert (n["flag"], n["small"], n["mask"]) == (False, [[0, 1, 2], [3, 4, 5]], [1, None, 3])
    assert n["flag"] is False
    assert (n["when"], n["never"]) == ("2026-05-01T12:30:00", None)
    assert n["big"] == [float(i) for i in range(len(n["big"]))]
    assert 0 < len(n["big"]) <= 256
    assert n["truncated"] is True
    assert n["truncated_fields"]["big"] == 100_000

    p = published["custom.pandas.values"]["data"]
    assert p == {
        "ts": "2026-05-01T12:30:00+00:00",
        "nat": None,
        "na": None,
        "series": {"loss": 0.5, "acc": "NaN"},
        "frame": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
        "context": p["context"],
    }

    s = published["custom.std.values"]["data"]
    assert s == {
        "id": str(run_id),
        "path": "/dbfs/models/churn",
        "stage": "Staging",
        "level": 3,
        "split": {"name": "train", "rows": 10, "weights": [0.5, 0.5]},
        "day": "2026-05-01",
        "context": s["context"],
    }
    if pydantic is not None:
        assert published["custom.pydantic.values"]["data"]["model"] == {"name": "churn", "version": 3, "tags": ["a"]}


def _pydantic_model() -> Any:
    try:
        import pydantic
    except ImportError:
        return None

    class Model(pydantic.BaseModel):
        name: str
        version: int
        tags: list[str]

    return Model(name="churn", version=3, tags=["a"])
