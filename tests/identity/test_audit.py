"""The auth service's audit (``Auditor``): what a record holds and how it is rate-limited.

A fake clock drives the token buckets (no sleeping): ``per_second`` records a second per key after a burst of
twice that; what a bucket holds back is reported by that key's next record; grants and refusals, and refusals
of distinct identities, have buckets of their own. The end-to-end half (events on a real server, free of the
tokens clients presented) is in test_auth_service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from databricks_nats.integrations.identity.audit import Auditor
from databricks_nats.integrations.identity.identity import Identity

ISSUER = "https://issuer.example"
HOST = "10.0.0.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auditor(per_second: float = 5.0) -> tuple[Auditor, Clock, list[tuple[str, dict[str, Any]]]]:
    clock, events = Clock(), []

    def emit(event_type: str, data: Mapping[str, Any]) -> None:
        events.append((event_type, dict(data)))

    return Auditor(emit, per_second, clock=clock), clock, events


def _who(n: int = 1) -> Identity:
    return Identity("oidc", ISSUER, f"svc-{n}", None, {"groups": ["team-a"]})


def _deny(auditor: Auditor, identity: Identity | None = None, reason: str = "rule blocked denies", host: str = HOST):
    auditor.record(False, identity=identity, rule="blocked" if identity else None, reason=reason, client={"host": host})


def _grant(auditor: Auditor, identity: Identity) -> None:
    auditor.record(
        True, identity=identity, rule="team-a-dev", reason="rule team-a-dev", permissions={"pub": {"allow": ["a.>"]}},
        expires_at=2_000_000_000.0, client={"host": HOST},
    )  # fmt: skip


def test_one_key_gets_a_burst_then_per_second_records() -> None:
    auditor, clock, events = _auditor(per_second=5.0)
    for _ in range(25):
        _deny(auditor, reason="malformed token")
    assert len(events) == 10  # the burst: twice per_second
    assert (auditor.recorded, auditor.suppressed) == (10, 15)
    clock.now += 1.0  # one second refills five
    for _ in range(25):
        _deny(auditor, reason="malformed token")
    assert len(events) == 15
    assert (auditor.recorded, auditor.suppressed) == (15, 35)
    clock.now += 3600.0  # a long quiet spell refills the burst, no more
    for _ in range(25):
        _deny(auditor, reason="malformed token")
    assert len(events) == 25


def test_what_was_held_back_is_reported_by_the_keys_next_record() -> None:
    auditor, clock, events = _auditor(per_second=1.0)
    for _ in range(7):
        _deny(auditor, reason="token expired")
    assert [e[1]["suppressed"] for e in events] == [0, 0]
    _deny(auditor, reason="bad signature")  # another key: its own count
    assert events[-1][1]["suppressed"] == 0
    clock.now += 1.0
    _deny(auditor, reason="token expired")
    assert events[-1][1]["reason"] == "token expired"
    assert events[-1][1]["suppressed"] == 5
    clock.now += 1.0
    _deny(auditor, reason="token expired")
    assert events[-1][1]["suppressed"] == 0  # reported once


def test_each_refused_identity_is_audited_while_one_identity_looping_is_bounded() -> None:
    """Twenty identities refused by one rule from one host: twenty records (the limit was per reason and host,
    which kept ten and lost the others' names). One of them retrying in a loop: a burst, then held back."""
    auditor, _clock, events = _auditor(per_second=5.0)
    for n in range(20):
        _deny(auditor, _who(n))
    assert sorted(e[1]["identity"] for e in events) == sorted(f"oidc:{ISSUER}#svc-{n}" for n in range(20))
    assert {e[0] for e in events} == {"system.auth.denied"}
    assert auditor.suppressed == 0
    for _ in range(50):
        _deny(auditor, _who(3))
    assert len(events) == 20 + 9  # its bucket had spent one of its ten
    assert auditor.suppressed == 41
    # Tokens that verify nobody (garbage, forged) share one key per reason and host: no key per attempt.
    for _ in range(50):
        _deny(auditor, None, reason="malformed token")
    assert len([e for e in events if e[1]["identity"] is None]) == 10
    _deny(auditor, None, reason="malformed token", host="10.0.0.8")  # another host: its own key
    assert events[-1][1]["client"] == {"host": "10.0.0.8"}


def test_grants_and_refusals_are_counted_apart() -> None:
    auditor, clock, events = _auditor(per_second=1.0)
    who = _who()
    for _ in range(5):
        _grant(auditor, who)
    assert [e[0] for e in events] == ["system.auth.granted"] * 2
    _deny(auditor, who)  # its grants used up their bucket, not this one
    assert events[-1][0] == "system.auth.denied"
    assert events[-1][1]["suppressed"] == 0
    clock.now += 1.0
    _grant(auditor, who)
    assert events[-1][0] == "system.auth.granted"
    assert events[-1][1]["suppressed"] == 3
    grant = events[-1][1]
    assert grant["identity"] == f"oidc:{ISSUER}#svc-1"
    assert (grant["kind"], grant["rule"]) == ("oidc", "team-a-dev")
    assert grant["permissions"] == {"pub": {"allow": ["a.>"]}}
    assert grant["expires_at"] == "2033-05-18T03:33:20Z"


def test_a_record_holds_no_token_material(caplog: pytest.LogCaptureFixture) -> None:
    """Only the listed client fields are kept: a credential in what the server passes (CONNECT options, or a
    field some server version adds) never reaches the event or the log; nor do the identity's claims."""
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMtMSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
    secret_claim = "a-claim-value-that-is-not-audited"
    who = Identity("oidc", ISSUER, "svc-1", None, {"groups": ["team-a"], "at_hash": secret_claim})
    client = {
        "host": HOST, "id": 42, "name": "trainer", "lang": "python3", "version": "2.11.0", "kind": "Client",
        "auth_token": token, "jwt": token, "pass": token, "sig": token, "nkey": token, "user": token,
    }  # fmt: skip
    auditor, _clock, events = _auditor()
    with caplog.at_level(logging.DEBUG, logger="databricks_nats.auth"):
        auditor.record(True, identity=who, rule="r", reason="rule r", client=client, server="n1")
        auditor.record(False, identity=who, rule="blocked", reason="rule blocked denies", client=client)
        auditor.record(False, identity=None, rule=None, reason="malformed token", client=client)
    assert len(events) == 3
    for _type, data in events:
        assert data["client"] == {"host": HOST, "id": 42, "name": "trainer", "lang": "python3",
                                  "version": "2.11.0", "kind": "Client"}  # fmt: skip
        assert set(data) == {"identity", "kind", "rule", "reason", "permissions", "expires_at", "client",
                             "server", "suppressed"}  # fmt: skip
    text = json.dumps(events) + caplog.text
    for part in (token, *token.split("."), secret_claim):
        assert part not in text
    assert caplog.text.count("auth granted") == 1
    assert caplog.text.count("auth denied") == 2


def test_without_a_publisher_decisions_are_logged_only(caplog: pytest.LogCaptureFixture) -> None:
    auditor = Auditor(None, 5.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger="databricks_nats.auth"):
        _deny(auditor, _who())
    assert auditor.recorded == 1
    assert f"auth denied: oidc:{ISSUER}#svc-1 (rule blocked denies) client {HOST}" in caplog.text
