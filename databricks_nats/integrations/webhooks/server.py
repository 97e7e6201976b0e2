"""The webhook receiver: a small stdlib HTTP server (``ThreadingHTTPServer``) turning verified webhooks into events.

Routes (``ReceiverConfig``): ``POST /mlflow`` (MLflow OSS webhooks, ``mlflow.py``), ``POST /databricks/jobs``
(Databricks job notifications, ``jobs.py``), ``GET /health`` (status and counters). A route whose credential
is not configured answers 404: nothing unsigned or anonymous is ever published.

A sender gets 2xx only once the event is in the publisher's on-disk spool (the receiver's own client uses
``spool_sync = "immediate"``): from there it reaches JetStream even across a NATS outage or a restart of the
receiver, so senders do not retry while NATS is away. A delivery that could not be handed over gets 503,
which MLflow and Databricks retry; the retry has the same event id, so the stream stores it once. Refusals are
4xx with a reason, counted in ``stats()["refused"]``; nothing a request carries can stop the server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from databricks_nats.client import Client
from databricks_nats.errors import DatabricksNatsError
from databricks_nats.integrations.webhooks import jobs, mlflow
from databricks_nats.transport.stats import RateLimitedLog
from databricks_nats.values import Secret

__all__ = ["REFUSALS", "ReceiverConfig", "WebhookReceiver"]

log = logging.getLogger("databricks_nats.webhooks")

# reason -> HTTP status of a refused request
REFUSALS: dict[str, int] = {
    "unsigned": 401,
    "bad_signature": 401,
    "stale": 401,
    "unauthorized": 401,
    "bad_timestamp": 400,
    "bad_json": 400,
    "malformed": 400,
    "not_found": 404,  # no such route, or the route's credential is not configured
    "method": 405,
    "no_length": 411,
    "too_large": 413,
    "unavailable": 503,  # the publisher did not take the event: retry
    "internal": 500,
}


@dataclass(frozen=True)
class ReceiverConfig:
    """What the receiver listens on and whom it believes (the NATS side is the client's usual settings)."""

    host: str = "127.0.0.1"
    port: int = 8787  # 0: any free port (``WebhookReceiver.url`` tells which)
    mlflow_secrets: tuple[Secret, ...] = ()  # the MLflow webhook's secret (two while rotating it)
    jobs_user: str | None = None  # the notification destination's basic-auth username …
    jobs_password: Secret | None = None  # … and password
    replay_window: float = 300.0  # seconds an MLflow delivery's timestamp may be from now, either way
    max_body_bytes: int = 1 << 20
    workspace_url: str | None = None  # for job run URLs, e.g. https://adb-123.4.azuredatabricks.net
    mlflow_path: str = "/mlflow"
    jobs_path: str = "/databricks/jobs"


class _Refused(DatabricksNatsError):
    """A request refused, with the reason counted (never leaves the server)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class WebhookReceiver:
    """Receives webhooks and emits their events through ``client`` (by default one of its own).

    ``WebhookReceiver(config, **settings)`` makes a client from the library's settings (keyword > environment
    > settings file) with ``spool_sync="immediate"``; pass ``client=`` to publish through your own (then a 2xx
    means what that client's ``emit`` means). ``start()`` serves on a daemon thread (the socket is bound when
    the receiver is made); ``handle()`` answers one request without HTTP; ``close()`` stops serving, then
    flushes and closes a client it made.
    """

    def __init__(self, config: ReceiverConfig | None = None, *, client: Client | None = None, **settings: Any) -> None:
        self.config = config or ReceiverConfig()
        self._own_client = client is None
        self.client = client if client is not None else Client(**{"spool_sync": "immediate", **settings})
        self._counts: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._lock = threading.Lock()  # counters and the delivery memory
        self._emit_lock = threading.Lock()  # one hand-over at a time: the drop counter before/after is ours
        self._deliveries: OrderedDict[str, float] = OrderedDict()  # MLflow delivery id -> when accepted
        self._say = RateLimitedLog(log)
        self._thread: threading.Thread | None = None
        handler = type("_BoundHandler", (_Handler,), {"receiver": self})
        self._httpd = _Server((self.config.host, self.config.port), handler)

    # ---- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebhookReceiver:
        """Serve on a daemon thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="webhook-receiver", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving (from any thread but a request's), then flush and close the client if it is ours."""
        if self._thread is not None:  # shutdown() waits for a serve_forever loop: only when one runs
            self._httpd.shutdown()
            self._thread.join(timeout)
        self._httpd.server_close()
        if self._own_client:
            self.client.close(timeout)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- counters -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``received`` (requests to a route), ``published``, ``duplicates`` (a delivery id seen already),
        ``ignored`` (events we do not map), ``refused`` by reason, and ``refused_total``."""
        with self._lock:
            out: dict[str, Any] = {k: self._counts[k] for k in ("received", "published", "duplicates", "ignored")}
            out["refused"] = dict(self._refused)
            out["refused_total"] = sum(self._refused.values())
        return out

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _refuse(self, reason: str, detail: str, peer: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._refused[reason] += 1
        if reason != "not_found":
            self._say(
                logging.WARNING, reason, "webhook-receiver: refused a request from %s: %s %s", peer, reason, detail
            )
        return REFUSALS[reason], {"ok": False, "reason": reason, "detail": detail}

    # ---- requests -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        try:
            connection = self.client.stats().get("connection")
        except Exception:  # noqa: BLE001 - health never fails for the publisher's sake
            connection = "unknown"
        return {
            "ok": True,
            "mlflow": bool(self.config.mlflow_secrets),
            "jobs": bool(self.config.jobs_user and self.config.jobs_password),
            "nats": connection,
            **self.stats(),
        }

    def handle(self, path: str, headers: mlflow.Headers, body: bytes, peer: str = "") -> tuple[int, dict[str, Any]]:
        """Answer one POST (``headers`` case-insensitive, like ``http.client`` messages): (status, JSON body)."""
        try:
            if path == self.config.mlflow_path and self.config.mlflow_secrets:
                self._count("received")
                return self._mlflow(headers, body)
            if path == self.config.jobs_path and self.config.jobs_user and self.config.jobs_password:
                self._count("received")
                return self._jobs(headers, body)
            raise _Refused("not_found", path[:100])
        except _Refused as r:
            return self._refuse(r.reason, r.detail, peer)
        except Exception as e:
            log.exception("webhook-receiver: failed on a request to %s", path[:100])
            return self._refuse("internal", type(e).__name__, peer)

    def _mlflow(self, headers: mlflow.Headers, body: bytes) -> tuple[int, dict[str, Any]]:
        now = time.time()
        secrets = [s.reveal() for s in self.config.mlflow_secrets]
        reason = mlflow.verify(headers, body, secrets, window=self.config.replay_window, now=now)
        if reason:
            raise _Refused(reason)
        delivery = str(headers.get(mlflow.DELIVERY_ID_HEADER))
        if self._seen(delivery, now):
            self._count("duplicates")
            return 200, {"ok": True, "duplicate": True}
        payload = _json(body)
        try:
            described = mlflow.describe(payload)
        except ValueError as e:
            raise _Refused("malformed", str(e)) from None
        if described is None:
            self._count("ignored")
            return 200, {"ok": True, "ignored": f"{payload.get('entity')}.{payload.get('action')}"[:100]}
        answer = self._publish(*described)
        self._remember(delivery, now)
        return answer

    def _jobs(self, headers: mlflow.Headers, body: bytes) -> tuple[int, dict[str, Any]]:
        password = self.config.jobs_password.reveal() if self.config.jobs_password else ""
        if not jobs.check_basic_auth(headers.get("Authorization"), self.config.jobs_user or "", password):
            raise _Refused("unauthorized")
        payload = _json(body)
        try:
            described = jobs.describe(payload, workspace_url=self.config.workspace_url, now=time.time())
        except ValueError as e:
            raise _Refused("malformed", str(e)) from None
        if described is None:
            self._count("ignored")
            return 200, {"ok": True, "ignored": str(payload.get("event_type"))[:100]}
        return self._publish(*described)

    def _publish(self, event_type: str, data: dict[str, Any], event_id: str | None) -> tuple[int, dict[str, Any]]:
        with self._emit_lock:
            before = self._dropped()
            event = self.client.emit(event_type, data, id=event_id)
            lost = event is None or self._dropped() > before
        if lost:
            raise _Refused("unavailable", "the publisher did not take the event; retry")
        self._count("published")
        assert event is not None
        return 200, {"ok": True, "type": event_type, "id": event.id}

    def _dropped(self) -> int:
        try:
            return int(self.client.stats().get("dropped_total") or 0)
        except Exception:  # noqa: BLE001 - no publisher yet: nothing dropped
            return 0

    def _seen(self, delivery: str, now: float) -> bool:
        with self._lock:
            horizon = now - self.config.replay_window
            while self._deliveries and next(iter(self._deliveries.values())) < horizon:
                self._deliveries.popitem(last=False)
            return delivery in self._deliveries

    def _remember(self, delivery: str, now: float) -> None:
        with self._lock:
            self._deliveries[delivery] = now
            if len(self._deliveries) > 100_000:  # a flood inside the window: forget the oldest
                self._deliveries.popitem(last=False)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise _Refused("bad_json") from None
    if not isinstance(value, dict):
        raise _Refused("bad_json", "not an object")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a sender that hung up or stalled mid-body: its thread ends, nothing else is affected
        log.debug("webhook-receiver: connection from %s ended abnormally", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver
    protocol_version = "HTTP/1.1"  # keep-alive: MLflow's session reuses its connection
    timeout = 30  # a client that stops sending mid-request frees its thread
    server_version = "databricks-nats-webhook-receiver"

    def do_POST(self) -> None:
        receiver, peer = self.receiver, self.client_address[0]
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._answer(*receiver._refuse("no_length", "", peer))
            return
        if int(length) > receiver.config.max_body_bytes:
            self.close_connection = True  # the body is never read
            self._answer(*receiver._refuse("too_large", f"{length} bytes", peer))
            return
        body = self.rfile.read(int(length))
        self._answer(*receiver.handle(self.path.split("?", 1)[0], self.headers, body, peer))

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            self._answer(200, self.receiver.health())
        else:
            self._answer(*self.receiver._refuse("not_found", self.path[:100], self.client_address[0]))

    def _other(self) -> None:
        self.close_connection = True
        self._answer(*self.receiver._refuse("method", self.command, self.client_address[0]))

    do_PUT = do_DELETE = do_PATCH = _other

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401 and payload.get("reason") == "unauthorized":
            self.send_header("WWW-Authenticate", 'Basic realm="databricks-nats"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook-receiver: %s " + format, self.client_address[0], *args)
