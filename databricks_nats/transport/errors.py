"""The one mapping from nats-py failures to the ``StreamError`` family (as httpx maps transport errors).

Reading, provisioning and consuming the stream wrap their nats-py calls in ``nats_errors("what we did")``:
any failure that is not already one of ours becomes ``StreamError("cannot <what we did>: <Type>: <message>")``
chained to the original, with URL credentials masked. Errors of the tree and cancellation pass unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from databricks_nats.errors import DatabricksNatsError, StreamError
from databricks_nats.values import redact_url

__all__ = ["nats_errors", "stream_error"]


def stream_error(doing: str, error: BaseException, *, detail: bool = True) -> StreamError:
    """The ``StreamError`` for ``error`` raised while doing ``doing``; ``detail=False`` leaves out its text."""
    text = redact_url(str(error)) if detail else ""
    return StreamError(f"cannot {doing}: {type(error).__name__}" + (f": {text}" if text else ""))


@contextlib.contextmanager
def nats_errors(doing: str, *, detail: bool = True) -> Iterator[None]:
    """Raise what fails inside the block as ``stream_error(doing, ...)``, from the original."""
    try:
        yield
    except DatabricksNatsError:
        raise
    except Exception as e:
        raise stream_error(doing, e, detail=detail) from e
