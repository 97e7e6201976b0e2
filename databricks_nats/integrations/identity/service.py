"""The auth-callout service: nats-server asks it about every connecting client; it answers with a NATS user.

One request, followed through (``respond``, on a worker thread):

1. the request arrives on ``$SYS.REQ.USER.AUTH`` (a queue group: run several instances); with an encrypted
   callout it is opened with the service's xkey and the server's (``Nats-Server-Xkey`` header);
2. ``AuthorizationRequest.from_jwt`` checks the server's signature; an unreadable request is counted and left
   unanswered (the server refuses the client when the callout times out);
3. the token the client presented (its CONNECT ``auth_token``) is verified: an AWS proof (``aws-iam:…``) by
   forwarding it to STS, a Databricks proof (``databricks:…``) by asking its (trusted) workspace who the token
   is (``databricks.py``; a workspace OAuth JWT is verified offline as OIDC), anything else as an OIDC JWT
   against the trusted issuers' JWKS;
4. the policy (re-read when its file changes: the next connect uses the new one) maps the ``Identity`` to
   permissions, deny by default;
5. the answer is a user JWT for the request's user key in ``account``, signed by the issuer key, expiring at
   ``min(token exp, rule max_ttl)``, whose subscribe grant ``_INBOX.>`` is narrowed to the token's own inboxes
   (``_INBOX.<h>.>``, ``transport.auth.inbox_prefix``; ``inbox = "shared"`` keeps ``_INBOX.>``); or an error
   naming the reason. Sealed for the server when encrypted;
6. the decision is audited (``audit.py``): an event on ``system.auth.granted|denied`` and a log line.

Nothing a client sends can crash the service: every failure becomes a refusal with a reason, counted in
``stats()`` (the worker threads share the counts: kept under a lock). ``AuthService`` is embeddable
(``start``/``stop`` in a running loop, ``running()`` on a thread of its own); ``serve()`` is what
``databricks-nats auth-service --config FILE`` runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from databricks_nats.integrations.identity import natsjwt, xkey
from databricks_nats.integrations.identity.audit import Auditor
from databricks_nats.integrations.identity.config import AUTH_SUBJECT, ServiceConfig
from databricks_nats.integrations.identity.identity import Identity, Refused
from databricks_nats.integrations.identity.policy import Policy
from databricks_nats.transport.auth import inbox_prefix

__all__ = ["AuthService", "serve"]

log = logging.getLogger("databricks_nats.auth")

_XKEY_HEADER = "Nats-Server-Xkey"
_LATENCIES = 4096  # decision times kept for stats() (seconds)


class _PolicyFile:
    """The policy, re-read when its file changes (size or mtime); a broken new file keeps the old policy."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.policy = Policy.load(path)
        self._stamp = self._stat()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> Policy:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self.policy = Policy.load(self.path)
                        log.info("auth: policy %s reloaded (%d rules)", self.path, len(self.policy.rules))
                    except Exception as e:  # noqa: BLE001 - a half-written or broken file: keep serving
                        log.error("auth: policy %s not reloaded, the previous one stays: %s", self.path, e)
        return self.policy


def _client(request: natsjwt.AuthorizationRequest) -> dict[str, Any]:
    """Who connects, for the audit: the server's view (host, connection id) and what the client says of
    itself in CONNECT (name, library, version); never a credential."""
    info, opts = request.client_info, request.connect_opts
    found = {"host": info.get("host"), "id": info.get("id"), "kind": info.get("kind")}
    found.update({k: opts.get(k) for k in ("name", "lang", "version")})
    return found


class AuthService:
    """Verifies identities and issues short-lived NATS users (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        oidc: Any = None,
        aws: Any = None,
        databricks: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self._issuer = config.issuer_seed.reveal()
        self._xkey = config.xkey_seed.reveal() if config.xkey_seed else None
        natsjwt.encode({"probe": True}, self._issuer)  # a bad issuer seed fails here, not at the first client
        if oidc is None and config.oidc:
            from databricks_nats.integrations.identity.oidc import OidcVerifier

            oidc = OidcVerifier(config.oidc)
        if aws is None and config.aws_sts_endpoint:
            from databricks_nats.integrations.identity.aws import AwsIamVerifier

            aws = AwsIamVerifier(sts_endpoint=config.aws_sts_endpoint, audience=config.aws_audience)
        if databricks is None and config.databricks:
            from databricks_nats.integrations.identity.databricks import DatabricksVerifier

            # The OIDC verifier too: a workspace's OAuth JWT is verified offline when its issuer is trusted.
            databricks = DatabricksVerifier(config.databricks, oidc=oidc)
        self.oidc, self.aws, self.databricks = oidc, aws, databricks
        self.policy = _PolicyFile(config.policy)
        self.audit_client: Any = None
        if config.audit is not None:
            from databricks_nats.client import Client
            from databricks_nats.ports import MappingSecrets, NoContext

            self.audit_client = Client(config.audit, context=NoContext(), secrets=MappingSecrets({}))
        self.auditor = Auditor(self.audit_client.emit if self.audit_client else None, config.audit_per_second)
        self.counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()  # workers count concurrently; Counter's += is not atomic
        self.latencies: collections.deque[float] = collections.deque(maxlen=_LATENCIES)
        self._pool = ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="databricks-nats-auth")
        self._nc: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: Any = None

    # ---- one decision (any thread) ------------------------------------------------------------------------

    def respond(self, data: bytes, server_xkey: str | None = None) -> bytes | None:
        """The answer to one raw request, sealed when the callout is encrypted; None when it cannot be read."""
        started = time.perf_counter()
        try:
            if self._xkey is not None:
                if not server_xkey:
                    self._unreadable("unencrypted request (the service expects an encrypted callout)")
                    return None
                data = xkey.open_sealed(data, self._xkey, server_xkey)
            request = natsjwt.AuthorizationRequest.from_jwt(data.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as e:
            self._unreadable(f"unreadable request: {e}")
            return None
        answer = self._decide(request).encode()
        if self._xkey is not None and server_xkey:
            answer = xkey.seal(answer, self._xkey, server_xkey)
        with self._counts_lock:
            self.latencies.append(time.perf_counter() - started)
        return answer

    def _count(self, *keys: str) -> int:
        """Add one to each of ``keys``; the first one's new count."""
        with self._counts_lock:
            for key in keys:
                self.counts[key] += 1
            return self.counts[keys[0]]

    def _unreadable(self, why: str) -> None:
        n = self._count("unreadable")
        if n == 1 or n % 1000 == 0:
            log.warning("auth: %s (%d so far)", why, n)
        return None

    def _verify(self, token: str) -> Identity:
        from databricks_nats.integrations.identity.aws import TOKEN_PREFIX
        from databricks_nats.integrations.identity.databricks import DATABRICKS_PREFIX

        if token.startswith(DATABRICKS_PREFIX):
            if self.databricks is None:
                raise Refused("Databricks identities are not accepted here")
            return self.databricks.verify(token)  # type: ignore[no-any-return]
        if token.startswith(TOKEN_PREFIX):
            if self.aws is None:
                raise Refused("AWS IAM identities are not accepted here")
            return self.aws.verify(token)  # type: ignore[no-any-return]
        if self.oidc is None:
            raise Refused("OIDC identities are not accepted here")
        return self.oidc.verify(token)  # type: ignore[no-any-return]

    def _decide(self, request: natsjwt.AuthorizationRequest) -> str:
        identity: Identity | None = None
        rule: str | None = None
        try:
            token = request.token
            if token is None:
                raise Refused("no token presented")
            identity = self._verify(token)
            decision = self.policy.get().decide(identity)
            rule = decision.rule
            if not decision.allowed or decision.permissions is None:
                raise Refused(decision.reason)
            now = self.clock()
            expires = min(identity.expires_at or float("inf"), now + decision.ttl)
            if expires <= now:
                raise Refused("token expired")
            granted = decision.permissions
            if self.config.inbox == "per-token":  # the token's own inboxes only: no identity reads another's replies
                granted = granted.with_inbox(inbox_prefix(token))
            perms = granted.as_nats()
            user = natsjwt.user_jwt(
                user_nkey=request.user_nkey,
                account=self.config.account,
                issuer_seed=self._issuer,
                name=identity.name,
                expires_at=int(expires),
                pub_allow=perms["pub"].get("allow", ()),
                pub_deny=perms["pub"].get("deny", ()),
                sub_allow=perms["sub"].get("allow", ()),
                sub_deny=perms["sub"].get("deny", ()),
            )
        except Refused as e:
            return self._refuse(request, identity, rule, e.reason)
        except Exception as e:  # noqa: BLE001 - a bug or a library's surprise: refuse this client, keep serving
            self._count("errors")
            where = e.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            at = f"{where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where else "?"
            # The type and place only: a message could quote what the client sent.
            log.error("auth: refusing a client after an unexpected %s at %s", type(e).__name__, at)
            return self._refuse(request, identity, rule, "internal error")
        self._count("granted")
        self.auditor.record(
            True,
            identity=identity,
            rule=rule,
            reason=decision.reason,
            permissions=perms,
            expires_at=expires,
            client=_client(request),
            server=request.server_name,
        )
        return natsjwt.authorization_response(
            user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=self._issuer, user_jwt=user
        )

    def _refuse(
        self, request: natsjwt.AuthorizationRequest, identity: Identity | None, rule: str | None, why: str
    ) -> str:
        self._count("denied", f"denied: {why}")
        self.auditor.record(
            False, identity=identity, rule=rule, reason=why, client=_client(request), server=request.server_name
        )
        return natsjwt.authorization_response(
            user_nkey=request.user_nkey, server_id=request.server_id, issuer_seed=self._issuer, error=why
        )

    def stats(self) -> dict[str, Any]:
        """Decisions so far: granted, denied (and by reason), unreadable requests, errors, audit, latency."""
        with self._counts_lock:
            counts, times = dict(self.counts), sorted(self.latencies)
        out: dict[str, Any] = {
            "granted": counts.get("granted", 0),
            "denied": counts.get("denied", 0),
            "denied_by_reason": {k[8:]: v for k, v in counts.items() if k.startswith("denied: ")},
            "unreadable": counts.get("unreadable", 0),
            "errors": counts.get("errors", 0),
            "audit_recorded": self.auditor.recorded,
            "audit_suppressed": self.auditor.suppressed,
        }
        if times:
            out["decision_ms_p50"] = round(statistics.median(times) * 1000, 3)
            out["decision_ms_p99"] = round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 3)
        return out

    # ---- serving (the event loop) --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (the service's own user, exempt from the callout), warm the JWKS caches and subscribe."""
        import nats

        from databricks_nats.transport.auth import auth_options

        loop = asyncio.get_running_loop()
        if self.oidc is not None:
            await loop.run_in_executor(self._pool, self.oidc.warm)
        settings = self.config.nats
        self._nc = await nats.connect(
            list(settings.url),
            name=settings.client_name,
            connect_timeout=settings.connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=self._on_error,
            **auth_options(settings),
        )
        await self._nc.subscribe(AUTH_SUBJECT, queue=self.config.queue, cb=self._on_request)
        await self._nc.flush()
        log.info("auth: serving %s for account %s (inboxes: %s)", AUTH_SUBJECT, self.config.account, self.config.inbox)

    async def _on_error(self, e: Exception) -> None:
        log.warning("auth: NATS: %s", type(e).__name__ if not str(e) else e)

    async def _on_request(self, msg: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(msg))  # requests are answered concurrently
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any) -> None:
        server_xkey = (msg.headers or {}).get(_XKEY_HEADER)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._pool, self.respond, msg.data, server_xkey)
        except Exception as e:  # noqa: BLE001 - never: respond refuses instead of raising; but never crash
            self._count("errors")
            log.error("auth: a request failed with %s", type(e).__name__)
            return
        if answer is not None and msg.reply:
            with contextlib.suppress(Exception):  # the server gave up waiting, or the connection dropped
                await msg.respond(answer)

    async def stop(self) -> None:
        """Stop answering, then flush the audit events and close."""
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._pool.shutdown(wait=False)
        if self.audit_client is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.audit_client.close, 10.0)

    @contextlib.contextmanager
    def running(self) -> Iterator[AuthService]:
        """Serve on a loop thread of its own for the ``with`` block (tests, embedding in a sync program)."""
        from databricks_nats.transport.loop import LoopThread

        thread = LoopThread("databricks-nats-auth-service")
        thread.run(self.start(), timeout=60)
        try:
            yield self
        finally:
            with contextlib.suppress(Exception):
                thread.run(self.stop(), timeout=30)
            thread.stop()


def serve(config: ServiceConfig) -> None:
    """Run the service until SIGTERM or SIGINT (the CLI's ``auth-service``)."""

    async def main() -> None:
        service = AuthService(config)
        await service.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        log.info("auth: stopping (%s)", service.stats())
        await service.stop()

    asyncio.run(main())
