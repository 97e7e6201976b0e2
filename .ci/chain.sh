#!/usr/bin/env bash
# The chain across orchestrators end to end (tests/chain): an MLflow alias event runs an Airflow DAG, whose task
# success runs a Prefect deployment, whose completion comes back to NATS in the same chain. Airflow and Prefect
# cannot share an environment, so the test runs in the Airflow venv and drives Prefect with the Prefect venv's
# python. Usage: .ci/chain.sh <Airflow venv> <Prefect venv's python>, after .ci/airflow.sh and .ci/prefect.sh
# built them. Fails when either is missing or pytest collects nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:?usage: .ci/chain.sh <Airflow venv> <Prefect venv python>}"
prefect_python="${2:?usage: .ci/chain.sh <Airflow venv> <Prefect venv python>}"

"$venv/bin/python" -c "import airflow, databricks_nats.airflow" \
  || { echo "no Airflow environment at $venv: build it with .ci/airflow.sh $venv" >&2; exit 1; }
"$prefect_python" -c "import prefect, databricks_nats.prefect" \
  || { echo "no Prefect environment at $prefect_python: build it with .ci/prefect.sh <venv>" >&2; exit 1; }
prefect_python="$(cd "$(dirname "$prefect_python")" && pwd)/$(basename "$prefect_python")"  # absolute, not resolved

echo "== chain tests ($("$venv/bin/python" -c 'import airflow; print("apache-airflow", airflow.__version__)'),\
 $("$prefect_python" -c 'import prefect; print("prefect", prefect.__version__)'))"
basetemp="$(mktemp -d)"  # our own: concurrent pytest runs rotate the shared /tmp/pytest-of-$USER
trap 'rm -rf "$basetemp"' EXIT
set +e
DATABRICKS_NATS_AIRFLOW_TESTS=1 DATABRICKS_NATS_PREFECT_PYTHON="$prefect_python" \
  "$venv/bin/python" -m pytest tests/chain -q -p no:cacheprovider --basetemp="$basetemp"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no chain tests: failing" >&2
  exit 1
fi
exit "$rc"
