"""Settings sections: integrations declare their own settings, which resolve, show and travel like core ones.

The MLflow (``metrics_mode``, ``metrics_interval``, ``deny_keys``, ``allow_keys``) and Spark (``spark_*``)
settings live in sections declared by those integrations and registered with the core when imported; the
flat names keep their variables, file keys, Spark conf keys, errors and attribute reads.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from databricks_nats.errors import ConfigurationError
from databricks_nats.integrations.mlflow.settings import MlflowSettings
from databricks_nats.integrations.spark.settings import SparkSettings
from databricks_nats.settings import (
    Settings,
    describe,
    explain_settings,
    positive,
    register_section,
    resolve_settings,
    setting,
)
from databricks_nats.telemetry_settings import TelemetrySettings

SECTION_SETTINGS = {
    "metrics_mode": MlflowSettings,
    "metrics_interval": MlflowSettings,
    "deny_keys": MlflowSettings,
    "allow_keys": MlflowSettings,
    "spark_progress_interval": SparkSettings,
    "spark_min_execution_ms": SparkSettings,
    "spark_summary_interval": SparkSettings,
    "traces_mode": MlflowSettings,
    "otel_metrics": TelemetrySettings,
    "prometheus_port": TelemetrySettings,
    "prometheus_host": TelemetrySettings,
    "health_interval": TelemetrySettings,
}


def _explain(
    tmp_path: Path, file: str | None = None, environ: dict[str, str] | None = None, **kw: Any
) -> tuple[Settings, dict[str, str]]:
    env = dict(environ or {})
    if file is not None:
        path = tmp_path / "databricks-nats.toml"
        path.write_text(file)
        env["DATABRICKS_NATS_CONFIG"] = str(path)
    return explain_settings(environ=env, spark_conf=kw.pop("spark_conf", {}), **kw)


def test_the_moved_settings_belong_to_their_sections_not_to_the_core() -> None:
    """The core dataclass has none of the integration knobs; each is a field of its section, listed by describe."""
    core = {f.name for f in dataclasses.fields(Settings)}
    assert not core & set(SECTION_SETTINGS)
    for name, kind in SECTION_SETTINGS.items():
        assert name in {f.name for f in dataclasses.fields(kind)}
    listed = {name: (env, secret) for name, env, secret, _doc in describe()}
    for name in SECTION_SETTINGS:
        assert listed[name] == (f"DATABRICKS_NATS_{name.upper()}", False)


@pytest.mark.parametrize(
    ("name", "raw", "parsed"),
    [("spark_min_execution_ms", ("1", "2", "3", "4"), (1, 2, 3, 4)),
     ("metrics_mode", ("every", "off", "EVERY", "off"), ("every", "off", "every", "off"))],
)  # fmt: skip
def test_a_section_setting_resolves_kwarg_then_environment_then_file_then_spark_conf(
    tmp_path: Path, name: str, raw: tuple[str, ...], parsed: tuple[Any, ...]
) -> None:
    """Each source overrides the next for a section's setting exactly as for a core one; origins are told."""
    kw, env, file, conf = raw
    environ = {f"DATABRICKS_NATS_{name.upper()}": env}
    text = f'{name} = "{file}"\n'
    spark_conf = {name: conf}
    cases = [
        (_explain(tmp_path, text, environ, spark_conf=spark_conf, **{name: kw}), parsed[0], "argument"),
        (_explain(tmp_path, text, environ, spark_conf=spark_conf), parsed[1], "environment"),
        (_explain(tmp_path, text, spark_conf=spark_conf), parsed[2], f"file {tmp_path / 'databricks-nats.toml'}"),
        (_explain(tmp_path, spark_conf=spark_conf), parsed[3], "spark conf"),
    ]
    kind = SECTION_SETTINGS[name]
    for (settings, origins), want, origin in cases:
        assert getattr(settings, name) == want
        assert getattr(settings.section(kind), name) == want
        assert origins[name] == origin
    default = _explain(tmp_path)[0]
    assert getattr(default, name) == getattr(kind(), name)


@pytest.mark.parametrize("origin", ["kwarg", "env", "file", "spark"])
def test_a_bad_section_value_names_the_setting_and_where_it_came_from(tmp_path: Path, origin: str) -> None:
    """spark_summary_interval=-1 from any source raises ConfigurationError naming the setting and its origin."""
    name, bad = "spark_summary_interval", "-1"
    given: dict[str, dict[str, Any]] = {
        "kwarg": {name: bad},
        "env": {"environ": {"DATABRICKS_NATS_SPARK_SUMMARY_INTERVAL": bad}},
        "file": {"file": f"{name} = {bad}\n"},
        "spark": {"spark_conf": {name: bad}},
    }
    with pytest.raises(ConfigurationError) as info:
        _explain(tmp_path, **given[origin])
    assert info.value.setting == name
    assert repr(name) in str(info.value)
    shown = {
        "kwarg": "argument spark_summary_interval",
        "env": "DATABRICKS_NATS_SPARK_SUMMARY_INTERVAL",
        "file": "databricks-nats.toml",
        "spark": "spark.databricks_nats.spark_summary_interval",
    }
    assert shown[origin] in str(info.value)


def test_unknown_names_are_refused_and_the_known_list_holds_the_sections(tmp_path: Path) -> None:
    """A misspelt section setting, as a keyword or in the settings file, is a ConfigurationError listing both layers."""
    with pytest.raises(ConfigurationError, match="'metrics_mod'") as info:
        _explain(tmp_path, metrics_mod="every")
    assert info.value.setting == "metrics_mod"
    assert "metrics_mode" in str(info.value)
    assert "spark_min_execution_ms" in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown setting 'spark_min_exec_ms'") as err:
        _explain(tmp_path, "spark_min_exec_ms = 5\n")
    assert err.value.setting == "config"
    assert "subject_prefix" in str(err.value)
    assert "allow_keys" in str(err.value)


def test_sections_travel_through_replace_equality_hashing_and_repr() -> None:
    """replace() (how detected context is applied) keeps the sections; equal settings hash alike; repr shows
    non-default section values flat."""
    s = resolve_settings(environ={}, spark_conf={}, metrics_mode="every", spark_min_execution_ms=0, env="prod")
    moved = dataclasses.replace(s, workspace="1234567890")
    assert (moved.workspace, moved.metrics_mode, moved.spark_min_execution_ms) == ("1234567890", "every", 0)
    assert moved.section(MlflowSettings) == MlflowSettings(metrics_mode="every")
    environ, conf = {"DATABRICKS_NATS_METRICS_MODE": "every"}, {"spark_min_execution_ms": "0"}
    same = resolve_settings(environ=environ, spark_conf=conf, env="prod")
    assert same == s
    assert hash(same) == hash(s)
    assert len({s, same, moved}) == 2
    assert s != dataclasses.replace(s, sections=(MlflowSettings(metrics_mode="off"),))
    assert repr(s) == "Settings(env='prod', metrics_mode='every', spark_min_execution_ms=0)"
    assert Settings() == resolve_settings(environ={}, spark_conf={})
    assert Settings().section(SparkSettings) == SparkSettings()


def test_section_settings_are_frozen_like_the_rest() -> None:
    """Neither the flat attribute nor the section's field can be changed after creation."""
    s = resolve_settings(environ={}, spark_conf={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.metrics_mode = "every"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.section(MlflowSettings).metrics_mode = "every"  # type: ignore[misc]


def test_a_section_given_to_the_constructor_replaces_its_defaults() -> None:
    """Settings(sections=...) takes section instances; the ones not given keep their defaults; strangers are refused."""
    s = Settings(env="prod", sections=(SparkSettings(spark_progress_interval=0.0),))
    assert (s.spark_progress_interval, s.metrics_mode) == (0.0, "coalesce")
    assert s.section(MlflowSettings) == MlflowSettings()

    @dataclasses.dataclass(frozen=True)
    class Stranger:
        x: int = 1

    with pytest.raises(ConfigurationError, match="not a registered settings section"):
        Settings(sections=(Stranger(),))


SERVERSIDE = """
import pickle, sys
s = pickle.loads(sys.stdin.buffer.read())
print(s.metrics_mode, s.spark_min_execution_ms, type(s.sections[0]).__module__, s == pickle.loads(pickle.dumps(s)))
print(sorted(m for m in ("mlflow", "pyspark", "nats") if m in sys.modules))
"""


def test_pickled_settings_keep_their_sections_in_a_fresh_process() -> None:
    """As the Spark Connect listener is shipped to a server-side process: unpickled where nothing was imported
    before, the settings keep every section value, and loading them imports neither MLflow, PySpark nor NATS."""
    s = resolve_settings(environ={}, spark_conf={}, metrics_mode="off", spark_min_execution_ms=12, env="prod")
    assert pickle.loads(pickle.dumps(s)) == s  # noqa: S301 - our own bytes
    out = subprocess.run(
        [sys.executable, "-c", SERVERSIDE], input=pickle.dumps(s), capture_output=True, check=True
    ).stdout.decode()
    first, second = out.strip().splitlines()
    assert first == "off 12 databricks_nats.integrations.mlflow.settings True"
    assert second == "[]"


def test_registering_a_section_refuses_taken_names_and_mutable_classes() -> None:
    """A section may not reuse a core or section name, and must be a frozen dataclass of setting() fields."""

    @dataclasses.dataclass(frozen=True)
    class TakesCore:
        env: str = setting("x", str)

    @dataclasses.dataclass(frozen=True)
    class TakesMlflow:
        metrics_mode: str = setting("x", str)

    @dataclasses.dataclass
    class Mutable:
        knob: float = setting(1.0, positive(float))

    @dataclasses.dataclass(frozen=True)
    class Undeclared:
        knob: float = 1.0

    for kind in (TakesCore, TakesMlflow, Mutable, Undeclared):
        with pytest.raises(TypeError):
            register_section(kind)
    assert "knob" not in {name for name, *_ in describe()}


THIRD_PARTY = """
import dataclasses, json
from databricks_nats.settings import describe, positive, register_section, resolve_settings, setting

@register_section
@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    kafka_linger: float = setting(0.5, positive(float), doc="seconds a batch waits")

s = resolve_settings(spark_conf={}, kafka_linger="2")
listed = [d for d in describe() if d[0] == "kafka_linger"]
print(json.dumps([s.kafka_linger, s.section(KafkaSettings).kafka_linger, listed]))
"""


def test_any_integration_can_declare_a_section(tmp_path: Path) -> None:
    """A section declared outside the package registers itself on import; its setting resolves like any other."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_NATS_")}
    env.update(DATABRICKS_NATS_KAFKA_LINGER="3", HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", THIRD_PARTY], capture_output=True, text=True, check=True, cwd=tmp_path, env=env
    ).stdout
    assert (
        out.strip() == '[2.0, 2.0, [["kafka_linger", "DATABRICKS_NATS_KAFKA_LINGER", false, "seconds a batch waits"]]]'
    )


IMPORTS = """
import sys
import databricks_nats
from databricks_nats.settings import resolve_settings
s = resolve_settings(environ={}, spark_conf={}, metrics_mode="every", spark_min_execution_ms=5)
print(s.metrics_mode, s.spark_min_execution_ms)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "pyspark", "nats", "asyncio")))
print(sorted(m for m in sys.modules if m.startswith("databricks_nats.integrations.")
             and not hasattr(sys.modules[m], "__path__") and m.rsplit(".", 1)[1] not in ("settings", "sections")))
"""


def test_importing_the_package_registers_the_sections_and_stays_light(tmp_path: Path) -> None:
    """``import databricks_nats`` is enough for the section names to resolve, and it imports neither MLflow,
    PySpark, NATS nor asyncio, nor any integration module beyond the section declarations."""
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True, cwd=tmp_path)
    values, heavy, integrations = out.stdout.strip().splitlines()
    assert values == "every 5"
    assert heavy == "[]"
    assert integrations == "[]"  # packages and section declarations only: no hook, no listener
