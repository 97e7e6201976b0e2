"""``databricks-nats webhook-receiver``: the receiver as a long-lived process (next to an MLflow server, in a
Databricks App, as a systemd service or a container).

    DATABRICKS_NATS_WEBHOOK_MLFLOW_SECRET=... databricks-nats webhook-receiver --port 8787 --env prod

Credentials never go on the command line (process lists show it): each comes from a variable or a file,
and a variable may hold a Databricks secret reference ``{{secrets/<scope>/<key>}}``, read once at start:

* ``DATABRICKS_NATS_WEBHOOK_MLFLOW_SECRET`` (and ``…_PREVIOUS`` while rotating) or ``--mlflow-secret-file``;
* ``DATABRICKS_NATS_WEBHOOK_JOBS_USER`` / ``--jobs-user`` and ``DATABRICKS_NATS_WEBHOOK_JOBS_PASSWORD`` or
  ``--jobs-password-file``.

The NATS side is the library's usual settings (``DATABRICKS_NATS_URL``, ``…_WORKSPACE``, ``…_ENV``,
credentials, the settings file) unless given here. In a Databricks App it listens on ``0.0.0.0`` at
``DATABRICKS_APP_PORT``. SIGINT or SIGTERM stops it, after which it flushes what it took.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_webhook_receiver", "config_from"]

_REF = re.compile(r"^\{\{\s*secrets/([^/\s]+)/([^}\s]+)\s*\}\}$")
_VAR = "DATABRICKS_NATS_WEBHOOK_"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``webhook-receiver`` subcommand on the ``databricks-nats`` subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "webhook-receiver",
        help="turn MLflow webhooks and Databricks job notifications into events",
        description="Receive MLflow OSS webhooks (POST /mlflow, signature verified) and Databricks job "
        "notifications (POST /databricks/jobs, basic auth) and publish them as mlflow.model.*, mlflow.prompt.* "
        "and databricks.job_run.* events. GET /health shows the counters. Stops on SIGINT/SIGTERM.",
        allow_abbrev=False,  # --mlflow-secret VALUE must not pass for --mlflow-secret-file: no secret as an argument
    )
    app_port = os.environ.get("DATABRICKS_APP_PORT")
    p.add_argument("--host", default=os.environ.get(f"{_VAR}HOST") or ("0.0.0.0" if app_port else "127.0.0.1"))  # noqa: S104
    p.add_argument("--port", type=int, default=int(os.environ.get(f"{_VAR}PORT") or app_port or 8787))
    p.add_argument("--mlflow-secret-file", action="append", metavar="PATH", help="file holding the MLflow secret")
    p.add_argument("--jobs-user", help="the notification destination's username")
    p.add_argument("--jobs-password-file", metavar="PATH", help="file holding the destination's password")
    p.add_argument(
        "--replay-window",
        type=float,
        default=float(os.environ.get(f"{_VAR}REPLAY_WINDOW") or 300),
        help="seconds an MLflow delivery's timestamp may be from now (default 300)",
    )
    p.add_argument("--max-body-bytes", type=int, default=int(os.environ.get(f"{_VAR}MAX_BODY_BYTES") or 1 << 20))
    p.add_argument("--workspace-url", help="for job run URLs (default: DATABRICKS_HOST)")
    p.add_argument("--url", help="NATS server URL(s) (default: DATABRICKS_NATS_URL)")
    p.add_argument("--workspace")
    p.add_argument("--env")
    p.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    p.set_defaults(func=cmd_webhook_receiver)
    return p


def _secret(value: str | None, what: str) -> str | None:
    """The value, or the Databricks secret it refers to (``{{secrets/scope/key}}``)."""
    if not value:
        return None
    ref = _REF.match(value.strip())
    if ref is None:
        return value
    from databricks_nats.errors import ConfigurationError
    from databricks_nats.integrations.databricks.ports import DatabricksSecrets

    found = DatabricksSecrets().get(ref.group(1), ref.group(2))
    if not found:
        raise ConfigurationError(what, f"secret {ref.group(1)}/{ref.group(2)} not found")
    return found


def _file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def config_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Any:
    """The ``ReceiverConfig`` these arguments and variables describe."""
    from databricks_nats.integrations.webhooks.server import ReceiverConfig
    from databricks_nats.values import Secret

    env = dict(os.environ if environ is None else environ)
    given = [_file(p) for p in args.mlflow_secret_file or []]
    given += [env.get(f"{_VAR}MLFLOW_SECRET") or "", env.get(f"{_VAR}MLFLOW_SECRET_PREVIOUS") or ""]
    secrets = [s for s in (_secret(v, "the MLflow webhook secret") for v in given) if s]
    password = _file(args.jobs_password_file) if args.jobs_password_file else env.get(f"{_VAR}JOBS_PASSWORD")
    password = _secret(password, "the job notification password")
    return ReceiverConfig(
        host=args.host,
        port=args.port,
        mlflow_secrets=tuple(Secret(s) for s in secrets),
        jobs_user=args.jobs_user or env.get(f"{_VAR}JOBS_USER") or None,
        jobs_password=Secret(password) if password else None,
        replay_window=args.replay_window,
        max_body_bytes=args.max_body_bytes,
        workspace_url=args.workspace_url or env.get("DATABRICKS_HOST") or None,
    )


def cmd_webhook_receiver(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; print the counters."""
    import json

    from databricks_nats.integrations.webhooks.server import WebhookReceiver

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    config = config_from(args)
    routes = [f"{config.mlflow_path} (MLflow)"] if config.mlflow_secrets else []
    routes += [f"{config.jobs_path} (job notifications)"] if config.jobs_user and config.jobs_password else []
    if not routes:
        print(
            f"databricks-nats: webhook-receiver has nothing to receive: set {_VAR}MLFLOW_SECRET (or "
            f"--mlflow-secret-file) and/or {_VAR}JOBS_USER + {_VAR}JOBS_PASSWORD (or --jobs-password-file)",
            file=sys.stderr,
        )
        return 2
    settings = {k: v for k, v in (("url", args.url), ("workspace", args.workspace), ("env", args.env)) if v}
    receiver = WebhookReceiver(config, **settings).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"databricks-nats webhook-receiver: listening on {receiver.url}: {', '.join(routes)} → "
        f"{receiver.client.settings.namespace} (health: {receiver.url}/health)",
        file=sys.stderr,
        flush=True,
    )
    stop.wait()
    receiver.close()
    print(json.dumps(receiver.stats()), flush=True)
    return 0
