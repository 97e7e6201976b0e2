"""The server-side placement (Databricks serverless/standard access with PySpark 3.5 clients), on both profiles.

The listener ``attach()`` registers is cloudpickled as a PySpark 3.5 Connect client does
(``CloudPickleSerializer``), then run in a fresh interpreter with a clean environment (PATH only), in an
empty directory, with only the installed package on ``sys.path`` (tests/spark/shipped_listener.py does
what ``listener_worker`` does). It is fed the JSON a real query's events serialize to (a real local
query; Spark Connect servers send ``event.json``), against a nats-server that requires a token given
only through settings. Every stream event must arrive, and the token must appear in no output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql.streaming import StreamingQueryListener

import databricks_nats
from databricks_nats import spark as nats_spark
from databricks_nats.integrations.spark import _compat
from databricks_nats.testing import read_stream
from tests.spark.connect import new_token, token_nats, token_url

WORKER = Path(__file__).with_name("shipped_listener.py")
FILES = 3


class _Recorder(StreamingQueryListener):
    """Records each event as the JSON a Spark Connect server sends for it (kind, json), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []

    def onQueryStarted(self, event: Any) -> None:
        data = {"id": str(event.id), "runId": str(event.runId), "name": event.name, "timestamp": event.timestamp}
        if hasattr(event, "jobTags"):  # Spark >= 4.1
            data["jobTags"] = sorted(event.jobTags)
        self.events.append((0, json.dumps(data)))

    def onQueryProgress(self, event: Any) -> None:
        self.events.append((1, json.dumps({"progress": json.loads(event.progress.json)})))

    def onQueryIdle(self, event: Any) -> None:
        data = {"id": str(event.id), "runId": str(event.runId), "timestamp": event.timestamp}
        self.events.append((2, json.dumps(data)))

    def onQueryTerminated(self, event: Any) -> None:
        data = {
            "id": str(event.id),
            "runId": str(event.runId),
            "exception": event.exception,
            "errorClassOnException": getattr(event, "errorClassOnException", None),
        }
        self.events.append((3, json.dumps(data)))


def _real_events(spark: Any, folder: Path) -> list[tuple[int, str]]:
    """The events of a real named query over FILES files, as JSON."""
    folder.mkdir()
    for i in range(FILES):
        (folder / f"part-{i}.json").write_text("".join(json.dumps({"id": i * 10 + j}) + "\n" for j in range(10)))
    recorder = _Recorder()
    _compat.ensure_callback_server(spark)  # an earlier test may have had MLflow shut py4j's callback server down
    spark.streams.addListener(recorder)
    try:
        query = (
            spark.readStream.schema("id LONG")
            .option("maxFilesPerTrigger", 1)
            .json(str(folder))
            .writeStream.format("memory")
            .queryName("shipped")
            .trigger(availableNow=True)
            .option("checkpointLocation", str(folder) + "-checkpoint")
            .start()
        )
        query.awaitTermination(120)
        deadline = time.monotonic() + 60
        while not any(kind == 3 for kind, _ in recorder.events) and time.monotonic() < deadline:
            nats_spark.settle(spark)
            time.sleep(0.05)
    finally:
        spark.streams.removeListener(recorder)
    assert [k for k, _ in recorder.events].count(3) == 1, recorder.events
    return recorder.events


def _package_dir(tmp: Path) -> Path:
    """A directory holding only the installed package (the repository root also holds tests, notebooks…)."""
    found = tmp / "site"
    found.mkdir()
    (found / "databricks_nats").symlink_to(Path(databricks_nats.__file__).parent, target_is_directory=True)
    return found


def _run_shipped(tmp_path: Path, payload: bytes, events: list[tuple[int, str]], **env: str) -> Any:
    """Run the pickled listener like ``listener_worker`` in a fresh interpreter: clean env, empty cwd, package only."""
    (tmp_path / "listener.pickle").write_bytes(payload)
    (tmp_path / "events.json").write_text(json.dumps(events))
    workdir = tmp_path / "worker"
    workdir.mkdir()
    shutil.copy(WORKER, workdir / WORKER.name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    site = _package_dir(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            str(workdir / WORKER.name),
            str(tmp_path / "listener.pickle"),
            str(tmp_path / "events.json"),
            str(site),
            str(Path(databricks_nats.__file__).parent.parent),
        ],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"PACKAGE {site / 'databricks_nats'}" in proc.stdout.splitlines(), proc.stdout
    environ = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("ENVIRON "))[8:])
    assert set(environ) <= {"PATH", "LC_CTYPE", *env}, environ  # LC_CTYPE: Python's C-locale coercion
    return proc


def test_a_listener_shipped_to_a_clean_process_publishes_every_stream_event_with_its_token(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = new_token()
    namespace = {"workspace": f"ws{uuid.uuid4().hex[:10]}", "env": "test"}
    events = _real_events(spark, tmp_path / "in")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the spool's parent should be")
    with token_nats(tmp_path, token) as nats:
        # the notebook: settings with the token, and a spool dir that does not exist where the listener runs
        # ... on a Databricks cluster whose context (compute, workspace id) is detected at attach
        monkeypatch.setenv("DB_CLUSTER_ID", "0101-000000-shipped")
        monkeypatch.setenv("DATABRICKS_WORKSPACE_ID", "1234567890")
        settings = databricks_nats.configure(
            url=nats.url, token=token, spool_dir=str(blocked / "spool"), context_timeout=0.5, **namespace
        )
        attachment = nats_spark.attach(spark, progress_interval=0)
        nats_spark.detach(spark)
        listener = attachment.streaming
        from pyspark.serializers import CloudPickleSerializer

        payload = CloudPickleSerializer().dumps(listener)  # what a PySpark 3.5 Connect client sends
        assert token not in repr(listener)
        assert token not in str(listener)
        assert "credentials=token" in repr(listener)

        # the server: a fresh interpreter, clean environment, empty working directory
        proc = _run_shipped(tmp_path, payload, events)
        output = proc.stdout + proc.stderr

        deadline = time.monotonic() + 30
        while True:
            found = [m["envelope"] for m in read_stream(token_url(nats, token), settings.stream_name)]
            if len(found) >= len(events) or time.monotonic() > deadline:
                break
            time.sleep(0.2)

    # every event of the query arrived, in order, named, with the context captured at attach
    types = [e["type"].removeprefix("databricks.") for e in found]
    expected = {0: "spark.stream.started", 1: "spark.stream.progress", 2: "spark.stream.idle"}
    assert types == [expected.get(kind, "spark.stream.terminated") for kind, _ in events]
    assert {e["data"]["name"] for e in found} == {"shipped"}
    assert {e["data"]["query_id"] for e in found} == {json.loads(events[0][1])["id"]}
    assert sum(e["data"]["input_rows"] for e in found if e["type"].endswith("progress")) == FILES * 10
    contexts = [e["data"]["context"] for e in found]
    assert all(c["workspace"] == namespace["workspace"] and c["cluster_id"] == "0101-000000-shipped" for c in contexts)
    assert all(c["workspace_id"] == "1234567890" for c in contexts)
    # the spool dir could not be created there: a temporary one, said once at WARNING
    spool_warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line and "spool directory" in line]
    assert len(spool_warnings) == 1, proc.stderr[-3000:]
    assert tempfile.gettempdir() in spool_warnings[0]
    # the token is in no output of the process (its log at DEBUG included), nor in the listener's repr
    assert token not in output
    assert "credentials=token" in proc.stdout
    shutil.rmtree(Path(tempfile.gettempdir()) / "databricks-nats" / "spool" / settings.namespace, ignore_errors=True)


def test_a_listener_shipped_without_settings_says_so_once(tmp_path: Path) -> None:
    """A listener built without settings (not by attach) warns once where it runs, and still never raises."""
    from pyspark.serializers import CloudPickleSerializer

    from databricks_nats.integrations.spark.streaming import NatsStreamingListener

    payload = CloudPickleSerializer().dumps(NatsStreamingListener(progress_interval=0))
    qid, rid = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        (0, json.dumps({"id": qid, "runId": rid, "name": "bare", "timestamp": "2026-01-01T00:00:00.000Z"})),
        (3, json.dumps({"id": qid, "runId": rid, "exception": None, "errorClassOnException": None})),
    ]
    proc = _run_shipped(tmp_path, payload, events, DATABRICKS_NATS_DISABLED="true")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line and "carries no settings" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]


@pytest.mark.parametrize("secret", ["token", "password", "nkey_seed", "creds", "tls_key"])
def test_the_shipped_listener_never_shows_a_secret(secret: str, tmp_path: Path) -> None:
    """Whatever the credential, the listener's repr and pickled-then-loaded repr name its kind only."""
    import pickle

    from pyspark.serializers import CloudPickleSerializer

    from databricks_nats.integrations.spark.streaming import NatsStreamingListener
    from databricks_nats.settings import resolve_settings

    value = "s3cr3t-" + uuid.uuid4().hex
    settings = resolve_settings(environ={}, spark_conf={}, url=f"nats://user:{value}@127.0.0.1:4222", **{secret: value})
    listener = NatsStreamingListener(settings=settings, context={"workspace": "local", "env": "dev"})
    loaded = pickle.loads(CloudPickleSerializer().dumps(listener))  # noqa: S301 - our own bytes
    for shown in (repr(listener), str(listener), repr(loaded), repr(loaded.settings), repr(settings)):
        assert value not in shown
    assert secret in repr(loaded)
    assert loaded.settings == settings
