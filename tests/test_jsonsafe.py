"""jsonsafe.snapshot, what emit() does to the caller's data (issue 13 items 7 and 8): a copy taken at the call,
JSON values only, bounded by the size cap; numpy, pandas, Decimal, UUID, Path, Enum, dataclass and pydantic
values converted. Checked through ``testing.capture()`` (the publisher's own encoder) and on the copy itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import subprocess
import sys
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import databricks_nats
from databricks_nats.model import jsonsafe
from databricks_nats.testing import capture

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

CAP = 8192


def _no_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name}")


def emitted(data: dict[str, Any], event_type: str = "custom.values.set", **settings: Any) -> dict[str, Any]:
    """The data of the one event ``emit`` publishes for ``data``, as a subscriber parses it (strict JSON)."""
    with capture(**settings) as events:
        assert databricks_nats.emit(event_type, data, keys=["k"]) is not None
    [event] = events
    assert len(event.payload) <= settings.get("max_event_bytes", CAP)
    envelope = json.loads(event.payload.decode(), parse_constant=_no_constant)
    return envelope["data"]  # type: ignore[no-any-return]


class Color(enum.Enum):
    RED = "red"


class Priority(enum.IntEnum):
    HIGH = 2


class Tag(str, enum.Enum):
    PROD = "prod"


@dataclasses.dataclass
class Params:
    lr: Any
    layers: Any = dataclasses.field(default_factory=lambda: [64, 32])


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


CONVERSIONS = [
    # numpy
    ("np.bool_", lambda: np.bool_(True), True),
    ("np.int64", lambda: np.int64(7), 7),
    ("np.uint8", lambda: np.uint8(255), 255),
    ("np.float32", lambda: np.float32(0.5), 0.5),
    ("np.float64", lambda: np.float64(0.1), 0.1),
    ("np.float64 nan", lambda: np.float64("nan"), "NaN"),
    ("np.float32 -inf", lambda: np.float32("-inf"), "-Infinity"),
    ("0-d int array", lambda: np.array(3), 3),
    ("0-d bool array", lambda: np.array(False), False),
    ("0-d inf array", lambda: np.array(np.inf), "Infinity"),
    ("1-d float array", lambda: np.array([0.5, np.nan]), [0.5, "NaN"]),
    ("2-d int array", lambda: np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
    ("str array", lambda: np.array(["a", "b"]), ["a", "b"]),
    ("object array", lambda: np.array([{"a": np.int8(1)}, None], dtype=object), [{"a": 1}, None]),
    ("datetime64", lambda: np.datetime64("2026-05-01T12:30"), "2026-05-01T12:30"),
    ("datetime64 NaT", lambda: np.datetime64("NaT"), None),
    ("np.str_", lambda: np.str_("x"), "x"),
    ("np.bytes_", lambda: np.bytes_(b"abc"), "<3 bytes>"),
    ("masked array", lambda: np.ma.masked_array([1.5, 2.5], mask=[1, 0]), [None, 2.5]),
    # pandas
    ("Timestamp", lambda: pd.Timestamp("2026-05-01 12:30", tz="UTC"), "2026-05-01T12:30:00+00:00"),
    ("NaT", lambda: pd.NaT, None),
    ("NA", lambda: pd.NA, None),
    ("Series (range index)", lambda: pd.Series([1.0, np.nan]), [1.0, "NaN"]),
    ("Series (labels)", lambda: pd.Series({"loss": np.float32(0.5)}), {"loss": 0.5}),
    ("Series of Timestamps", lambda: pd.Series(pd.to_datetime(["2026-05-01", None])), ["2026-05-01T00:00:00", None]),
    ("DataFrame", lambda: pd.DataFrame({"a": [1, 2], "b": [0.5, None]}), [{"a": 1, "b": 0.5}, {"a": 2, "b": "NaN"}]),
    ("Index", lambda: pd.Index(["x", "y"]), ["x", "y"]),
    # standard library and friends
    ("Decimal", lambda: decimal.Decimal("1.25"), 1.25),
    ("Decimal NaN", lambda: decimal.Decimal("NaN"), "NaN"),
    ("Decimal sNaN", lambda: decimal.Decimal("sNaN"), "NaN"),
    ("Decimal Infinity", lambda: decimal.Decimal("Infinity"), "Infinity"),
    ("UUID", lambda: uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("Path", lambda: Path("/dbfs/x/y"), "/dbfs/x/y"),
    ("PurePosixPath", lambda: PurePosixPath("a/b"), "a/b"),
    ("Enum", lambda: Color.RED, "red"),
    ("IntEnum", lambda: Priority.HIGH, 2),
    ("str Enum", lambda: Tag.PROD, "prod"),
    ("dataclass", lambda: Params(np.float32(0.5)), {"lr": 0.5, "layers": [64, 32]}),
    ("datetime", lambda: dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.timezone.utc), "2026-05-01T12:30:00+00:00"),
    ("date", lambda: dt.date(2026, 5, 1), "2026-05-01"),
    ("time", lambda: dt.time(12, 30), "12:30:00"),
    ("bytes", lambda: b"abc", "<3 bytes>"),
    ("bytearray", lambda: bytearray(b"ab"), "<2 bytes>"),
    ("tuple", lambda: (1, (2, "x")), [1, [2, "x"]]),
    ("frozenset", lambda: frozenset({"only"}), ["only"]),
    ("set", lambda: {1}, [1]),
    ("complex", lambda: 1 + 2j, "(1+2j)"),
    ("other object", lambda: Opaque(), "opaque!"),
    ("float nan", lambda: math.nan, "NaN"),
    ("float inf", lambda: math.inf, "Infinity"),
    (
        "map with non-string keys",
        lambda: {1: "a", None: "b", False: "c", 2.5: "d"},
        {"1": "a", "null": "b", "false": "c", "2.5": "d"},
    ),
    ("map with numpy and enum keys", lambda: {np.int64(3): 1, Color.RED: 2}, {"3": 1, "red": 2}),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in CONVERSIONS], ids=[c[0] for c in CONVERSIONS])
def test_values_are_converted_to_json(value: Any, expected: Any) -> None:
    """Each kind of value arrives as its JSON equivalent (the event is not dropped); non-finite floats as the
    strings "NaN", "Infinity", "-Infinity"."""
    actual = emitted({"v": value()})["v"]
    assert json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True)  # true is not 1, 1.0 not 1


def test_pydantic_models_are_converted() -> None:
    """A pydantic model arrives as its JSON dump (nested models and numpy-free values as pydantic writes them)."""
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        at: dt.datetime

    class Model(pydantic.BaseModel):
        name: str
        version: int
        inner: Inner

    value = Model(name="churn", version=3, inner=Inner(at=dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)))
    assert emitted({"m": value})["m"] == {"name": "churn", "version": 3, "inner": {"at": "2026-05-01T00:00:00Z"}}


def test_catalogued_event_with_numpy_values_is_valid_against_its_schema() -> None:
    """A metrics event built from numpy values (a training loop's usual output) is valid against its schema."""
    from jsonschema import Draft202012Validator

    from databricks_nats.model import catalog

    data = emitted(
        {
            "experiment_id": "1",
            "run_id": "r",
            "metrics": {"loss": np.float32(0.25), "acc": np.array(0.5), "bad": np.float64("nan")},
            "points": np.int64(3),
            "final": np.bool_(False),
        },
        event_type="mlflow.run.metrics",
    )
    assert data["metrics"] == {"loss": 0.25, "acc": 0.5, "bad": "NaN"}
    assert (data["points"], data["final"]) == (3, False)
    errors = list(Draft202012Validator(catalog.lookup("mlflow.run.metrics").schema()).iter_errors(data))
    assert not errors, [e.message for e in errors]


def test_the_event_emit_returns_keeps_the_data_of_the_call() -> None:
    """The Event emit() returns holds a copy: changing the caller's dict (nested lists and maps too) afterwards
    changes neither it nor what is published."""
    data: dict[str, Any] = {"a": {"b": [1, 2]}, "arr": np.array([1.0, 2.0]), "buf": bytearray(b"xy"), "t": ([1],)}
    with capture() as events:
        event = databricks_nats.emit("custom.values.set", data, keys=["k"])
    assert event is not None
    assert event.data is not data
    data["a"]["b"].append(3)
    data["arr"][0] = 99.0
    data["buf"].extend(b"zz")
    data["t"][0].append(2)
    data["new"] = 1
    assert {k: v for k, v in event.data.items() if k != "context"} == {
        "a": {"b": [1, 2]},
        "arr": [1.0, 2.0],
        "buf": "<2 bytes>",
        "t": [[1]],
    }
    assert events[0].data["a"] == {"b": [1, 2]}


def test_snapshot_shares_no_container_with_the_callers_data() -> None:
    """Every dict and list of the snapshot is new; only immutable scalars are shared."""
    data: dict[str, Any] = {"m": {"x": [1, {"y": [2]}]}, "l": [[0]], "s": "text"}
    snap = jsonsafe.snapshot(data)
    assert snap == {"m": {"x": [1, {"y": [2]}]}, "l": [[0]], "s": "text"}
    assert snap is not data
    assert snap["m"] is not data["m"]
    assert snap["m"]["x"] is not data["m"]["x"]
    assert snap["m"]["x"][1] is not data["m"]["x"][1]
    assert snap["l"][0] is not data["l"][0]
    assert jsonsafe.snapshot(None) == {}
    assert jsonsafe.snapshot({}) == {}


def test_a_large_array_is_cut_at_emit_and_marked_with_its_length() -> None:
    """A 1,000,000-element ndarray (or list) is not copied whole: the event keeps the first items, fits the cap,
    and says what was cut and how long it was."""
    data = emitted({"arr": np.arange(1_000_000, dtype=np.float64), "xs": list(range(200_000)), "note": "kept"})
    assert data["note"] == "kept"
    assert data["truncated"] is True
    assert data["truncated_fields"]["arr"] == 1_000_000
    assert data["truncated_fields"]["xs"] == 200_000
    assert 0 < len(data["arr"]) <= 256
    assert data["arr"] == [float(i) for i in range(len(data["arr"]))]
    assert 0 < len(data["xs"]) <= 256


def test_a_cut_array_that_still_does_not_fit_is_trimmed_further_keeping_its_original_length() -> None:
    """A 2-d array too big even after the cut at emit is trimmed like any data; its original row count stays
    the recorded length."""
    data = emitted({"m": np.ones((5_000, 300), dtype=np.float32)}, max_event_bytes=2048)
    assert data["truncated"] is True
    assert data["truncated_fields"]["m"] == 5_000
    assert len(data["m"]) < 256


def test_a_map_with_too_many_fields_keeps_the_subject_keys() -> None:
    """100,000 top-level fields: the copy at emit is bounded, the subject keys (listed last) are kept and the
    field count is recorded."""
    data: dict[str, Any] = {f"f{i}": i for i in range(100_000)}
    data.update(experiment_id="e1", run_id="r1")
    with capture() as events:
        databricks_nats.emit("mlflow.run.metrics", data)
    [event] = events
    assert event.subject.endswith(".mlflow.run.e1.r1.metrics")
    assert (event.data["experiment_id"], event.data["run_id"]) == ("e1", "r1")
    assert event.data["truncated_fields"]["<fields>"] == 100_002
    assert len(event.payload) <= CAP


def test_snapshot_cut_is_bounded_by_the_configured_cap() -> None:
    """Lists shorter than the cap could hold are copied whole; the bound follows max_event_bytes."""
    assert len(jsonsafe.snapshot({"xs": list(range(4000))}, 8192)["xs"]) == 4000
    cut = jsonsafe.snapshot({"xs": list(range(5000))}, 8192)
    assert len(cut["xs"]) == 256
    assert cut["truncated_fields"] == {"xs": 5000}
    assert len(jsonsafe.snapshot({"xs": list(range(5000))}, 1 << 20)["xs"]) == 5000


def test_deeply_nested_and_self_referencing_data_is_bounded() -> None:
    """A structure nested deeper than 32 levels (or containing itself) ends in a marker instead of failing."""
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    data = emitted({"loop": loop})
    depth, node = 0, data["loop"]
    while isinstance(node, dict):
        node, depth = node["self"], depth + 1
    assert node == "<nested too deep>"
    assert depth <= 33


def test_a_path_dataref_is_published_as_a_string() -> None:
    """``dataref`` may be a Path (or any object): it is published as its string, not dropped."""
    with capture() as events:
        databricks_nats.emit("custom.values.set", {}, keys=["k"], dataref=Path("/dbfs/tables/t"))
    assert events[0].envelope["dataref"] == "/dbfs/tables/t"


def test_converting_plain_and_standard_values_imports_no_numpy_pandas_or_pydantic() -> None:
    """Values are recognised by their type's module: numpy, pandas and pydantic are imported only by the caller."""
    code = (
        "import sys, uuid, decimal, enum, pathlib, dataclasses\n"
        "import databricks_nats\n"
        "from databricks_nats.testing import capture\n"
        "E = enum.Enum('E', 'A')\n"
        "@dataclasses.dataclass\n"
        "class D:\n"
        "    x: int = 1\n"
        "with capture() as c:\n"
        "    databricks_nats.emit('custom.a.b', {'d': decimal.Decimal(1), 'u': uuid.uuid4(), 'p': pathlib.Path('x'),\n"
        "                         'e': E.A, 'dc': D(), 'o': object(), 's': {1}}, keys=['k'])\n"
        "assert len(c) == 1, c\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
