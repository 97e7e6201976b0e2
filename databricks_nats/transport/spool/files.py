"""A spool's files and the lock protocol: stems, their ``flock``-ed lock files, removal and quarantine.

A stem ``spool-<pid>-<random>`` is ``<stem>.lock`` (whose ``flock`` holder owns the stem) and ``<stem>.db``
(with its ``-wal`` and ``-shm``); see the package docstring for the protocol. Nothing here reads a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import time
import uuid

__all__ = ["Orphan", "claim", "claim_new_stem", "remove_stem", "stems_in"]


def claim_new_stem(directory: str) -> tuple[str, int]:
    """A new stem of ours in ``directory`` and the descriptor of its ``flock``-ed lock file (OSError if none)."""
    for _ in range(8):
        stem = os.path.join(directory, f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        fd = os.open(stem + ".lock", os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # an adopter probing the new name took it first: it removes it; take another
            os.close(fd)
            continue
        return stem, fd
    raise OSError("could not claim a spool file name")


def stems_in(directory: str) -> set[str]:
    """Every stem with a lock or database file in ``directory`` (alive or dead: cheap, no lock taken)."""
    stems = {p[: -len(".lock")] for p in glob.glob(os.path.join(glob.escape(directory), "spool-*.lock"))}
    stems |= {p[: -len(".db")] for p in glob.glob(os.path.join(glob.escape(directory), "spool-*.db"))}
    return stems


def claim(lock_path: str, create: bool) -> int | None:
    """The stem's lock, if its owner is dead and nobody else holds or removed it; else None (never raises)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except OSError:
        return None  # removed by its adopter meanwhile (or unreadable): not ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, there = os.fstat(fd), os.stat(lock_path)
        if (held.st_ino, held.st_dev) == (there.st_ino, there.st_dev):
            return fd
    except OSError:
        pass  # alive (locked), or the file was removed/replaced after we opened it
    os.close(fd)
    return None


def remove_stem(stem: str) -> None:
    """Remove a stem's files, the lock file last (only the holder of its lock may). Never raises."""
    for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
        _unlink(stem + suffix)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class Orphan:
    """A dead process's stem whose lock we hold: adopted, kept until its events are safely ours, then removed."""

    def __init__(self, stem: str, fd: int) -> None:
        self.stem = stem
        self.fd = fd
        self.corrupt = False

    def release(self, remove: bool) -> None:
        """Remove its files (or rename them aside when corrupt), the lock file last; then unlock."""
        try:
            if remove:
                db = self.stem + ".db"
                if self.corrupt:
                    tag = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
                    for suffix in ("", "-wal"):
                        if os.path.exists(db + suffix):
                            with contextlib.suppress(OSError):
                                os.rename(db + suffix, f"{db}{suffix}.quarantined-{tag}")
                remove_stem(self.stem)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)
