"""Artifact repository wrappers: one ``mlflow.run.artifacts`` event per upload call, however many files.

A directory of 10,000 files is one event with the file count, total bytes and a bounded sample of paths.
Sizes are read from the local files before the upload (MLflow deletes its temporary files afterwards).
Files uploaded as part of a directory upload (some repositories upload each file with ``log_artifact`` on
a thread pool) are not announced twice: a per-repository set of directories in flight filters them.
Model artifacts (``…/models/m-<id>/artifacts``) are announced by the logged-model events instead; their
upload is where the model's flavours are read (the local ``MLmodel`` file, bounded, never the network).

Artifact URIs have one normal form in every event (``normal_uri``): MLflow hands a Databricks run's
repository ``dbfs://databricks/databricks/mlflow-tracking/…`` (the tracking URI's profile added as the
authority, ``dbfs://<profile>@databricks/…`` for a profile) while the run says ``dbfs:/databricks/…``; the
authority is dropped, as MLflow's own ``DatabricksArtifactRepository`` does for the paths it uses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from databricks_nats.client import current_client
from databricks_nats.integrations.mlflow import _compat

__all__ = [
    "SAMPLE",
    "Announce",
    "dataset_item",
    "local_flavors",
    "model_of",
    "normal_uri",
    "read_flavors",
    "run_of",
    "wrap_repo",
]

SAMPLE = 20
MAX_FLAVORS = 20
MLMODEL_MAX_BYTES = 256 * 1024
_RUN_URI = re.compile(r"(?:/(?P<exp>[^/]+))?/(?P<run>[0-9a-f]{32})/artifacts(?:/|$)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MODEL_URI = re.compile(r"/(?P<model>m-[0-9a-f]{32})/artifacts/?$")
_DBFS_AUTHORITY = re.compile(r"^dbfs://[^/]*(?=/)", re.IGNORECASE)


def normal_uri(uri: str | None) -> str | None:
    """One form per artifact location: ``dbfs://<profile>@databricks/x`` and ``dbfs://databricks/x`` are ``dbfs:/x``."""
    if not uri:
        return uri
    return _DBFS_AUTHORITY.sub("dbfs:", uri, count=1) if uri[:7].lower() == "dbfs://" else uri


def run_of(artifact_uri: str) -> tuple[str, str] | None:
    """(experiment id as the URI shows it, run id) of a run's artifact URI, else None."""
    m = _RUN_URI.search(artifact_uri or "")
    return (m.group("exp") or "", m.group("run")) if m else None


def model_of(artifact_uri: str) -> str | None:
    """The logged model id of a logged model's artifact URI (``…/m-<32 hex>/artifacts``), else None."""
    m = _MODEL_URI.search(artifact_uri or "")
    return m.group("model") if m else None


def read_flavors(model_dir: str) -> list[str]:
    """The flavour names in ``<model_dir>/MLmodel`` (a local file of at most 256 KiB), in file order; else []."""
    path = os.path.join(model_dir, "MLmodel")
    try:
        if os.path.getsize(path) > MLMODEL_MAX_BYTES:
            return []
        import importlib

        yaml = importlib.import_module("yaml")  # MLflow's own dependency (PyYAML; no type stubs needed)
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except Exception:  # noqa: BLE001 - no MLmodel, or not one we can read: no flavours
        return []
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    return [str(k)[:100] for k in list(flavors)[:MAX_FLAVORS]] if isinstance(flavors, dict) else []


def local_flavors(artifact_location: str | None) -> list[str]:
    """The flavours of a model whose artifact location is a local directory (``file://`` or a path); else []."""
    loc = artifact_location or ""
    if loc.startswith("file://"):
        from urllib.parse import unquote, urlparse

        loc = unquote(urlparse(loc).path)
    elif _SCHEME.match(loc):  # s3://, dbfs:/, …: no network on the hot path
        return []
    return read_flavors(loc) if loc and os.path.isdir(loc) else []


def _walk(local_dir: str) -> tuple[int, int, list[dict[str, Any]]]:
    count = total = 0
    sample: list[dict[str, Any]] = []
    for root, _dirs, files in os.walk(local_dir):
        for f in files:
            path = os.path.join(root, f)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            count += 1
            total += size
            if len(sample) < SAMPLE:
                sample.append({"path": os.path.relpath(path, local_dir), "size": size})
    return count, total, sample


Announce = Callable[[str, str | None, str | None, dict[str, Any]], None]
"""``announce(run_id, experiment id the URI shows or None, tracking URI of the repository, data)``: the hook adds
the experiment id (known run, else the URI's, else looked up on its worker) and publishes."""


def wrap_repo(repo: Any, announce: Announce, note_flavors: Callable[[str, list[str]], None] | None = None) -> Any:
    """Wrap ``log_artifact`` and ``log_artifacts`` of a run's repository; note flavours of a logged model's.

    Nothing is asked of anyone here: the run's experiment is the hook's business when an upload is announced
    (a repository made for downloads announces nothing and costs nothing).
    """
    owner = run_of(str(getattr(repo, "artifact_uri", "")))
    if owner is None:
        model_id = model_of(str(getattr(repo, "artifact_uri", "")))
        if model_id is not None and note_flavors is not None:
            _wrap_model_repo(repo, model_id, note_flavors)
        return repo
    shown, run_id = owner
    layout = shown if shown.isdigit() else None  # a custom artifact_location shows a folder, not the experiment
    tracking_uri = _compat.repo_tracking_uri(repo)
    base_uri = normal_uri(str(repo.artifact_uri)) or ""
    active: set[str] = set()

    def tell(path: str | None, files: list[dict[str, Any]], count: int, total: int) -> None:
        try:
            prefix = f"{path}/" if path else ""
            data = {
                "run_id": run_id,
                "artifact_uri": base_uri,
                "path": path,
                "files": [{**f, "path": prefix + f["path"]} for f in files],
                "file_count": count,
                "total_bytes": total,
                "sample_truncated": count > len(files),
            }
            announce(run_id, layout, tracking_uri, data)
        except Exception as e:  # noqa: BLE001 - never break the upload
            current_client().fail(e, "mlflow artifact hook")

    one = _compat.method_target(repo, "log_artifact")
    many = _compat.method_target(repo, "log_artifacts")
    if one is not None:
        target_one = one[0]

        def log_artifact(self: Any, local_file: str, artifact_path: str | None = None, *a: Any, **k: Any) -> Any:
            __tracebackhide__ = True
            full = os.path.abspath(local_file)
            inner = any(full.startswith(d + os.sep) for d in tuple(active))
            size = None if inner else _size(full)
            result = target_one(self)(local_file, artifact_path, *a, **k)
            if not inner:
                tell(artifact_path, [{"path": os.path.basename(local_file), "size": size}], 1, size or 0)
            return result

        _compat.install_method(repo, "log_artifact", log_artifact, one[1])
    if many is not None:
        target_many = many[0]

        def log_artifacts(self: Any, local_dir: str, artifact_path: str | None = None, *a: Any, **k: Any) -> Any:
            __tracebackhide__ = True
            full = os.path.abspath(local_dir)
            count, total, sample = _walk(full)
            active.add(full)
            try:
                result = target_many(self)(local_dir, artifact_path, *a, **k)
            finally:
                active.discard(full)
            tell(artifact_path, sample, count, total)
            return result

        _compat.install_method(repo, "log_artifacts", log_artifacts, many[1])
    return repo


def _wrap_model_repo(repo: Any, model_id: str, note_flavors: Callable[[str, list[str]], None]) -> None:
    many = _compat.method_target(repo, "log_artifacts")
    if many is None:
        return
    target = many[0]

    def log_artifacts(self: Any, local_dir: str, artifact_path: str | None = None, *a: Any, **k: Any) -> Any:
        __tracebackhide__ = True
        flavors = None
        if not artifact_path:  # the model directory itself (MLmodel at its root)
            try:
                flavors = read_flavors(local_dir)
            except Exception as e:  # noqa: BLE001 - never break the upload
                current_client().fail(e, "mlflow model flavours")
        result = target(self)(local_dir, artifact_path, *a, **k)
        if flavors:
            note_flavors(model_id, flavors)
        return result

    _compat.install_method(repo, "log_artifacts", log_artifacts, many[1])


def dataset_item(d: Any, value_max: int = 500) -> dict[str, Any]:
    """A dataset input of a run (``log_inputs``) as a pointer: name, digest, source type, source, context."""
    ds = getattr(d, "dataset", d)
    return {
        "name": getattr(ds, "name", None),
        "digest": getattr(ds, "digest", None),
        "source_type": getattr(ds, "source_type", None),
        "source": str(getattr(ds, "source", ""))[:value_max],
        "context": next((t.value for t in getattr(d, "tags", []) or [] if t.key == "mlflow.data.context"), None),
    }


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
