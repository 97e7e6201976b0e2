#!/usr/bin/env python3
"""Installing databricks-nats on a Databricks Runtime must move none of the runtime's packages.

For every ``.ci/runtime-pins/*.txt`` (the runtime's versions of the packages we could touch, from its release
notes) this builds our wheel once, makes a throwaway venv holding exactly those pins (``--no-deps``), and asks
pip what ``pip install <wheel>`` and ``pip install <wheel>[<the file's extras>]`` would install
(``--dry-run --report``). It fails when the report would install

* a package the runtime pins (an upgrade, a downgrade or a reinstall of the runtime's copy),
* ``pyspark`` / ``mlflow`` / ``mlflow-skinny`` / ``databricks-connect`` (a runtime's PySpark is no pip package:
  an OSS one would shadow it; MLflow comes with the runtime), or
* anything but databricks-nats, nats-py and nkeys (what a runtime does not ship and we may add): e.g. the
  ``aws`` extra must take the runtime's botocore as it is.

A ``# also: EXTRAS | REQUIREMENT ...`` line checks one more install, e.g. ``nkeys | pynacl<1.6.1`` (the README's
advice for runtimes without PyNaCl); the packages it names may be added. Every extra of the wheel must be
either checked by some runtime file (``# extras:`` line) or listed in LAPTOP_EXTRAS below, so a new extra
cannot slip past. Usage::

    python3 .ci/check-runtime-install.py [--source DIR] [PINS_FILE ...]

``--source`` builds another checkout (the proof that the check fails on an older pyproject). Exit 0 when
every runtime passes; 1 with the offending packages listed otherwise.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS_DIR = ROOT / ".ci" / "runtime-pins"
ALLOWED_NEW = {"databricks-nats", "nats-py", "nkeys"}
FORBIDDEN = {"pyspark", "pyspark-client", "pyspark-connect", "mlflow", "mlflow-skinny", "databricks-connect"}
# Extras for a laptop or a CI box (they install PySpark, MLflow, Airflow, Prefect, the test tools), and the
# auth-callout service's (run next to nats-server, not on Databricks; pyproject): never meant for a Databricks
# Runtime, which ships its own PySpark and MLflow. README, "Install". The `aws` extra (botocore, which every
# runtime ships) is checked on every runtime file.
LAPTOP_EXTRAS = {"mlflow", "spark", "dev", "prefect", "airflow", "auth-service", "monitor"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, text=True, capture_output=True)


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip, acting on the environment of ``python`` (which needs no pip of its own)."""
    return run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", *args])


def read_pins(path: Path) -> tuple[dict[str, str], list[str], list[tuple[list[str], list[str]]]]:
    """The pins, the extras to check, and the ``# also:`` installs (extras, added requirements)."""
    pins: dict[str, str] = {}
    extras: list[str] = []
    also: list[tuple[list[str], list[str]]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# extras:"):
            extras = [e.strip() for e in line.split(":", 1)[1].split(",") if e.strip()]
            continue
        if line.startswith("# also:"):
            more, _, reqs = line.split(":", 1)[1].partition("|")
            also.append(([e.strip() for e in more.split(",") if e.strip()], reqs.split()))
            continue
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if not m:
            raise SystemExit(f"{path.name}: not a name==version pin: {raw!r}")
        pins[norm(m.group(1))] = m.group(2)
    return pins, extras, also


def build_wheel(source: Path, out: Path) -> Path:
    r = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)])
    if r.returncode != 0:
        raise SystemExit(f"building the wheel failed:\n{r.stdout}{r.stderr}")
    (wheel,) = out.glob("databricks_nats-*.whl")
    return wheel


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


def check_runtime(pins_file: Path, wheel: Path, provided: set[str], work: Path) -> list[str]:
    pins, extras, also = read_pins(pins_file)
    problems = [f"the wheel has no extra {e!r}" for e in extras + [e for a in also for e in a[0]] if e not in provided]
    venv = work / pins_file.stem
    r = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    if r.returncode != 0:
        return [f"cannot create a venv: {r.stderr.strip()}"]
    python = venv / "bin" / "python"
    r = pip(python, "install", "--quiet", "--no-deps", "--only-binary=:all:", "-r", str(pins_file))
    if r.returncode != 0:
        return [f"cannot install the runtime's pins: {r.stderr.strip()[-2000:]}"]

    def spec(chosen: list[str]) -> str:
        chosen = [e for e in chosen if e in provided]
        return f"{wheel}[{','.join(chosen)}]" if chosen else str(wheel)

    targets: list[tuple[list[str], set[str]]] = [([str(wheel)], set())]
    if extras:
        targets.append(([spec(extras)], set()))
    for more, reqs in also:  # the packages an added requirement names may be added
        targets.append(([spec(more), *reqs], {norm(re.split(r"[<>=!~;\[ ]", q, maxsplit=1)[0]) for q in reqs}))
    for target, may_add in targets:
        label = " ".join(["databricks-nats" + target[0][len(str(wheel)) :], *target[1:]])
        report = venv / "report.json"
        r = pip(python, "install", "--dry-run", "--quiet", "--report", str(report), *target)
        if r.returncode != 0:
            problems.append(f"{label}: pip cannot resolve it here: {r.stderr.strip()[-2000:]}")
            continue
        items = json.loads(report.read_text())["install"]
        installs = [(norm(i["metadata"]["name"]), i["metadata"]["version"]) for i in items]
        print(f"   {label}: would install {', '.join(f'{n} {v}' for n, v in installs)}")
        for name, version in installs:
            if name in pins:
                problems.append(f"{label}: would replace the runtime's {name} {pins[name]} with {version}")
            elif name in FORBIDDEN:
                problems.append(f"{label}: would add {name} {version} (the runtime has its own; never from us)")
            elif name not in ALLOWED_NEW | may_add:
                problems.append(f"{label}: would add {name} {version}, not one of {', '.join(sorted(ALLOWED_NEW))}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="project to build (default: this checkout)")
    parser.add_argument("pins", nargs="*", type=Path, help="runtime pin files (default: .ci/runtime-pins/*.txt)")
    args = parser.parse_args()
    files = args.pins or sorted(PINS_DIR.glob("*.txt"))
    if not files:
        print(f"no runtime pin files in {PINS_DIR}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="runtime-install-"))
    failed: dict[str, list[str]] = {}
    try:
        start = time.monotonic()
        wheel = build_wheel(args.source, work / "dist")
        meta = wheel_metadata(wheel)
        provided = {norm(e) for e in meta.get_all("Provides-Extra") or []}
        core = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
        print(f"== {wheel.name} ({time.monotonic() - start:.0f} s): requires {', '.join(core) or 'nothing'}")
        checked: set[str] = set()
        for f in files:
            _, extras, also = read_pins(f)
            checked.update(extras, *(more for more, _ in also))
        unknown = provided - checked - LAPTOP_EXTRAS
        if unknown:
            failed["extras"] = [f"extra {e!r} is neither checked on a runtime nor in LAPTOP_EXTRAS" for e in unknown]
        for f in files:
            start = time.monotonic()
            print(f"== {f.stem}")
            problems = check_runtime(f, wheel, provided, work)
            print(f"   {'FAIL' if problems else 'ok'} in {time.monotonic() - start:.0f} s")
            if problems:
                failed[f.stem] = problems
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print("\nInstalling databricks-nats would move packages a Databricks Runtime ships:", file=sys.stderr)
        for runtime, problems in failed.items():
            for p in problems:
                print(f"  {runtime}: {p}", file=sys.stderr)
        return 1
    print("no runtime package would change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
