"""Real parts for the Spark Connect tests: a local Spark Connect server and a token-protected nats-server.

``SparkConnectServer`` runs ``$SPARK_HOME/sbin/start-connect-server.sh --wait`` (SPARK_HOME: the pyspark
package, whose PySpark 4.x wheel ships the Spark Connect jar; wheels without the script, such as 4.1's,
run what it runs: ``bin/spark-submit --class …SparkConnectServer``) on a free loopback port with ``local[2]``,
waits until its log says it listens (or the port accepts), and stops it with terminate → wait → kill of
its process group. PySpark 3.5 ships no Spark Connect server (it would come from Maven): ``skip_reason``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from databricks_nats.testing import NatsServer

CONNECT_DEPS = ("grpc", "grpc_status", "pandas", "pyarrow", "google.rpc", "zstandard")
INSTALL = "pip install 'pyspark[connect]'  (or: pip install -e '.[dev]')"
READY = "Spark Connect server started at"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def skip_reason() -> str | None:
    """Why no local Spark Connect server can run here (None: it can)."""
    import pyspark

    home = spark_home()
    if not glob.glob(str(home / "jars" / "spark-connect*.jar")):
        return (
            f"PySpark {pyspark.__version__} ships no Spark Connect server jar (PySpark 4.x does; 3.5's comes from "
            "Maven): the Connect server tests run on the PySpark 4 profiles"
        )
    return None


def require_connect_client() -> None:
    """Fail (never skip) when the Spark Connect client's dependencies are missing."""
    import importlib

    missing = []
    for name in CONNECT_DEPS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        pytest.fail(f"the Spark Connect client needs {', '.join(missing)}: {INSTALL}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SparkConnectServer:
    """A real Spark Connect server (``local[2]``) on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "connect-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_rc: int | None = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> SparkConnectServer:
        home = spark_home()
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOG_DIR": str(self.workdir / "logs"),
            "SPARK_PID_DIR": str(self.workdir),
            "SPARK_CONF_DIR": str(self.workdir / "conf"),  # none of the machine's spark-defaults
            "PYSPARK_PYTHON": sys.executable,
        }
        env.pop("SPARK_REMOTE", None)
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        (self.workdir / "conf").mkdir(exist_ok=True)
        script = home / "sbin" / "start-connect-server.sh"
        if script.exists():
            launch = [str(script), "--wait"]
        else:  # what the script runs (through spark-daemon.sh, in the foreground with --wait)
            env["SPARK_CONNECT_MODE"] = "0"
            launch = [str(home / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", "Spark Connect server"]
        cmd = [
            *launch,
            "--master",
            "local[2]",
            "--conf",
            f"spark.connect.grpc.binding.port={self.port}",
            "--conf",
            "spark.connect.grpc.binding.address=127.0.0.1",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.shuffle.partitions=2",
            "--conf",
            f"spark.sql.warehouse.dir={self.workdir / 'warehouse'}",
            "--conf",
            "spark.sql.streaming.noDataProgressEventInterval=200ms",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self._log = log
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()
                self.stop()
                raise RuntimeError(f"the Spark Connect server exited with {self.proc_rc}: {text[-3000:]}")
            if READY in self.log_text() and self._accepts():
                return self
            time.sleep(0.25)
        text = self.log_text()
        self.stop()
        raise RuntimeError(f"the Spark Connect server did not start within {timeout}s: {text[-3000:]}")

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate its process group, wait, then kill it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.proc_rc = proc.poll()
        if self.proc_rc is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):  # a JVM child that outlived the script
            os.killpg(proc.pid, signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def connect_server() -> Iterator[SparkConnectServer]:
    with tempfile.TemporaryDirectory(prefix="dbx-spark-connect-") as tmp:
        server = SparkConnectServer(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


def new_token() -> str:
    return "tok-" + secrets.token_hex(16)


@contextlib.contextmanager
def token_nats(tmp: Path, token: str) -> Iterator[NatsServer]:
    """A real JetStream nats-server that accepts only clients presenting ``token``."""
    config = tmp / "token.conf"
    config.write_text(f'authorization {{\n  token: "{token}"\n}}\n')
    with NatsServer(config=str(config)) as server:
        yield server


def token_url(server: NatsServer, token: str) -> str:
    """The server's URL with the token in it, for reading the stream back in the test."""
    return f"nats://{token}@127.0.0.1:{server.port}"
