"""Fixtures for the Spark tests: the run's one local Spark session (tests/conftest.py), a real nats-server per module.

Each test publishes into its own workspace namespace (its own stream), attaches the listeners itself and
detaches them afterwards, so tests sharing the session never see each other's events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import databricks_nats
from databricks_nats import spark as nats_spark
from databricks_nats.testing import NatsServer, read_stream


@pytest.fixture
def published(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Configure publishing to the module's real server; return a reader of what reached the stream."""
    settings = databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)

    def read(prefix: str = "") -> list[dict[str, Any]]:
        databricks_nats.flush(timeout=10)
        envs = [m["envelope"] for m in read_stream(nats_server.url, settings.stream_name)]
        return [e for e in envs if e["type"].removeprefix("databricks.").startswith(prefix)]

    return read


def wait_until(check: Callable[[], Any], spark: Any, timeout: float = 60.0) -> Any:
    """Let the listeners settle until ``check()`` is truthy (a wait with a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        nats_spark.settle(spark)
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def attached(spark: Any) -> Iterator[Callable[..., Any]]:
    """Attach the listeners with the given options; always detach afterwards."""

    def attach(**options: Any) -> Any:
        return nats_spark.attach(spark, **options)

    yield attach
    nats_spark.detach(spark)


def fail_a_query(spark: Any, rows: int = 3) -> None:
    """Run a query that fails in Spark (ANSI integer division by zero) and expect the failure."""
    spark.conf.set("spark.sql.ansi.enabled", "true")
    try:
        with pytest.raises(Exception, match="DIVIDE_BY_ZERO"):
            spark.range(rows).selectExpr("1 DIV (id - id) AS boom").collect()
    finally:
        spark.conf.unset("spark.sql.ansi.enabled")
