"""A loopback Databricks workspace for MLflow: the REST endpoints its ``databricks`` tracking store and
``databricks-uc`` registry store call, at their documented paths, with their documented JSON shapes.

Served (all under a bearer token, except the presigned storage URLs, which — like S3's — carry their own
authorisation in the URL):

* MLflow tracking (``/api/2.0/mlflow/…``, Databricks REST reference "Experiments"): ``experiments/get-by-name``,
  ``experiments/create``, ``experiments/get``, ``runs/create``, ``runs/get``, ``runs/update``, ``runs/log-batch``,
  ``runs/log-metric``, ``runs/log-parameter``, ``runs/set-tag``, ``runs/delete-tag``, ``runs/log-inputs``,
  ``runs/log-model`` (2.x), ``runs/outputs``, ``runs/search`` (no filters: the experiment's runs),
  ``metrics/get-history``.
* MLflow 3 logged models: ``POST logged-models``, ``GET/PATCH logged-models/{id}``, ``logged-models/{id}/params``,
  ``PATCH logged-models/{id}/tags``, ``logged-models/search``.
* Artifact credentials (``databricks_artifacts.proto``): ``artifacts/credentials-for-write`` / ``-for-read``,
  ``logged-models/{id}/artifacts/credentials-for-upload`` / ``-for-download`` and ``artifacts/list``: the
  credentials are ``AWS_PRESIGNED_URL`` signed URIs pointing back at this server (``/presigned/<path>?sig=…``),
  so uploads and downloads are real HTTP PUTs and GETs. The Files API (``/api/2.0/fs/files{path}``,
  ``/api/2.0/fs/directories{path}``), which MLflow 3 tries first for run and logged-model artifacts, is served
  on the same storage under the ``/WorkspaceInternal/Mlflow/Artifacts/<exp>/Runs/<run>/…`` paths MLflow maps
  to (and ``/Models/<catalog>/<schema>/<model>/<version>/…`` for model versions).
* Unity Catalog models through MLflow (``/api/2.0/mlflow/unity-catalog/…``, ``databricks_uc_registry_service``):
  ``registered-models/create|get|update|delete|alias (POST/DELETE/GET)|set-tag|delete-tag``,
  ``model-versions/create|get|update|delete|finalize|set-tag|delete-tag|generate-temporary-credentials``,
  ``registered-models:is-databricks-sdk-models-artifact-repository-enabled`` (answers false: MLflow then asks
  for temporary credentials). Short names resolve like the workspace does with no Spark session:
  ``my_model`` -> ``<default_catalog>.default.my_model``. Temporary credentials answer
  ``storage_mode: DEFAULT_STORAGE`` (Databricks default storage), for which MLflow (2.21 and 3.x) uploads
  through ``POST /api/2.0/fs/create-upload-url`` presigned URLs (``create-download-url`` to read) — served
  here, pointing back at this server. Of the other credential types MLflow reads (``aws_temp_credentials``,
  ``azure_user_delegation_sas``, ``gcp_oauth_token``, ``r2_temp_credentials``), each hands the upload to a
  cloud storage SDK talking to that cloud's storage service (S3 could be redirected with ``AWS_ENDPOINT_URL``,
  but that would be a second, non-Databricks service to fake); default storage is Databricks' own API.
* ``/api/2.0/preview/scim/v2/Me`` (the SDK's ``current_user.me()``; ``X-Databricks-Org-Id`` on every answer,
  which MLflow reads from ``runs/get`` as the run's workspace id).

Everything else is a 404 ``ENDPOINT_NOT_FOUND`` and is recorded in ``unknown`` (the tests assert it stays
empty apart from the SDK's host-metadata probe ``/.well-known/databricks-config``: experimental and
undocumented, so not served; the SDK logs a warning and uses the configuration it was given). For failure
tests: ``unreadable`` model names answer ``registered-models/get`` with 403, ``delays`` slow a path down.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

PAT = "dapi-stub-personal-access-token-0042"
ORG_ID = "1234567890123456"
_ROOT = "dbfs:/databricks/mlflow-tracking"
_FILES = re.compile(
    r"^/WorkspaceInternal/Mlflow/Artifacts/(?P<exp>[^/]+)/(?P<kind>Runs|LoggedModels)/(?P<id>[^/]+)(?P<rest>/.*)?$"
)


class NotStubbed(Exception):
    """No such endpoint here."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Workspace:
    """The state of the fake workspace, and what was asked of it."""

    url: str = ""
    token: str = PAT
    org_id: str = ORG_ID
    default_catalog: str = "main"
    user_name: str = "ml-engineer@example.com"
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    logged_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # full name -> registered model
    versions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # storage path (no scheme) -> content
    unreadable: set[str] = field(default_factory=set)  # full model names whose registered-models/get is a 403
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds to wait before answering (a slow API)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    unknown: list[tuple[str, str]] = field(default_factory=list)  # endpoints not served, or bad requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_model(self, full_name: str, versions: int = 0) -> None:
        """A registered model (and READY versions) that exists before the test: made by someone else."""
        self.models[full_name] = {"name": full_name, "created": _now(), "aliases": {}, "tags": {}}
        for n in range(1, versions + 1):
            self.versions[(full_name, n)] = {
                "name": full_name,
                "version": str(n),
                "creation_timestamp": _now(),
                "last_updated_timestamp": _now(),
                "source": f"models:/m-{uuid.uuid4().hex}",
                "run_id": "",
                "status": "READY",
                "tags": {},
            }

    def count(self, method: str, path: str) -> int:
        return sum(1 for c in self.calls if c == (method, path))

    # ---- names and paths ----------------------------------------------------------------------

    def full_name(self, name: str) -> str:
        parts = name.split(".")
        if len(parts) == 1:
            return f"{self.default_catalog}.default.{name}"
        if len(parts) == 2:
            return f"{self.default_catalog}.{name}"
        return name

    def sign(self, path: str) -> str:
        return f"{self.url}/presigned/{quote(path)}?X-Amz-Signature={uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time() * 1000)


def _kv(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {i["key"]: i.get("value", "") for i in items or []}


def _pairs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in d.items()]


# ---- tracking -----------------------------------------------------------------------------------------


def _experiment_json(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment_id": e["id"],
        "name": e["name"],
        "artifact_location": e["artifact_location"],
        "lifecycle_stage": "active",
        "tags": _pairs(e["tags"]),
        "creation_time": e["created"],
        "last_update_time": e["created"],
    }


def _run_json(r: dict[str, Any]) -> dict[str, Any]:
    info = {k: r[k] for k in ("run_id", "experiment_id", "run_name", "user_id", "status", "start_time", "artifact_uri")}
    info["run_uuid"] = r["run_id"]
    info["lifecycle_stage"] = "active"
    if r.get("end_time"):
        info["end_time"] = r["end_time"]
    latest: dict[str, dict[str, Any]] = {}  # per key the point of the highest step, then the latest timestamp
    for m in r["metrics"]:
        order = (int(m.get("step", 0)), int(m.get("timestamp", 0)))
        known = latest.get(m["key"])
        if known is None or order >= (int(known.get("step", 0)), int(known.get("timestamp", 0))):
            latest[m["key"]] = m
    return {
        "info": info,
        "data": {"metrics": list(latest.values()), "params": _pairs(r["params"]), "tags": _pairs(r["tags"])},
        "inputs": {"dataset_inputs": r["inputs"]},
    }


def _logged_model_json(m: dict[str, Any]) -> dict[str, Any]:
    info = {k: v for k, v in m.items() if k not in ("params", "tags")}
    info["tags"] = _pairs(m["tags"])
    return {"info": info, "data": {"params": _pairs(m["params"])}}


def _experiment(ws: Workspace, experiment_id: str) -> dict[str, Any]:
    e = ws.experiments.get(str(experiment_id))
    if e is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Experiment {experiment_id} does not exist")
    return e


def _run(ws: Workspace, run_id: str) -> dict[str, Any]:
    r = ws.runs.get(run_id)
    if r is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist")
    return r


def _logged_model(ws: Workspace, model_id: str) -> dict[str, Any]:
    m = ws.logged_models.get(model_id)
    if m is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Logged model {model_id} does not exist")
    return m


def _tracking(ws: Workspace, method: str, path: str, q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    p = path.removeprefix("/api/2.0/mlflow/")
    if (method, p) == ("GET", "experiments/get-by-name"):
        for e in ws.experiments.values():
            if e["name"] == q.get("experiment_name"):
                return {"experiment": _experiment_json(e)}
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Node named {q.get('experiment_name')} does not exist")
    if (method, p) == ("POST", "experiments/create"):
        if any(e["name"] == body["name"] for e in ws.experiments.values()):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Node named {body['name']} already exists")
        eid = str(3_000_000_000_000_000 + len(ws.experiments) + 1)
        ws.experiments[eid] = {
            "id": eid,
            "name": body["name"],
            "artifact_location": body.get("artifact_location") or f"{_ROOT}/{eid}",
            "tags": _kv(body.get("tags")),
            "created": _now(),
        }
        return {"experiment_id": eid}
    if (method, p) == ("GET", "experiments/get"):
        return {"experiment": _experiment_json(_experiment(ws, q["experiment_id"]))}
    if (method, p) == ("POST", "runs/create"):
        e = _experiment(ws, body["experiment_id"])
        rid = uuid.uuid4().hex
        tags = _kv(body.get("tags"))
        name = body.get("run_name") or tags.get("mlflow.runName") or f"run-{rid[:6]}"
        tags.setdefault("mlflow.runName", name)
        ws.runs[rid] = {
            "run_id": rid,
            "experiment_id": e["id"],
            "run_name": name,
            "user_id": body.get("user_id") or ws.user_name,
            "status": "RUNNING",
            "start_time": int(body.get("start_time") or _now()),
            "artifact_uri": f"{e['artifact_location']}/{rid}/artifacts",
            "metrics": [],
            "params": {},
            "tags": tags,
            "inputs": [],
            "outputs": [],
        }
        return {"run": _run_json(ws.runs[rid])}
    if (method, p) == ("GET", "runs/get"):
        return {"run": _run_json(_run(ws, q.get("run_id") or q.get("run_uuid", "")))}
    if (method, p) == ("POST", "runs/update"):
        r = _run(ws, body.get("run_id") or body.get("run_uuid", ""))
        for k in ("status", "end_time", "run_name"):
            if body.get(k):
                r[k] = body[k]
        info = _run_json(r)["info"]
        return {"run_info": info}
    if (method, p) == ("POST", "runs/log-batch"):
        r = _run(ws, body["run_id"])
        r["metrics"].extend(body.get("metrics", []))
        r["params"].update(_kv(body.get("params")))
        r["tags"].update(_kv(body.get("tags")))
        return {}
    if (method, p) == ("POST", "runs/log-metric"):
        r = _run(ws, body.get("run_id") or body.get("run_uuid", ""))
        r["metrics"].append({k: body[k] for k in ("key", "value", "timestamp", "step") if k in body})
        return {}
    if (method, p) == ("POST", "runs/log-parameter"):
        _run(ws, body.get("run_id") or body.get("run_uuid", ""))["params"][body["key"]] = body["value"]
        return {}
    if (method, p) == ("POST", "runs/set-tag"):
        _run(ws, body.get("run_id") or body.get("run_uuid", ""))["tags"][body["key"]] = body["value"]
        return {}
    if (method, p) == ("POST", "runs/delete-tag"):
        _run(ws, body["run_id"])["tags"].pop(body["key"], None)
        return {}
    if (method, p) == ("POST", "runs/log-inputs"):
        _run(ws, body["run_id"])["inputs"].extend(body.get("datasets", []))
        return {}
    if (method, p) == ("POST", "runs/log-model"):  # MLflow 2.x: the model's metadata as a run tag
        r = _run(ws, body["run_id"])
        history = json.loads(r["tags"].get("mlflow.log-model.history", "[]"))
        r["tags"]["mlflow.log-model.history"] = json.dumps([*history, json.loads(body["model_json"])])
        return {}
    if (method, p) == ("POST", "runs/outputs"):
        _run(ws, body["run_id"])["outputs"].extend(body.get("models", []))
        return {}
    if (method, p) == ("GET", "metrics/get-history"):
        r = _run(ws, q.get("run_id") or q.get("run_uuid", ""))
        return {"metrics": [m for m in r["metrics"] if m["key"] == q.get("metric_key")]}
    if (method, p) == ("POST", "runs/search"):
        ids = {str(i) for i in body.get("experiment_ids", [])}
        return {"runs": [_run_json(r) for r in ws.runs.values() if r["experiment_id"] in ids]}
    if (method, p) == ("POST", "logged-models"):
        e = _experiment(ws, body["experiment_id"])
        mid = f"m-{uuid.uuid4().hex}"
        now = _now()
        ws.logged_models[mid] = {
            "model_id": mid,
            "experiment_id": e["id"],
            "name": body.get("name") or f"model-{mid[2:8]}",
            "artifact_uri": f"{e['artifact_location']}/logged_models/{mid}/artifacts",
            "creation_timestamp_ms": now,
            "last_updated_timestamp_ms": now,
            "model_type": body.get("model_type", ""),
            "source_run_id": body.get("source_run_id", ""),
            "status": "LOGGED_MODEL_PENDING",
            "lifecycle_stage": "active",
            "params": _kv(body.get("params")),
            "tags": _kv(body.get("tags")),
        }
        return {"model": _logged_model_json(ws.logged_models[mid])}
    if (method, p) == ("POST", "logged-models/search"):
        ids = {str(i) for i in body.get("experiment_ids", [])}
        found = [_logged_model_json(m) for m in ws.logged_models.values() if m["experiment_id"] in ids]
        return {"models": found}
    m = re.fullmatch(r"logged-models/(m-[0-9a-f]+)(/params|/tags)?", p)
    if m:
        model = _logged_model(ws, m.group(1))
        if m.group(2) is None and method == "GET":
            return {"model": _logged_model_json(model)}
        if m.group(2) is None and method == "PATCH":
            model["status"] = body.get("status", model["status"])
            model["last_updated_timestamp_ms"] = _now()
            return {"model": _logged_model_json(model)}
        if m.group(2) == "/params" and method == "POST":
            model["params"].update(_kv(body.get("params")))
            return {}
        if m.group(2) == "/tags" and method == "PATCH":
            model["tags"].update(_kv(body.get("tags")))
            return {"model": _logged_model_json(model)}
    raise NotStubbed(p)


# ---- artifacts ------------------------------------------------------------------------------------------


def _credential(ws: Workspace, storage_path: str, owner: dict[str, str], path: str) -> dict[str, Any]:
    return {**owner, "path": path, "signed_uri": ws.sign(storage_path), "type": "AWS_PRESIGNED_URL", "headers": []}


def _storage(uri: str) -> str:
    return uri.removeprefix("dbfs:").lstrip("/")


def _listing(ws: Workspace, root: str, rel: str) -> list[dict[str, Any]]:
    """Direct children of ``root/rel``: files with sizes, then directories."""
    base = f"{root}/{rel}".rstrip("/") + "/"
    files: dict[str, dict[str, Any]] = {}
    for key, content in ws.blobs.items():
        if key.startswith(base):
            head, _, tail = key[len(base) :].partition("/")
            child = f"{rel}/{head}".lstrip("/") if rel else head
            files[head] = {"path": child, "is_dir": bool(tail)} | ({} if tail else {"file_size": len(content)})
    return list(files.values())


def _artifacts(ws: Workspace, method: str, path: str, q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    p = path.removeprefix("/api/2.0/mlflow/")
    if p in ("artifacts/credentials-for-write", "artifacts/credentials-for-read"):
        r = _run(ws, body["run_id"])
        root = _storage(r["artifact_uri"])
        owner = {"run_id": r["run_id"]}
        return {"credential_infos": [_credential(ws, f"{root}/{x}", owner, x) for x in body.get("path", [])]}
    m = re.fullmatch(r"logged-models/(m-[0-9a-f]+)/artifacts/credentials-for-(upload|download)", p)
    if m:
        model = _logged_model(ws, m.group(1))
        root = _storage(model["artifact_uri"])
        infos = []
        for x in body.get("paths", []):
            infos.append({"credential_info": _credential(ws, f"{root}/{x}", {"run_id": ""}, x)})
        return {"credentials": infos}
    if (method, p) == ("GET", "artifacts/list"):
        r = _run(ws, q.get("run_id") or q.get("run_uuid", ""))
        return {"root_uri": r["artifact_uri"], "files": _listing(ws, _storage(r["artifact_uri"]), q.get("path", ""))}
    raise NotStubbed(p)


def _files_path(ws: Workspace, fs_path: str) -> str:
    """Storage key of a Files API path MLflow uses for run / logged-model artifacts and UC model versions."""
    m = _FILES.match(fs_path)
    if m:
        if m.group("kind") == "Runs":
            root = _storage(_run(ws, m.group("id"))["artifact_uri"])
            rest = (m.group("rest") or "").removeprefix("/artifacts")
        else:
            root = _storage(_logged_model(ws, m.group("id"))["artifact_uri"])
            rest = (m.group("rest") or "").removeprefix("/artifacts")
        return (root + rest).rstrip("/")
    if fs_path.startswith("/Models/"):
        return "uc" + fs_path.rstrip("/")
    raise ApiError(404, "NOT_FOUND", f"no such path {fs_path}")


# ---- Unity Catalog models ---------------------------------------------------------------------------------


def _model(ws: Workspace, name: str) -> dict[str, Any]:
    m = ws.models.get(ws.full_name(name))
    if m is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Registered model '{ws.full_name(name)}' does not exist.")
    return m


def _version(ws: Workspace, name: str, version: Any) -> dict[str, Any]:
    v = ws.versions.get((ws.full_name(name), int(version)))
    if v is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Model version {name}/{version} does not exist.")
    return v


def _model_json(ws: Workspace, m: dict[str, Any]) -> dict[str, Any]:
    aliases = [{"alias": a, "version": str(v)} for a, v in m["aliases"].items()]
    return {
        "name": m["name"],
        "creation_timestamp": m["created"],
        "last_updated_timestamp": m["created"],
        "description": m.get("description", ""),
        "aliases": aliases,
        "tags": _pairs(m["tags"]),
    }


def _version_json(v: dict[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in v if k != "tags"} | {"tags": _pairs(v["tags"])}


def _uc(ws: Workspace, method: str, path: str, q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    p = path.removeprefix("/api/2.0/mlflow/unity-catalog/")
    args = {**q, **body}
    if p == "registered-models:is-databricks-sdk-models-artifact-repository-enabled":
        return {"is_databricks_sdk_models_artifact_repository_enabled": False}
    if (method, p) == ("POST", "registered-models/create"):
        full = ws.full_name(body["name"])
        if full in ws.models:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Registered model '{full}' already exists.")
        ws.models[full] = {
            "name": full,
            "created": _now(),
            "description": body.get("description", ""),
            "aliases": {},
            "tags": _kv(body.get("tags")),
        }
        return {"registered_model": _model_json(ws, ws.models[full])}
    if (method, p) == ("GET", "registered-models/get"):
        if ws.full_name(args["name"]) in ws.unreadable:
            raise ApiError(403, "PERMISSION_DENIED", f"User does not have BROWSE on '{ws.full_name(args['name'])}'.")
        return {"registered_model": _model_json(ws, _model(ws, args["name"]))}
    if (method, p) == ("PATCH", "registered-models/update"):
        m = _model(ws, args["name"])
        m["description"] = body.get("description", m.get("description", ""))
        return {"registered_model": _model_json(ws, m)}
    if (method, p) == ("DELETE", "registered-models/delete"):
        m = _model(ws, args["name"])
        del ws.models[m["name"]]
        for key in [k for k in ws.versions if k[0] == m["name"]]:
            del ws.versions[key]
        return {}
    if p == "registered-models/alias":
        m = _model(ws, args["name"])
        if method == "POST":
            _version(ws, m["name"], body["version"])
            m["aliases"][body["alias"]] = int(body["version"])
            return {}
        if method == "DELETE":
            m["aliases"].pop(args["alias"], None)
            return {}
        if method == "GET":
            return {"model_version": _version_json(_version(ws, m["name"], m["aliases"][args["alias"]]))}
    if (method, p) == ("POST", "registered-models/set-tag"):
        _model(ws, body["name"])["tags"][body["key"]] = body["value"]
        return {}
    if (method, p) == ("DELETE", "registered-models/delete-tag"):
        _model(ws, args["name"])["tags"].pop(args["key"], None)
        return {}
    if (method, p) == ("POST", "model-versions/create"):
        m = _model(ws, body["name"])
        number = 1 + max((k[1] for k in ws.versions if k[0] == m["name"]), default=0)
        catalog, schema, short = m["name"].split(".")
        ws.versions[(m["name"], number)] = {
            "name": m["name"],
            "version": str(number),
            "creation_timestamp": _now(),
            "last_updated_timestamp": _now(),
            "description": body.get("description", ""),
            "source": body.get("source", ""),
            "run_id": body.get("run_id", ""),
            "run_tracking_server_id": body.get("run_tracking_server_id", ""),
            "status": "PENDING_REGISTRATION",
            "storage_location": f"s3://uc-managed/{catalog}/{schema}/models/{short}/versions/{number}",
            "tags": _kv(body.get("tags")),
            **({"model_id": body["model_id"]} if body.get("model_id") else {}),
        }
        return {"model_version": _version_json(ws.versions[(m["name"], number)])}
    if (method, p) == ("POST", "model-versions/generate-temporary-credentials"):
        _version(ws, body["name"], body["version"])
        return {"credentials": {"storage_mode": "DEFAULT_STORAGE", "expiration_time": _now() + 3_600_000}}
    if (method, p) == ("POST", "model-versions/finalize"):
        v = _version(ws, body["name"], body["version"])
        v["status"] = "READY"
        return {"model_version": _version_json(v)}
    if (method, p) == ("GET", "model-versions/get"):
        return {"model_version": _version_json(_version(ws, args["name"], args["version"]))}
    if (method, p) == ("PATCH", "model-versions/update"):
        v = _version(ws, body["name"], body["version"])
        v["description"] = body.get("description", v["description"])
        return {"model_version": _version_json(v)}
    if (method, p) == ("DELETE", "model-versions/delete"):
        v = _version(ws, args["name"], args["version"])
        del ws.versions[(v["name"], int(v["version"]))]
        return {}
    if (method, p) == ("POST", "model-versions/set-tag"):
        _version(ws, body["name"], body["version"])["tags"][body["key"]] = body["value"]
        return {}
    if (method, p) == ("DELETE", "model-versions/delete-tag"):
        _version(ws, args["name"], args["version"])["tags"].pop(args["key"], None)
        return {}
    raise NotStubbed(p)


# ---- the server ---------------------------------------------------------------------------------------------


def _handler(ws: Workspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "application/json", extra: Any = ()) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Databricks-Org-Id", ws.org_id)
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj: dict[str, Any]) -> None:
            self._send(code, json.dumps(obj).encode())

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    chunk = self.rfile.read(size) if size else b""
                    self.rfile.readline()  # the CRLF after each chunk (and after the last, empty one)
                    if not size:
                        return out
                    out += chunk
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _handle(self) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            method = self.command
            raw = self._body()
            with ws.lock:
                ws.calls.append((method, path))
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if path in ws.delays:
                time.sleep(ws.delays[path])
            if path.startswith("/presigned/"):  # cloud storage: authorised by the URL's signature
                key = path.removeprefix("/presigned/")
                if "X-Amz-Signature" not in q:
                    return self._json(403, {"error": "missing signature"})
                return self._blob(method, key, raw)
            if not path.startswith("/api/"):  # e.g. the SDK's optional host-metadata probe: not a workspace API
                with ws.lock:
                    ws.unknown.append((method, path))
                return self._json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {path}"})
            if self.headers.get("Authorization") != f"Bearer {ws.token}":
                return self._json(401, {"error_code": "UNAUTHENTICATED", "message": "invalid token"})
            try:
                with ws.lock:
                    if path.startswith(("/api/2.0/fs/files/", "/api/2.0/fs/directories/")):
                        return self._files(method, path, raw)
                    body = json.loads(raw) if raw else {}
                    if path == "/api/2.0/preview/scim/v2/Me":
                        me = {"id": "7001", "userName": ws.user_name, "displayName": "ML engineer", "active": True}
                        return self._json(200, me)
                    if path == "/api/2.0/fs/create-upload-url":
                        key = _files_path(ws, {**q, **body}["path"])
                        return self._json(200, {"url": ws.sign(key), "headers": []})
                    if path == "/api/2.0/fs/create-download-url":  # the SDK passes the path as a query parameter
                        key = _files_path(ws, {**q, **body}["path"])
                        return self._json(200, {"url": ws.sign(key), "headers": []})
                    for prefix, route in (
                        ("/api/2.0/mlflow/unity-catalog/", _uc),
                        ("/api/2.0/mlflow/artifacts/", _artifacts),
                        ("/api/2.0/mlflow/logged-models/", _artifacts if "/artifacts/" in path else _tracking),
                        ("/api/2.0/mlflow/", _tracking),
                    ):
                        if path.startswith(prefix):
                            return self._json(200, route(ws, method, path, q, body))
                    raise NotStubbed(path)
            except ApiError as e:
                return self._json(e.status, {"error_code": e.code, "message": e.message})
            except NotStubbed:
                with ws.lock:
                    ws.unknown.append((method, path))
                return self._json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {path}"})
            except (KeyError, ValueError) as e:  # a required field missing: what the service says too
                with ws.lock:
                    ws.unknown.append((method, f"{path} (bad request: {e!r})"))
                return self._json(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"bad request: {e!r}"})

        def _blob(self, method: str, key: str, raw: bytes) -> None:
            with ws.lock:
                if method == "PUT":
                    ws.blobs[key] = raw
                    return self._send(200, b"", "text/plain")
                content = ws.blobs.get(key)
            if content is None:
                return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return self._send(200, content, "application/octet-stream")

        def _files(self, method: str, path: str, raw: bytes) -> None:
            """The Files API: upload (PUT), download (GET), metadata (HEAD), directory listing (GET)."""
            if path.startswith("/api/2.0/fs/directories/"):
                fs_path = path.removeprefix("/api/2.0/fs/directories")
                key = _files_path(ws, fs_path)
                children = _listing(ws, key, "")
                if not children:
                    raise ApiError(404, "NOT_FOUND", f"The directory {fs_path} does not exist")
                if method == "HEAD":
                    return self._send(200)
                contents = [
                    {"path": f"{fs_path.rstrip('/')}/{c['path']}", "name": c["path"], "is_directory": c["is_dir"]}
                    | ({"file_size": c["file_size"]} if "file_size" in c else {})
                    for c in children
                ]
                return self._json(200, {"contents": contents})
            fs_path = path.removeprefix("/api/2.0/fs/files")
            key = _files_path(ws, fs_path)
            if method == "PUT":
                ws.blobs[key] = raw
                return self._send(204)
            content = ws.blobs.get(key)
            if content is None:
                raise ApiError(404, "NOT_FOUND", f"The file {fs_path} does not exist")
            extra = [("Last-Modified", "Mon, 30 Nov 2026 12:00:00 GMT")]
            return self._send(200, content, "application/octet-stream", extra)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler


@dataclass
class RunningWorkspace:
    workspace: Workspace
    server: ThreadingHTTPServer


def serve() -> RunningWorkspace:
    ws = Workspace()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ws))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="databricks-rest-stub", daemon=True).start()
    ws.url = f"http://127.0.0.1:{server.server_address[1]}"
    return RunningWorkspace(ws, server)


def stop(running: RunningWorkspace) -> None:
    running.server.shutdown()
    running.server.server_close()


def running() -> Iterator[Workspace]:
    r = serve()
    try:
        yield r.workspace
    finally:
        stop(r)
