"""Webhook receiver latency: an MLflow server's webhook POST → the event stored in JetStream, p50 / p99.

Run: ``python -m benchmarks.bench_webhooks [--quick]`` (MLflow 3.3+). A real ``mlflow server`` (sqlite on tmpfs
when there is one, webhooks allowed to loopback), a real nats-server (JetStream) and the receiver in this
process (``WebhookReceiver``, its own client with ``spool_sync="immediate"``). Each sample is one REST call
``set_registered_model_alias`` (a new alias each time), waited for until its event is stored, one at a time.

Times, all on one machine's clock: *sent* is the delivery's own ``timestamp`` (MLflow sets it just before the
POST), *received* / *answered* are taken in the receiver around ``handle()``, *stored* is the JetStream message's
timestamp (set by the server when it stored it). Reported: sent → stored (the end to end), sent → received
(MLflow's send and the HTTP hop), received → answered (verify, map, spool, answer), received → stored (the
publisher sends while the answer is being written, so the event is often stored before the answer is).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from typing import Any

from benchmarks._common import percentile, print_table, verdict, write_results

SECRET = "bench-secret"
TARGET_P99_MS = 250.0  # a webhook turned into a stored event well within a human's notice


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mlflow_server(root: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_NATS_"))}
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_CACHE_TTL="1",
    )
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
        "--default-artifact-root", f"{root}/artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(f"{root}/server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - our own local server
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    with open(f"{root}/server.log", errors="replace") as f:
        raise RuntimeError(f"mlflow server did not start: {f.read()[-2000:]}")


def _stored_times(url: str, stream: str) -> dict[str, float]:
    """Event id -> the time JetStream stored it (epoch seconds)."""

    async def read() -> dict[str, float]:
        import nats

        from databricks_nats.transport import reader

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            state = (await js.stream_info(stream)).state
            out: dict[str, float] = {}
            async for msg in reader.read_range(js, stream, [], state.first_seq, state.last_seq):
                out[json.loads(msg.data)["id"]] = msg.metadata.timestamp.timestamp()
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples, warmup = (40, 5) if args.quick else (300, 20)
    warnings.filterwarnings("ignore")

    from mlflow import MlflowClient

    from databricks_nats.client import Client
    from databricks_nats.integrations.mlflow.facts import fact_id
    from databricks_nats.integrations.webhooks import ReceiverConfig, WebhookReceiver
    from databricks_nats.ports import NoContext
    from databricks_nats.testing import NatsServer
    from databricks_nats.values import Secret

    marks: dict[str, dict[str, float]] = {}  # alias -> sent / received / answered
    arrived = threading.Condition()

    class Timed(WebhookReceiver):
        def handle(self, path: str, headers: Any, body: bytes, peer: str = "") -> tuple[int, dict[str, Any]]:
            received = time.time()
            answer = super().handle(path, headers, body, peer)
            answered = time.time()
            payload = json.loads(body)
            sent = dt.datetime.fromisoformat(payload["timestamp"]).timestamp()
            with arrived:
                marks[payload["data"]["alias"]] = {"sent": sent, "received": received, "answered": answered}
                arrived.notify_all()
            return answer

    tmp = tempfile.mkdtemp(prefix="bench-webhooks-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    proc, mlflow_url = _mlflow_server(tmp)
    try:
        with NatsServer() as srv:
            client = Client(
                url=srv.url, spool_dir=f"{tmp}/spool", spool_sync="immediate", context=NoContext(),
                workspace="bench", env="webhooks",
            )  # fmt: skip
            client.ensure_stream()
            receiver = Timed(ReceiverConfig(port=0, mlflow_secrets=(Secret(SECRET),)), client=client).start()
            mlflow_client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
            mlflow_client.create_webhook(
                name="bench", url=f"{receiver.url}/mlflow", events=["model_version_alias.created"], secret=SECRET
            )
            time.sleep(1.5)  # past the server's webhook cache
            name = "bench-model"
            mlflow_client.create_registered_model(name)
            run = mlflow_client.create_run("0")
            mlflow_client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
            ids: dict[str, str] = {}
            for i in range(warmup + samples):
                alias = f"a{i}"
                mlflow_client.set_registered_model_alias(name, alias, "1")
                with arrived:
                    if not arrived.wait_for(lambda a=alias: a in marks, timeout=60):  # type: ignore[misc]
                        raise RuntimeError(f"no delivery for {alias}")
                assert client.flush(30).ok  # stored before the next sample: one at a time
                ids[alias] = str(fact_id("mlflow.model.alias_set", {"name": name, "alias": alias, "version": "1"}))
            stored = _stored_times(srv.url, client.settings.stream_name)
            stats = receiver.stats()
            receiver.close()
            client.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    measured = [f"a{i}" for i in range(warmup, warmup + samples)]
    legs: dict[str, list[float]] = {"sent → stored": [], "sent → received": [], "received → answered": []}
    legs["received → stored"] = []
    for alias in measured:
        m, at = marks[alias], stored[ids[alias]]
        legs["sent → stored"].append((at - m["sent"]) * 1000)
        legs["sent → received"].append((m["received"] - m["sent"]) * 1000)
        legs["received → answered"].append((m["answered"] - m["received"]) * 1000)
        legs["received → stored"].append((at - m["received"]) * 1000)
    rows, out = [], {"samples": samples, "receiver": stats, "results": {}}
    for leg, values in legs.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        end_to_end = leg == "sent → stored"
        target = f"p99 <= {TARGET_P99_MS:.0f} ms" if end_to_end else "-"
        rows.append([leg, f"{p50:.2f} ms", f"{p99:.2f} ms", f"{max(values):.2f} ms", target,
                     verdict(p99 <= TARGET_P99_MS) if end_to_end else "-"])  # fmt: skip
        out["results"][leg] = {"p50_ms": p50, "p99_ms": p99, "max_ms": max(values), "raw_ms": values}
    end = out["results"]["sent → stored"]
    out["summary"] = [
        {
            "id": "P11",
            "measure": "MLflow webhook POST -> event stored in JetStream, p50 / p99",
            "value": f"{end['p50_ms']:.1f} / {end['p99_ms']:.1f} ms",
            "target": f"p99 <= {TARGET_P99_MS:.0f} ms",
            "met": end["p99_ms"] <= TARGET_P99_MS,
        }
    ]
    print_table(["leg", "p50", "p99", "max", "target", "result"], rows, title=f"bench_webhooks ({samples} deliveries)")
    print(f"results: {write_results('bench_webhooks' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
