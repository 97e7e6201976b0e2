"""Spark Connect for real: a local Spark Connect server, a notebook-like client process, a token-protected NATS.

One client run (tests/spark/connect_client.py, a process of its own: a Connect client never shares a
process with the classic test session) attaches the listeners to a ``sc://`` session, runs a batch
action, a named streaming query inside an MLflow run (sqlite tracking) and one outside; the tests check
what reached the NATS stream and what the client reported. PySpark 3.5 ships no Connect server: skipped
there with the reason (the server-side listener placement runs on both profiles:
tests/spark/test_spark_connect_serverside.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import databricks_nats
from databricks_nats.integrations.spark import NO_JOBS
from databricks_nats.settings import resolve_settings
from databricks_nats.testing import read_stream
from tests.spark.connect import connect_server, new_token, require_connect_client, skip_reason, token_nats, token_url

CLIENT = Path(__file__).with_name("connect_client.py")
WORKER = Path(__file__).with_name("shipped_listener.py")
FILES = 3


def _write_files(folder: Path, count: int, rows: int = 5) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        lines = (json.dumps({"id": i * rows + j, "value": float(j)}) for j in range(rows))
        tmp = folder / f".part-{i}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(folder / f"part-{i:04d}.json")


def _spark_events(url: str, stream: str, queries: dict[str, str]) -> list[dict[str, Any]]:
    """Wait (with a deadline) until both queries' terminated events are in the stream; return the spark.* ones."""
    deadline = time.monotonic() + 60
    while True:
        envs = [m["envelope"] for m in read_stream(url, stream)]
        spark = [e for e in envs if e["type"].removeprefix("databricks.").startswith("spark.")]
        done = {e["data"]["query_id"] for e in spark if e["type"].endswith("spark.stream.terminated")}
        if set(queries.values()) <= done or time.monotonic() > deadline:
            return spark
        time.sleep(0.2)


def _shipped_args(tmp: Path) -> dict[str, str]:
    """Where the client runs the listener as the server would (tests/spark/shipped_listener.py)."""
    work = tmp / "shipped"
    (work / "cwd").mkdir(parents=True)
    (work / "worker").mkdir()
    shutil.copy(WORKER, work / "worker" / WORKER.name)
    site = work / "site"
    site.mkdir()
    (site / "databricks_nats").symlink_to(Path(databricks_nats.__file__).parent, target_is_directory=True)
    return {
        "shipped_dir": str(work),
        "worker": str(work / "worker" / WORKER.name),
        "package_dir": str(site),
        "repository": str(Path(databricks_nats.__file__).parent.parent),
    }


@pytest.fixture(scope="module")
def connect_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    require_connect_client()
    tmp = tmp_path_factory.mktemp("connect")
    token = new_token()
    namespace = {"workspace": f"ws{uuid.uuid4().hex[:10]}", "env": "test"}
    folders = [tmp / "in-run", tmp / "outside-run"]
    for folder in folders:
        _write_files(folder, FILES)
    with token_nats(tmp, token) as nats, connect_server() as server:
        args = {
            "connect_url": server.url,
            "nats_url": nats.url,
            "token": token,
            "spool_dir": str(tmp / "spool"),
            "mlflow_uri": f"sqlite:///{tmp}/mlflow.db",
            "folders": [str(f) for f in folders],
            **_shipped_args(tmp),
            **namespace,
        }
        proc = subprocess.run(
            [sys.executable, str(CLIENT)],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
            check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            pytest.fail(
                f"the Spark Connect client failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n"
                f"server log:\n{server.log_text()[-3000:]}"
            )
        result = json.loads(lines[-1].removeprefix("RESULT "))
        stream = resolve_settings(environ={}, spark_conf={}, **namespace).stream_name
        events = _spark_events(token_url(nats, token), stream, result["queries"])
        yield SimpleNamespace(result=result, events=events, stdout=proc.stdout, stderr=proc.stderr, token=token)


def _of(run: SimpleNamespace, name: str) -> list[dict[str, Any]]:
    qid = run.result["queries"][name]
    return [
        {"type": e["type"].removeprefix("databricks."), **e["data"]}
        for e in run.events
        if e["data"].get("query_id") == qid
    ]


def test_streaming_queries_publish_their_lifecycle_with_their_names(connect_run: SimpleNamespace) -> None:
    """Each named query: started, a progress per batch (interval 0), terminated — every one with the name."""
    for name in ("in_run", "outside_run"):
        events = _of(connect_run, name)
        types = [e["type"] for e in events]
        assert types[0] == "spark.stream.started"
        assert types[-1] == "spark.stream.terminated"
        assert types.count("spark.stream.progress") == FILES
        assert {e["name"] for e in events} == {name}, events  # terminated too (it was null on Connect)
        assert events[-1]["error"] is None
        assert sum(e["input_rows"] for e in events if e["type"] == "spark.stream.progress") == FILES * 5


def test_batch_actions_publish_no_job_events_and_say_so_once(connect_run: SimpleNamespace) -> None:
    """No JVM listener on Connect: no execution events; one WARNING; the families say jobs are not live."""
    result = connect_run.result
    assert result["total"] == sum(range(1000))
    assert not result["jobs_listener"]
    assert [e for e in connect_run.events if ".execution." in e["type"]] == []
    warnings = [r for r in result["records"] if r["level"] == "WARNING" and "Spark Connect" in r["message"]]
    assert len(warnings) == 1, result["records"]
    assert "job" in warnings[0]["message"]
    families = result["families"]
    assert families["spark.jobs"] == {"live": False, "detail": NO_JOBS}
    assert families["spark.streams"]["live"] is True
    assert result["stats"]["families"]["spark.jobs"]["live"] is False  # what stats() (and doctor) show


def test_a_query_started_inside_an_mlflow_run_carries_its_id(connect_run: SimpleNamespace) -> None:
    """Correlation on Connect: the run's session tag comes back in the query's job tags; outside a run: null."""
    run_id = connect_run.result["run_id"]
    assert {e["mlflow_run_id"] for e in _of(connect_run, "in_run")} == {run_id}
    assert {e["mlflow_run_id"] for e in _of(connect_run, "outside_run")} == {None}


def test_a_listener_run_by_the_server_names_the_run_from_the_session_conf(connect_run: SimpleNamespace) -> None:
    """PySpark 3.5 placement: the listener, shipped to a clean process on the same session id, is told the
    run through the session conf the client set at run start (3.5 events carry no job tags)."""
    shipped = connect_run.result["shipped"]
    assert shipped["returncode"] == 0, shipped["stderr"]
    events = _of(connect_run, "shipped")
    assert [e["type"] for e in events] == ["spark.stream.started", "spark.stream.terminated"]
    assert {e["mlflow_run_id"] for e in events} == {shipped["run_id"]}
    assert {e["name"] for e in events} == {"shipped"}
    assert connect_run.token not in shipped["stdout"] + shipped["stderr"]


def test_the_token_travels_in_settings_and_is_never_shown(connect_run: SimpleNamespace) -> None:
    """Every event reached the token-protected server; the token is in no output, log line or repr."""
    assert connect_run.result["flushed"]
    shown = connect_run.stdout + connect_run.stderr + json.dumps(connect_run.result)
    assert connect_run.token not in shown
    assert "credentials=token" in connect_run.result["listener_repr"]
