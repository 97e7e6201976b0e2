"""What a Spark Connect server does with a PySpark 3.5 client's streaming listener, as a script.

``pyspark.sql.connect.streaming.worker.listener_worker`` (PySpark 3.5 and 4.x) unpickles the listener the
client cloudpickled (``CPickleSerializer().loads``) in a Python process of its own, then for each event
the server sends as JSON calls ``Query*Event.fromJson`` and the listener's callback (0 started,
1 progress, 2 idle, 3 terminated). This script does the same, in the interpreter the test starts with a
clean environment (PATH only) in an empty directory, with only the installed ``databricks_nats`` package
on ``sys.path`` (never the repository). Logs at DEBUG go to stderr.

Usage: python -I shipped_listener.py LISTENER_PICKLE EVENTS_JSON PACKAGE_DIR REPOSITORY [CONNECT_URL SESSION_ID]

With a Spark Connect URL and session id, the listener gets a session on that session id, as the worker
gives it (``listener._set_spark_session``).
"""

import json
import logging
import os
import sys

payload_path, events_path, package_dir, repository = sys.argv[1:5]
connect = sys.argv[5:7]
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != os.path.realpath(repository)]
sys.path.insert(0, package_dir)
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

from pyspark.serializers import CPickleSerializer  # noqa: E402
from pyspark.sql.streaming.listener import (  # noqa: E402
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
)

with open(payload_path, "rb") as f:
    listener = CPickleSerializer().loads(f.read())

import databricks_nats  # noqa: E402 - already imported by the unpickling, from the package dir

if connect:
    from pyspark.sql.connect.session import SparkSession

    session = SparkSession.builder.remote(f"{connect[0]}/;session_id={connect[1]}").getOrCreate()
    assert session.session_id == connect[1]
    listener._set_spark_session(session)

for kind, text in json.load(open(events_path)):  # noqa: SIM115
    event = json.loads(text)
    if kind == 0:
        listener.onQueryStarted(QueryStartedEvent.fromJson(event))
    elif kind == 1:
        listener.onQueryProgress(QueryProgressEvent.fromJson(event))
    elif kind == 2:
        listener.onQueryIdle(QueryIdleEvent.fromJson(event))
    elif kind == 3:
        listener.onQueryTerminated(QueryTerminatedEvent.fromJson(event))

print("LISTENER", repr(listener))
print("PACKAGE", os.path.dirname(databricks_nats.__file__))
print("ENVIRON", json.dumps(sorted(os.environ)))
# no flush here: the process-wide publisher the listener set up flushes at exit, as in the real worker
