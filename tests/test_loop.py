"""The one loop runner: LoopThread and run_sync, from plain threads and from inside a running loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from databricks_nats.transport.loop import LoopThread, run_sync


async def _thread_name() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


async def _fail() -> None:
    raise KeyError("boom")


def test_run_sync_outside_a_loop_returns_the_result_and_raises_the_error() -> None:
    assert run_sync(_thread_name(), 5.0) == threading.current_thread().name
    with pytest.raises(KeyError, match="boom"):
        run_sync(_fail())


def test_run_sync_inside_a_running_loop_runs_on_another_thread() -> None:
    async def caller() -> str:
        return run_sync(_thread_name(), 5.0)

    assert asyncio.run(caller()) == "databricks-nats-run-sync"


def test_run_sync_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(asyncio.TimeoutError):
        run_sync(forever(), 0.05)
    assert cancelled.is_set()


def test_loop_thread_keeps_one_loop_across_calls_and_stop_cancels_its_tasks() -> None:
    thread = LoopThread("test-loop")
    loops = {thread.run(_running_loop_id()) for _ in range(3)}
    assert len(loops) == 1
    cancelled = threading.Event()
    started = threading.Event()

    async def background() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    future = thread.submit(background())
    assert started.wait(5.0)
    thread.stop()
    assert cancelled.is_set()
    assert future.cancelled()
    assert not any(t.name == "test-loop" for t in threading.enumerate())
    assert thread.run(_thread_name()) == "test-loop"  # starts again on use
    thread.stop()


def test_loop_thread_refuses_to_wait_on_itself() -> None:
    with LoopThread("test-self") as thread:

        async def inner() -> None:
            thread.run(_thread_name())

        with pytest.raises(RuntimeError, match="own thread"):
            thread.run(inner())


async def _running_loop_id() -> int:
    return id(asyncio.get_running_loop())


async def _scaled(value: int, *, factor: int = 2) -> int:
    """Doubles by default."""
    await asyncio.sleep(0)
    return value * factor


def test_blocking_is_the_sync_twin_with_the_same_signature() -> None:
    import inspect

    from databricks_nats.transport.loop import blocking

    scaled = blocking(_scaled, "scaled")
    assert scaled(3) == 6
    assert scaled(3, factor=5) == 15
    assert scaled.__name__ == "scaled"
    assert scaled.__doc__ == "Doubles by default."
    assert inspect.signature(scaled) == inspect.signature(_scaled)
