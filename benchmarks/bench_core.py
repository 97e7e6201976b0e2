"""Core benchmark: emit() caller cost, and library vs raw nats-py throughput (JetStream and core NATS).

    python -m benchmarks.bench_core            # full run (~1-3 minutes)
    python -m benchmarks.bench_core --quick    # smaller N, fewer repetitions
    python -m benchmarks.bench_core --profile  # also profile the publisher's worker thread (pyinstrument)

Everything runs in one process against one real ``nats-server`` (JetStream, file storage) started by
``databricks_nats.testing.NatsServer``:

1. emit() caller cost: ``perf_counter_ns`` around every ``databricks_nats.emit`` call (connected, jetstream
   mode, worker running), in batches; median and p99 per call. Target: median <= 10 us.
2. Acked JetStream throughput: emit N + flush through the library vs raw ``js.publish_async`` with
   ``Nats-Msg-Id`` headers + ``publish_async_completed``. Two raw baselines: *pre-built* publishes one
   ready-made envelope (the library's own bytes for DATA) N times, only the message id changes — the
   transport alone; *hand-written* is what a user would write with nats-py to publish the same events:
   per event a uuid4 id, the time, the same CloudEvents envelope dict with DATA and the context,
   ``json.dumps``, the same headers (see ``handwritten_event``). Each side writes to its own file-storage
   stream of identical configuration, purged before every run; the order of the sides rotates per
   repetition. Target: lib / pre-built >= 0.8.
3. Core throughput: the library in ``mode="core"`` (emit N + flush) vs raw ``nc.publish`` N + ``nc.flush``
   with the same two baselines (and a header-less pre-built run, for information).
   Target: lib / hand-written >= 0.8 (core publishing costs less than encoding an envelope, so the
   pre-built ratio measures the transport against no work at all; it is reported too).

Results: a table on stdout and ``benchmarks/results/bench_core.json`` (``bench_core_quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

import nats

import databricks_nats as dn
from benchmarks._common import median, percentile, print_table, ratio, verdict, write_results
from databricks_nats import _api
from databricks_nats.model.events import CE_CONTENT_TYPE
from databricks_nats.testing import NatsServer, capture

WORKSPACE = "bench"
EVENT_TYPE = "mlflow.run.metrics"
# A small metric-like event (one training step's metrics).
DATA: dict[str, Any] = {
    "experiment_id": "1234567890",
    "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "metrics": {"loss": 0.4231, "accuracy": 0.8812, "lr": 0.0003},
    "points": 3,
    "final": False,
}

EMIT_TARGET_US = 10.0
RATIO_TARGET = 1.0  # issue 14: the library is not slower than hand-written nats-py (JetStream: than pre-built)


# ---- helpers ---------------------------------------------------------------------------------------


def _configure(url: str, env: str, mode: str) -> str:
    spool = tempfile.mkdtemp(prefix="dbx-nats-bench-spool-")
    dn.configure(url=url, spool_dir=spool, workspace=WORKSPACE, env=env, mode=mode)
    return spool


def _warm_up_library() -> None:
    """Wait for the connection (and the stream check) with one acknowledged event."""
    dn.emit(EVENT_TYPE, DATA)
    res = dn.flush(timeout=30)
    if not res.ok:
        raise RuntimeError(f"library warm-up flush failed: {res}, stats={dn.stats()}")


def _sample_subject_payload(env: str) -> tuple[str, bytes]:
    """The subject and the encoded envelope the library produces for DATA (for the raw side's sizes)."""
    with capture(workspace=WORKSPACE, env=env) as events:
        dn.emit(EVENT_TYPE, DATA)
    if len(events) != 1:
        raise RuntimeError("could not capture a sample event")
    return events[0].subject, events[0].payload


def _msg_id_prefix() -> str:
    return uuid.uuid4().hex[:27]  # + 9 digits: 36 characters, the length of the library's UUIDv7 ids


def handwritten_event(subject: str, env: str) -> Any:
    """A function returning (id, payload) of one new event, built the way a user would with nats-py alone.

    The same CloudEvents envelope the library sends (same fields, DATA plus the context), with a fresh
    uuid4 id and the current time, serialised with ``json.dumps`` (compact, so the sizes match).
    """
    fixed = {
        "source": f"/databricks/{WORKSPACE}/{env}/mlflow",
        "type": f"databricks.{EVENT_TYPE}",
        "subject": subject,
        "datacontenttype": "application/json",
        "dataschema": f"urn:databricks-nats:schema:{EVENT_TYPE}:1",
        "workspace": WORKSPACE,
        "env": env,
    }
    context = {"workspace": WORKSPACE, "env": env}

    def build() -> tuple[str, bytes]:
        eid = str(uuid.uuid4())
        envelope = {
            "specversion": "1.0",
            "id": eid,
            **fixed,
            "time": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "data": {**DATA, "context": context},
        }
        return eid, json.dumps(envelope, separators=(",", ":")).encode()

    return build


async def _admin(url: str, fn: Any) -> Any:
    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def purge(url: str, stream: str) -> None:
    asyncio.run(_admin(url, lambda js: js.purge_stream(stream)))


def stored(url: str, stream: str) -> int:
    async def count(js: Any) -> int:
        info = await js.stream_info(stream)
        return int(info.state.messages)

    return int(asyncio.run(_admin(url, count)))


def stream_name(env: str) -> str:
    return dn.Settings(workspace=WORKSPACE, env=env).stream_name


# ---- 1. emit() caller cost ----------------------------------------------------------------------


def bench_emit_cost(url: str, batches: int, per_batch: int) -> dict[str, Any]:
    spool = _configure(url, "emitcost", "jetstream")
    try:
        _warm_up_library()
        pc = time.perf_counter_ns
        overhead = []
        for _ in range(10_000):
            t0 = pc()
            overhead.append(pc() - t0)
        timer_ns = median(overhead)
        emit = dn.emit
        data = DATA
        all_samples: list[int] = []
        batch_rows = []
        for b in range(batches):
            samples = [0] * per_batch
            gc.collect()
            for i in range(per_batch):
                t0 = pc()
                emit(EVENT_TYPE, data)
                samples[i] = pc() - t0
            res = dn.flush(timeout=120)  # not timed: the next batch starts with an idle worker
            if not res.ok:
                raise RuntimeError(f"emit-cost flush failed: {res}")
            batch_rows.append(
                {
                    "batch": b,
                    "median_us": median(samples) / 1000,
                    "p99_us": percentile(samples, 99) / 1000,
                    "max_us": max(samples) / 1000,
                }
            )
            all_samples.extend(samples)
        st = dn.stats()
    finally:
        dn.shutdown()
        shutil.rmtree(spool, ignore_errors=True)
    med = median(all_samples) / 1000
    return {
        "batches": batches,
        "calls_per_batch": per_batch,
        "timer_overhead_ns": timer_ns,
        "median_us": med,
        "p99_us": percentile(all_samples, 99) / 1000,
        "p999_us": percentile(all_samples, 99.9) / 1000,
        "median_of_batch_medians_us": median(r["median_us"] for r in batch_rows),
        "per_batch": batch_rows,
        "dropped": st.get("dropped"),
        "target_us": EMIT_TARGET_US,
        "met": med <= EMIT_TARGET_US,
    }


# ---- 2./3. throughput -----------------------------------------------------------------------------


def lib_run(url: str, n: int, env: str, mode: str, stream: str | None) -> dict[str, Any]:
    """Emit n events then flush through the library; events/s over emit+flush."""
    spool = _configure(url, env, mode)
    try:
        _warm_up_library()
        if stream:
            purge(url, stream)
        base = dn.stats()
        emit = dn.emit
        data = DATA
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(n):
            emit(EVENT_TYPE, data)
        emitted = time.perf_counter()
        res = dn.flush(timeout=300)
        t1 = time.perf_counter()
        st = dn.stats()
    finally:
        dn.shutdown()
        shutil.rmtree(spool, ignore_errors=True)
    if not res.ok:
        raise RuntimeError(f"library flush timed out ({res}); stats={st}")
    out = {
        "side": "lib",
        "n": n,
        "seconds": t1 - t0,
        "emit_seconds": emitted - t0,
        "events_per_s": n / (t1 - t0),
        "published": st["published"] - base["published"],
        "acked": st["acked"] - base["acked"],
        "retried": st["retried"] - base["retried"],
        "duplicates": st["duplicates"] - base["duplicates"],
        "dropped": st["dropped"],
        "errors": st["errors"],
    }
    if stream:
        out["stored"] = stored(url, stream)
    return out


async def _raw_js(url: str, n: int, subject: str, payload: bytes, stream: str, build: Any) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        # warm-up: the async reply subscription and the stream path
        await js.publish_async(
            subject, payload, headers={"Nats-Msg-Id": f"{_msg_id_prefix()}warm-up", "Content-Type": CE_CONTENT_TYPE}
        )
        await js.publish_async_completed()
        await js.purge_stream(stream)
        futures = []
        append = futures.append
        prefix = _msg_id_prefix()
        t0 = time.perf_counter()
        if build is None:  # pre-built: the same payload, a fresh message id
            for i in range(n):
                append(
                    await js.publish_async(
                        subject, payload, headers={"Nats-Msg-Id": f"{prefix}{i:09d}", "Content-Type": CE_CONTENT_TYPE}
                    )
                )
        else:  # hand-written: each event built and serialised here
            for _ in range(n):
                msg_id, body = build()
                append(
                    await js.publish_async(
                        subject, body, headers={"Nats-Msg-Id": msg_id, "Content-Type": CE_CONTENT_TYPE}
                    )
                )
        await js.publish_async_completed()
        t1 = time.perf_counter()
        failed = sum(1 for f in futures if f.cancelled() or f.exception() is not None)
        duplicates = sum(1 for f in futures if not f.cancelled() and f.exception() is None and f.result().duplicate)
    finally:
        await nc.close()
    return {
        "side": "raw" if build is None else "raw_hand",
        "n": n,
        "seconds": t1 - t0,
        "events_per_s": n / (t1 - t0),
        "failed": failed,
        "duplicates": duplicates,
    }


def raw_js_run(url: str, n: int, subject: str, payload: bytes, stream: str, build: Any = None) -> dict[str, Any]:
    gc.collect()
    out = asyncio.run(_raw_js(url, n, subject, payload, stream, build))
    out["stored"] = stored(url, stream)
    return out


async def _raw_core(url: str, n: int, subject: str, payload: bytes, headers: bool, build: Any) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        await nc.publish(subject, payload)
        await nc.flush()
        prefix = _msg_id_prefix()
        t0 = time.perf_counter()
        if build is not None:  # hand-written: each event built and serialised here
            for _ in range(n):
                msg_id, body = build()
                await nc.publish(subject, body, headers={"Nats-Msg-Id": msg_id, "Content-Type": CE_CONTENT_TYPE})
        elif headers:  # pre-built: the same payload, a fresh message id
            for i in range(n):
                await nc.publish(
                    subject, payload, headers={"Nats-Msg-Id": f"{prefix}{i:09d}", "Content-Type": CE_CONTENT_TYPE}
                )
        else:
            for _ in range(n):
                await nc.publish(subject, payload)
        await nc.flush(timeout=60)
        t1 = time.perf_counter()
    finally:
        await nc.close()
    side = "raw_noheaders" if not headers else "raw" if build is None else "raw_hand"
    return {"side": side, "n": n, "seconds": t1 - t0, "events_per_s": n / (t1 - t0)}


def raw_core_run(
    url: str, n: int, subject: str, payload: bytes, headers: bool = True, build: Any = None
) -> dict[str, Any]:
    gc.collect()
    return asyncio.run(_raw_core(url, n, subject, payload, headers, build))


def _summary(runs: list[dict[str, Any]], side: str) -> dict[str, float]:
    eps = [r["events_per_s"] for r in runs if r["side"] == side]
    return {
        "median_events_per_s": median(eps),
        "min_events_per_s": min(eps),
        "max_events_per_s": max(eps),
        "runs": len(eps),
    }


def _rotate(sides: tuple[str, ...], i: int) -> tuple[str, ...]:
    """The order of the sides in repetition i: each side goes first, middle and last in turn."""
    k = i % len(sides)
    return sides[k:] + sides[:k]


def bench_jetstream(url: str, n: int, reps: int) -> dict[str, Any]:
    lib_env, raw_env = "libjs", "rawjs"
    for env in (lib_env, raw_env):
        dn.ensure_stream(url=url, workspace=WORKSPACE, env=env)
    lib_stream, raw_stream = stream_name(lib_env), stream_name(raw_env)
    subject, payload = _sample_subject_payload(raw_env)
    build = handwritten_event(subject, raw_env)
    runs: list[dict[str, Any]] = []
    for i in range(reps):
        for side in _rotate(("lib", "raw", "raw_hand"), i):
            if side == "lib":
                r = lib_run(url, n, lib_env, "jetstream", lib_stream)
            else:
                r = raw_js_run(url, n, subject, payload, raw_stream, build if side == "raw_hand" else None)
            r["rep"] = i
            runs.append(r)
            print(
                f"  jetstream rep {i} {side:>8}: {r['events_per_s']:>10,.0f} ev/s  stored={r.get('stored')}",
                flush=True,
            )
    lib, raw, hand = _summary(runs, "lib"), _summary(runs, "raw"), _summary(runs, "raw_hand")
    r_ = ratio(lib["median_events_per_s"], raw["median_events_per_s"])
    problems = [r for r in runs if r.get("stored") != n or r.get("failed") or r.get("dropped")]
    return {
        "n": n,
        "payload_bytes": len(payload),
        "subject": subject,
        "streams": [lib_stream, raw_stream],
        "lib": lib,
        "raw": raw,
        "raw_hand": hand,
        "ratio": r_,
        "ratio_vs_hand": ratio(lib["median_events_per_s"], hand["median_events_per_s"]),
        "target": RATIO_TARGET,
        "met": r_ >= RATIO_TARGET,
        "integrity_ok": not problems,
        "runs": runs,
    }


def bench_core_mode(url: str, n: int, reps: int) -> dict[str, Any]:
    lib_env = "libcore"
    subject, payload = _sample_subject_payload("rawcore")  # no stream listens on either namespace
    build = handwritten_event(subject, "rawcore")
    runs: list[dict[str, Any]] = []
    for i in range(reps):
        for side in _rotate(("lib", "raw_hand", "raw"), i):
            if side == "lib":
                r = lib_run(url, n, lib_env, "core", None)
            else:
                r = raw_core_run(url, n, subject, payload, build=build if side == "raw_hand" else None)
            r["rep"] = i
            runs.append(r)
            print(f"  core      rep {i} {side:>8}: {r['events_per_s']:>10,.0f} ev/s", flush=True)
        r = raw_core_run(url, n, subject, payload, headers=False)
        r["rep"] = i
        runs.append(r)
    lib, raw, hand = _summary(runs, "lib"), _summary(runs, "raw"), _summary(runs, "raw_hand")
    bare = _summary(runs, "raw_noheaders")
    r_ = ratio(lib["median_events_per_s"], hand["median_events_per_s"])
    return {
        "n": n,
        "payload_bytes": len(payload),
        "lib": lib,
        "raw_hand": hand,
        "raw": raw,
        "raw_noheaders": bare,
        "ratio": r_,
        "ratio_vs_prebuilt": ratio(lib["median_events_per_s"], raw["median_events_per_s"]),
        "ratio_vs_noheaders": ratio(lib["median_events_per_s"], bare["median_events_per_s"]),
        "target": RATIO_TARGET,
        "met": r_ >= RATIO_TARGET,
        "runs": runs,
    }


# ---- optional: profile the worker thread --------------------------------------------------------


def _hot_spots(profiler: Any, top: int = 15) -> str:
    """Flat tables from a pyinstrument session: self time by function, and inclusive time of library code."""
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return "(no samples)\n"
    total = root.time or 1.0
    self_t: dict[str, float] = {}
    incl_t: dict[str, float] = {}

    def key(f: Any) -> str:
        return f"{f.function}  {f.file_path_short}:{f.line_no}"

    def walk(f: Any, open_lib: frozenset[str]) -> None:
        if f.is_synthetic:  # "[self]"/"[await]" leaves: already counted as their parent's self time
            return
        k = key(f)
        real = sum(c.time for c in f.children if not c.is_synthetic)
        self_t[k] = self_t.get(k, 0.0) + max(0.0, f.time - real)
        is_lib = "databricks_nats" in (f.file_path or "")
        if is_lib and k not in open_lib:  # count a recursive function once per stack
            incl_t[k] = incl_t.get(k, 0.0) + f.time
            open_lib = open_lib | {k}
        for c in f.children:
            walk(c, open_lib)

    walk(root, frozenset())
    lines = [f"top self time (of {total:.2f}s sampled wall time in this thread):"]
    for k, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {v:7.3f}s {100 * v / total:5.1f}%  {k}")
    lines.append("library functions, inclusive time:")
    for k, v in sorted(incl_t.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {v:7.3f}s {100 * v / total:5.1f}%  {k}")
    return "\n".join(lines) + "\n"


def profile_worker(url: str, n: int, mode: str = "jetstream", interval: float = 0.0005) -> str:
    """Run one library run (JetStream or core) with pyinstrument attached to the publisher's worker thread."""
    from pyinstrument import Profiler

    env = "libjs" if mode == "jetstream" else "libcore"
    if mode == "jetstream":
        dn.ensure_stream(url=url, workspace=WORKSPACE, env=env)
    spool = _configure(url, env, mode)
    worker_prof = Profiler(interval=interval, async_mode="disabled")
    caller_prof = Profiler(interval=interval, async_mode="disabled")
    try:
        _warm_up_library()
        if mode == "jetstream":
            purge(url, stream_name(env))
        loop = getattr(_api._current(), "_loop", None)  # the publisher's private event loop
        if loop is None:
            raise RuntimeError("cannot find the publisher's event loop to attach the profiler to")

        def in_worker(fn: Any) -> None:
            done = threading.Event()

            def run() -> None:
                fn()
                done.set()

            loop.call_soon_threadsafe(run)
            done.wait(10)

        in_worker(worker_prof.start)
        caller_prof.start()
        t0 = time.perf_counter()
        for _ in range(n):
            dn.emit(EVENT_TYPE, DATA)
        t_emit = time.perf_counter()
        res = dn.flush(timeout=300)
        t1 = time.perf_counter()
        caller_prof.stop()
        in_worker(worker_prof.stop)
    finally:
        dn.shutdown()
        shutil.rmtree(spool, ignore_errors=True)
    head = (
        f"profiled library {mode} run: n={n} emit={t_emit - t0:.2f}s total={t1 - t0:.2f}s "
        f"({n / (t1 - t0):,.0f} ev/s under the profiler), flush ok={res.ok}\n"
    )
    text = worker_prof.output_text(unicode=False, color=False, show_all=False)
    caller = caller_prof.output_text(unicode=False, color=False, show_all=False)
    return (
        head
        + "\n=== worker thread (databricks-nats-publisher) ===\n"
        + _hot_spots(worker_prof)
        + text
        + "\n=== caller thread ===\n"
        + _hot_spots(caller_prof)
        + caller
    )


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller N and fewer repetitions")
    ap.add_argument("-n", type=int, default=None, help="events per throughput run (default 50000, quick 10000)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per side (default 5, quick 3)")
    ap.add_argument("--profile", action="store_true", help="also profile one library JetStream run (pyinstrument)")
    ap.add_argument("--profile-only", action="store_true", help="only run the profile")
    ap.add_argument("--profile-mode", choices=("jetstream", "core"), default="jetstream", help="mode to profile")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    n = args.n or (10_000 if args.quick else 50_000)
    reps = args.reps or (3 if args.quick else 5)
    batches, per_batch = (3, 5_000) if args.quick else (5, 20_000)

    started = time.perf_counter()
    with NatsServer(jetstream=True) as server:
        url = server.url
        print(f"nats-server at {url} (JetStream, store {server.store_dir})", flush=True)
        if args.profile_only:
            print(profile_worker(url, n, args.profile_mode))
            return 0

        print(f"[1/3] emit() caller cost: {batches} x {per_batch:,} calls", flush=True)
        emit_cost = bench_emit_cost(url, batches, per_batch)
        print(f"[2/3] acked JetStream throughput: n={n:,}, {reps} reps per side", flush=True)
        js = bench_jetstream(url, n, reps)
        print(f"[3/3] core NATS throughput: n={n:,}, {reps} reps per side", flush=True)
        core = bench_core_mode(url, n, reps)
        profile_text = profile_worker(url, n, args.profile_mode) if args.profile else None

    elapsed = time.perf_counter() - started
    rows = [
        (
            "emit() caller cost, median",
            f"{emit_cost['median_us']:.2f} us",
            "-",
            "-",
            f"<= {EMIT_TARGET_US:g} us",
            verdict(emit_cost["met"]),
        ),
        ("emit() caller cost, p99", f"{emit_cost['p99_us']:.2f} us", "-", "-", "-", "-"),
        (
            "JetStream acked vs pre-built",
            f"{js['lib']['median_events_per_s']:,.0f} ev/s",
            f"{js['raw']['median_events_per_s']:,.0f} ev/s",
            f"{js['ratio']:.2f}",
            f">= {RATIO_TARGET}",
            verdict(js["met"]),
        ),
        (
            "  JetStream vs hand-written",
            f"{js['lib']['median_events_per_s']:,.0f} ev/s",
            f"{js['raw_hand']['median_events_per_s']:,.0f} ev/s",
            f"{js['ratio_vs_hand']:.2f}",
            "info",
            "-",
        ),
        (
            "core NATS vs hand-written",
            f"{core['lib']['median_events_per_s']:,.0f} ev/s",
            f"{core['raw_hand']['median_events_per_s']:,.0f} ev/s",
            f"{core['ratio']:.2f}",
            f">= {RATIO_TARGET}",
            verdict(core["met"]),
        ),
        (
            "  core NATS vs pre-built",
            f"{core['lib']['median_events_per_s']:,.0f} ev/s",
            f"{core['raw']['median_events_per_s']:,.0f} ev/s",
            f"{core['ratio_vs_prebuilt']:.2f}",
            "info",
            "-",
        ),
        (
            "  (pre-built, no headers)",
            "-",
            f"{core['raw_noheaders']['median_events_per_s']:,.0f} ev/s",
            f"{core['ratio_vs_noheaders']:.2f}",
            "info",
            "-",
        ),
    ]
    print_table(
        ("measure", "library", "raw nats-py", "lib/raw", "target", "result"),
        rows,
        title=f"bench_core ({'quick' if args.quick else 'full'}; n={n:,}, reps={reps}, "
        f"payload {js['payload_bytes']} B; medians; {elapsed:.0f}s)",
    )
    if not js["integrity_ok"]:
        print("WARNING: a JetStream run did not store exactly n messages, or had failures/drops (see JSON)")
    path = write_results(
        "bench_core_quick" if args.quick else "bench_core",  # a quick run never overwrites the full figures
        {
            "mode": "quick" if args.quick else "full",
            "elapsed_s": elapsed,
            "event": {"type": EVENT_TYPE, "data": DATA},
            "emit_cost": emit_cost,
            "jetstream": js,
            "core": core,
        },
    )
    print(f"\nresults: {path}")
    if profile_text:
        print("\n" + profile_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
