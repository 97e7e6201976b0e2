"""The credentials the test receiver is configured with (its MLflow secret, its job notification login)."""

from __future__ import annotations

import uuid

SECRET = "whsec-" + uuid.uuid4().hex
JOBS_USER, JOBS_PASSWORD = "databricks", "pw-" + uuid.uuid4().hex
