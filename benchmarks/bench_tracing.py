"""MLflow tracing overhead: a traced function's cost with the hook / without, side by side in one run.

Run: ``python -m benchmarks.bench_tracing [--quick]``. One real nats-server (JetStream) and one sqlite MLflow
store on tmpfs when the machine has one. The traced function has three spans (the root, a nested retriever, an
LLM span recording token usage), like a small RAG call. Two export modes in turn, each after
``mlflow.tracing.reset()``: MLflow's default, where its worker threads store each trace (spans and trace info
in sqlite) and the hook announces it there (``mlflow.trace.logged``), so the caller waits for none of it; and
inline export (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false``), where all of it happens inside the call. Blocks
of calls alternate without the hook and with it (``uninstall()`` takes the wrappers off the cached store:
"without" is MLflow alone), in pairs of alternating order (off/on, then on/off) so the growth of the sqlite
tables and machine drift favour neither side. The ratio is the median of the per-pair ratios; the medians of
per-call times are shown beside it. Two clocks: wall time, and the process's CPU time (every thread: MLflow's,
the publisher's), which other processes on a busy machine disturb far less.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from typing import Any

from benchmarks._common import machine, median, print_table, ratio, verdict, write_results

TARGET = 1.05
PHASES = (("async", "every"), ("async", "sample:0.1"), ("sync", "every"))  # (MLflow's export, traces_mode)
MEASURES = {  # (export, traces_mode, clock): what the row says
    ("async", "every", "wall"): "traced call, MLflow's default async export: the caller's wall time",
    ("async", "every", "cpu"): "the same, process CPU (calls + export + publishing, every thread)",
    ("async", "sample:0.1", "wall"): "the same with traces_mode=sample:0.1: the caller's wall time",
    ("async", "sample:0.1", "cpu"): "the same, process CPU",
    ("sync", "every", "wall"): "traced call, export inline (async logging off): wall time",
    ("sync", "every", "cpu"): "the same, process CPU (every thread)",
}


def describe_cost(answer: Any) -> dict[str, float]:
    """The hook's own work for one finished trace (what ``start_trace`` hands it), timed call by call: an
    announced trace (described and handed to the publisher) and one over the per-experiment rate cap (counted)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _get_store

    import databricks_nats.integrations.mlflow as hook
    from databricks_nats.integrations.mlflow import genai

    h, store = hook.install(), _get_store()
    answer("sample")
    info = mlflow.get_trace(mlflow.get_last_active_trace_id()).info
    announced: list[float] = []
    counted: list[float] = []
    for _ in range(5):  # five fresh seconds: the first calls of each are announced, the rest over the cap counted
        second = int(time.monotonic())
        while int(time.monotonic()) == second:
            time.sleep(0.001)
        for i in range(genai.TRACES_PER_SECOND + 200):
            t0 = time.perf_counter()
            genai.TRACKING_CALLS[0][1](h, store, info, info)
            (announced if i < genai.TRACES_PER_SECOND else counted).append((time.perf_counter() - t0) * 1e6)
    return {"announced": median(announced), "over the rate cap (counted)": median(counted)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    block, pairs = (10, 6) if args.quick else (20, 24)
    warnings.filterwarnings("ignore")

    import mlflow
    from mlflow.tracing.constant import SpanAttributeKey

    import databricks_nats
    import databricks_nats.integrations.mlflow as hook
    from databricks_nats.testing import NatsServer

    @mlflow.trace(span_type="RETRIEVER")
    def retrieve(q: str) -> list[str]:
        return [q + "-doc1", q + "-doc2"]

    @mlflow.trace
    def answer(q: str) -> str:
        docs = retrieve(q)
        with mlflow.start_span("llm", span_type="LLM") as span:
            span.set_inputs({"prompt": q, "docs": docs})
            span.set_attribute(
                SpanAttributeKey.CHAT_USAGE, {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48}
            )
            span.set_outputs("an answer")
        return "an answer"

    tmp = tempfile.mkdtemp(prefix="bench-tracing-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("bench-tracing")
    results: dict[tuple[str, str, str], dict[str, list[float]]] = {m: {"off": [], "on": []} for m in MEASURES}
    with NatsServer() as srv:
        settings = {"url": srv.url, "spool_dir": os.path.join(tmp, "spool"), "workspace": "bench", "env": "tracing"}

        def timed_block(hooked: bool, inline: bool) -> tuple[float, float]:
            (hook.install if hooked else hook.uninstall)()
            answer("warm")  # the first call after a switch re-wraps the store
            mlflow.flush_trace_async_logging()
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(block):
                answer(f"q{i}")
            wall = time.perf_counter() - t0
            if not inline:
                mlflow.flush_trace_async_logging()  # the export's CPU is counted, its waiting is not timed
            return wall / block * 1e6, (time.process_time() - c0) / block * 1e6

        acked = 0  # each configure() makes a new client: count each one's acked events before it goes

        def configure(traces_mode: str) -> int:
            databricks_nats.flush(30)
            done = int(databricks_nats.stats().get("acked", 0))
            databricks_nats.configure(**settings, traces_mode=traces_mode)
            return done

        for mode, traces_mode in PHASES:
            acked += configure(traces_mode)
            os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = str(mode == "async").lower()
            mlflow.tracing.reset()  # MLflow builds its exporter again, reading the switch
            for i in range(3 * block):  # warm-up: connection pool, caches, the export threads
                answer(f"w{i}")
            mlflow.flush_trace_async_logging()
            for p in range(pairs):
                for side in ("off", "on") if p % 2 == 0 else ("on", "off"):
                    wall, cpu = timed_block(side == "on", mode == "sync")
                    results[(mode, traces_mode, "wall")][side].append(wall)
                    results[(mode, traces_mode, "cpu")][side].append(cpu)
        acked += configure("every")
        describe = describe_cost(answer)
        hook.uninstall()
        databricks_nats.flush(30)
        acked += int(databricks_nats.stats()["acked"])
        databricks_nats.shutdown()

    rows = []
    out: dict[str, Any] = {"machine": machine(), "block": block, "pairs": pairs, "acked_events": acked}
    out["results"], out["summary"] = {}, []
    for measure, label in MEASURES.items():
        on_us, off_us = results[measure]["on"], results[measure]["off"]
        off, on = median(off_us), median(on_us)
        r = median(ratio(a, b) for a, b in zip(on_us, off_us, strict=True))
        rows.append([label, f"{off:.0f} us", f"{on:.0f} us", f"{r:.3f}", f"<= {TARGET}", verdict(r <= TARGET)])
        key = "_".join(measure)
        out["results"][key] = {"without_us": off, "with_us": on, "ratio": r, "target": TARGET}
        out["results"][key]["raw"] = results[measure]
        met = r <= TARGET
        out["summary"].append(
            {"id": "P10", "measure": label, "value": f"{r:.3f}", "target": f"<= {TARGET}", "met": met}
        )
    out["describe_us"] = describe
    for path, us in describe.items():
        rows.append([f"the hook's own work per trace, {path}", "-", f"{us:.1f} us", "-", "-", "-"])
    print_table(
        ["measure", "without hook", "with hook", "ratio", "target", "result"],
        rows,
        title=f"bench_tracing ({pairs} pairs of {block}-trace blocks, {acked} events acked)",
    )
    print(f"results: {write_results('bench_tracing' + ('_quick' if args.quick else ''), out)}")


if __name__ == "__main__":
    main()
