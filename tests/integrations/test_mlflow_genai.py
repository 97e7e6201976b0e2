"""GenAI events from real MLflow 3 tracing, assessment and evaluation APIs (sqlite store, nothing mocked).

Traces, assessments and ``mlflow.genai.evaluate`` need MLflow 3: those tests skip on MLflow 2.x, saying so.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

import mlflow
import pandas as pd
import pytest

from databricks_nats.integrations import mlflow as nats_mlflow

MLFLOW_3 = int(mlflow.__version__.split(".")[0]) >= 3
needs_mlflow_3 = pytest.mark.skipif(
    not MLFLOW_3, reason=f"MLflow {mlflow.__version__}: traces, assessments and mlflow.genai need MLflow 3"
)
SECRET_IN = "question-7f3a-never-published"
SECRET_OUT = "answer-91c2-never-published"


@mlflow.trace(span_type="RETRIEVER")
def _retrieve(q: str) -> list[str]:
    return [q + "-doc"]


@mlflow.trace
def _answer(q: str) -> str:
    """A traced function: the root span, a nested retriever span and an LLM span that records token usage."""
    from mlflow.tracing.constant import SpanAttributeKey

    docs = _retrieve(q)
    with mlflow.start_span("llm", span_type="LLM") as span:
        span.set_inputs({"prompt": q, "docs": docs})
        span.set_attribute(SpanAttributeKey.CHAT_USAGE, {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17})
        span.set_outputs(SECRET_OUT)
    return SECRET_OUT


def _of(events: Any, event_type: str, wait_for: Any, count: int = 1) -> list[dict[str, Any]]:
    """The data of the events of this type, once at least ``count`` of them arrived (MLflow exports async)."""
    if MLFLOW_3:
        mlflow.flush_trace_async_logging()
    assert wait_for(lambda: len(events.of_type(event_type)) >= count), f"fewer than {count} {event_type}"
    return [e.data for e in events.of_type(event_type)]


def _lean(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data less the context every event carries (workspace, env…)."""
    return {k: v for k, v in data.items() if k != "context"}


@needs_mlflow_3
def test_a_traced_call_is_one_lean_trace_event(tracking, record, wait_for, assert_valid_event):
    events = record()
    with mlflow.start_run() as run:
        assert _answer(SECRET_IN) == SECRET_OUT
    trace_id = mlflow.get_last_active_trace_id()

    (data,) = _of(events, "mlflow.trace.logged", wait_for)
    stored = mlflow.get_trace(trace_id).info
    assert _lean(data) == {
        "experiment_id": tracking.experiment_id,
        "trace_id": trace_id,
        "trace_url": None,  # sqlite: no UI
        "status": "OK",
        "duration_ms": stored.execution_duration,
        "span_count": 3,
        "token_usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
        "run_id": run.info.run_id,
        "model_id": None,
        "request_time": stored.request_time,
        "sample_rate": 1.0,
        "coalesced": 0,
    }
    event = events.of_type("mlflow.trace.logged")[0]
    assert_valid_event(event.envelope)
    assert event.subject.endswith(f".mlflow.trace.{tracking.experiment_id}.logged")
    for e in events:
        assert SECRET_IN.encode() not in e.payload
        assert SECRET_OUT.encode() not in e.payload


@needs_mlflow_3
def test_a_failed_traced_call_is_announced_with_status_error(tracking, record, wait_for):
    events = record()

    @mlflow.trace
    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        broken()
    (data,) = _of(events, "mlflow.trace.logged", wait_for)
    assert data["status"] == "ERROR"
    assert (data["span_count"], data["run_id"]) == (1, None)


@needs_mlflow_3
def test_traces_of_a_logged_model_name_it(tracking, record, wait_for):
    events = record()
    model = mlflow.create_external_model(name="agent")
    mlflow.set_active_model(model_id=model.model_id)
    try:
        _answer("q")
    finally:
        mlflow.clear_active_model()
    (data,) = _of(events, "mlflow.trace.logged", wait_for)
    assert data["model_id"] == model.model_id


@needs_mlflow_3
def test_sampled_traces_announce_a_share_and_count_the_others(tracking, record, wait_for):
    sampled = record(traces_mode="sample:0.5")
    for i in range(40):
        _answer(f"q{i}")
    mlflow.flush_trace_async_logging()
    announced = [e.data for e in sampled.of_type("mlflow.trace.logged")]
    assert 0 < len(announced) < 40  # a 1 in 2^39 chance of failing on these random trace ids
    assert {d["sample_rate"] for d in announced} == {0.5}

    every = record(traces_mode="every")  # configure() again: the next trace carries the count held back
    _answer("last")
    (last,) = _of(every, "mlflow.trace.logged", wait_for)
    assert last["sample_rate"] == 1.0
    assert len(announced) + 1 + sum(d["coalesced"] for d in [*announced, last]) == 41  # no trace unaccounted for


@needs_mlflow_3
def test_a_trace_is_in_or_out_of_the_sample_wherever_it_is_seen(tracking, record, wait_for, mlflow_template):
    """The decision depends on the trace id alone: another process logging the same traces announces the same."""
    import shutil

    from mlflow.entities import TraceLocation
    from mlflow.tracking._tracking_service.utils import _get_store

    events = record(traces_mode="sample:0.3")
    for i in range(20):
        _answer(f"q{i}")
    first = {d["trace_id"] for d in _of(events, "mlflow.trace.logged", wait_for)}
    traces = mlflow.search_traces(return_type="list", max_results=100)
    assert len(traces) == 20

    nats_mlflow.uninstall()  # a fresh hook state, as in another process, logging to another store
    shutil.copyfile(mlflow_template, tracking.root / "other.db")
    mlflow.set_tracking_uri(f"sqlite:///{tracking.root / 'other.db'}")
    other = mlflow.create_experiment("copies")
    again = record(traces_mode="sample:0.3")
    store = _get_store()
    for t in reversed(traces):  # the same trace ids, another order
        info = t.info
        info.trace_location = TraceLocation.from_experiment_id(other)
        info.tags = {k: v for k, v in info.tags.items() if k != "mlflow.artifactLocation"}  # the store sets it
        store.start_trace(info)
    assert {e.data["trace_id"] for e in again.of_type("mlflow.trace.logged")} == first


@needs_mlflow_3
def test_traces_mode_off_announces_no_trace_but_everything_else(tracking, record, wait_for):
    events = record(traces_mode="off")
    with mlflow.start_run():
        _answer("q")
        mlflow.log_param("p", 1)
    mlflow.flush_trace_async_logging()
    assert _of(events, "mlflow.run.finished", wait_for)
    assert events.of_type("mlflow.run.params")
    assert not events.of_type("mlflow.trace.logged")


@needs_mlflow_3
def test_assessments_are_announced_without_their_text(tracking, record, wait_for, assert_valid_event):
    from mlflow.entities import AssessmentError, AssessmentSource

    events = record()
    with mlflow.start_run() as run:
        _answer("q")
    trace_id = mlflow.get_last_active_trace_id()
    _of(events, "mlflow.trace.logged", wait_for)

    human = AssessmentSource(source_type="HUMAN", source_id="alice@example.com")
    mlflow.log_feedback(trace_id=trace_id, name="helpful", value=True, rationale=SECRET_IN, source=human)
    mlflow.log_feedback(trace_id=trace_id, name="relevance", value=0.75)
    mlflow.log_expectation(trace_id=trace_id, name="expected", value=SECRET_OUT, source=human)
    mlflow.log_feedback(
        trace_id=trace_id, name="judge", error=AssessmentError(error_code="TIMEOUT", error_message=SECRET_IN)
    )

    found = {d["name"]: d for d in _of(events, "mlflow.assessment.logged", wait_for, 4)}
    helpful = found["helpful"]
    assert _lean(helpful) == {
        "experiment_id": tracking.experiment_id,
        "trace_id": trace_id,
        "trace_url": None,
        "assessment_id": helpful["assessment_id"],
        "name": "helpful",
        "kind": "feedback",
        "source_type": "HUMAN",
        "source_id": "alice@example.com",
        "value_type": "boolean",
        "value": 1.0,
        "error": False,
        "run_id": run.info.run_id,
    }
    assert helpful["assessment_id"] == mlflow.get_trace(trace_id).search_assessments("helpful")[0].assessment_id
    assert (found["relevance"]["value_type"], found["relevance"]["value"]) == ("number", 0.75)
    assert found["relevance"]["source_type"] == "CODE"  # MLflow's default source
    assert (found["expected"]["kind"], found["expected"]["value_type"]) == ("expectation", "string")
    assert found["expected"]["value"] is None
    assert (found["judge"]["error"], found["judge"]["value"]) == (True, None)
    for e in events.of_type("mlflow.assessment.logged"):
        assert_valid_event(e.envelope)
        assert e.subject.endswith(f".mlflow.assessment.{tracking.experiment_id}.logged")
    for e in events:
        assert SECRET_IN.encode() not in e.payload
        assert SECRET_OUT.encode() not in e.payload


@needs_mlflow_3
def test_an_assessment_on_a_trace_made_before_the_hook_names_its_experiment(tracking, record, wait_for):
    _answer("q")  # no hook yet
    mlflow.flush_trace_async_logging()
    trace_id = mlflow.get_last_active_trace_id()
    events = record()
    mlflow.log_feedback(trace_id=trace_id, name="late", value=False)
    (data,) = _of(events, "mlflow.assessment.logged", wait_for)
    assert (data["experiment_id"], data["trace_id"], data["value"]) == (tracking.experiment_id, trace_id, 0.0)


# ---- evaluation ------------------------------------------------------------------------------------


def _scorers() -> list[Any]:
    from mlflow.genai.scorers import scorer

    @scorer
    def exact(outputs: str, expectations: dict[str, str]) -> bool:
        return outputs == expectations["answer"]

    @scorer
    def length(outputs: str) -> int:
        return len(outputs)

    return [exact, length]


_DATA = [
    {"inputs": {"q": "a"}, "expectations": {"answer": "A"}},
    {"inputs": {"q": "b"}, "expectations": {"answer": "wrong"}},
]


@needs_mlflow_3
def test_genai_evaluate_is_one_run_evaluated_event(tracking, record, wait_for, assert_valid_event):
    events = record()
    result = mlflow.genai.evaluate(data=_DATA, predict_fn=lambda q: q.upper(), scorers=_scorers())

    (data,) = _of(events, "mlflow.run.evaluated", wait_for)
    run = mlflow.get_run(result.run_id)
    assert _lean(data) == {
        "experiment_id": tracking.experiment_id,
        "run_id": result.run_id,
        "run_name": run.info.run_name,
        "run_url": None,
        "artifact_uri": run.info.artifact_uri,
        "metrics": {"exact/mean": 0.5, "length/mean": 1.0},
        "results_uri": None,  # results live in the run's traces and their assessments
        "evaluator": "mlflow.genai.evaluate",
        "rows": 2,
    }
    assert_valid_event(events.of_type("mlflow.run.evaluated")[0].envelope)
    assert len(_of(events, "mlflow.trace.logged", wait_for, 2)) >= 2  # one trace per row
    assert len(_of(events, "mlflow.assessment.logged", wait_for, 4)) >= 4  # two scores per row


def _mae_metric() -> Any:
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric

    def abs_error(predictions: pd.Series, targets: pd.Series, metrics: Any) -> MetricValue:
        errors = (predictions - targets).abs()
        return MetricValue(scores=list(errors), aggregate_results={"mean": float(errors.mean())})

    return make_metric(eval_fn=abs_error, greater_is_better=False, name="abs_error")


_FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.5, 2.0]})


@pytest.mark.parametrize("evaluate", ["mlflow.models.evaluate", "mlflow.evaluate"])
def test_classic_evaluate_in_a_run_points_at_its_results_table(
    tracking, record, wait_for, assert_valid_event, evaluate
):
    events = record()
    function = mlflow.models.evaluate if evaluate == "mlflow.models.evaluate" else mlflow.evaluate
    with mlflow.start_run() as run, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = function(
            model=lambda df: df["x"],
            data=_FRAME,
            targets="y",
            model_type="regressor",
            extra_metrics=[_mae_metric()],
        )
    (data,) = _of(events, "mlflow.run.evaluated", wait_for)
    assert (data["run_id"], data["experiment_id"], data["evaluator"], data["rows"]) == (
        run.info.run_id,
        tracking.experiment_id,
        evaluate,
        3,
    )
    assert data["metrics"]["abs_error/mean"] == pytest.approx(0.5)
    assert data["metrics"]["r2_score"] == pytest.approx(result.metrics["r2_score"])
    assert data["results_uri"] == result.artifacts["eval_results_table"].uri
    assert data["results_uri"].endswith("eval_results_table.json")
    assert_valid_event(events.of_type("mlflow.run.evaluated")[0].envelope)


def test_classic_evaluate_of_its_own_run_names_that_run(tracking, record, wait_for):
    events = record()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.models.evaluate(model=lambda df: df["x"], data=_FRAME, targets="y", model_type="regressor")
    (data,) = _of(events, "mlflow.run.evaluated", wait_for)  # the run ended inside evaluate: looked up later
    run = mlflow.last_active_run()  # the one evaluate made
    assert (data["run_id"], data["run_name"], data["experiment_id"]) == (
        run.info.run_id,
        run.info.run_name,
        tracking.experiment_id,
    )
    assert (data["metrics"]["example_count"], data["results_uri"]) == (3, None)


class _ModelBroke(Exception):
    pass


def test_a_failing_evaluation_raises_unchanged_and_announces_nothing(tracking, record):
    from databricks_nats.integrations.mlflow import evaluation

    events = record()
    raised = _ModelBroke("no")

    def model(df: pd.DataFrame) -> pd.Series:
        raise raised

    warnings.simplefilter("ignore")
    with pytest.raises(_ModelBroke) as caught:
        mlflow.models.evaluate(model=model, data=_FRAME, targets="y", model_type="regressor")
    assert caught.value is raised
    ours = [f for f, _ in traceback.walk_tb(caught.value.__traceback__) if f.f_code.co_filename == evaluation.__file__]
    assert [(f.f_code.co_name, f.f_locals.get("__tracebackhide__")) for f in ours] == [("evaluate", True)]
    assert not events.of_type("mlflow.run.evaluated")


def test_uninstall_gives_back_mlflows_own_evaluate_functions(tracking, record):
    import mlflow.models

    before = (mlflow.evaluate, mlflow.models.evaluate)
    record()
    assert mlflow.evaluate.__wrapped__ is before[0]
    nats_mlflow.uninstall()
    assert (mlflow.evaluate, mlflow.models.evaluate) == before
    if MLFLOW_3:
        import mlflow.genai

        assert not hasattr(mlflow.genai.evaluate, "__databricks_nats_original__")


ZERO_CODE = """
import mlflow
from mlflow.genai.scorers import scorer

mlflow.set_experiment("zero-code")

@mlflow.trace
def answer(q):
    return q.upper()

answer("q")
mlflow.flush_trace_async_logging()
mlflow.log_feedback(trace_id=mlflow.get_last_active_trace_id(), name="ok", value=True)

@scorer
def exact(outputs, expectations):
    return outputs == expectations["answer"]

mlflow.genai.evaluate(
    data=[{"inputs": {"q": "a"}, "expectations": {"answer": "A"}}], predict_fn=answer, scorers=[exact]
)
"""


@needs_mlflow_3
@pytest.mark.slow
def test_zero_code_process_announces_traces_assessments_and_evaluations(nats_server, namespace, tmp_path):
    """Configured by environment variables only, the hook (installed while `import mlflow` runs) wraps
    mlflow.genai.evaluate once MLflow hands out its first store; the exit flush delivers everything."""
    import os
    import subprocess
    import sys

    from databricks_nats.settings import resolve_settings
    from databricks_nats.testing import read_stream

    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "SPARK_"))}
    env = {
        **keep,
        "DATABRICKS_NATS_EXIT_FLUSH_TIMEOUT": "60",
        "DATABRICKS_NATS_URL": nats_server.url,
        "DATABRICKS_NATS_WORKSPACE": namespace["workspace"],
        "DATABRICKS_NATS_ENV": namespace["env"],
        "DATABRICKS_NATS_SPOOL_DIR": str(tmp_path / "spool"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", ZERO_CODE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
    types = [m["envelope"]["type"].removeprefix("databricks.") for m in read_stream(nats_server.url, stream)]
    assert types.count("mlflow.run.evaluated") == 1, proc.stderr[-3000:]
    assert types.count("mlflow.trace.logged") >= 2  # ours, and the evaluation's row
    assert types.count("mlflow.assessment.logged") >= 2  # ours, and the scorer's
