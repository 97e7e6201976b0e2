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
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundle" / "databricks.yml"
SCHEMA = ROOT.parent / "shared" / "databricks" / "bundle_jsonschema.json"
CONFIG = "${workspace.file_path}/bundle/config/${bundle.target}.toml"  # a target's settings file, as synced
WHEEL = "../dist/*.whl"


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


def _config(target: str) -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((BUNDLE.parent / "config" / f"{target}.toml").read_text())
    return loaded


def _python_tasks() -> list[dict[str, Any]]:
    return [t for t in _job()["tasks"] if "spark_python_task" in t]


def test_targets_dev_staging_prod_each_with_its_settings_file():
    """dev (development, default), staging and prod (production, root_path, service principal, permissions);
    each target's settings file exists and names its environment."""
    targets = _bundle()["targets"]
    assert set(targets) == {"dev", "staging", "prod"}
    assert targets["dev"]["mode"] == "development"
    assert targets["dev"]["default"] is True
    for name, target in targets.items():
        assert _config(name)["env"] == name
        if name != "dev":
            assert target["mode"] == "production"
            assert target["workspace"]["root_path"].startswith("/Workspace/")
            assert target["run_as"]["service_principal_name"] == "${var.service_principal}"
            assert {p["level"] for p in target["permissions"]} >= {"CAN_MANAGE", "CAN_VIEW"}


def test_the_service_principal_is_required_for_staging_and_prod():
    """No default (a zero UUID deploys a job nobody can run as): staging and prod must be given one; dev, which
    runs as the deploying user, sets a value itself so that it validates without it."""
    variables, targets = _bundle()["variables"], _bundle()["targets"]
    assert "default" not in variables["service_principal"]
    assert targets["dev"]["variables"]["service_principal"]
    assert "run_as" not in targets["dev"]
    for name in ("staging", "prod"):
        assert "service_principal" not in targets[name].get("variables", {})


def test_runtime_is_16_4_lts_ml_or_newer():
    """The classic cluster's runtime comes from a variable whose default is an ML runtime ≥ 16.4."""
    cluster = _job()["job_clusters"][0]["new_cluster"]
    assert cluster["spark_version"] == "${var.spark_version}"
    default = _bundle()["variables"]["spark_version"]["default"]
    m = re.fullmatch(r"(\d+)\.(\d+)\.x-(?:cpu-|gpu-)?ml-scala2\.1[23]", default)
    assert m, default
    assert (int(m.group(1)), int(m.group(2))) >= (16, 4)


def test_node_type_is_chosen_per_cloud():
    """No node type exists on every cloud: the variable has no default and names one per cloud."""
    cluster = _job()["job_clusters"][0]["new_cluster"]
    assert cluster["node_type_id"] == "${var.node_type_id}"
    variable = _bundle()["variables"]["node_type_id"]
    assert "default" not in variable
    text = variable["description"]
    assert re.search(r"AWS [a-z0-9]+\.\d*x?large\b", text)
    assert re.search(r"Azure Standard_[A-Za-z0-9_]+\b", text)
    assert re.search(r"GCP [a-z0-9]+-(?:standard|highmem|highcpu)-\d+\b", text)


def test_every_task_reads_the_targets_settings_file_and_nothing_else_holds_nats_settings():
    """One source of truth per target: the classic cluster gets DATABRICKS_NATS_CONFIG, the job parameter
    nats_config names the same file (notebook widgets), Python tasks pass it as --nats_config; the file is
    synced where those paths point. No URL, environment or credential is set in the bundle itself."""
    job = _job()
    assert job["job_clusters"][0]["new_cluster"]["spark_env_vars"] == {"DATABRICKS_NATS_CONFIG": CONFIG}
    assert {"name": "nats_config", "default": CONFIG} in job["parameters"]
    for t in _python_tasks():
        assert "--nats_config={{job.parameters.nats_config}}" in t["spark_python_task"]["parameters"]
    # Synced: the sync root is the common parent of the bundle folder and its sync paths (the repository).
    paths = [(BUNDLE.parent / p).resolve() for p in _bundle()["sync"]["paths"]]
    assert BUNDLE.parent.resolve() in paths
    assert os.path.commonpath([BUNDLE.parent.resolve(), *paths]) == str(ROOT)
    for target in _bundle()["targets"]:
        assert (ROOT / CONFIG.replace("${workspace.file_path}/", "").replace("${bundle.target}", target)).is_file()
    text = BUNDLE.read_text()
    assert "DATABRICKS_NATS_URL" not in text
    assert "nats_url" not in _bundle()["variables"]
    assert "{{secrets/" not in text


def test_service_principal_targets_publish_as_their_identity():
    """staging and prod run as a service principal and publish as it (oidc_token = databricks): no static NATS
    credential in their settings, and no stream creation (a publisher identity may not)."""
    bundle = _bundle()
    for target in ("staging", "prod"):
        assert bundle["targets"][target]["run_as"] == {"service_principal_name": "${var.service_principal}"}
        config = _config(target)
        assert config["oidc_token"] == "databricks"
        assert config["auto_create_stream"] is False
        assert not {"secret_scope", "token", "creds", "password", "nkey_seed"} & set(config), target


def test_secret_keys_follow_the_auth_mode(databricks_stub: Any, monkeypatch: pytest.MonkeyPatch):
    """The dev target's settings name a secret scope, not a key: whatever auth mode the scope holds (README
    layout) is what the publisher uses. The examples in the files name each mode's README key."""
    from databricks_nats.integrations.databricks import DatabricksSecrets
    from databricks_nats.settings import resolve_settings
    from databricks_nats.transport.auth import resolve_credentials

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Secret scope layout") :].split("\n\n")[1]
    layout = re.findall(r"`(nats-[a-z-]+)`", table)
    assert {"nats-creds", "nats-token", "nats-password", "nats-nkey-seed"} <= set(layout)
    for target in _bundle()["targets"]:
        text = (BUNDLE.parent / "config" / f"{target}.toml").read_text()
        for setting, scope, key in re.findall(r"^#? ?(\w+) = \"\{\{secrets/([\w-]+)/([\w-]+)\}\}\"", text, re.M):
            assert scope == _config("dev")["secret_scope"]
            assert key == "nats-" + setting.replace("_", "-"), (target, setting, key)
            assert key in layout
    for env in [k for k in os.environ if k.startswith("DATABRICKS_NATS_")]:
        monkeypatch.delenv(env)
    monkeypatch.setenv("DATABRICKS_NATS_CONFIG", str(BUNDLE.parent / "config" / "dev.toml"))
    modes = {
        ("token",): {"nats-token": "t0ken-value"},
        ("user", "password"): {"nats-user": "ml-publisher", "nats-password": "pa55word"},
        ("nkey_seed",): {"nats-nkey-seed": "SUAEXAMPLESEED"},
        ("creds",): {"nats-creds": "-----BEGIN NATS USER JWT-----\n…"},
    }
    for kinds, secrets in modes.items():
        databricks_stub.secrets = {("nats", key): value for key, value in secrets.items()}
        settings = resolve_settings(spark_conf={})
        assert settings.env == "dev"
        assert settings.secret_scope == "nats"
        assert resolve_credentials(settings, secrets=DatabricksSecrets()).kinds == kinds


def test_job_parameters_are_the_names_context_detection_and_the_settings_file_read():
    """The bundle passes exactly the job parameters databricks_nats reads (context and nats_config), and its
    Python file tasks, which job parameters do not reach by themselves, pass each as --name=value."""
    from databricks_nats.integrations.databricks.context import JOB_PARAMETERS
    from databricks_nats.settings import CONFIG_PARAMETER

    names = {p["name"] for p in _job()["parameters"]}
    assert names == {*JOB_PARAMETERS.values(), CONFIG_PARAMETER}
    for t in _python_tasks():
        given = {a.split("=", 1)[0].removeprefix("--") for a in t["spark_python_task"]["parameters"]}
        assert names <= given, t["task_key"]


def test_the_serverless_task_runs_the_quickstart_with_the_wheel_from_its_environment():
    """The serverless task is the quickstart itself (not just doctor), the classic one's twin, with the
    bundle's wheel as an environment dependency."""
    job = _job()
    serverless = [t for t in job["tasks"] if "environment_key" in t]
    assert [t["task_key"] for t in serverless] == ["quickstart_serverless"]
    classic = next(t for t in job["tasks"] if t["task_key"] == "quickstart")
    assert serverless[0]["spark_python_task"]["python_file"] == "../notebooks/quickstart.py"
    assert serverless[0]["spark_python_task"] == classic["spark_python_task"]
    assert "job_cluster_key" not in serverless[0]
    assert "libraries" not in serverless[0]  # serverless takes no task libraries
    environment = next(e for e in job["environments"] if e["environment_key"] == serverless[0]["environment_key"])
    assert WHEEL in environment["spec"]["dependencies"]
    assert environment["spec"]["environment_version"]


def test_demo_data_lives_in_unity_catalog():
    """Streaming input and checkpoints in the bundle's Unity Catalog volume (per job run); the table and
    the registered model under three-level names, the model in the Unity Catalog registry."""
    bundle, job = _bundle(), _job()
    volume = bundle["resources"]["volumes"]["databricks_nats"]
    assert (volume["catalog_name"], volume["schema_name"], volume["name"]) == (
        "${var.catalog}",
        "${var.schema}",
        "${var.volume}",
    )
    params = {t["task_key"]: t.get("notebook_task", {}).get("base_parameters", {}) for t in job["tasks"]}
    ref = "${resources.volumes.databricks_nats.%s}"
    volume_path = "/Volumes/" + "/".join(ref % f for f in ("catalog_name", "schema_name", "name"))
    assert params["streaming"]["input_dir"] == volume_path + "/streaming/{{job.run_id}}"
    assert params["streaming"]["table"] == "${var.catalog}.${var.schema}.nats_demo_features"
    assert params["registry"]["model_name"] == "${var.catalog}.${var.schema}.nats_demo_model"
    assert params["registry"]["registry_uri"] == "databricks-uc"
    assert params["consumer"]["model_name"] == params["registry"]["model_name"]


def test_every_referenced_notebook_file_wheel_and_entry_point_exists():
    """Notebook tasks name Databricks source notebooks, Python file tasks plain Python files (the bundle CLI
    refuses a notebook there), the wheel comes from the bundle's own artifact, every task has it."""
    job = _job()
    bundle_dir = BUNDLE.parent
    notebooks = [t["notebook_task"]["notebook_path"] for t in job["tasks"] if "notebook_task" in t]
    assert set(notebooks) == {"../notebooks/streaming.py", "../notebooks/registry.py", "../notebooks/consumer.py"}
    for path in notebooks:
        source = (bundle_dir / path).resolve()
        assert source.is_file(), path
        assert source.read_text().splitlines()[0] == "# Databricks notebook source"
    for t in _python_tasks():
        source = (bundle_dir / t["spark_python_task"]["python_file"]).resolve()
        assert source.is_file()
        assert source.read_text().splitlines()[0] != "# Databricks notebook source"
    wheels = [t["python_wheel_task"] for t in job["tasks"] if "python_wheel_task" in t]
    for task in wheels:  # what Databricks looks up: the wheel's distribution name and its entry points
        dist = importlib.metadata.distribution(task["package_name"])
        assert task["entry_point"] in {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}
    artifact = next(iter(_bundle()["artifacts"].values()))
    assert (bundle_dir / artifact["path"] / "pyproject.toml").is_file()
    assert "--wheel-dir dist" in artifact["build"]
    for t in job["tasks"]:
        if "environment_key" in t:
            continue
        assert t["job_cluster_key"] == "ml_cluster"
        assert t["libraries"] == [{"whl": WHEEL}], t["task_key"]
    assert {t["environment_key"] for t in job["tasks"] if "environment_key" in t} == {
        e["environment_key"] for e in job["environments"]
    }
