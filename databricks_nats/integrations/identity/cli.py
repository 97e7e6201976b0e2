"""``databricks-nats auth-service``: run the auth-callout service, or make its keys.

``--config FILE`` serves until SIGTERM/SIGINT (``service.serve``); ``--new-keys DIR`` writes a new issuer account
key (``issuer.nk``) and xkey (``xkey.nk``), readable by the owner only, and prints the ``auth_callout`` block
for nats-server with their public halves. Existing keys are never overwritten: when either file exists,
neither is written.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

__all__ = ["add_parser"]


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
    except BaseException:  # a half-written key is no key
        os.unlink(path)
        raise


def cmd_auth_service(args: argparse.Namespace) -> int:
    from databricks_nats.errors import ConfigurationError

    if args.new_keys:
        from databricks_nats.integrations.identity import natsjwt, xkey

        paths = [os.path.join(args.new_keys, name) for name in ("issuer.nk", "xkey.nk")]
        # Every file is checked before any is written: a pair is written whole or not at all (a lone new
        # issuer.nk next to an old xkey.nk would be a key whose public half was never printed).
        if os.path.lexists(args.new_keys) and not os.path.isdir(args.new_keys):
            raise ConfigurationError("new_keys", f"{args.new_keys} is not a directory")
        for path in paths:
            if os.path.lexists(path):
                raise ConfigurationError("new_keys", f"{path} exists: keys are never overwritten")
        issuer_seed, issuer = natsjwt.new_account_key()
        xkey_seed, xkey_public = xkey.new_xkey()
        written: list[str] = []
        try:
            os.makedirs(args.new_keys, mode=0o700, exist_ok=True)
            for path, seed in zip(paths, (issuer_seed, xkey_seed), strict=True):
                _write_private(path, seed)
                written.append(path)
        except OSError as e:  # not writable, not a directory, or a key created meanwhile: undo ours
            for path in written:
                os.unlink(path)
            if isinstance(e, FileExistsError) and e.filename in paths:
                raise ConfigurationError("new_keys", f"{e.filename} exists: keys are never overwritten") from None
            raise ConfigurationError("new_keys", f"{e.filename or args.new_keys}: {e.strerror}") from None
        print(f"wrote {args.new_keys}/issuer.nk and {args.new_keys}/xkey.nk (owner-only); for nats-server:\n")
        print(
            "authorization {\n  auth_callout {\n"
            f'    issuer: "{issuer}"\n    xkey: "{xkey_public}"\n'
            "    auth_users: [\"auth\"]   # the service's own user (and the audit publisher's)\n"
            "    account: AUTH\n  }\n}"
        )
        return 0
    if not args.config:
        raise ConfigurationError("config", "auth-service needs --config FILE (or --new-keys DIR)")
    from databricks_nats.integrations.identity.config import ServiceConfig
    from databricks_nats.integrations.identity.service import serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(ServiceConfig.load(args.config))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "auth-service", help="run the NATS auth-callout service (OIDC and AWS IAM identities become NATS users)"
    )
    p.add_argument("--config", help="the service's TOML file ([nats], [callout], [[oidc]], [aws], [audit])")
    p.add_argument(
        "--new-keys", metavar="DIR", help="write a new issuer key and xkey into DIR and print the server block"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_auth_service)
