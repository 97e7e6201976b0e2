"""What every spool shares: ``Record`` (one spooled event) and ``Spool`` (what the publisher needs of one)."""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["Record", "Spool"]


class Record(NamedTuple):
    """One spooled event: its spool sequence, event id (the Nats-Msg-Id), subject and encoded envelope."""

    seq: int
    id: str
    subject: str
    payload: bytes


class Spool(Protocol):
    """What the publisher needs from a spool; ``count`` and ``bytes`` are cached and safe from any thread."""

    @property
    def durable(self) -> bool: ...
    @property
    def path(self) -> str | None: ...

    def append(self, records: list[Record]) -> list[int]:
        """Store records (ascending sequences, above any stored); return the sequences dropped to stay in bounds."""

    def delete(self, seqs: list[int]) -> None: ...
    def load(self, after: int, limit: int) -> list[Record]: ...
    def min_seq(self) -> int | None: ...
    def max_seq(self) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...

    @property
    def size_bytes(self) -> int: ...
