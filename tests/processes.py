"""Test helper: named subprocesses, each in its own session with its output in ``<dir>/<name>.log``; stopped
with SIGTERM to the whole session → wait → SIGKILL (components that fork workers: Airflow, Prefect)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["Processes", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.dir = directory
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> None:
        with open(self.dir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.logs(name)}"

    def logs(self, name: str, tail: int = 4000) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # children left behind by one that exited
                os.killpg(proc.pid, signal.SIGKILL)
