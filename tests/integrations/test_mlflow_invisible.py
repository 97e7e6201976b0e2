"""The hook is invisible: class-level patches of store methods are called, wrapped methods stay methods, the
exception MLflow raised reaches the caller unchanged with the hook's frame hidden, and no MLflow call makes a
request to anyone else (regression tests for issue 17's problems 1, 3 and 4)."""

from __future__ import annotations

import http.server
import inspect
import os
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from databricks_nats.integrations import mlflow as nats_mlflow
from databricks_nats.integrations.mlflow import hook as hook_module

MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3
_OURS = (os.path.dirname(hook_module.__file__) + os.sep,)


def _tracking_store(uri: str) -> Any:
    from mlflow.tracking._tracking_service.utils import _get_store

    return _get_store(uri)


def _settle() -> None:
    """Wait for the events the hook described on its worker."""
    hook = nats_mlflow.current_hook()
    assert hook is not None
    assert hook.settle(30)


def _our_frames(tb: Any) -> list[Any]:
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_OURS):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _rendered_like_pytest(e: BaseException) -> str:
    """The traceback as pytest shows it: frames whose locals set ``__tracebackhide__`` are left out."""
    tb = e.__traceback__
    kept = []
    while tb is not None:
        if not tb.tb_frame.f_locals.get("__tracebackhide__", False):
            kept.append(tb)
        tb = tb.tb_next
    summary = traceback.StackSummary.extract((t.tb_frame, t.tb_lineno) for t in kept)
    return "".join(summary.format()) + f"{type(e).__name__}: {e}"


# ---- class-level patches, methods ----------------------------------------------------------------------------


def test_a_class_level_patch_of_a_store_method_is_called_with_the_hook_on(tracking, record):
    """``mock.patch.object(SqlAlchemyStore, "log_param")`` after the store was wrapped: the patch is called, the
    event still goes out, and the data is stored (the patch calls through)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    events = record()
    client = MlflowClient()
    run = client.create_run(tracking.experiment_id)  # the store is handed out and wrapped now
    with mock.patch.object(SqlAlchemyStore, "log_param", autospec=True, side_effect=SqlAlchemyStore.log_param) as p:
        client.log_param(run.info.run_id, "lr", "0.1")
    assert p.call_count == 1
    store, run_id, param = p.call_args.args
    assert isinstance(store, SqlAlchemyStore)
    assert (run_id, param.key) == (run.info.run_id, "lr")
    assert client.get_run(run.info.run_id).data.params == {"lr": "0.1"}
    (params,) = events.of_type("mlflow.run.params")
    assert params.data["params"] == {"lr": "0.1"}


def test_a_plain_mock_patched_onto_the_class_is_called_as_without_the_hook(tracking, record):
    """``mock.patch.object(SqlAlchemyStore, "log_param")`` (a MagicMock, no ``self``): called with the call's own
    arguments, exactly as attribute access without the hook would call it."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    record()
    client = MlflowClient()
    run_id = client.create_run(tracking.experiment_id).info.run_id
    with mock.patch.object(SqlAlchemyStore, "log_param") as patched:
        client.log_param(run_id, "lr", "0.1")
    (call,) = patched.call_args_list
    assert call.args[0] == run_id
    assert call.args[1].key == "lr"
    assert client.get_run(run_id).data.params == {}  # the mock stored nothing, as without the hook


def test_wrapped_store_methods_remain_methods_with_their_signature_and_uninstall_restores_them(tracking, record):
    """``__self__``, ``__func__``, ``__wrapped__`` and the signature (MLflow inspects create_model_version's)."""
    record()
    client = MlflowClient()
    client.create_run(tracking.experiment_id)
    store = _tracking_store(tracking.uri)
    registry = client._get_registry_client().store
    for obj, name in ((store, "log_param"), (store, "update_run_info"), (registry, "create_model_version")):
        method = getattr(obj, name)
        assert name in obj.__dict__, name  # ours, on the instance
        assert method.__self__ is obj
        assert method.__func__ is not getattr(type(obj), name)
        assert method.__wrapped__ is getattr(type(obj), name)
        assert method.__name__ == name
        assert inspect.signature(method) == inspect.signature(getattr(type(obj), name).__get__(obj)), name
    nats_mlflow.uninstall()
    for obj, name in ((store, "log_param"), (registry, "create_model_version")):
        assert name not in obj.__dict__
        assert getattr(obj, name).__func__ is getattr(type(obj), name)


def test_an_instance_attribute_set_before_wrapping_is_still_called(tracking, record):
    """A store whose method was replaced on the instance before the hook wrapped it keeps that replacement."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    events = record()
    hook = nats_mlflow.current_hook()
    assert hook is not None
    store = SqlAlchemyStore(tracking.uri, str(tracking.root / "mlruns"))
    calls: list[str] = []
    original = store.log_param

    def mine(run_id: str, param: Any) -> None:
        calls.append(param.key)
        original(run_id, param)

    store.log_param = mine  # type: ignore[method-assign]
    hook.wrap_tracking(store)
    run = store.create_run(tracking.experiment_id, "u", 0, [], "r")
    store.log_param(run.info.run_id, Param("lr", "0.1"))
    assert calls == ["lr"]
    assert [e.type for e in events] == ["mlflow.run.started", "mlflow.run.params"]
    nats_mlflow.uninstall()
    assert store.log_param is mine


# ---- exceptions and tracebacks ----------------------------------------------------------------------------


def test_the_exception_mlflow_raised_reaches_the_caller_unchanged_with_the_hook_frame_hidden(tracking, record):
    """The same object, the same __cause__ and __context__; one hook frame (Python keeps every frame an exception
    passes through in its traceback), which sets __tracebackhide__, so pytest's rendering shows none of ours."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    events = record()
    client = MlflowClient()
    run = client.create_run(tracking.experiment_id)
    cause = ValueError("the database said no")
    raised: list[BaseException] = []

    def refuse(self: Any, run_id: str, param: Any) -> None:
        try:
            raise KeyError("context")
        except KeyError:
            error = MlflowException("refused")
            raised.append(error)
            raise error from cause

    with mock.patch.object(SqlAlchemyStore, "log_param", refuse), pytest.raises(MlflowException) as info:
        client.log_param(run.info.run_id, "lr", "0.1")
    e = info.value
    assert e is raised[0]
    assert e.__cause__ is cause
    assert isinstance(e.__context__, KeyError)
    assert e.__suppress_context__
    ours = _our_frames(e.__traceback__)
    assert len(ours) == 1  # one wrapper frame per call
    assert ours[0].f_code.co_filename == hook_module.__file__
    assert ours[0].f_locals["__tracebackhide__"] is True
    shown = _rendered_like_pytest(e)
    assert _OURS[0] not in shown
    assert "refuse" in shown  # MLflow's (here: the patch's) frame is there
    assert events.of_type("mlflow.run.params") == []  # a failed call is not announced


def test_a_real_mlflow_error_is_unchanged_through_pytest_rendering(tracking, record):
    """Changing a logged param: MLflow's own MlflowException, rendered by pytest without a databricks_nats frame."""
    record()
    with mlflow.start_run():
        mlflow.log_param("lr", "0.1")
        with pytest.raises(MlflowException) as info:
            mlflow.log_param("lr", "0.2")
    rendered = str(info.getrepr(style="long"))
    assert _OURS[0] not in rendered
    assert "sqlalchemy_store.py" in rendered  # MLflow's frames are all there
    assert "Changing param values is not allowed" in str(info.value)


# ---- no request to anyone else ----------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Server:
    url: str
    requests: list[str]


@pytest.fixture
def default_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A listening HTTP server to be the *default* tracking URI, recording every request it gets (must be none)."""
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests)
    finally:
        server.shutdown()
        server.server_close()


def test_artifacts_of_an_unseen_run_ask_nobody_and_name_the_runs_experiment(
    tracking, record, default_server, tmp_path: Path
):
    """A client bound to sqlite, the default tracking URI another server: uploading to and downloading from a run
    the hook never saw makes no request to that server, and the artifact event names the run's real experiment."""
    bound = MlflowClient(tracking_uri=tracking.uri)
    experiment_id = bound.create_experiment("custom", artifact_location=str(tracking.root / "elsewhere"))
    run_id = bound.create_run(experiment_id).info.run_id
    bound.set_terminated(run_id)
    mlflow.set_tracking_uri(default_server.url)
    events = record()
    src = tmp_path / "notes.txt"
    src.write_text("hello")

    (tmp_path / "down").mkdir()  # MLflow 2.x wants the destination to exist
    bound.log_artifact(run_id, str(src))
    out = bound.download_artifacts(run_id, "notes.txt", str(tmp_path / "down"))

    assert Path(out).read_text() == "hello"
    _settle()
    assert default_server.requests == []  # nothing asked of the default tracking URI
    (artifacts,) = events.of_type("mlflow.run.artifacts")
    assert artifacts.data["experiment_id"] == experiment_id
    assert artifacts.data["files"] == [{"path": "notes.txt", "size": 5}]


@pytest.mark.skipif(not MLFLOW_3, reason=f"MLflow {mlflow.__version__}: artifact repositories know no tracking URI")
def test_an_upload_no_mlflow_call_explains_is_described_on_the_worker_through_the_repositorys_store(
    tracking, record, default_server, tmp_path: Path
):
    """A repository made directly for an unseen run whose URI hides its experiment: the lookup happens on the
    hook's worker, through the store of the repository's tracking URI (never the default one)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    bound = MlflowClient(tracking_uri=tracking.uri)
    experiment_id = bound.create_experiment("custom", artifact_location=str(tracking.root / "elsewhere"))
    run = bound.create_run(experiment_id)
    mlflow.set_tracking_uri(default_server.url)
    events = record()
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracking.uri)
    repo.log_artifact(str(src))
    _settle()
    assert default_server.requests == []
    (artifacts,) = events.of_type("mlflow.run.artifacts")
    assert artifacts.data["experiment_id"] == experiment_id


def test_metrics_params_and_the_end_of_a_run_created_elsewhere_need_no_call_on_the_callers_thread(
    tracking, record, assert_valid_event
):
    """A run created before the hook: its events are described on the worker (the store the call used), in order,
    with its start first."""
    bound = MlflowClient(tracking_uri=tracking.uri)
    run = bound.create_run(tracking.experiment_id, run_name="elsewhere")
    run_id = run.info.run_id
    events = record(metrics_mode="every")
    bound.log_param(run_id, "lr", "0.1")
    bound.log_metric(run_id, "loss", 0.5)
    bound.set_terminated(run_id)
    _settle()
    mine = [e for e in events if e.data.get("run_id") == run_id]
    assert [e.type for e in mine] == [
        "mlflow.run.params",
        "mlflow.run.metrics",
        "mlflow.run.started",
        "mlflow.run.finished",
    ]
    for e in mine:
        assert_valid_event(e.envelope)
        assert e.data["experiment_id"] == tracking.experiment_id
        assert e.data["run_name"] == "elsewhere"
    assert mine[2].data["start_time"] == run.info.start_time
