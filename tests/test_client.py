"""Client objects: several per process, each with its own publisher, namespace and spool, against a real server.

Also: the module functions are a thin default client, ``testing.capture`` swaps it, ``on_reconfigure`` tells
integrations about a new one, ``publish`` is deprecated, and an injected context provider and secret source
are the ones used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

import databricks_nats
from databricks_nats import Client, current_client
from databricks_nats.client import live_clients, on_reconfigure
from databricks_nats.ports import MappingSecrets, NoContext, plain_context
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.testing import NatsServer, capture, read_stream


def _ns() -> dict[str, str]:
    return {"workspace": f"ws{uuid.uuid4().hex[:10]}", "env": "test"}


def _client(server: NatsServer, tmp_path: Path, ns: dict[str, str], **kw: Any) -> Client:
    """A client of this namespace with a spool of its own and no context detection."""
    options: dict[str, Any] = {"context": NoContext(), **ns, **kw}
    return Client(url=server.url, spool_dir=str(tmp_path / ns["workspace"]), ack_timeout=1.0, **options)


def _stored(server: NatsServer, settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """(subject, data) of every message in the namespace's stream."""
    return [(m["subject"], m["envelope"]["data"]) for m in read_stream(server.url, settings.stream_name)]


def test_two_clients_with_different_namespaces_each_deliver_only_their_own_events(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Two clients in one process (two workspaces): each stream holds exactly its client's events."""
    ns1, ns2 = _ns(), {**_ns(), "env": "prod"}
    with _client(nats_server, tmp_path, ns1) as one, _client(nats_server, tmp_path, ns2) as two:
        for i in range(5):
            assert one.emit("custom.job.done", {"i": i, "by": "one"}, keys=["a"]) is not None
            assert two.emit("custom.job.done", {"i": i, "by": "two"}, keys=["b"]) is not None
        assert one.flush(30).ok
        assert two.flush(30).ok
        assert one.stats()["namespace"] != two.stats()["namespace"]
        assert one.stats()["spool_path"] != two.stats()["spool_path"]
        assert one.settings.stream_name != two.settings.stream_name
        first, second = _stored(nats_server, one.settings), _stored(nats_server, two.settings)
    assert [(d["by"], d["i"]) for _, d in first] == [("one", i) for i in range(5)]
    assert [(d["by"], d["i"]) for _, d in second] == [("two", i) for i in range(5)]
    assert {s for s, _ in first} == {f"dbx.{ns1['workspace']}.test.custom.job.a.done"}
    assert {s for s, _ in second} == {f"dbx.{ns2['workspace']}.prod.custom.job.b.done"}
    assert {d["context"]["workspace"] for _, d in first} == {ns1["workspace"]}
    assert {d["context"]["env"] for _, d in second} == {"prod"}


def test_a_client_as_a_context_manager_flushes_and_closes_its_publisher(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Leaving the block flushes the events and closes the publisher; the client no longer counts as live."""
    ns = _ns()
    with _client(nats_server, tmp_path, ns) as client:
        client.emit("custom.ctx.done", {"n": 1}, keys=["k"])
        publisher = client.transport
        assert publisher is not None
        assert client in live_clients()
    assert client.transport is None
    assert client not in live_clients()
    assert publisher.stats()["connection"] == "closed"
    assert [d["n"] for _, d in _stored(nats_server, client.settings)] == [1]


def test_the_module_api_and_an_explicit_client_coexist(nats_server: NatsServer, tmp_path: Path) -> None:
    """configure()/emit() and a Client of another namespace publish side by side, each into its own stream."""
    ns_module, ns_client = _ns(), _ns()
    module_settings = databricks_nats.configure(
        url=nats_server.url, spool_dir=str(tmp_path / "module"), detect_context=False, **ns_module
    )
    with _client(nats_server, tmp_path, ns_client) as client:
        databricks_nats.emit("custom.side.by", {"from": "module"}, keys=["m"])
        client.emit("custom.side.by", {"from": "client"}, keys=["c"])
        assert current_client() is not client
        assert databricks_nats.flush(30).ok
        assert client.flush(30).ok
        assert [d["from"] for _, d in _stored(nats_server, client.settings)] == ["client"]
    assert [d["from"] for _, d in _stored(nats_server, module_settings)] == ["module"]
    assert databricks_nats.get_settings() is module_settings  # closing the client left the default one alone


def test_emit_many_hands_over_every_good_pair_and_refuses_the_bad_ones(nats_server: NatsServer, tmp_path: Path) -> None:
    """emit_many returns how many events it took; a malformed pair is refused (fail-open), the others arrive."""
    ns = _ns()
    run = {"experiment_id": "1", "run_id": "r1", "run_name": None, "run_url": None, "artifact_uri": None}
    items: list[tuple[str, dict[str, Any]]] = [
        ("mlflow.run.started", run),
        ("bad..type", {}),
        ("mlflow.run.params", {**run, "params": {"lr": "0.1"}}),
    ]
    with _client(nats_server, tmp_path, ns) as client:
        assert client.emit_many(items) == 2
        assert client.flush(30).ok
        assert [s.rsplit(".", 1)[1] for s, _ in _stored(nats_server, client.settings)] == ["started", "params"]
    with pytest.raises(databricks_nats.SubjectError), capture(strict=True):
        databricks_nats.emit_many(items)


def test_emit_many_keeps_the_time_an_item_happened(nats_server: NatsServer, tmp_path: Path) -> None:
    """An item handed over later (a batch) carries its own time: the event's ``time`` is that, not the hand-over."""
    then = 1_700_000_000_123_456_000  # 2023-11-14T22:13:20.123456Z
    with _client(nats_server, tmp_path, _ns()) as client:
        assert client.emit_many([("custom.batch.item", {"n": 1}, then), ("custom.batch.item", {"n": 2})]) == 2
        assert client.flush(30).ok
        times = [m["envelope"]["time"] for m in read_stream(nats_server.url, client.settings.stream_name)]
    assert times[0] == "2023-11-14T22:13:20.123456Z"
    assert times[1] > "2026"


def test_capture_swaps_the_default_client_and_restores_it() -> None:
    """Inside capture() the default client is one over the capture; afterwards the previous one is back."""
    before = current_client()
    with capture(workspace="1234", env="prod") as events:
        inside = current_client()
        assert inside is not before
        assert inside.transport is events
        assert databricks_nats.get_settings().namespace == "dbx.1234.prod"
        databricks_nats.emit("custom.swap.seen", {"n": 1}, keys=["k"])
    assert current_client() is before
    assert events.types() == ["custom.swap.seen"]
    assert inside not in live_clients()


def test_on_reconfigure_tells_subscribers_about_each_new_default_client(tmp_path: Path) -> None:
    """configure() and capture() announce the new default client; an unsubscribed callback hears nothing more."""
    seen: list[Client] = []
    unsubscribe = on_reconfigure(seen.append)
    try:
        databricks_nats.configure(disabled=True, spool_dir=str(tmp_path / "spool"), **_ns())
        assert seen == [current_client()]
        with capture():
            assert seen[-1] is current_client()
        assert seen[-1] is current_client()  # the configured one, back
        assert len(seen) == 3
    finally:
        unsubscribe()
    databricks_nats.configure(disabled=True, spool_dir=str(tmp_path / "spool"), **_ns())
    assert len(seen) == 3


def test_publish_warns_once_that_it_is_deprecated_and_still_emits(tmp_path: Path) -> None:
    """publish() raises a DeprecationWarning pointing at the caller's line, once per process, then emits."""
    script = textwrap.dedent(
        """
        import warnings
        from databricks_nats.testing import capture
        import databricks_nats

        with warnings.catch_warnings(record=True) as caught, capture() as events:
            warnings.simplefilter("always")
            databricks_nats.publish("custom.old.call", {"n": 1}, keys=["k"])  # the caller's line
            databricks_nats.publish("custom.old.call", {"n": 2}, keys=["k"])
        mine = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        print(len(mine), mine[0].filename, mine[0].lineno, [e.data["n"] for e in events])
        """
    )
    path = tmp_path / "caller.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    count, filename, line, data = done.stdout.strip().split(" ", 3)
    caller = next(n for n, text in enumerate(script.splitlines(), 1) if "the caller's line" in text)
    assert (int(count), filename, int(line), data) == (1, str(path), caller, "[1, 2]")


class _Cluster:
    """A ContextProvider that knows where the process runs: workspace 42, a cluster and a job run."""

    def detect(self, settings: Settings) -> tuple[Settings, dict[str, Any]]:
        applied = dataclasses.replace(settings, workspace="42")
        return applied, {**plain_context(applied), "cluster_id": "0101-abc", "job_run_id": "77"}


def test_an_injected_context_provider_names_the_namespace_and_the_events_context(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The provider's settings decide the namespace and its context travels in every event."""
    with Client(url=nats_server.url, spool_dir=str(tmp_path / "spool"), env=f"e{uuid.uuid4().hex[:6]}",
                context=_Cluster()) as client:  # fmt: skip
        assert client.settings.workspace == "42"
        client.emit("custom.ctx.found", {"n": 1}, keys=["k"])
        assert client.flush(30).ok
        [(subject, data)] = _stored(nats_server, client.settings)
    assert subject.startswith("dbx.42.")
    assert data["context"] == {
        "workspace": "42",
        "env": client.settings.env,
        "cluster_id": "0101-abc",
        "job_run_id": "77",
    }


def test_an_injected_secret_source_supplies_the_secret_scopes_credentials(tmp_path: Path) -> None:
    """Against a real nats-server that requires a token: the token comes from the injected MappingSecrets."""
    config = tmp_path / "auth.conf"
    config.write_text('authorization { token: "scope-t0ken" }\n')
    ns = _ns()
    secrets = MappingSecrets({"nats/nats-token": "scope-t0ken"})
    with NatsServer(config=str(config)) as server:
        with _client(server, tmp_path, ns, secret_scope="nats", secrets=secrets) as client:
            client.emit("custom.auth.scope", {"n": 1}, keys=["k"])
            assert client.flush(30).ok
            assert client.ensure_stream().name == client.settings.stream_name
        with _client(server, tmp_path, _ns(), secret_scope="nats", secrets=MappingSecrets({})) as refused:
            refused.emit("custom.auth.scope", {"n": 2}, keys=["k"])
            assert not refused.flush(2).ok  # the scope holds no credential: nothing can be delivered

        async def read() -> list[bytes]:
            nc = await nats.connect(server.url, token="scope-t0ken")
            try:
                js = nc.jetstream()
                sub = await js.pull_subscribe(f"{client.settings.namespace}.>", stream=client.settings.stream_name)
                return [m.data for m in await sub.fetch(1, timeout=10)]
            finally:
                await nc.close()

        assert [json.loads(d)["data"]["n"] for d in asyncio.run(read())] == [1]
        # The consumer reads the scope through the same kind of source.
        with databricks_nats.subscribe(
            "custom.auth.scope", keys=["k"], start="all", secrets=secrets, url=server.url, secret_scope="nats", **ns
        ) as sub:
            assert sub.next(30).data["n"] == 1


def test_every_live_client_is_flushed_at_interpreter_exit(nats_server: NatsServer, tmp_path: Path) -> None:
    """A script that emits through two clients and the module API and just ends: every event arrives."""
    spaces = [_ns(), _ns(), _ns()]
    script = textwrap.dedent(
        f"""
        import databricks_nats
        from databricks_nats.ports import NoContext
        url, spaces, spool = {nats_server.url!r}, {spaces!r}, {str(tmp_path)!r}
        databricks_nats.configure(url=url, spool_dir=spool + "/m", detect_context=False, **spaces[0])
        databricks_nats.emit("custom.exit.flushed", {{"by": "module"}}, keys=["k"])
        for n, ns in enumerate(spaces[1:]):
            client = databricks_nats.Client(url=url, spool_dir=spool + "/" + str(n), context=NoContext(), **ns)
            client.emit("custom.exit.flushed", {{"by": ns["workspace"]}}, keys=["k"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = ["module", spaces[1]["workspace"], spaces[2]["workspace"]]
    found = [
        [d["by"] for _, d in _stored(nats_server, resolve_settings(environ={}, spark_conf={}, **ns))] for ns in spaces
    ]
    assert found == [[e] for e in expected]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_publishes_through_its_own_publisher_for_every_client(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """After a fork, an explicit client and the default one each start a publisher of the child's own."""
    spaces = [_ns(), _ns()]
    script = textwrap.dedent(
        f"""
        import os
        import databricks_nats
        from databricks_nats.ports import NoContext
        url, spaces, spool = {nats_server.url!r}, {spaces!r}, {str(tmp_path)!r}
        databricks_nats.configure(url=url, spool_dir=spool + "/m", detect_context=False, **spaces[0])
        client = databricks_nats.Client(url=url, spool_dir=spool + "/c", context=NoContext(), **spaces[1])
        databricks_nats.emit("custom.fork.seen", {{"by": "parent"}}, keys=["k"])
        client.emit("custom.fork.seen", {{"by": "parent"}}, keys=["k"])
        pid = os.fork()
        if pid == 0:
            databricks_nats.emit("custom.fork.seen", {{"by": "child"}}, keys=["k"])
            client.emit("custom.fork.seen", {{"by": "child"}}, keys=["k"])
            ok = databricks_nats.flush(30).ok and client.flush(30).ok
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert databricks_nats.flush(30).ok and client.flush(30).ok
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for ns in spaces:
        settings = resolve_settings(environ={}, spark_conf={}, **ns)
        assert sorted(d["by"] for _, d in _stored(nats_server, settings)) == ["child", "parent"]
