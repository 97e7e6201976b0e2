"""The durable spool: every event not yet acknowledged, in emit order, surviving a killed process.

``SqliteSpool`` keeps one SQLite database per process (WAL, ``synchronous=NORMAL``: a committed row
survives the process being killed; only an OS crash may lose the last commits) in the namespace's
spool directory. A burst of events is one row (zlib-compressed: one insert, a few pages); a row is
deleted once all its events are.

**Lock protocol.** A spool is a *stem* ``spool-<pid>-<random>``: ``<stem>.lock`` (created with
``O_EXCL``, ``flock``-ed for the owner's whole life, never deleted while in use) and ``<stem>.db``
(created after the lock is held). Whoever holds the ``flock`` of a stem's lock file owns the stem; a stem
whose lock can be taken belongs to a dead process. A holder checks, after taking the lock, that the lock
file at that path is still the inode it locked (else another process adopted and removed it meanwhile:
skip). Files are removed only by the stem's holder, the lock file last. So two processes adopting the
same directory at once each get a disjoint set of stems, and each adopted event is copied once.

**Adoption.** At start and periodically (``adopt_orphans``, called by the publisher's worker), a process
copies the events of dead stems, oldest first and renumbered after its own, into its own spool, then
removes the dead stem's files; whatever they never got acknowledged is published again with its
original id (events of a partly acknowledged row too: JetStream drops those as duplicates). A copy that
could only be kept in memory (disk full) keeps the dead stem locked, files untouched, until the copy is on
disk or acknowledged.

**Untrusted files.** Every file this process did not just write is read defensively: any error while
reading one (not a database, malformed pages, a zlib/JSON/shape error in a row) is contained. The rows
that decode are adopted; the file is renamed aside (``<name>.quarantined-<time>``, never read again), a
warning names it, and the events it held are counted (``dropped.spool_corrupt``: a row's event count is
stored beside its body, so it survives a damaged body; rows or files whose count is unreadable are
counted in ``dropped.spool_corrupt_unknown``). A row of our own file that cannot be read back is dropped
and counted the same way.

**Full or failing disk.** A row that cannot be written stays in memory (bounded by ``memory_max_bytes``,
oldest dropped beyond it as ``dropped.spool_unwritable``) and is written at the next append or
``retry``; deleting rows of acknowledged events updates memory first, the database when it can (a row
whose delete failed is replayed by a later process: a duplicate JetStream drops). Nothing here raises.

Bounded: when the stored payload bytes exceed ``max_bytes`` the oldest rows are dropped (and counted),
then the oldest events of a burst that alone exceeds it. ``MemorySpool`` has the same contract without
durability; it is the fallback when the directory is not writable at all.

**Layout.** ``base.py``: ``Record`` and the ``Spool`` protocol. ``rows.py``: the row codec (zlib or
CRC-32). ``files.py``: stems, lock files, removal and quarantine (no database). ``fork.py``: the at-fork
hook (``forked``). ``store.py``: ``RowStore``, the rows of one file, their in-memory index and the rows
held in memory. ``adoption.py``: ``Adoption(RowStore)``, copying dead stems in. ``sqlite.py``:
``SqliteSpool(Adoption)``, claiming, opening and closing our own stem. ``memory.py``: ``MemorySpool``.
Here: ``open_spool``, which picks one. Each module imports only modules listed before it, never this one.
"""

from __future__ import annotations

import logging

from databricks_nats.transport.spool.base import Record, Spool
from databricks_nats.transport.spool.fork import forked
from databricks_nats.transport.spool.memory import MemorySpool
from databricks_nats.transport.spool.sqlite import SqliteSpool
from databricks_nats.transport.spool.store import MEMORY_MAX

__all__ = ["MemorySpool", "Record", "Spool", "SqliteSpool", "forked", "open_spool"]

log = logging.getLogger("databricks_nats")


def open_spool(directory: str, max_bytes: int) -> Spool:
    """Open the durable spool, or fall back to memory with one warning when the directory is unusable."""
    try:
        return SqliteSpool(directory, max_bytes)
    except Exception as e:  # noqa: BLE001 - never raise into configure(): memory instead
        log.warning(
            "databricks-nats: spool directory %s is not usable (%s: %s); events are held in memory only "
            "and are lost if the process dies",
            directory,
            type(e).__name__,
            e,
        )
        return MemorySpool(min(max_bytes, MEMORY_MAX))
