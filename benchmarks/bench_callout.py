"""The auth-callout service (P8, issue 15): decision latency, connect latency through the callout, connects/s.

Run: ``python -m benchmarks.bench_callout [--quick]``. Everything on loopback, with the test suite's own loopback
OIDC issuer (``tests/identity/oidc_issuer.py``: discovery + JWKS, RS256 tokens) and nats-server config
(``tests/identity/callout_server.py``: ``auth_callout`` with issuer, auth users, account ``APP``, xkey).

1. **Decisions in-process**: ``AuthService.respond(data, server_xkey)`` — one whole decision: open the sealed
   request, verify the server's signature, verify the OIDC token (RS256, JWKS cache warm), apply the policy,
   sign the user JWT and the response, seal it — timed around the call, on requests built here the way the
   server builds them (an ``authorization_request`` signed by a server nkey; for the encrypted callout sealed
   with a server curve key). Each request has its own user nkey and its own freshly minted token (the service
   caches JWKS keys, never tokens). Plain and xkey-encrypted callout, alternating; the audit is its log line only.
2. **Connect latency end to end**: nats-server with ``auth_callout`` (xkey) and the service in its own process
   (``AuthService(ServiceConfig.load(file))``, as ``databricks-nats auth-service --config`` runs it, with its
   audit publisher). N sequential nats-py connects, each with a fresh token (``connect()`` returns once the
   server answered CONNECT+PING, i.e. after the callout), then close; interleaved with connects of a plain
   ``auth_users`` user of the same server (no callout), so the callout's share is the difference.
3. **Sustained connects/s**: K concurrent clients (asyncio tasks in this process) connect and close in a loop
   for a fixed time, presenting tokens from a pool minted beforehand (distinct tokens, reused round-robin:
   minting them on the fly would load the shared CPU); every refusal or error is counted (must be 0). The same
   for the plain user, for the ceiling of client + server without the callout.

The service's own ``stats()`` (its timer inside ``respond``) is read after step 2 and after each run of step 3,
each read covering that phase only (the bench's service script clears the timer's window after each read), with
the service process's CPU time per connect. The machine's 2 cores are shared by nats-server, the service and
this process (clients and issuer).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._common import median, percentile, print_table, verdict, write_results
from tests.identity.callout_server import AUDIENCE, POLICY

P99_TARGET_MS = 20.0
GROUPS = {"groups": ["team-a"]}


# The service in its own process: "ready", then per line on stdin its stats() (the timer's window then starts
# afresh, so each read covers one phase) plus the process's CPU seconds so far, until EOF.
_SERVICE = r"""
import json, sys, time
from databricks_nats.integrations.identity.config import ServiceConfig
from databricks_nats.integrations.identity.service import AuthService
service = AuthService(ServiceConfig.load(sys.argv[1]))
with service.running():
    print("ready", flush=True)
    for line in sys.stdin:
        stats = {**service.stats(), "timed": len(service.latencies), "cpu_s": time.process_time()}
        service.latencies.clear()
        print(json.dumps(stats), flush=True)
"""


def _ms(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": median(ms), "p99_ms": percentile(ms, 99), "max_ms": max(ms, default=float("nan"))}


def _server_key() -> tuple[str, str]:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER).decode()
    return seed, nkeys.from_seed(seed.encode()).public_key.decode()


def _request(server_seed: str, server_public: str, token: str, n: int) -> bytes:
    """An ``authorization_request`` as nats-server signs it (the fields the service reads, and a few more)."""
    from databricks_nats.integrations.identity import natsjwt

    nats = {
        "server_id": {"name": "bench", "host": "127.0.0.1", "id": server_public, "version": "2.12.0"},
        "user_nkey": natsjwt.new_user_key()[1],
        "client_info": {"host": "127.0.0.1", "id": n, "kind": "Client", "type": "nats", "start": "now"},
        "connect_opts": {"auth_token": token, "lang": "python3", "version": "2.16.0", "protocol": 1},
        "request_nonce": f"nonce-{n}",
        "type": "authorization_request",
        "version": 2,
    }
    claims = {"aud": "nats-authorization-request", "sub": server_public, "exp": int(time.time()) + 600, "nats": nats}
    return natsjwt.encode(claims, server_seed).encode()


class _Bench:
    """One in-process service (plain or encrypted callout) and its requests, built before any timing."""

    def __init__(self, issuer: Any, n: int, encrypted: bool) -> None:
        from databricks_nats.integrations.identity import natsjwt, xkey
        from databricks_nats.integrations.identity.config import ServiceConfig
        from databricks_nats.integrations.identity.oidc import OidcIssuer
        from databricks_nats.integrations.identity.service import AuthService
        from databricks_nats.settings import resolve_settings
        from databricks_nats.values import Secret

        tmp = tempfile.mkdtemp(prefix="bench-callout-")
        with open(os.path.join(tmp, "policy.toml"), "w") as f:
            f.write(POLICY)
        issuer_seed, _ = natsjwt.new_account_key()
        service_xkey: str | None = None
        self.service_xpub: str | None = None
        if encrypted:
            service_xkey, self.service_xpub = xkey.new_xkey()
        self.server_xkey, server_xpub = xkey.new_xkey()
        config = ServiceConfig(
            nats=resolve_settings(environ={}, spark_conf={}, url="nats://127.0.0.1:4222"),  # not connected here
            account="APP",
            issuer_seed=Secret(issuer_seed),
            xkey_seed=Secret(service_xkey) if service_xkey else None,
            policy=os.path.join(tmp, "policy.toml"),
            oidc=(OidcIssuer(issuer=issuer.url, audiences=(AUDIENCE,)),),
        )
        self.service = AuthService(config)
        self.service.oidc.warm()
        server_seed, server_public = _server_key()
        self.requests = []
        for i in range(n):
            token = issuer.mint(sub="svc-team-a", aud=AUDIENCE, extra_claims=GROUPS)
            data = _request(server_seed, server_public, token, i)
            self.requests.append(xkey.seal(data, self.server_xkey, self.service_xpub) if self.service_xpub else data)
        self.header = server_xpub if encrypted else None
        self.times: list[float] = []
        self.answers: list[bytes | None] = []

    def decide(self, i: int) -> None:
        t0 = time.perf_counter()
        answer = self.service.respond(self.requests[i], self.header)
        self.times.append(time.perf_counter() - t0)
        self.answers.append(answer)

    def granted(self) -> int:
        from databricks_nats.integrations.identity import natsjwt, xkey

        granted = 0
        for answer in self.answers:
            if answer is not None and self.service_xpub:
                answer = xkey.open_sealed(answer, self.server_xkey, self.service_xpub)
            granted += answer is not None and "jwt" in natsjwt.decode(answer.decode())["nats"]
        return granted


def decisions(issuer: Any, n: int) -> dict[str, dict[str, Any]]:
    """``respond()`` timed on ``n`` requests each, plain and encrypted alternating, after 50 of each to warm up;
    every answer must be a grant."""
    warm = 50
    benches = {"plain": _Bench(issuer, n + warm, False), "xkey": _Bench(issuer, n + warm, True)}
    for i in range(n + warm):
        for bench in benches.values():
            bench.decide(i)
    out = {}
    for mode, bench in benches.items():
        del bench.times[:warm], bench.answers[:warm]
        out[mode] = {**_ms(bench.times), "granted": bench.granted(), "service_stats": bench.service.stats()}
    return out


async def _connect(url: str, **auth: Any) -> Any:
    import nats

    async def quiet(_e: Exception) -> None:
        return None

    return await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, error_cb=quiet, **auth
    )


async def sequential(url: str, plain: dict[str, str], tokens: list[str]) -> dict[str, Any]:
    """Connect → handshake done → close, one at a time, alternating callout and plain user."""
    callout_s: list[float] = []
    plain_s: list[float] = []
    refused = 0
    for i, token in enumerate(tokens):
        for auth, into in (({"token": token}, callout_s), (plain, plain_s)):
            t0 = time.perf_counter()
            try:
                nc = await _connect(url, **auth)
            except Exception:  # counted: a refusal or a timeout
                refused += 1
                continue
            elapsed = time.perf_counter() - t0
            await nc.close()
            if i >= 20:  # the first 20 of each warm up the client and the service's pool
                into.append(elapsed)
    return {"callout": _ms(callout_s), "plain": _ms(plain_s), "refused": refused}


async def sustained(url: str, clients: int, seconds: float, auths: Any) -> dict[str, Any]:
    """``clients`` tasks connecting and closing in a loop for ``seconds``; each connect's time is kept."""
    done, refused, errors, times = 0, 0, [], []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, refused
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                nc = await _connect(url, **next(auths))
            except Exception as e:  # counted (the type only: a message could quote a token)
                refused += 1
                errors.append(type(e).__name__)
                continue
            times.append(time.perf_counter() - t0)
            await nc.close()
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.monotonic() - t0
    return {
        "clients": clients,
        "seconds": elapsed,
        "connects": done,
        "per_s": done / elapsed,
        "refused": refused,
        "error_types": sorted(set(errors)),
        "connect": _ms(times),
    }


def end_to_end(issuer: Any, n: int, seconds: float, clients: tuple[int, ...]) -> dict[str, Any]:
    from databricks_nats.integrations.identity import natsjwt, xkey
    from databricks_nats.testing import NatsServer
    from tests.identity.callout_server import callout_config

    tmp = tempfile.mkdtemp(prefix="bench-callout-e2e-")
    issuer_seed, issuer_public = natsjwt.new_account_key()
    xkey_seed, xkey_public = xkey.new_xkey()
    users: list[dict[str, object]] = [{"user": u, "password": f"{u}-pw", "account": "APP"} for u in ("audit", "plain")]
    conf = callout_config(
        os.path.join(tmp, "server.conf"),
        issuer_public=issuer_public,
        auth_user="auth",
        auth_password="auth-pw",  # noqa: S106 - a throwaway user of a throwaway server
        xkey_public=xkey_public,
        extra_users=users,
    )
    for name, text in (("issuer.nk", issuer_seed), ("xkey.nk", xkey_seed), ("policy.toml", POLICY)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    plain = {"user": "plain", "password": "plain-pw"}
    pool = [issuer.mint(sub="svc-team-a", aud=AUDIENCE, exp_in=900, extra_claims=GROUPS) for _ in range(3000)]
    fresh = [issuer.mint(sub="svc-team-a", aud=AUDIENCE, extra_claims=GROUPS) for _ in range(n + 20)]
    with NatsServer(config=conf) as server:
        audit_url = server.url.replace("nats://", "nats://audit:audit-pw@")
        with open(os.path.join(tmp, "service.toml"), "w") as f:
            f.write(f"""
[nats]
url = "{server.url}"
user = "auth"
password = "auth-pw"
[callout]
account = "APP"
issuer_seed = "{tmp}/issuer.nk"
xkey_seed = "{tmp}/xkey.nk"
policy = "policy.toml"
[[oidc]]
issuer = "{issuer.url}"
audiences = ["{AUDIENCE}"]
[audit]
url = "{audit_url}"
workspace = "platform"
env = "prod"
spool_dir = "{tmp}/audit-spool"
""")
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVICE, os.path.join(tmp, "service.toml")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None

        def stats() -> dict[str, Any]:
            proc.stdin.write("stats\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(proc.stdout.readline())  # type: ignore[union-attr, no-any-return]

        try:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the auth service did not start")
            seq = asyncio.run(sequential(server.url, plain, fresh))
            stats_seq = stats()
            tokens = itertools.cycle([{"token": t} for t in pool])
            runs = []
            for k in clients:
                cpu = stats()["cpu_s"]
                run = asyncio.run(sustained(server.url, k, seconds, tokens))
                run["service"] = after = stats()
                run["service_cpu_ms_per_connect"] = (after["cpu_s"] - cpu) * 1000 / max(1, run["connects"])
                runs.append(run)
            plain_runs = [asyncio.run(sustained(server.url, k, seconds / 2, itertools.repeat(plain))) for k in clients]
        finally:
            proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"sequential": seq, "stats_sequential": stats_seq, "sustained": runs, "sustained_plain": plain_runs}


def _load() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_dec, n_seq, seconds = (300, 100, 3.0) if args.quick else (2000, 500, 10.0)
    clients = (8, 32)
    from tests.identity.oidc_issuer import OidcIssuerStub

    load_before, started = _load(), time.monotonic()
    with OidcIssuerStub() as issuer:
        dec = decisions(issuer, n_dec)
        e2e = end_to_end(issuer, n_seq, seconds, clients)
    load_after = _load()

    rows, summary = [], []
    for mode, d in dec.items():
        ok = d["p99_ms"] <= P99_TARGET_MS and d["granted"] == d["n"]
        rows.append(
            [
                f"respond() in-process, {mode}",
                d["n"],
                d["p50_ms"],
                d["p99_ms"],
                d["max_ms"],
                f"p99 <= {P99_TARGET_MS:g} ms",
                verdict(ok),
            ]
        )
        summary.append(
            {
                "id": "P8",
                "measure": f"callout decision p50 / p99 ({mode}, in-process)",
                "value": f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms",
                "target": f"p99 <= {P99_TARGET_MS:g} ms",
                "met": ok,
            }
        )
    seq = e2e["sequential"]
    for kind in ("callout", "plain"):
        s = seq[kind]
        rows.append([f"connect, {kind} user", s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"], "-", "info"])
    phases = [("sequential connects", e2e["stats_sequential"], True)]
    phases += [(f"{r['clients']} clients at once", r["service"], False) for r in e2e["sustained"]]
    for when, st, judged in phases:
        ok = st.get("decision_ms_p99", float("inf")) <= P99_TARGET_MS
        rows.append(
            [
                f"service stats(), {when}",
                st["timed"],
                st.get("decision_ms_p50"),
                st.get("decision_ms_p99"),
                "-",
                f"p99 <= {P99_TARGET_MS:g} ms" if judged else "-",
                verdict(ok) if judged else "info",
            ]
        )
    summary.append(
        {
            "id": "P8",
            "measure": "service stats() decision p50 / p99, sequential connects",
            "value": f"{phases[0][1].get('decision_ms_p50')} / {phases[0][1].get('decision_ms_p99')} ms",
            "target": f"p99 <= {P99_TARGET_MS:g} ms",
            "met": phases[0][1].get("decision_ms_p99", float("inf")) <= P99_TARGET_MS,
        }
    )
    print_table(
        ["decision / connect", "n", "p50 ms", "p99 ms", "max ms", "target", "result"],
        rows,
        title="bench_callout: latency (loopback, RS256 OIDC tokens, JWKS cache warm)",
    )
    share = seq["callout"]["p50_ms"] - seq["plain"]["p50_ms"]
    summary.append(
        {
            "id": "P8",
            "measure": "connect p50 / p99, callout vs plain user",
            "value": f"{seq['callout']['p50_ms']:.2f} / {seq['callout']['p99_ms']:.2f} vs "
            f"{seq['plain']['p50_ms']:.2f} / {seq['plain']['p99_ms']:.2f} ms",
            "target": "-",
            "met": None,
        }
    )
    rows = []
    refused = seq["refused"]
    for kind, runs in (("callout", e2e["sustained"]), ("plain", e2e["sustained_plain"])):
        for r in runs:
            refused += r["refused"]
            cpu = r.get("service_cpu_ms_per_connect", float("nan"))
            lat = r["connect"]
            rows.append(
                [
                    kind,
                    r["clients"],
                    r["seconds"],
                    r["connects"],
                    r["per_s"],
                    r["refused"],
                    lat["p50_ms"],
                    lat["p99_ms"],
                    cpu,
                ]
            )
    print_table(
        [
            "user",
            "clients",
            "s",
            "connects",
            "connects/s",
            "refused",
            "connect p50 ms",
            "p99 ms",
            "service CPU ms/connect",
        ],
        rows,
        title="bench_callout: sustained connects (connect + close in a loop)",
    )
    rates = " / ".join(f"{r['per_s']:.0f}" for r in e2e["sustained"])
    summary.append(
        {
            "id": "P8",
            "measure": f"sustained connects/s via callout, {' / '.join(map(str, clients))} clients (refusals)",
            "value": f"{rates} ({refused})",
            "target": "0 refusals",
            "met": refused == 0,
        }
    )
    print(f"callout share of a connect (p50 difference): {share:.2f} ms; load before {load_before}, after {load_after}")
    data = {
        "mode": "quick" if args.quick else "full",
        "elapsed_s": time.monotonic() - started,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "decisions": dec,
        **e2e,
        "callout_share_p50_ms": share,
        "summary": summary,
    }
    print(f"results: {write_results('bench_callout' + ('_quick' if args.quick else ''), data)}")


if __name__ == "__main__":
    main()
