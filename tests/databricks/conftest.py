"""A loopback stand-in for the Databricks REST API (documented endpoints only) and a real WorkspaceClient on it.

Served: ``GET /api/2.0/secrets/get`` (base64 values; 404 ``RESOURCE_DOES_NOT_EXIST``, 403 for keys listed
in ``forbidden``) and ``GET /api/2.0/preview/scim/v2/Me`` (with the ``X-Databricks-Org-Id`` header).
Everything else — e.g. the SDK's host-metadata probe — is a 404. A wrong bearer token is a 401.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

PAT = "dapi-stub-personal-access-token-0042"


class DatabricksStub:
    """State of the fake workspace: secrets by (scope, key), identity, and the requests seen."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], str] = {}
        self.forbidden: set[tuple[str, str]] = set()
        self.org_id = "1234567890123456"
        self.user_name = "svc-ml-publisher@example.com"
        self.calls: list[str] = []
        self.url = ""
        self.pat = PAT
        self.client: Any = None


def _handler(stub: DatabricksStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            stub.calls.append(url.path)
            if url.path not in ("/api/2.0/secrets/get", "/api/2.0/preview/scim/v2/Me"):
                self._send(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "not stubbed"})
            elif self.headers.get("Authorization") != f"Bearer {PAT}":
                self._send(401, {"error_code": "UNAUTHENTICATED", "message": "invalid token"})
            elif url.path == "/api/2.0/secrets/get":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                key = (q.get("scope", ""), q.get("key", ""))
                if key in stub.forbidden:
                    self._send(403, {"error_code": "PERMISSION_DENIED", "message": "no READ on scope"})
                elif key in stub.secrets:
                    value = base64.b64encode(stub.secrets[key].encode()).decode()
                    self._send(200, {"key": key[1], "value": value})
                else:
                    self._send(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such secret"})
            else:
                me = {"id": "7001", "userName": stub.user_name, "displayName": "ML publisher", "active": True}
                self._send(200, me, {"X-Databricks-Org-Id": stub.org_id})

    return Handler


@pytest.fixture
def databricks_stub() -> Iterator[DatabricksStub]:
    """The stub on a loopback port, with a real ``databricks.sdk.WorkspaceClient`` pointed at it and installed."""
    from databricks.sdk import WorkspaceClient

    from databricks_nats.integrations.databricks import sdk

    stub = DatabricksStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    stub.client = WorkspaceClient(host=stub.url, token=PAT)
    sdk.set_workspace_client(stub.client)
    yield stub
    sdk.set_workspace_client(None)
    server.shutdown()
    server.server_close()
