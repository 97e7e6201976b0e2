"""The consumer API against a real server: order, durable resume, wait_for, filters, duplicate suppression."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats.consumer import subscribe, wait_for
from databricks_nats.errors import ConfigurationError, StreamError, SubjectError, WaitTimeout
from databricks_nats.model.filters import subject_filter
from databricks_nats.testing import NatsServer


@pytest.fixture
def live(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Path) -> Any:
    """Process-wide publishing into this test's own namespace on the module's real server."""
    return databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)


def _versions(name: str, count: int, start: int = 1) -> list[str]:
    ids = []
    for v in range(start, start + count):
        event = databricks_nats.emit("mlflow.model.version_created", {"name": name, "version": str(v)})
        assert event is not None
        ids.append(event.id)
    assert databricks_nats.flush(timeout=10).ok
    return ids


def test_subscribe_delivers_in_stream_order(live: Any) -> None:
    """Events come back in the order they were published, with their original ids and data."""
    ids = _versions("main.ml.churn", 20)
    with subscribe("mlflow.model.version_created", start="all") as sub:
        got = [sub.next(timeout=10) for _ in range(20)]
    assert [e.id for e in got] == ids
    assert [e.data["version"] for e in got] == [str(v) for v in range(1, 21)]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert got[0].type == "mlflow.model.version_created"
    assert got[0].env == live.env


def test_durable_consumer_resumes_after_restart(live: Any) -> None:
    """A durable consumer restarted later resumes after the last acknowledged event: nothing lost, nothing old."""
    ids = _versions("m", 5)
    first = subscribe("mlflow.model.version_created", durable="retrain", start="all")
    seen = [first.next(timeout=10).id for _ in range(3)]  # the third is delivered but not acknowledged
    first.close()
    ids += _versions("m", 3, start=6)
    with subscribe("mlflow.model.version_created", durable="retrain") as again:
        rest = [again.next(timeout=10).id for _ in range(6)]
        with pytest.raises(TimeoutError):
            again.next(timeout=0.5)
    assert seen == ids[:3]
    assert rest == ids[2:]  # the unacknowledged third comes again, then everything after it


def test_durable_with_other_filters_is_refused(live: Any) -> None:
    """Reusing a durable name for different filters is a clear error, never a silent rebind."""
    _versions("m", 1)
    subscribe("mlflow.model.version_created", durable="one", start="all").next(timeout=10)
    with pytest.raises(StreamError, match="exists with filters"):
        subscribe("mlflow.model.alias_set", durable="one").next(timeout=5)


def test_wait_for_returns_the_matching_event(live: Any) -> None:
    """wait_for returns the first event matching the data fields, published after it started waiting."""
    _versions("main.ml.churn", 2)
    timer = threading.Timer(0.5, lambda: (_versions("main.ml.other", 1), _versions("main.ml.churn", 2, start=3)))
    timer.start()
    event = wait_for("mlflow.model.version_created", match={"name": "main.ml.churn", "version": "4"}, timeout=30)
    timer.join()
    assert event.data == {**event.data, "name": "main.ml.churn", "version": "4"}


def test_wait_for_times_out_clearly(live: Any) -> None:
    """With no matching event wait_for raises WaitTimeout, which is also a TimeoutError."""
    _versions("main.ml.churn", 1)
    with pytest.raises(WaitTimeout, match="alias_set") as info:
        wait_for("mlflow.model.alias_set", match={"name": "main.ml.churn"}, timeout=0.5, start="all")
    assert isinstance(info.value, TimeoutError)


def test_duplicates_in_the_stream_are_dropped(live: Any, nats_server: NatsServer) -> None:
    """The same event stored twice (e.g. republished outside the dedupe window) is delivered once."""
    [event_id] = _versions("dup", 1)

    async def republish() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        stored = await js.get_msg(live.stream_name, 1)
        assert stored.subject is not None
        assert stored.data is not None
        await js.publish(stored.subject, stored.data)  # no Nats-Msg-Id: the server stores it again
        await nc.close()

    asyncio.run(republish())
    _versions("dup", 1, start=2)
    with subscribe("mlflow.model.version_created", start="all") as sub:
        got = [sub.next(timeout=10), sub.next(timeout=10)]
        assert sub.dedupe is not None
        assert sub.dedupe.dropped == 1
    assert [e.data["version"] for e in got] == ["1", "2"]
    assert got[0].id == event_id


def test_async_iteration(live: Any) -> None:
    """``async for`` over a subscription yields the events inside a running event loop."""
    ids = _versions("a", 3)

    async def consume() -> list[str]:
        out = []
        async for event in subscribe("mlflow.model.*", start="all"):
            out.append(event.id)
            if len(out) == 3:
                break
        return out

    assert asyncio.run(consume()) == ids


def test_subject_filters_follow_the_publisher_grammar() -> None:
    """Filters encode keys exactly like the publisher and use wildcards only where the caller leaves gaps."""
    ns = "dbx.ws.prod"
    assert subject_filter(ns) == "dbx.ws.prod.>"
    assert subject_filter(ns, "mlflow.model.alias_set", name="main.ml.churn") == (
        "dbx.ws.prod.mlflow.model.main%2Eml%2Echurn.alias_set"
    )
    assert subject_filter(ns, "mlflow.run.finished", run_id="r1") == "dbx.ws.prod.mlflow.run.*.r1.finished"
    assert subject_filter(ns, "mlflow.run.*") == "dbx.ws.prod.mlflow.run.*.*.*"
    assert subject_filter(ns, "team.job.done", keys=["*"]) == "dbx.ws.prod.team.job.*.done"
    with pytest.raises(SubjectError, match="keys="):
        subject_filter(ns, "team.job.done")


def test_envelope_is_kept(live: Any) -> None:
    """A received event keeps the full CloudEvent, as a consumer forwarding it would need."""
    _versions("env", 1)
    with subscribe(start="all") as sub:
        event = sub.next(timeout=10)
    assert event.envelope["specversion"] == "1.0"
    assert json.loads(json.dumps(event.envelope))["id"] == event.id


@pytest.mark.parametrize(("start", "first"), [("all", 0), ("seq:2", 1), ("last", 3), ("2", 1)])
def test_every_start_position_reaches_the_server(live: Any, start: str, first: int) -> None:
    """``start`` takes every StartPosition form; each starts the consumer where it says (stream sequences)."""
    ids = _versions("m", 4)
    with subscribe("mlflow.model.version_created", start="all") as sub:
        seqs = [sub.next(timeout=10).seq for _ in ids]
    position = f"seq:{seqs[first]}" if start.startswith("seq:") else str(seqs[first]) if start.isdigit() else start
    with subscribe("mlflow.model.version_created", start=position) as sub:
        assert sub.next(timeout=10).id == ids[first]


def test_a_bad_start_is_a_configuration_error_at_subscribe(live: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"'start'.*'new', 'all', 'last'"):
        subscribe("mlflow.model.version_created", start="yesterday")
    with pytest.raises(ValueError, match="'start'"):  # callers catching ValueError still catch it
        subscribe("mlflow.model.version_created", start=1.5)  # type: ignore[arg-type]
