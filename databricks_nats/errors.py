"""The exceptions databricks-nats raises.

Every error derives from one root, so ``except DatabricksNatsError`` catches them all (the tree test,
tests/test_error_tree.py, imports every module of the package and checks it)::

    DatabricksNatsError
    ├── ConfigurationError       a setting or argument is invalid; names it (also a ValueError)
    ├── SubjectError             a subject or subject token cannot be built from the given parts (also a ValueError)
    ├── PublishError             publishing failed; raised only when ``strict=True``
    │   └── FlushTimeout         flush() ran out of time with events still pending (also a TimeoutError)
    ├── StreamError              the stream cannot be read, provisioned or consumed (nats-py's failures, mapped)
    │   └── StreamMismatch       the existing stream differs from the wanted configuration
    ├── WaitTimeout              wait_for() / Subscription.next() saw no matching event in time (also a TimeoutError)
    ├── MlflowCompatError        this MLflow version lacks what the hook needs (integrations.mlflow)
    └── ParameterError           a Prefect parameter mapping names a missing event field (also a KeyError)

Outside ``strict`` mode nothing under ``PublishError`` ever reaches the caller: failures are logged,
counted and shown by ``stats()``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabricksNatsError",
    "FlushTimeout",
    "PublishError",
    "StreamError",
    "StreamMismatch",
    "SubjectError",
    "WaitTimeout",
]


class DatabricksNatsError(Exception):
    """Root of every error raised by databricks-nats."""


class ConfigurationError(DatabricksNatsError, ValueError):
    """A setting has an invalid value; the message names the setting (never a secret value)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        super().__init__(f"invalid setting {setting!r}: {problem}")


class SubjectError(DatabricksNatsError, ValueError):
    """A NATS subject cannot be built from the given parts."""


class PublishError(DatabricksNatsError):
    """Publishing an event failed (raised only in strict mode)."""


class FlushTimeout(PublishError, TimeoutError):
    """flush() returned with events still pending."""

    def __init__(self, pending: int, timeout: float) -> None:
        self.pending = pending
        super().__init__(f"{pending} event(s) still pending after flush timeout of {timeout:g}s")


class StreamError(DatabricksNatsError):
    """The JetStream stream cannot be provisioned or checked."""


class StreamMismatch(StreamError):
    """The existing stream's configuration differs from the wanted one."""

    def __init__(self, stream: str, differences: dict[str, tuple[object, object]]) -> None:
        self.stream = stream
        self.differences = differences
        diff = ", ".join(f"{k}: has {have!r}, want {want!r}" for k, (have, want) in differences.items())
        super().__init__(f"stream {stream!r} differs: {diff} (pass update=True to apply)")


class WaitTimeout(DatabricksNatsError, TimeoutError):
    """``wait_for`` saw no matching event before its timeout."""
