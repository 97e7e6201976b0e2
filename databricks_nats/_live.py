"""Every client whose publisher runs: flushed and closed at interpreter exit, forgotten in a forked child.

``Client`` adds itself when it starts a publisher and removes itself when it closes; one dropped without
``close()`` stays here, so its events are still flushed at exit. In a forked child the parent's publisher
threads did not survive: each client drops its publisher (``_forget_after_fork``) and starts a new one lazily.
Standard library only.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Protocol

from databricks_nats._exit import at_exit

__all__ = ["add", "discard", "live_clients"]

log = logging.getLogger("databricks_nats")


class Client(Protocol):
    """What this registry needs of ``databricks_nats.Client`` (which imports this module)."""

    @property
    def settings(self) -> Any: ...

    def close(self, timeout: float = ...) -> Any: ...

    def _forget_after_fork(self) -> None: ...


_lock = threading.Lock()
_live: dict[int, Client] = {}  # id -> client, oldest first


def add(client: Client) -> None:
    with _lock:
        _live[id(client)] = client


def discard(client: Client) -> None:
    with _lock:
        _live.pop(id(client), None)


def live_clients() -> list[Client]:
    """Every client whose publisher runs, oldest first."""
    with _lock:
        return list(_live.values())


def _close_all() -> None:
    for client in live_clients():
        try:
            client.close(timeout=client.settings.exit_flush_timeout)
        except Exception as e:  # noqa: BLE001 - one client's failure must not cost the others their events
            log.warning("databricks-nats: exit flush failed: %s: %s", type(e).__name__, e)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    clients = list(_live.values())
    _live.clear()
    for client in clients:
        client._forget_after_fork()


at_exit(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
