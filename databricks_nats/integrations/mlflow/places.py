"""Where the objects a store holds live in a UI: the ``urls.Ui`` of each store's URI, and the workspace URL.

A store's URI is read once, when the hook wraps it (``note``). The UI of a URI is computed once per URI and
configure. The workspace URL (context detection, else ``DATABRICKS_HOST``) is a lookup: it runs on the hook's
worker only (``later.py``), prefetched there as soon as a Databricks store is handed out, so it is known, as a
rule, before the first event needs it; an event that needs it earlier is described on the worker
(``NeedsLookup``).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any

from databricks_nats.client import current_client
from databricks_nats.integrations.mlflow import _compat, urls
from databricks_nats.integrations.mlflow.later import Later, NeedsLookup

__all__ = ["Places"]

_UNSET: Any = object()


class Places:
    """Store -> URI -> UI, and the workspace URL (looked up on the worker once per configure)."""

    def __init__(self, later: Later) -> None:
        self.later = later
        self.settings: Any = None
        self._store_uris: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._uis: dict[str | None, urls.Ui] = {}  # tracking/registry URI -> its UI, for these settings
        self._workspace_url: Any = _UNSET
        self._databricks = False  # a Databricks store was handed out: the workspace URL will be needed

    def reset(self, settings: Any) -> None:
        """New settings: UIs and the workspace URL are worked out again."""
        self.settings = settings
        self._uis = {}
        self._workspace_url = _UNSET

    def workspace(self) -> str | None:
        """The workspace URL from context detection (else ``DATABRICKS_HOST``): once per configure, on the worker."""
        if self._workspace_url is _UNSET:
            if not self.later.on_worker():
                raise NeedsLookup
            found = None
            try:
                found = self._detect()
            except Exception as e:  # noqa: BLE001 - a URL is a nicety, never a reason to fail
                current_client().fail(e, "mlflow workspace url")
            self._workspace_url = urls.databricks_workspace_url(found)
        url: str | None = self._workspace_url
        return url

    def _detect(self) -> str | None:
        from databricks_nats.integrations.databricks.context import detect_context

        settings = self.settings if self.settings is not None else current_client().settings
        found: str | None = detect_context(settings, sdk=True).workspace_url
        if not found and settings.detect_context:
            from databricks_nats.integrations.databricks.sdk import identity

            known = identity(settings.context_timeout)  # cached per process: the SDK's configured host
            found = known.workspace_url if known is not None else None
        return found

    def _prefetch(self) -> None:
        if self._workspace_url is _UNSET and not self.later.pending("workspace"):
            self.later.submit("workspace", self._quiet_workspace)

    def _quiet_workspace(self) -> None:
        with contextlib.suppress(Exception):
            self.workspace()

    def ui(self, uri: str | None) -> urls.Ui:
        """The UI runs and models of a store built for this URI live in (computed once per URI and configure)."""
        ui = self._uis.get(uri)
        if ui is None:
            if uri and uri.startswith("databricks-uc"):
                ui = urls.Ui("databricks", self.workspace())
            else:
                on_databricks = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
                ui = urls.ui_for(uri, self.workspace, on_databricks)
            if len(self._uis) > 64:
                self._uis.clear()
            self._uis[uri] = ui
        return ui

    def uri(self, store: Any) -> str | None:
        """The URI a store was built for (noted when wrapped), else the current tracking URI."""
        try:
            uri = self._store_uris.get(store, _UNSET)
        except TypeError:  # not weak-referenceable
            uri = _UNSET
        if uri is _UNSET:
            uri = _compat.store_uri(store) if store is not None else None
        return uri or _compat.current_tracking_uri()

    def note(self, store: Any) -> None:
        """A store is handed out: remember its URI; a Databricks one has the workspace URL looked up now."""
        uri = _compat.store_uri(store)
        with contextlib.suppress(TypeError):  # not weak-referenceable: its URI is read again when needed
            self._store_uris[store] = uri
        if urls.is_databricks_uri(uri) or str(uri or "").startswith("databricks-uc"):
            self._databricks = True
            _warm_imports()  # here, on the caller's thread: the worker must not import (see _warm_imports)
            self._prefetch()  # ready, as a rule, before the first event needs it


def _warm_imports() -> None:
    """Import what detection uses on the caller's thread: an import on the worker while another thread is inside
    ``mlflow.autolog()`` deadlocks (MLflow holds its import-hook lock while importing, and its import finder
    takes that lock under the interpreter's import lock)."""
    with contextlib.suppress(Exception):
        import databricks_nats.integrations.databricks.context
        import databricks_nats.integrations.databricks.sdk  # noqa: F401
    with contextlib.suppress(Exception):
        import databricks.sdk  # noqa: F401 - MLflow's Databricks stores use it: installed where it matters
