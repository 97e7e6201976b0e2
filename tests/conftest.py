"""Shared fixtures: a real nats-server per module (JetStream), one per test for fault tests, stream readers."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import databricks_nats
from databricks_nats.client import set_current_client
from databricks_nats.model import catalog
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer

# No health heartbeats unless a test asks (tests/test_health.py): tests count the events in their streams
# exactly. Set before any settings are resolved, and inherited by the processes tests start.
os.environ.setdefault("DATABRICKS_NATS_HEALTH_INTERVAL", "0")


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """One real JetStream-enabled nats-server shared by the tests of a module."""
    with NatsServer() as srv:
        yield srv


@pytest.fixture
def fresh_server() -> Iterator[NatsServer]:
    """A real nats-server of its own, for tests that stop, kill or restart it."""
    with NatsServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _mlflow_state_restored() -> Iterator[None]:
    """Each test leaves MLflow's process-wide state as it found it.

    MLflow 2.x mirrors ``set_experiment``/``set_registry_uri`` into ``MLFLOW_*`` variables, and a flavour
    configured by its own ``autolog()`` (even to disable it) is left alone by every later ``mlflow.autolog()``.
    """
    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in before]:
        del os.environ[key]
    os.environ.update(before)
    autologging = sys.modules.get("mlflow.utils.autologging_utils")
    if autologging is not None:
        autologging.AUTOLOGGING_INTEGRATIONS.clear()  # every flavour unconfigured again (MLflow's own default)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``local[2]`` SparkSession whose Python workers run this interpreter."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("databricks-nats-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.streaming.noDataProgressEventInterval", "200ms")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    from databricks_nats.integrations.spark import detach_all

    detach_all()
    session.stop()


@pytest.fixture
def namespace() -> dict[str, str]:
    """A unique workspace/env pair, so every test has its own subjects, stream and spool."""
    return {"workspace": f"ws{uuid.uuid4().hex[:10]}", "env": "test"}


@pytest.fixture
def record(namespace: dict[str, str]) -> Iterator[Any]:
    """``record(**settings)``: capture events with these settings (no network) and install the MLflow hook."""
    from databricks_nats.integrations import mlflow as nats_mlflow
    from databricks_nats.testing import capture

    with contextlib.ExitStack() as stack:

        def start(**settings: Any) -> Any:
            events = stack.enter_context(capture(**namespace, **settings))
            nats_mlflow.install()
            return events

        yield start


@pytest.fixture
def make_settings(tmp_path: Any, namespace: dict[str, str]) -> Any:
    """Build settings for a server with a temporary spool (ignoring the caller's environment)."""

    def make(server: NatsServer | str, **kw: Any) -> Settings:
        url = server if isinstance(server, str) else server.url
        base: dict[str, Any] = {"url": url, "spool_dir": str(tmp_path / "spool"), **namespace, "ack_timeout": 1.0}
        base.update(kw)
        return resolve_settings(environ={}, spark_conf={}, **base)

    return make


@pytest.fixture(autouse=True)
def _reset_global_publisher() -> Iterator[None]:
    """Every test starts and ends without a default client (the next one is made from the environment)."""
    databricks_nats.shutdown(timeout=0)
    yield
    databricks_nats.shutdown(timeout=0)
    set_current_client(None)


@pytest.fixture(scope="session")
def assert_valid_event() -> Callable[[dict[str, Any]], None]:
    """(Any test) validate an envelope against the envelope schema and its data against its catalogued type's schema."""
    envelope_validator = _validator(catalog.envelope_schema())
    known = {t.name for t in catalog.all_types()}
    data_validators: dict[str, Draft202012Validator] = {}

    def check(envelope: dict[str, Any]) -> None:
        errors = [e.message for e in envelope_validator.iter_errors(envelope)]
        assert not errors, f"envelope of {envelope.get('type')}: {errors}"
        event_type = envelope["type"].removeprefix("databricks.")
        assert event_type in known, f"{event_type} is not a catalogued type"
        if event_type not in data_validators:
            data_validators[event_type] = _validator(catalog.lookup(event_type).schema())
        errors = [f"{list(e.path)}: {e.message}" for e in data_validators[event_type].iter_errors(envelope["data"])]
        assert not errors, f"data of {event_type}: {errors}"
        dt.datetime.fromisoformat(envelope["time"].replace("Z", "+00:00"))  # RFC 3339

    return check


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
