"""What installing the wheel brings, and NKey/.creds auth without the ``nkeys`` extra.

The wheel is built from this checkout (``pip wheel``) and its metadata read: nats-py is the only hard
dependency, and the extras meant for a Databricks Runtime (``nkeys``, ``databricks``) bring no PySpark or
MLflow. The runtime-level proof (nothing a runtime ships moves) is ``.ci/check-runtime-install.py``.

Without nkeys: a real interpreter whose only packages are nats-py and databricks_nats (``-S``: no
site-packages; the two packages linked into a directory of their own). ``configure`` with a ``.creds`` file or
an NKey seed fails there with one message naming the setting and the install command; without them the
same environment configures, publishes to a real nats-server and shuts down.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nats
import pytest

import databricks_nats

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_EXTRAS = ("nkeys", "databricks")
NEVER_ON_A_RUNTIME = {"pyspark", "mlflow", "mlflow-skinny", "databricks-connect"}


def _name(requirement: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory: pytest.TempPathFactory) -> email.message.Message:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=240,
    )
    (wheel,) = out.glob("databricks_nats-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(meta).decode())


def test_the_wheel_requires_nats_py_only(wheel_metadata: email.message.Message) -> None:
    requires = wheel_metadata.get_all("Requires-Dist") or []
    hard = [r for r in requires if "extra ==" not in r]
    assert [_name(r) for r in hard] == ["nats-py"], hard


def test_the_extras_for_a_runtime_bring_no_spark_and_no_mlflow(wheel_metadata: email.message.Message) -> None:
    extras = set(wheel_metadata.get_all("Provides-Extra") or [])
    assert set(RUNTIME_EXTRAS) <= extras
    requires = wheel_metadata.get_all("Requires-Dist") or []
    for extra in RUNTIME_EXTRAS:
        names = {_name(r) for r in requires if re.search(rf"extra == ['\"]{extra}['\"]", r)}
        assert names, f"extra {extra!r} requires nothing"
        assert not names & NEVER_ON_A_RUNTIME, (extra, names)
    nkeys_extra = {_name(r) for r in requires if re.search(r"extra == ['\"]nkeys['\"]", r)}
    assert nkeys_extra == {"nkeys"}  # no PyNaCl bound: a runtime's PyNaCl 1.5.0 stays as it is


@pytest.fixture(scope="module")
def without_nkeys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only nats-py and databricks_nats, for ``python -S`` (no site-packages)."""
    site = tmp_path_factory.mktemp("site")
    (site / "nats").symlink_to(Path(nats.__file__).parent, target_is_directory=True)
    (site / "databricks_nats").symlink_to(Path(databricks_nats.__file__).parent, target_is_directory=True)
    return site


def _run(site: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_NATS_", "PYTHON"))}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


CREDS = """-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln
------END NATS USER JWT------

-----BEGIN USER NKEY SEED-----
SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4
------END USER NKEY SEED------
"""


@pytest.mark.parametrize("setting", ["creds", "nkey_seed"])
def test_nkey_auth_without_nkeys_fails_at_configure_naming_the_install(
    without_nkeys: Path, tmp_path: Path, setting: str
) -> None:
    value = CREDS if setting == "creds" else "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
    r = _run(
        without_nkeys,
        f"""
        import importlib.util, sys
        assert importlib.util.find_spec("nkeys") is None, "nkeys is importable: the test proves nothing"
        import databricks_nats as dn
        try:
            dn.configure(url="nats://127.0.0.1:1", spool_dir={str(tmp_path / "spool")!r}, {setting}={value!r})
        except dn.ConfigurationError as e:
            print("ConfigurationError:", e)
            sys.exit(3)
        print("configured")
        """,
        tmp_path,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    message = r.stdout.strip()
    assert message == (
        f"ConfigurationError: invalid setting {setting!r}: NKey and .creds authentication need the nkeys "
        "package, not installed: pip install 'databricks-nats[nkeys]'"
    )
    assert "SUAIBDPB" not in r.stdout + r.stderr  # the seed never shows


def test_without_nkeys_the_core_publishes(without_nkeys: Path, tmp_path: Path, nats_server) -> None:
    r = _run(
        without_nkeys,
        f"""
        import databricks_nats as dn
        dn.configure(url={nats_server.url!r}, spool_dir={str(tmp_path / "spool")!r}, strict=True)
        dn.emit("test.install.checked", {{"nkeys": False}})
        result = dn.flush(timeout=20)
        print("flushed", result.ok, result.pending)
        dn.shutdown()
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "flushed True 0", r.stdout + r.stderr
