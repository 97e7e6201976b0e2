"""``SqliteSpool``: the durable spool of this process, one SQLite file (a stem of its own) in the spool directory.

It is built in layers, each on the one before: ``RowStore`` (``store.py``: the rows, their index, what the
disk refused), ``Adoption`` (``adoption.py``: dead processes' files), and this class: claiming the stem,
opening, closing, abandoning a failed open, and letting go of it in a forked child.
"""

from __future__ import annotations

import contextlib
import logging
import os

from databricks_nats.transport.spool.adoption import Adoption
from databricks_nats.transport.spool.files import claim_new_stem, remove_stem
from databricks_nats.transport.spool.fork import inherited

__all__ = ["SqliteSpool"]

log = logging.getLogger("databricks_nats")


class SqliteSpool(Adoption):
    """A durable spool in one SQLite file per process, adopting the files of dead processes.

    Every method is safe from any thread (``lock``) and none raises once the spool is open.
    """

    durable = True

    def __init__(
        self, directory: str, max_bytes: int, *, adopt: bool = True, memory_max_bytes: int | None = None
    ) -> None:
        super().__init__(directory, max_bytes, memory_max_bytes)
        os.makedirs(directory, exist_ok=True)
        self._stem, self._lock_fd = claim_new_stem(directory)
        self.path: str | None = self._stem + ".db"
        self._file = self.path
        try:
            self._open_db()
            if adopt:
                self.adopted = self.adopt_orphans()
        except BaseException:
            self._abandon()
            raise

    def close(self) -> None:
        """Close the database; remove the file when it is empty (nothing left to replay). Never raises."""
        with self.lock:
            if self._closed:
                return
            if self._mem_rows:
                self._persist_memory()
            if self._mem_rows:
                lost = self.unpersisted
                self.dropped["spool_unwritable"] += lost
                log.error(
                    "databricks-nats: %d event(s) could not be written to the spool %s and are lost", lost, self._file
                )
            if self._stale:
                self._delete_rows([])
            self._trim_partly_acknowledged()
            empty = self.count() == 0
            self._closed = True
            self._release_held()
            if self._checkpointer is not None:
                with contextlib.suppress(Exception):
                    self._checkpointer.close()
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()
            if empty:
                remove_stem(self._stem)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def _abandon(self) -> None:
        """Opening failed: release what was taken (the files stay for a later process to adopt)."""
        self._closed = True
        for orphan in self._held:
            orphan.release(remove=False)
        self._held = []
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        if self._count == 0:
            remove_stem(self._stem)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors without touching the parent's database."""
        self._closed = True
        inherited.extend(c for c in (self._db, self._checkpointer) if c is not None)  # never closed here
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        for orphan in self._held:
            with contextlib.suppress(OSError):
                os.close(orphan.fd)
