"""Test helper: a nats-server config (config mode, no operator) that delegates authentication to a callout.

Accounts: ``AUTH`` holds the callout service's user (and is where the server sends ``$SYS.REQ.USER.AUTH``),
``APP`` (JetStream enabled) is where callout users land (their user JWT's ``aud`` is ``"APP"``), ``SYS`` is the
system account. ``auth_users`` bypass the callout: the service's own user plus any ``extra_users``
(``{"user", "password", "account", "permissions"?}``, e.g. an ``audit`` reader in ``APP``).
Keys per the nats-server docs (securing_nats/auth_callout): ``issuer``, ``auth_users``, ``account``, ``xkey``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

__all__ = ["callout_config"]


def _user(entry: dict[str, object]) -> str:
    fields = {"user": entry["user"], "password": entry["password"]}
    if entry.get("permissions"):
        fields["permissions"] = entry["permissions"]
    return json.dumps(fields)  # JSON is valid nats-server config syntax


def callout_config(
    path: str | os.PathLike[str],
    *,
    issuer_public: str,
    auth_user: str,
    auth_password: str,
    xkey_public: str | None = None,
    extra_users: Iterable[dict[str, object]] = (),
) -> str:
    """Write the config to ``path`` and return the path (a string)."""
    extra = [dict(u) for u in extra_users]
    users: dict[str, list[str]] = {
        "AUTH": [_user({"user": auth_user, "password": auth_password})],
        "APP": [],
        "SYS": [],
    }
    for entry in extra:
        users.setdefault(str(entry.get("account", "AUTH")), []).append(_user(entry))
    auth_users = [auth_user, *(str(u["user"]) for u in extra)]

    def account(name: str, options: str = "") -> str:
        return f"  {name}: {{ {options}users: [ {', '.join(users[name])} ] }}"

    callout = [
        f"    issuer: {json.dumps(issuer_public)}",
        f"    auth_users: {json.dumps(auth_users)}",
        "    account: AUTH",
    ]
    if xkey_public:
        callout.append(f"    xkey: {json.dumps(xkey_public)}")
    text = "\n".join(
        [
            "accounts {",
            account("AUTH"),
            account("APP", "jetstream: enabled, "),
            account("SYS"),
            "}",
            "system_account: SYS",
            "authorization {",
            "  auth_callout {",
            *callout,
            "  }",
            "}",
            "",
        ]
    )
    with open(path, "w") as f:
        f.write(text)
    return os.fspath(path)
