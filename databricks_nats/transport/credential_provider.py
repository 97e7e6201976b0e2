"""``CredentialProvider``: the credentials of one connection, kept fresh (``auth.py`` resolves them).

It keeps the last resolution for ``credentials_ttl`` seconds (an identity from a fast source: not at all) and
hands nats-py callbacks (static token, user/password, user JWT and nonce signature) that read it at every
(re)connect, so a rotated secret is used by the next reconnect without a restart. What nats-py binds once per
connection (the NKey public key, TLS material, the set of auth methods, an identity's token and inbox) is
compared by ``needs_new_connection``. No value ever appears in a repr, log line or error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from databricks_nats.errors import ConfigurationError
from databricks_nats.ports import SecretSource, TokenSource
from databricks_nats.settings import Secret, Settings
from databricks_nats.transport.auth import (
    _REFRESH_BEFORE,
    Credentials,
    _creds_parts,
    _identity_setting,
    _references,
    _sign,
    _tls_options,
    resolve_credentials,
)

__all__ = ["CredentialProvider"]

log = logging.getLogger("databricks_nats")


def _in_thread(fn: Callable[[], Credentials]) -> asyncio.Future[Credentials]:
    """Run ``fn`` on a thread of its own: the default executor refuses work once the interpreter exits,
    and the exit flush may be the first time a short script connects."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Credentials] = loop.create_future()

    def settle(result: Credentials | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        elif result is not None:
            future.set_result(result)

    def run() -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="databricks-nats-credentials", daemon=True).start()
    return future


class CredentialProvider:
    """The current credentials, re-resolved at most every ``credentials_ttl`` seconds (a fast identity source:
    at every connect), off the event loop when the source is slow."""

    def __init__(
        self, settings: Settings, secrets: SecretSource | None = None, identity: TokenSource | None = None
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.identity = identity if _identity_setting(settings) else None
        self.current = Credentials()
        self.resolved_at: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._task: asyncio.Future[Credentials] | None = None
        self._refresher: asyncio.Task[Credentials] | None = None

    def stale(self) -> bool:
        if self.identity is not None and self._fast():
            return True  # a file or a variable: read again at every connect (microseconds; rotated by others)
        if self.resolved_at is None or time.monotonic() - self.resolved_at >= self.settings.credentials_ttl:
            return True
        return self.refresh_in() <= 0

    def refresh_in(self) -> float:
        """Seconds until an identity token should be replaced (inf without one): a quarter of its life, at most
        a minute, before it expires."""
        expires = self.current.expires_at
        if expires is None or self.resolved_at is None:
            return float("inf")
        now = time.time()
        lifetime = max(0.0, expires - (now - (time.monotonic() - self.resolved_at)))
        return expires - now - min(_REFRESH_BEFORE, lifetime / 4)

    def refresh(self) -> Credentials:
        """Resolve now (blocking); on failure keep the previous credentials and remember the error."""
        with self._lock:
            try:
                found = resolve_credentials(self.settings, self.secrets, self.identity)
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - messages are built without values (ConfigurationError)
                found = self.current
                self.last_error = str(e) if isinstance(e, ConfigurationError) else type(e).__name__
                log.warning("databricks-nats: cannot resolve NATS credentials: %s", self.last_error)
            self.current, self.resolved_at = found, time.monotonic()
            return found

    async def refresh_async(self, force: bool = False) -> Credentials:
        """Re-resolve in a worker thread when stale (or forced); concurrent callers share one resolution."""
        if not force and not self.stale():
            return self.current
        if self._fast():
            return self.refresh()  # settings, variables and files only: fast enough for the loop
        if self._task is None or self._task.done():
            self._task = _in_thread(self.refresh)
        return await asyncio.shield(self._task)

    def _fast(self) -> bool:
        if self.identity is not None:
            return bool(getattr(self.identity, "fast", False))
        return not self.settings.secret_scope and not _references(self.settings)

    def needs_new_connection(self, old: Credentials) -> bool:
        """True when what nats-py binds per connection changed (NKey, TLS material, set of methods, an identity's
        token and so its inbox prefix)."""
        return old._bound() != self.current._bound()

    def _kick(self) -> None:
        """From a nats-py callback (sync, on the loop): refresh when stale, never block (a slow source is read
        on a thread; ``Link`` reads it ahead of the token's expiry, so a reconnect has a fresh one)."""
        if self.stale() and self._fast():
            self.refresh()
        elif self.stale():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
                self._refresher = asyncio.get_running_loop().create_task(self.refresh_async())

    def _value(self, kind: str) -> str:
        self._kick()
        value = getattr(self.current, kind)
        return value.reveal() if isinstance(value, Secret) else str(value or "")

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` whose credentials are read at every (re)connect."""
        c = self.current
        opts = _tls_options(self.settings, c)
        if c.creds is not None:

            def user_jwt() -> bytes:
                return _creds_parts(self._value("creds"))[0]

            def signature(nonce: str) -> bytes:
                return _sign(_creds_parts(self._value("creds"))[1], nonce)

            opts["user_jwt_cb"], opts["signature_cb"] = user_jwt, signature
        elif c.nkey_seed is not None:
            opts["nkeys_seed_str"] = c.nkey_seed.reveal()  # bound per connection: a new seed reconnects
        if c.identity:
            opts.update(c.identity_options())  # a new token needs a new connection (its inbox): never a callback
        elif c.token is not None:
            opts["token"] = lambda: self._value("token")
        if c.user and c.password is not None:
            opts["user"] = lambda: self._value("user")
            opts["password"] = lambda: self._value("password")
        elif c.user:
            opts["user"] = c.user
        return opts
