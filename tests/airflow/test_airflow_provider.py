"""Provider registration: ProvidersManager finds databricks-nats, MessageQueueTrigger resolves nats to our trigger."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from airflow.providers_manager import ProvidersManager

import databricks_nats
from databricks_nats.integrations.airflow import NatsEventTrigger, NatsMessageQueueProvider

QUEUE_CLASS = "databricks_nats.integrations.airflow.queues.NatsMessageQueueProvider"


def _message_queue_trigger(**kwargs: Any) -> Any:
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # queue= is deprecated upstream in favour of scheme=; both must work
        return MessageQueueTrigger(**kwargs)


def test_providers_manager_discovers_the_nats_queue() -> None:
    """Airflow's ProvidersManager lists databricks-nats (from the entry point) and its nats message queue."""
    manager = ProvidersManager()
    manager.initialize_providers_queues()
    assert "databricks-nats" in manager.providers
    info = manager.providers["databricks-nats"]
    assert info.version == databricks_nats.__version__
    assert info.data["package-name"] == "databricks-nats"
    assert QUEUE_CLASS in manager.queue_class_names


def test_message_queue_trigger_with_scheme_resolves_to_ours() -> None:
    """MessageQueueTrigger(scheme="nats", ...) builds a NatsEventTrigger and stores our class path and kwargs."""
    mqt = _message_queue_trigger(
        scheme="nats", event_type="mlflow.model.alias_set", match={"alias": "champion"}, workspace="w", env="prod"
    )
    assert isinstance(mqt.trigger, NatsEventTrigger)
    direct = NatsEventTrigger(
        event_type="mlflow.model.alias_set", match={"alias": "champion"}, workspace="w", env="prod"
    )
    assert mqt.serialize() == direct.serialize()


def test_message_queue_trigger_with_queue_uri_resolves_to_ours() -> None:
    """A nats:// queue URI gives servers, event type and namespace; keyword arguments win over the URI."""
    mqt = _message_queue_trigger(
        queue="nats://nats-1:4222,nats-2:4222/mlflow.model.alias_set?workspace=123&env=prod&durable=x",
        durable="deploy-champion",
        match={"name": "main.ml.churn"},
    )
    assert isinstance(mqt.trigger, NatsEventTrigger)
    _, kwargs = mqt.serialize()
    assert kwargs["url"] == "nats://nats-1:4222,nats://nats-2:4222"
    assert (kwargs["event_type"], kwargs["workspace"], kwargs["env"]) == ("mlflow.model.alias_set", "123", "prod")
    assert kwargs["durable"] == "deploy-champion"
    assert NatsMessageQueueProvider().queue_matches("nats://x:4222")
    assert not NatsMessageQueueProvider().queue_matches("kafka://x:9092/topic")


def test_message_queue_trigger_runs_our_trigger(live: Any, consumer_ready: Any) -> None:
    """MessageQueueTrigger(scheme="nats").run() yields the CloudEvent published to a real server."""
    mqt = _message_queue_trigger(
        scheme="nats",
        event_type="mlflow.model.alias_set",
        url=",".join(live.url),
        workspace=live.workspace,
        env=live.env,
    )

    async def main() -> dict[str, Any]:
        agen = mqt.run()
        first = asyncio.ensure_future(asyncio.wait_for(agen.__anext__(), 30))
        await consumer_ready(live, mqt.trigger.durable)
        event = databricks_nats.emit("mlflow.model.alias_set", {"name": "m", "alias": "champion", "version": "3"})
        assert event is not None
        assert databricks_nats.flush(timeout=10).ok
        payload = (await first).payload
        await agen.aclose()
        assert payload["id"] == event.id
        return payload  # type: ignore[no-any-return]

    assert asyncio.run(main())["data"]["version"] == "3"


def test_provider_registers_the_nats_connection_type_and_the_config_section() -> None:
    """ProvidersManager knows the nats connection type (NatsHook) and the [databricks_nats] config section, not the
    listener plugin (the entry point brings that); the provider information is valid against Airflow's schema."""
    import json
    from importlib.resources import files

    import jsonschema

    from databricks_nats.integrations.airflow import NatsHook, get_provider_info

    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    runtime = ProvidersManagerTaskRuntime()
    hook = runtime.hooks["nats"]
    assert hook is not None
    assert hook.hook_class_name == f"{NatsHook.__module__}.NatsHook"
    manager = ProvidersManager()
    manager.initialize_providers_plugins()
    assert [p for p in manager.plugins if p.provider_name == "databricks-nats"] == []
    manager.initialize_providers_configuration()
    options = dict(manager.provider_configs)["databricks-nats"]["databricks_nats"]["options"]
    assert (options["listener"]["default"], options["flush_timeout"]["default"]) == ("False", "2.0")


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_listener_plugin_is_loaded_once_from_the_entry_point(airflow_home: Path, lazy: str) -> None:
    """Airflow's plugins manager loads NatsListenerPlugin (through the airflow.plugins entry point) with lazy
    provider discovery (Airflow's default) and without, exactly once and without an import error, and hands the
    listener module to the listener manager."""
    probe = (
        "import json\n"
        "from airflow import plugins_manager as pm\n"
        "from airflow.listeners.listener import get_listener_manager\n"
        "plugins, errors = pm._get_plugins()\n"
        "listeners = [getattr(p, '__name__', '') for p in get_listener_manager().pm.get_plugins()]\n"
        "print(json.dumps([[p.name for p in plugins], errors, listeners]))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names, errors, listeners = json.loads(result.stdout.strip().splitlines()[-1])
    assert names.count("databricks_nats") == 1
    assert errors == {}
    assert "databricks_nats.integrations.airflow.listener" in listeners


def test_listener_is_off_unless_switched_on(monkeypatch: Any) -> None:
    """Off by default; [databricks_nats] listener (AIRFLOW__DATABRICKS_NATS__LISTENER) switches it on, and
    DATABRICKS_NATS_AIRFLOW_LISTENER wins over it when set."""
    from databricks_nats.integrations.airflow import listener

    def enabled(**env: str) -> bool:
        for name in ("DATABRICKS_NATS_AIRFLOW_LISTENER", "AIRFLOW__DATABRICKS_NATS__LISTENER"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        listener.enabled.cache_clear()
        try:
            return listener.enabled()
        finally:
            listener.enabled.cache_clear()

    assert not enabled()
    assert enabled(AIRFLOW__DATABRICKS_NATS__LISTENER="True")
    assert enabled(DATABRICKS_NATS_AIRFLOW_LISTENER="true")
    assert not enabled(DATABRICKS_NATS_AIRFLOW_LISTENER="false", AIRFLOW__DATABRICKS_NATS__LISTENER="True")
