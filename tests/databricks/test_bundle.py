"""bundle/databricks.yml: valid against the official bundle JSON schema, and consistent with the repository.

The schema comes from the Databricks CLI at ``../shared/databricks/bundle_jsonschema.json``; its patterns use
``\\p{L}``, so they are matched with the ``regex`` module. Without the file the schema test skips saying so,
except in CI (``CI=true``), where a missing schema fails.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundle" / "databricks.yml"
SCHEMA = ROOT.parent / "shared" / "databricks" / "bundle_jsonschema.json"


def _bundle() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    loaded: dict[str, Any] = yaml.safe_load(BUNDLE.read_text())
    return loaded


def _job() -> dict[str, Any]:
    jobs = _bundle()["resources"]["jobs"]
    assert len(jobs) == 1
    job: dict[str, Any] = next(iter(jobs.values()))
    return job


def _validator(schema: dict[str, Any]) -> Any:
    """A Draft 7 validator whose ``pattern``/``patternProperties`` use ``regex`` (``\\p{L}`` support)."""
    import jsonschema
    import regex
    from jsonschema import validators

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, props: dict[str, Any], instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "object"):
            for patrn, sub in props.items():
                for k, v in instance.items():
                    if regex.search(patrn, k):
                        yield from validator.descend(v, sub, path=k, schema_path=patrn)

    cls = validators.extend(jsonschema.Draft7Validator, {"pattern": pattern, "patternProperties": pattern_properties})
    return cls(schema)


def test_bundle_matches_the_official_schema():
    """Every key and value of the bundle is allowed by the Databricks CLI's bundle schema."""
    if not SCHEMA.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"bundle schema missing at {SCHEMA} (../shared/databricks/ is required in CI)")
        pytest.skip(f"bundle schema not available: {SCHEMA} is absent (../shared/databricks is not checked out)")
    validator = _validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(_bundle()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors)


def test_targets_dev_staging_prod_and_each_sets_the_environment():
    """dev (development, default), staging and prod (production, root_path, service principal, permissions)."""
    targets = _bundle()["targets"]
    assert set(targets) == {"dev", "staging", "prod"}
    assert targets["dev"]["mode"] == "development"
    assert targets["dev"]["default"] is True
    for name, target in targets.items():
        assert target["variables"]["env"] == name
        if name != "dev":
            assert target["mode"] == "production"
            assert target["workspace"]["root_path"].startswith("/Workspace/")
            assert target["run_as"]["service_principal_name"] == "${var.service_principal}"
            assert {p["level"] for p in target["permissions"]} >= {"CAN_MANAGE", "CAN_VIEW"}


def test_the_environment_flows_into_cluster_serverless_task_and_job_parameters():
    """${var.env} reaches DATABRICKS_NATS_ENV on the cluster, the serverless task and the nats_env job parameter."""
    job = _job()
    cluster = job["job_clusters"][0]["new_cluster"]
    env_vars = cluster["spark_env_vars"]
    assert env_vars["DATABRICKS_NATS_ENV"] == "${var.env}"
    assert env_vars["DATABRICKS_NATS_URL"] == "${var.nats_url}"
    assert re.fullmatch(r"\{\{secrets/\$\{var\.secret_scope\}/[\w-]+\}\}", env_vars["DATABRICKS_NATS_CREDS"])
    assert {"name": "nats_env", "default": "${var.env}"} in job["parameters"]
    serverless = [t for t in job["tasks"] if "environment_key" in t]
    assert len(serverless) == 1
    params = serverless[0]["python_wheel_task"]["parameters"]
    assert params[params.index("--env") + 1] == "${var.env}"


def test_job_parameters_are_the_names_context_detection_reads():
    """The bundle passes exactly the job parameters databricks_nats reads as run context."""
    from databricks_nats.integrations.databricks.context import JOB_PARAMETERS

    assert {p["name"] for p in _job()["parameters"]} == set(JOB_PARAMETERS.values())


def test_every_referenced_notebook_wheel_and_entry_point_exists():
    """Notebook paths exist as Databricks source notebooks; the wheel task's package and entry point are real."""
    job = _job()
    bundle_dir = BUNDLE.parent
    notebooks = [t["notebook_task"]["notebook_path"] for t in job["tasks"] if "notebook_task" in t]
    assert {"../notebooks/quickstart.py", "../notebooks/streaming.py"} <= set(notebooks)
    for path in notebooks:
        source = (bundle_dir / path).resolve()
        assert source.is_file(), path
        assert source.read_text().splitlines()[0] == "# Databricks notebook source"
    wheels = [t["python_wheel_task"] for t in job["tasks"] if "python_wheel_task" in t]
    for task in wheels:  # what Databricks looks up: the wheel's distribution name and its entry points
        dist = importlib.metadata.distribution(task["package_name"])
        assert task["entry_point"] in {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}
    artifact = next(iter(_bundle()["artifacts"].values()))
    assert (bundle_dir / artifact["path"] / "pyproject.toml").is_file()
    libraries = [lib["whl"] for t in job["tasks"] for lib in t.get("libraries", [])]
    dependencies = job["environments"][0]["spec"]["dependencies"]
    assert set(libraries) | set(dependencies) == {"../dist/*.whl"}
    assert {t["environment_key"] for t in job["tasks"] if "environment_key" in t} == {
        e["environment_key"] for e in job["environments"]
    }
