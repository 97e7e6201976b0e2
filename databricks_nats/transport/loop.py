"""The one loop runner: coroutines run from sync code, on a loop thread of their own.

* ``LoopThread`` — a daemon thread running one asyncio loop for as long as it lives, for state that spans
  calls (a subscription's connection): ``submit(coro)`` returns a ``concurrent.futures.Future``,
  ``run(coro, timeout)`` waits for the result, ``stop()`` cancels what still runs there and ends the thread.
* ``blocking(fn_async, name)`` — the sync twin of a coroutine function: same signature, runs it with ``run_sync``.
* ``run_sync(coro, timeout)`` — one coroutine to completion on a fresh loop, like ``asyncio.run``, also when
  the caller is itself inside a running loop (a notebook, an Airflow trigger): then on a ``LoopThread``.

A timeout cancels the coroutine and raises ``TimeoutError`` (``asyncio.TimeoutError`` on Python 3.10).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["LoopThread", "blocking", "run_sync"]

T = TypeVar("T")
P = ParamSpec("P")


class LoopThread:
    """A daemon thread with its own asyncio loop, started on first use (and again after ``stop``)."""

    def __init__(self, name: str = "databricks-nats-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; the future resolves in any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._running())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result; not from the loop's own thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self.name}: run() called from the loop's own thread would wait forever")
        return self.submit(asyncio.wait_for(coro, timeout)).result()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the tasks still on the loop, wait for them to finish, and end the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or loop.is_closed():
            return
        if thread is threading.current_thread():
            loop.stop()  # called from a task on this loop: no waiting here; the loop closes when it returns
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):  # a task ignoring cancellation
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` to completion on a fresh loop and return its result, from any thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asyncio.wait_for(coro, timeout))
    with LoopThread("databricks-nats-run-sync") as thread:
        return thread.run(coro, timeout)


def blocking(function: Callable[P, Coroutine[Any, Any, T]], name: str) -> Callable[P, T]:
    """The sync twin ``name`` of the coroutine function ``function``: same parameters and documentation,
    runs it to completion with ``run_sync`` (so one implementation serves ``x`` and ``x_async``)."""

    @functools.wraps(function)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(function(*args, **kwargs))

    twin.__name__ = name
    twin.__qualname__ = function.__qualname__.removesuffix(function.__name__) + name
    return twin
