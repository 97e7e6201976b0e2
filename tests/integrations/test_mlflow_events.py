"""The MLflow hook against a real sqlite tracking store: what each MLflow call publishes, and what it never does."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import databricks_nats
from databricks_nats import _api
from databricks_nats.errors import PublishError
from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import capture


def _merged(events: list[Any], field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in events:
        out.update(e.data[field])
    return out


def test_manual_run_publishes_each_call_as_a_valid_event_on_the_run_subject(
    tracking, record, subject_of, assert_valid_event
):
    """A manual run's params, metrics, user tags, artifacts and end become schema-valid events on the run's subjects."""
    events = record(metrics_mode="every")
    src = tracking.root / "notes.txt"
    src.write_text("hello")
    folder = tracking.root / "plots"
    folder.mkdir()
    for name, body in {"a.txt": "1", "b.txt": "22", "c.txt": "333"}.items():
        (folder / name).write_text(body)

    with mlflow.start_run(run_name="manual") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"epochs": 3, "optimizer": "adam"})
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metrics({"loss": 0.25, "acc": 0.9}, step=1)
        mlflow.log_metric("unstable", float("nan"))
        mlflow.set_tag("team", "ml")
        mlflow.set_tags({"stage": "dev", "mlflow.note.content": "a system tag"})
        mlflow.log_artifact(str(src))
        mlflow.log_artifact(str(src), artifact_path="docs")
        mlflow.log_artifacts(str(folder), artifact_path="plots")
        mlflow.log_dict({"alpha": 1, "beta": [1, 2]}, "config/params.json")
        mlflow.log_text("some text", "readme.txt")

    info = mlflow.get_run(run.info.run_id).info
    exp, run_id = info.experiment_id, info.run_id
    assert Counter(events.types()) == {
        "mlflow.run.started": 1,
        "mlflow.run.params": 2,
        "mlflow.run.metrics": 3,  # mode "every": one event per logging call
        "mlflow.run.tags": 2,
        "mlflow.run.artifacts": 5,
        "mlflow.run.finished": 1,
    }
    assert events[0].type == "mlflow.run.started"
    assert events[-1].type == "mlflow.run.finished"
    for e in events:
        assert_valid_event(e.envelope)
        assert e.subject == subject_of("run", exp, run_id, e.type.rsplit(".", 1)[1])
        assert e.envelope["subject"] == e.subject
        assert (e.data["experiment_id"], e.data["run_id"]) == (exp, run_id)

    started = events.of_type("mlflow.run.started")[0].data
    assert started["run_name"] == "manual"
    assert started["start_time"] == info.start_time
    assert started["parent_run_id"] is None
    assert started["user"] == info.user_id
    assert started["artifact_uri"] == info.artifact_uri

    assert _merged(events.of_type("mlflow.run.params"), "params") == {"lr": "0.01", "epochs": "3", "optimizer": "adam"}
    assert _merged(events.of_type("mlflow.run.tags"), "tags") == {"team": "ml", "stage": "dev"}

    metric_events = [e.data for e in events.of_type("mlflow.run.metrics")]
    assert [m["points"] for m in metric_events] == [1, 2, 1]
    history = {k: MlflowClient().get_metric_history(run_id, k)[-1] for k in ("loss", "acc")}
    assert metric_events[1]["metrics"]["loss"] == {
        "value": 0.25,
        "step": 1,
        "timestamp": history["loss"].timestamp,
    }
    assert metric_events[1]["metrics"]["acc"]["value"] == 0.9
    assert metric_events[2]["metrics"]["unstable"]["value"] == "NaN"  # strict JSON: non-finite as a string

    stored = Path(info.artifact_uri)
    announced = {}
    for e in events.of_type("mlflow.run.artifacts"):
        assert e.data["file_count"] == len(e.data["files"])
        assert e.data["total_bytes"] == sum(f["size"] for f in e.data["files"])
        assert e.data["artifact_uri"] == info.artifact_uri
        for f in e.data["files"]:
            announced[f["path"]] = (e.data["path"], f["size"])
    assert announced == {
        "notes.txt": (None, 5),
        "docs/notes.txt": ("docs", 5),
        "plots/a.txt": ("plots", 1),
        "plots/b.txt": ("plots", 2),
        "plots/c.txt": ("plots", 3),
        "config/params.json": ("config", (stored / "config/params.json").stat().st_size),
        "readme.txt": (None, 9),
    }
    on_disk = {str(p.relative_to(stored)) for p in stored.rglob("*") if p.is_file()}
    assert on_disk == set(announced)

    finished = events.of_type("mlflow.run.finished")[0].data
    assert finished["status"] == "FINISHED"
    assert finished["duration_ms"] == info.end_time - info.start_time
    assert finished["metrics"] == {"loss": 0.25, "acc": 0.9, "unstable": "NaN"}
    assert finished["run_name"] == "manual"


def test_denied_param_and_tag_keys_never_reach_any_payload(tracking, record):
    """Params and tags whose keys match the deny list (any case) appear in no event, yet MLflow stores them."""
    events = record()
    client = MlflowClient()
    # a named run: a random run name may hold "secret" ("secretive-owl-12")
    with mlflow.start_run(run_name="deny-list", tags={"api_token": "tok-start-secret"}) as run:
        mlflow.log_param("db_password", "hunter2-param-secret")
        mlflow.log_params({"DB_Password_Replica": "hunter2-batch-secret", "lr": 0.1})
        mlflow.set_tag("api_token", "tok-tag-secret")
        mlflow.set_tags({"Service_API_TOKEN": "tok-batch-secret", "team": "ml"})
        client.log_param(run.info.run_id, "aws_secret_access_key", "aws-secret-value")
        mlflow.log_metric("loss", 1.0)

    payloads = b"\n".join(e.payload for e in events).lower()
    for needle in ("password", "hunter2", "api_token", "tok-", "secret"):
        assert needle.encode() not in payloads, needle
    assert _merged(events.of_type("mlflow.run.params"), "params") == {"lr": "0.1"}
    assert _merged(events.of_type("mlflow.run.tags"), "tags") == {"team": "ml"}
    data = mlflow.get_run(run.info.run_id).data
    assert data.params["db_password"] == "hunter2-param-secret"  # the deny list filters events, not MLflow
    assert data.tags["api_token"] == "tok-tag-secret"


def test_nested_run_names_its_parent_on_run_started(tracking, record):
    """A nested run's run.started carries the parent's run id; the parent's has none; both finish."""
    events = record()
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        mlflow.log_metric("inner", 1.0)

    started = {e.data["run_id"]: e.data for e in events.of_type("mlflow.run.started")}
    assert started[child.info.run_id]["parent_run_id"] == parent.info.run_id
    assert started[parent.info.run_id]["parent_run_id"] is None
    finished = [e.data["run_id"] for e in events.of_type("mlflow.run.finished")]
    assert finished == [child.info.run_id, parent.info.run_id]


def test_exception_in_run_publishes_run_failed_and_propagates_unchanged(tracking, record, assert_valid_event):
    """An exception inside ``with start_run()`` gives run.failed, and the very same exception reaches the caller."""
    events = record()
    boom = ValueError("training diverged")
    runs = []

    def train() -> None:
        with mlflow.start_run() as run:
            runs.append(run)
            mlflow.log_metric("loss", float("inf"))
            raise boom

    with pytest.raises(ValueError, match="training diverged") as raised:
        train()
    assert raised.value is boom

    info = mlflow.get_run(runs[0].info.run_id).info
    assert info.status == "FAILED"
    assert [t for t in events.types() if t.endswith(("finished", "failed", "killed"))] == ["mlflow.run.failed"]
    failed = events.of_type("mlflow.run.failed")[0]
    assert_valid_event(failed.envelope)
    assert failed.data["status"] == "FAILED"
    assert failed.data["metrics"] == {"loss": "Infinity"}
    assert failed.data["duration_ms"] == info.end_time - info.start_time


def test_end_run_killed_publishes_run_killed(tracking, record, subject_of):
    """``end_run(status="KILLED")`` publishes run.killed on the run's ``killed`` subject."""
    events = record()
    run = mlflow.start_run()
    mlflow.end_run(status="KILLED")

    ends = [e for e in events if e.type.rsplit(".", 1)[1] in ("finished", "failed", "killed")]
    assert [e.type for e in ends] == ["mlflow.run.killed"]
    assert ends[0].data["status"] == "KILLED"
    assert ends[0].subject == subject_of("run", run.info.experiment_id, run.info.run_id, "killed")


def test_failed_mlflow_call_raises_as_without_hook_and_publishes_nothing(tracking, record):
    """An MLflow call that fails (overwriting a param) raises MLflow's own error and publishes nothing."""
    events = record()
    with mlflow.start_run():
        mlflow.log_param("lr", 0.1)
        before = len(events)
        with pytest.raises(MlflowException) as raised:
            mlflow.log_param("lr", 0.2)
        assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
        assert len(events) == before


def test_renaming_a_run_is_a_tag_call_not_the_end_of_the_run(tracking, record):
    """Setting ``mlflow.runName`` (which updates the run info) publishes no end event and no system tag."""
    events = record()
    with mlflow.start_run() as run:
        mlflow.set_tag("mlflow.runName", "renamed")
        assert not [t for t in events.types() if t.endswith(("finished", "failed", "killed", "tags"))]
    assert events.of_type("mlflow.run.finished")[0].data["run_id"] == run.info.run_id


def test_async_logging_still_produces_metric_events(tracking, record):
    """``log_metric(synchronous=False)`` and ``enable_async_logging()`` both yield run.metrics with every point."""
    events = record(metrics_mode="every")
    with mlflow.start_run() as per_call:
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
    mlflow.config.enable_async_logging(True)
    try:
        with mlflow.start_run() as global_async:
            for step in range(30):
                mlflow.log_metric("acc", step / 30, step=step)
            mlflow.log_params({"mode": "async"})
    finally:
        mlflow.config.enable_async_logging(False)

    for run, key, points in ((per_call, "loss", 50), (global_async, "acc", 30)):
        mine = [e.data for e in events if e.data["run_id"] == run.info.run_id]
        metrics = [d for d in mine if "points" in d]
        assert sum(d["points"] for d in metrics) == points
        # MLflow's async workers log batches concurrently, so only the highest step is certain to be seen
        assert max(d["metrics"][key]["step"] for d in metrics) == points - 1
        assert mine[-1]["status"] == "FINISHED"
        assert mine[-1]["metrics"] == mlflow.get_run(run.info.run_id).data.metrics
        assert len(MlflowClient().get_metric_history(run.info.run_id, key)) == points
    params = [e.data for e in events.of_type("mlflow.run.params")]
    assert params == [{**params[0], "params": {"mode": "async"}}]


def _workflow(root: Path, run_name: str) -> str:
    """The same small training workflow, with fixed timestamps so two runs can be compared field by field."""
    src = root / f"{run_name}-data"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x00" * 1000)
    (src / "sub").mkdir()
    (src / "sub" / "notes.md").write_text("# notes")
    with mlflow.start_run(run_name="parity", tags={"team": "ml"}) as run:
        mlflow.log_params({"lr": 0.01, "epochs": 5})
        mlflow.log_param("optimizer", "adam")
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=5, timestamp=1_700_000_000_100)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"owner": "me"})
        mlflow.log_artifacts(str(src), "model")
        mlflow.log_dict({"a": 1}, "config.json")
        mlflow.log_text("done", "logs/out.txt")
    return run.info.run_id


def _listing(client: MlflowClient, run_id: str, path: str | None = None) -> list[tuple[str, bool, int | None]]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out.append((f.path, f.is_dir, f.file_size))
        if f.is_dir:
            out.extend(_listing(client, run_id, f.path))
    return out


def _snapshot(run_id: str) -> dict[str, Any]:
    client = MlflowClient()
    run = client.get_run(run_id)
    return {
        "params": run.data.params,
        "metrics": run.data.metrics,
        "history": {
            k: [(m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics
        },
        "tags": {k: v for k, v in run.data.tags.items() if k not in ("mlflow.runName",)},
        "run_name": run.info.run_name,
        "status": run.info.status,
        "artifacts": _listing(client, run_id),
    }


def test_hook_leaves_identical_run_data_in_mlflow(tracking, record):
    """The same workflow with and without the hook stores identical params, metric history, tags and artifacts."""
    plain = _snapshot(_workflow(tracking.root, "plain"))
    events = record()
    hooked = _snapshot(_workflow(tracking.root, "hooked"))
    assert events.of_type("mlflow.run.finished"), "the hook was not active for the second run"
    assert hooked == plain
    assert plain["params"]
    assert plain["history"]["loss"]
    assert plain["artifacts"]
    assert "team" in plain["tags"]


class _ExplodingTransport:
    """A transport (the ``Transport`` protocol) whose ``emit`` always raises, standing in for a hook bug."""

    def __init__(self, **settings: Any) -> None:
        self.settings = resolve_settings(environ={}, spark_conf={}, **settings)
        self.calls = 0

    def emit(self, event: Any) -> None:
        self.calls += 1
        raise RuntimeError("transport exploded")

    def flush(self, timeout: float = 10.0) -> Any:
        return None

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self, timeout: float = 5.0) -> Any:
        return None


@pytest.fixture
def exploding(namespace):
    """Install an exploding transport process-wide (restored afterwards); the hook is installed by the test."""
    installed: list[Any] = []

    def use(**settings: Any) -> _ExplodingTransport:
        databricks_nats.configure(disabled=True, **namespace)
        transport = _ExplodingTransport(**namespace, **settings)
        installed.append(_api.set_transport(transport))
        return transport

    yield use
    for previous in installed[:1]:
        _api.set_transport(previous)


def test_publishing_failure_never_breaks_training(tracking, exploding, caplog):
    """With a transport that raises on every emit, every MLflow call still succeeds and stores its data."""
    transport = exploding()
    nats_mlflow.install()
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_metrics({"loss": 0.5})
        mlflow.set_tag("team", "ml")
        mlflow.log_text("x", "out.txt")
    stored = mlflow.get_run(run.info.run_id)
    assert transport.calls >= 5  # started, params, metrics, tags, artifacts, finished were all attempted
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.metrics == {"loss": 0.5}
    assert stored.data.tags["team"] == "ml"
    assert [f.path for f in MlflowClient().list_artifacts(run.info.run_id)] == ["out.txt"]
    assert "training continues" in caplog.text


def test_strict_mode_raises_publish_errors_after_mlflow_stored_the_data(tracking, exploding):
    """With ``strict=True`` a failing publish raises PublishError from the MLflow call, after MLflow stored it."""
    client = MlflowClient()
    run = client.create_run(tracking.experiment_id)  # before the hook: only the param call is under test
    exploding(strict=True)
    nats_mlflow.install()
    client.get_run(run.info.run_id)  # MLflow's own answer teaches the hook the run: its events go out at once
    with pytest.raises(PublishError, match="transport exploded"):
        client.log_param(run.info.run_id, "lr", "0.1")
    assert client.get_run(run.info.run_id).data.params == {"lr": "0.1"}


def test_autolog_installs_hook_once_and_disable_removes_it(tracking, namespace):
    """``databricks_nats.autolog()`` installs the hook and MLflow autologging; twice is once; disable removes both."""
    from mlflow.utils.autologging_utils import autologging_is_disabled

    pytest.importorskip("sklearn")  # mlflow.autolog() sets up an integration when its library is imported
    databricks_nats.configure(disabled=True, **namespace)
    try:
        with capture(**namespace) as events:
            databricks_nats.autolog(silent=True)
            databricks_nats.autolog(silent=True)
            assert nats_mlflow.installed()
            assert not autologging_is_disabled("sklearn")
            with mlflow.start_run() as run:
                mlflow.log_param("p", 1)
            assert [e.data["run_id"] for e in events.of_type("mlflow.run.started")] == [run.info.run_id]
            assert len(events.of_type("mlflow.run.params")) == 1
            assert len(events.of_type("mlflow.run.finished")) == 1

            databricks_nats.autolog(disable=True, silent=True)
            assert not nats_mlflow.installed()
            assert autologging_is_disabled("sklearn")
            before = len(events)
            with mlflow.start_run():
                mlflow.log_param("p", 2)
            assert len(events) == before
    finally:
        mlflow.autolog(disable=True, silent=True)


def test_envelopes_are_strict_json(tracking, record):
    """Every captured payload is strict JSON (no NaN/Infinity literals), whatever the metric values."""
    events = record()
    with mlflow.start_run():
        mlflow.log_metrics({"a": float("nan"), "b": float("inf"), "c": float("-inf"), "d": 1e308})

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON literal {token}")

    for e in events:
        json.loads(e.payload, parse_constant=reject)
    assert events.of_type("mlflow.run.finished")[0].data["metrics"] == {
        "a": "NaN",
        "b": "Infinity",
        "c": "-Infinity",
        "d": 1e308,
    }


def test_uninstall_takes_the_wrappers_off_stores_already_handed_out(tracking, record):
    """After uninstall() the cached tracking store and its async queue call MLflow's own methods again."""
    from mlflow.tracking._tracking_service.utils import _get_store

    record()
    with mlflow.start_run():
        mlflow.log_metric("loss", 1.0, synchronous=False)
    store = _get_store()
    assert "log_metric" in vars(store), "the hook wraps the store on the instance"
    nats_mlflow.uninstall()
    assert _get_store() is store
    assert not {"log_metric", "log_batch", "create_run"} & set(vars(store))
    queue = getattr(store, "_async_logging_queue", None)
    if queue is not None:
        assert queue._logging_func == store.log_batch
        assert "databricks_nats" not in getattr(queue._logging_func, "__module__", "")


def test_reinstalled_hook_publishes_for_stores_wrapped_before_uninstall(tracking, record):
    """After uninstall() and install(), runs on a store first wrapped by the earlier install publish again."""
    events = record()
    with mlflow.start_run():
        mlflow.log_param("round", 1)
    nats_mlflow.uninstall()
    with mlflow.start_run():
        mlflow.log_param("round", 2)
    assert [e.data["params"] for e in events.of_type("mlflow.run.params")] == [{"round": "1"}]

    nats_mlflow.install()
    with mlflow.start_run() as third:
        mlflow.log_param("round", 3)
        mlflow.log_text("x", "out.txt")
    assert [e.data["params"] for e in events.of_type("mlflow.run.params")] == [{"round": "1"}, {"round": "3"}]
    assert events.of_type("mlflow.run.artifacts")[-1].data["run_id"] == third.info.run_id
    assert [e.data["run_id"] for e in events.of_type("mlflow.run.finished")][-1] == third.info.run_id
