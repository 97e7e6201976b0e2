"""The at-fork hook: a forked child knows it is one (``forked``) and never closes its parent's connections.

A child inherits the parent's open spool (its descriptors, its SQLite connections, its flock); closing or
writing through them would damage the parent's file. ``SqliteSpool.forget_after_fork`` parks the
inherited connections in ``inherited`` (never closed in the child) and the child opens a spool of its own.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["forked", "inherited"]

_forked = False
inherited: list[Any] = []  # a forked child's copies of its parent's connections: never closed in the child


def forked() -> bool:
    """Whether this process is a forked child of a process that imported this module."""
    return _forked


def _mark_forked() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)
