"""The live view of `databricks-nats monitor` in a pseudo-terminal: its screen holds the expected rows and follows
new events; Ctrl-C ends it cleanly."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from typing import Any

import pytest
from conftest import CLI, cli_env, health

import databricks_nats
from databricks_nats.consumer import subscribe
from databricks_nats.testing import NatsServer

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Screen:
    """What a process wrote to a pseudo-terminal (escape sequences removed)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def wait_for(self, *needles: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout  # guards a hang, asserts nothing about speed
        while time.monotonic() < deadline:
            if all(n in self.text for n in needles):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:  # the process closed the terminal
                    break
        return all(n in self.text for n in needles)


def test_live_view_in_a_pseudo_terminal(nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any) -> None:
    """Rates per type, a publisher's heartbeat, a lagging durable consumer in red, then a new event appears."""
    pytest.importorskip("rich", reason="the live view is the optional `monitor` extra (rich); not installed here")
    settings = {"url": nats_server.url, **namespace}
    databricks_nats.configure(spool_dir=str(tmp_path / "spool"), **settings)
    for v in range(12):
        databricks_nats.emit("mlflow.model.alias_set", {"name": "churn", "alias": "champion", "version": str(v)})
    databricks_nats.emit("system.publisher.health", health("driver-7f3a"))
    assert databricks_nats.flush(timeout=30).ok
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 170, 0, 0))
    env = {k: v for k, v in cli_env(TERM="xterm-256color").items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    ns = ["--url", nats_server.url, "--workspace", namespace["workspace"], "--env", namespace["env"]]
    with subscribe("mlflow.model.*", durable="feature-store-sync", start="all", **settings) as sub:
        sub.next(timeout=30)
        proc = subprocess.Popen(
            [*CLI, "monitor", *ns, "--refresh", "0.5", "--max-lag", "5"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        screen = Screen(master)
        try:
            assert screen.wait_for(
                "Events by source and type", "mlflow.model.alias_set", "driver-7f3a", "feature-store-sync"
            ), screen.text[-3000:]
            assert re.search(r"mlflow\s+│\s+mlflow\.model\.alias_set\s+│\s+12\s+│", screen.text), screen.text[-3000:]
            assert re.search(r"feature-store-sync\s+│.*│\s+12\s+│\s+lag 12 > 5", screen.text), screen.text[-3000:]
            assert "\x1b[31m" in screen.raw.decode("utf-8", "replace") or "\x1b[1;31m" in screen.raw.decode()
            databricks_nats.emit("mlflow.model.registered", {"name": "fraud"})
            assert databricks_nats.flush(timeout=30).ok
            assert screen.wait_for("mlflow.model.registered"), screen.text[-3000:]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            os.close(master)
    assert "Traceback" not in screen.text


def test_live_json_is_one_document_per_refresh(
    nats_server: NatsServer, namespace: dict[str, str], tmp_path: Any
) -> None:
    """Without --once, --json prints one JSON document per line at every refresh: a script can follow it."""
    settings = {"url": nats_server.url, **namespace}
    databricks_nats.configure(spool_dir=str(tmp_path / "spool"), **settings)
    databricks_nats.emit("mlflow.model.registered", {"name": "first"})
    assert databricks_nats.flush(timeout=30).ok
    ns = ["--url", nats_server.url, "--workspace", namespace["workspace"], "--env", namespace["env"]]
    proc = subprocess.Popen(
        [*CLI, "monitor", *ns, "--json", "--refresh", "0.3"], stdout=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        databricks_nats.emit("mlflow.model.registered", {"name": "second"})
        assert databricks_nats.flush(timeout=30).ok
        for _ in range(200):  # a refresh every 0.3 s: this bounds a hang, not the speed
            later = json.loads(proc.stdout.readline())
            if {r["type"]: r["events"] for r in later["rates"]}.get("mlflow.model.registered") == 2:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert {r["type"]: r["events"] for r in first["rates"]}["mlflow.model.registered"] == 1
    assert {r["type"]: r["events"] for r in later["rates"]}["mlflow.model.registered"] == 2
