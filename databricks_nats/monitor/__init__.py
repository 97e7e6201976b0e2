"""``databricks-nats monitor``: what an environment's stream says about its publishers and consumers.

``model`` (the numbers as plain data, thresholds), ``collect`` (reading the stream and the JetStream API),
``view`` (the rich live view, the optional ``monitor`` extra) and ``cli`` (the subcommand).
"""

from __future__ import annotations

from databricks_nats.monitor.model import ConsumerRow, PublisherRow, RateRow, Snapshot, Thresholds

__all__ = ["ConsumerRow", "PublisherRow", "RateRow", "Snapshot", "Thresholds"]
