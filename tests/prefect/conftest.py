"""The Prefect integration's fixtures: a real ephemeral Prefect server (the test harness) for the session.

These tests run in their own environment (``.ci/prefect.sh``). In the main environment, where Prefect is
not installed, they are not collected; with ``DATABRICKS_NATS_REQUIRE_PREFECT=1`` (set by .ci/prefect.sh)
a missing Prefect is an error instead.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def _prefect_installed() -> bool:
    """True for the real Prefect (tests/ is on sys.path, where this very folder looks like a ``prefect`` package)."""
    spec = importlib.util.find_spec("prefect")
    return spec is not None and spec.origin not in (None, "namespace")


if not _prefect_installed():
    if os.environ.get("DATABRICKS_NATS_REQUIRE_PREFECT"):
        raise ImportError("tests/prefect need Prefect in this environment: run them through .ci/prefect.sh")
    collect_ignore_glob = ["test_*.py"]
else:
    # Read by the server process the harness starts, so they must be in the environment before it does.
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.5"
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server on a temporary SQLite database; its API URL is this process's PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness did not set PREFECT_API_URL"
        yield str(url)


def _eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` seconds passed (fails)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:g} s (last seen: {last!r})")


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """``eventually(probe, timeout, what)``: poll until ``probe()`` is truthy, failing after ``timeout`` seconds."""
    return _eventually


@pytest.fixture
def read_prefect_events(prefect_api: str) -> Callable[..., list[Any]]:
    """Read back, through the Prefect client, the Prefect events whose resource has these labels."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter
    from prefect.events.schemas.events import ResourceSpecification

    def read(labels: dict[str, str], at_least: int, timeout: float = 60.0) -> list[Any]:
        def probe() -> list[Any] | None:
            now = dt.datetime.now(dt.timezone.utc)
            flt = EventFilter(
                occurred=EventOccurredFilter(since=now - dt.timedelta(hours=1), until=now + dt.timedelta(hours=1)),
                resource=EventResourceFilter(labels=ResourceSpecification(labels)),
            )
            with get_client(sync_client=True) as client:
                page = client.read_events(filter=flt, limit=50)
            return page.events if len(page.events) >= at_least else None

        return _eventually(probe, timeout, f"{at_least} Prefect event(s) with labels {labels}")

    return read


@pytest.fixture
def live(nats_server: Any, namespace: dict[str, str], tmp_path: Any) -> dict[str, str]:
    """Publishing into this test's own namespace on the module's real nats-server; the bridge's settings."""
    import databricks_nats

    databricks_nats.configure(url=nats_server.url, spool_dir=str(tmp_path / "spool"), **namespace)
    return {"url": nats_server.url, **namespace}
