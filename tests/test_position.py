"""StartPosition: every form a start (or an event-log bound) takes, parsed in one place."""

from __future__ import annotations

import datetime as dt

import pytest

from databricks_nats.errors import ConfigurationError, DatabricksNatsError
from databricks_nats.model.position import StartPosition

UTC = dt.timezone.utc
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("new", StartPosition("new")),
        ("all", StartPosition("all")),
        ("last", StartPosition("last")),
        (42, StartPosition("seq", seq=42)),
        ("42", StartPosition("seq", seq=42)),
        ("seq:42", StartPosition("seq", seq=42)),
        (WHEN, StartPosition("time", time=WHEN)),
        (WHEN.replace(tzinfo=None), StartPosition("time", time=WHEN)),  # naive means UTC
        (WHEN.astimezone(dt.timezone(dt.timedelta(hours=2))), StartPosition("time", time=WHEN)),
        ("2026-01-02T03:04:05Z", StartPosition("time", time=WHEN)),
        ("2026-01-02T05:04:05+02:00", StartPosition("time", time=WHEN)),
        (StartPosition("all"), StartPosition("all")),
    ],
)
def test_every_accepted_form(value: object, expected: StartPosition) -> None:
    assert StartPosition.parse(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400)])
def test_durations_are_that_long_before_now(text: str, seconds: int) -> None:
    before = dt.datetime.now(UTC)
    position = StartPosition.parse(text)
    after = dt.datetime.now(UTC)
    assert position.kind == "time"
    assert position.time is not None
    assert before - dt.timedelta(seconds=seconds) <= position.time <= after - dt.timedelta(seconds=seconds)
    ago = StartPosition.parse(dt.timedelta(seconds=seconds))
    assert ago.time is not None
    assert ago.time >= position.time


@pytest.mark.parametrize("value", ["newest", "", "seq:", "seq:-1", "10w", "yesterday", True, 1.5, None, ["all"]])
def test_anything_else_is_a_configuration_error_naming_the_parameter(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"'since'.*'new', 'all', 'last'") as caught:
        StartPosition.parse(value, "since")  # type: ignore[arg-type]
    assert caught.value.setting == "since"
    assert isinstance(caught.value, (ValueError, DatabricksNatsError))  # callers catching ValueError still work


@pytest.mark.parametrize("value", ["new", "all", "last", 7, WHEN, "2026-01-02T03:04:05Z"])
def test_to_json_reads_back_to_the_same_position(value: object) -> None:
    position = StartPosition.parse(value)  # type: ignore[arg-type]
    assert StartPosition.parse(position.to_json()) == position


def test_stamp_is_rfc3339_utc() -> None:
    assert StartPosition.at(WHEN.replace(tzinfo=None)).stamp == "2026-01-02T03:04:05Z"
