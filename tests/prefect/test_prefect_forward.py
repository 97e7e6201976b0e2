"""Prefect → NATS: the forwarder (restart mid-stream: nothing lost, nothing twice), the publish task, the block."""

from __future__ import annotations

import collections
import threading
import uuid
from pathlib import Path
from typing import Any

import databricks_nats
from databricks_nats.errors import WaitTimeout
from databricks_nats.prefect import NatsSettings, event_id_for, forward, publish
from databricks_nats.settings import resolve_settings

FORWARDED = {"RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _stream_end(live: dict[str, str]) -> int:
    """The last sequence stored in this test's stream now (0: empty or missing)."""
    import asyncio

    from databricks_nats.transport import reader

    async def last() -> int:
        settings = resolve_settings(**live)
        nc = await reader.connect(settings)
        try:
            return (await reader.bounds(nc.jetstream(), settings.stream_name))[1]
        except Exception:  # no stream yet: nothing stored
            return 0
        finally:
            await nc.close()

    return asyncio.run(last())


def read_stream(live: dict[str, str], prefix: str = "") -> list[Any]:
    """Every event stored in this test's stream when called (no de-duplication on the reading side), oldest first;
    it ends at the stream's last sequence of that moment, so a stream still being written to is read to an end."""
    end = _stream_end(live)
    found: list[Any] = []
    if end == 0:
        return found
    sub = databricks_nats.subscribe(start="all", dedupe=False, **live)
    try:
        while not found or found[-1].seq < end:
            try:
                found.append(sub.next(10))
            except WaitTimeout:
                break  # only when the stream lost messages (limits): what was read is all there is
    finally:
        sub.close()
    return [e for e in found if e.type.startswith(prefix)]


def prefect_state_events(flow_run_ids: set[str]) -> list[Any]:
    """The Prefect events of these flow runs and their task runs that the forwarder should forward."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    now = dt.datetime.now(dt.timezone.utc)
    flt = EventFilter(
        event=EventNameFilter(prefix=["prefect.flow-run.", "prefect.task-run."]),
        occurred=EventOccurredFilter(since=now - dt.timedelta(hours=1), until=now + dt.timedelta(minutes=1)),
    )
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=flt, limit=50)
        while True:
            found += page.events
            if not page.next_page:
                break
            page = client.read_events_page(page.next_page)

    def run_of(event: Any) -> str:
        if event.event.startswith("prefect.flow-run."):
            return str(event.resource.id.rsplit(".", 1)[-1])
        return next((r.id.rsplit(".", 1)[-1] for r in event.related if r.role == "flow-run"), "")

    return [e for e in found if run_of(e) in flow_run_ids and e.resource.get("prefect.state-type") in FORWARDED]


def _run_flows(count: int, first: int) -> set[str]:
    from flows import steps
    from prefect.context import FlowRunContext  # noqa: F401 - the flows run in this process

    ids = set()
    for n in range(first, first + count):
        state = steps(n, return_state=True)
        ids.add(str(state.state_details.flow_run_id))
    return ids


def test_forwarder_restart_loses_nothing_and_repeats_nothing(
    live: dict[str, str], prefect_api: str, tmp_path: Path, eventually: Any
) -> None:
    """Flow and task runs during, between and after two forwarder runs: each state change is on NATS exactly once."""
    import asyncio

    from flows import promote
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    state_file = tmp_path / "forward.json"
    stop = threading.Event()
    box: dict[str, Any] = {}

    def first_forwarder() -> None:
        box["one"] = forward(state_file, lookback=60, sweep_interval=2, stop=stop, **live)

    worker = threading.Thread(target=first_forwarder)
    worker.start()
    runs = _run_flows(2, 0)
    eventually(lambda: len(read_stream(live, "prefect.flow_run.completed")) >= 1, 60, "a first completion on NATS")
    runs |= _run_flows(1, 10)  # mid-stream: the forwarder is stopped while these state changes arrive
    stop.set()
    worker.join(60)
    assert not worker.is_alive()
    assert state_file.exists()

    runs |= _run_flows(2, 20)  # while no forwarder runs

    async def cancelled_before_it_ran() -> str:
        deployment = await promote.ato_deployment(name=f"never-runs-{live['workspace']}")
        deployment_id = await deployment.aapply()
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"model": "m", "version": "1"})
            await client.set_flow_run_state(run.id, Cancelled(), force=True)
        return str(run.id)

    never_ran = asyncio.run(cancelled_before_it_ran())  # no flow process, so no state hook could have reported it
    runs.add(never_ran)

    expected = eventually(
        lambda: (found := prefect_state_events(runs)) and len({str(e.id) for e in found}) >= 5 * 6 + 1 and found,
        60,
        "the Prefect server's state-change events",
    )
    two = forward(state_file, lookback=60, sweep_interval=2, idle_timeout=8, **live)
    assert two.stopped_by == "idle_timeout"

    everything = read_stream(live, "prefect.")
    counts = collections.Counter(e.id for e in everything)
    assert {i: n for i, n in counts.items() if n > 1} == {}  # nothing twice
    stored = [e for e in everything if e.data["flow_run_id"] in runs]  # (the session's other tests run flows too)
    assert {e.id for e in stored} == {event_id_for(e.id) for e in expected}  # nothing lost
    cancelled = [e for e in stored if e.type == "prefect.flow_run.cancelled"]
    assert [e.data["flow_run_id"] for e in cancelled] == [never_ran]
    done = [e for e in stored if e.type == "prefect.flow_run.completed"]
    assert {e.data["flow_name"] for e in done} == {"databricks-nats-steps"}
    assert all(e.data["duration_ms"] is not None and e.data["url"].endswith(e.data["flow_run_id"]) for e in done)
    tasks = [e for e in stored if e.type == "prefect.task_run.completed"]
    assert len(tasks) == 2 * 5
    assert {e.data["task_name"] for e in tasks} == {"double"}
    assert {e.data["flow_run_id"] for e in tasks} == runs - {never_ran}


def test_publish_task_with_settings_from_a_block(live: dict[str, str], prefect_api: str) -> None:
    """The publish task emits through the durable publisher with the block's settings and returns once stored."""
    from prefect import flow

    name = f"nats-{uuid.uuid4().hex[:8]}"
    NatsSettings.register_type_and_schema()
    NatsSettings(url=live["url"], workspace=live["workspace"], env=live["env"]).save(name)

    @flow
    def report(block: str) -> str:
        return str(publish("custom.job.reported", {"rows": 12}, keys=["nightly"], block=block))

    event_id = report(name)
    [event] = read_stream(live, "custom.job.reported")
    assert event.id == event_id
    assert event.data["rows"] == 12
    assert event.causation is None  # a flow run nobody's event started causes nothing


def test_block_keeps_credentials_secret(prefect_api: str) -> None:
    """Credentials are SecretStr: stored and loaded, handed to the settings, never shown in a repr."""
    name = f"secret-{uuid.uuid4().hex[:8]}"
    NatsSettings.register_type_and_schema()
    NatsSettings(url="nats://nats:4222", user="svc", password="pa55-word", token=None).save(name)
    loaded = NatsSettings.load(name)
    assert "pa55-word" not in repr(loaded)
    assert loaded.settings() == {"url": "nats://nats:4222", "user": "svc", "password": "pa55-word"}
    settings = resolve_settings(**loaded.settings())
    assert "pa55-word" not in repr(settings)


_PROGRAM = (
    "import argparse, sys\n"
    "from databricks_nats.integrations.prefect.cli import add_parser\n"
    "parser = argparse.ArgumentParser(prog='databricks-nats')\n"
    "add_parser(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


class _Forwarder:
    """``databricks-nats prefect-forward`` as a process of its own; its log lines are collected as they come."""

    def __init__(self, live: dict[str, str], prefect_api: str, tmp_path: Path, state_file: Path) -> None:
        import os
        import subprocess
        import sys

        argv = ["prefect-forward", "--state-file", str(state_file), "--url", live["url"]]
        argv += ["--workspace", live["workspace"], "--env", live["env"], "--sweep-interval", "2", "--lookback", "60"]
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "DATABRICKS_NATS_SPOOL_DIR": str(tmp_path / "cli-spool")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROGRAM, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[bytes] = []
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(stderr.readline, b"")), daemon=True)
        self.reader.start()

    def following(self) -> bool:
        return any(b"following Prefect's events" in x for x in self.lines)

    def forwarded(self) -> int:
        """How many events it published (and JetStream acknowledged, stored or dropped as a duplicate)."""
        return sum(b" forwarded prefect." in x for x in self.lines)

    def end(self, sig: int) -> tuple[int, str, str]:
        """Send ``sig``, wait for the exit: (return code, stdout, stderr)."""
        try:
            self.proc.send_signal(sig)
            self.proc.wait(60)
            self.reader.join(10)
            out = self.proc.stdout.read() if self.proc.stdout is not None else b""
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode, out.decode(), b"".join(self.lines).decode()


def test_cli_forwards_until_sigterm(live: dict[str, str], prefect_api: str, tmp_path: Path, eventually: Any) -> None:
    """prefect-forward runs as a process, publishes a flow run's completion, keeps its resume point, stops cleanly."""
    import signal

    state_file = tmp_path / "cli-state.json"
    forwarder = _Forwarder(live, prefect_api, tmp_path, state_file)
    try:
        eventually(forwarder.following, 60, "the forwarder following")
        [run] = _run_flows(1, 100)
        done = eventually(
            lambda: [e for e in read_stream(live, "prefect.flow_run.completed") if e.data["flow_run_id"] == run],
            60,
            "the flow run's completion on NATS",
        )
    finally:
        code, out, err = forwarder.end(signal.SIGTERM)
    assert code == 0, err
    assert len(done) == 1
    assert "event(s) forwarded (stopped: SIGTERM)" in out
    assert "stopped by stop" not in out + err
    assert state_file.exists()


def test_forwarder_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    live: dict[str, str], prefect_api: str, tmp_path: Path, eventually: Any
) -> None:
    """SIGKILL (no clean stop: whatever was published but not yet in the resume point is published again) while
    flow runs keep changing state, then a restart: every state change is in the stream once (JetStream drops the
    re-published ones: same ids), as a subscriber of the stream sees it."""
    import signal

    state_file = tmp_path / "kill-state.json"
    runs: set[str] = set()
    stop_flows = threading.Event()

    def keep_running_flows() -> None:
        n = 200
        while not stop_flows.is_set():
            runs.update(_run_flows(1, n))
            n += 1

    def ours() -> list[Any]:
        return [e for e in read_stream(live, "prefect.") if e.data["flow_run_id"] in runs]

    def two_more_runs() -> Any:
        target = len(runs) + 2
        return lambda: len(runs) >= target

    first = _Forwarder(live, prefect_api, tmp_path, state_file)
    flows = threading.Thread(target=keep_running_flows)
    second = None
    try:
        eventually(first.following, 60, "the first forwarder following")
        flows.start()
        eventually(lambda: len(ours()) >= 8, 60, "the first forwarder's events on NATS")
        code, _, _ = first.end(signal.SIGKILL)  # mid-stream: the flows keep running
        assert code == -signal.SIGKILL
        eventually(two_more_runs(), 120, "two more flow runs while no forwarder runs")
        second = _Forwarder(live, prefect_api, tmp_path, state_file)
        eventually(second.following, 60, "the second forwarder following")
        eventually(two_more_runs(), 120, "two more flow runs after the restart")
    finally:
        stop_flows.set()
        flows.join(120)
    try:
        expected = eventually(
            lambda: (
                (found := prefect_state_events(runs)) and len({str(e.id) for e in found}) >= 6 * len(runs) and found
            ),
            60,
            "the Prefect server's state-change events",
        )
        want = {event_id_for(e.id) for e in expected}
        eventually(lambda: want <= {e.id for e in ours()}, 120, "every state change on NATS")
    finally:
        code, _, err = second.end(signal.SIGTERM)
    assert code == 0, err

    everything = read_stream(live, "prefect.")
    counts = collections.Counter(e.id for e in everything)
    assert {i: n for i, n in counts.items() if n > 1} == {}  # nothing twice
    stored = [e for e in everything if e.data["flow_run_id"] in runs]
    assert {e.id for e in stored} == want  # nothing lost
    published = first.forwarded() + second.forwarded()
    print(
        f"\nforwarder SIGKILL: {len(runs)} flow runs, {len(want)} state changes expected, {len(stored)} stored "
        f"({len(everything)} in the stream); published {published} times by the two processes "
        f"({first.forwarded()} + {second.forwarded()}): {published - len(everything)} duplicates dropped by JetStream"
    )
