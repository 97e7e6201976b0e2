"""Subject grammar and the injective, safe encoding of user-controlled names into subject tokens.

Grammar (every part is one or more NATS tokens separated by ``.``)::

    subject  = prefix "." workspace "." env "." source "." entity { "." key } "." action
    prefix   = token { "." token }          fixed by configuration, e.g. "dbx"
    workspace, env, source, entity, action  = name    (validated: [A-Za-z0-9_-]+)
    key      = encode(user-controlled name)            e.g. a run id, a model name "main.ml.churn"

Token encoding (``encode``):

* the characters ``A-Z a-z 0-9 _ -`` stand for themselves;
* every other character is written as ``%XX`` per byte of its UTF-8 encoding (upper-case hex), so
  ``main.ml.churn`` becomes ``main%2Eml%2Echurn`` and ``%`` itself becomes ``%25``;
* the empty string becomes ``~e``;
* an encoding longer than ``MAX_TOKEN`` characters becomes its first ``MAX_TOKEN - 33`` characters,
  ``~`` and the 32-hex-digit SHA-256 prefix of the original name.

A token therefore never contains ``.``, ``*``, ``>``, whitespace or control characters, is never empty
and never longer than ``MAX_TOKEN``. Percent-encoding with a fixed safe set is injective, and ``~`` never
appears in it, so the empty and the hashed forms cannot collide with it (hash collisions aside: 128 bits).
Original names always travel in the event payload; ``decode`` reverses the non-hashed forms.

Subject length (``build_subject``): a subject is at most ``MAX_SUBJECT`` characters (1,024, well inside
the server's 4 KiB control line, which also carries the reply inbox and the sizes). When the encoded keys
would make it longer, the first keys that fit are kept and all the others are folded into one last token
``~f`` followed by the 32-hex-digit SHA-256 prefix of the folded tokens joined by ``.`` (an injective
serialisation: tokens never contain ``.``). No token made by ``encode`` starts with ``~f`` (``~`` starts
only the exact token ``~e``), so a folded subject never equals an unfolded one, and two key lists give the
same folded subject only if they share the kept keys and the folded ones (hash collisions aside). Only a
namespace, source, entity and action longer than ``MAX_SUBJECT`` themselves (configuration) can make a
subject longer: then every key is folded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

from databricks_nats.errors import SubjectError

__all__ = [
    "FOLD_MARK",
    "MAX_SUBJECT",
    "MAX_TOKEN",
    "build_subject",
    "decode",
    "encode",
    "validate_name",
    "validate_prefix",
]

MAX_TOKEN = 96
MAX_SUBJECT = 1024  # characters of a whole subject (see the module docstring: extra keys are folded)
FOLD_MARK = "~f"  # starts the last key token of a subject whose extra keys were folded into a hash
_FOLD_LEN = len(FOLD_MARK) + 32
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


@lru_cache(maxsize=4096)
def encode(name: str) -> str:
    """Encode a user-controlled name as one safe subject token (see the module docstring)."""
    if not name:
        return "~e"
    if _PLAIN.fullmatch(name):
        out = name
    else:
        out = "".join(
            ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")) for ch in name
        )
    if len(out) > MAX_TOKEN:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        out = f"{out[: MAX_TOKEN - 33]}~{digest}"
    return out


def decode(token: str) -> str:
    """Return the name a non-hashed token encodes; raise SubjectError for a hashed (lossy) token."""
    if token == "~e":
        return ""
    if "~" in token:
        raise SubjectError(f"token {token[:40]!r}… is a hashed long name; read the name from the payload")
    raw = bytearray()
    i = 0
    try:
        while i < len(token):
            if token[i] == "%":
                raw.append(int(token[i + 1 : i + 3], 16))
                i += 3
            else:
                raw.extend(token[i].encode())
                i += 1
        return raw.decode("utf-8", "surrogatepass")
    except ValueError as e:  # bad hex, or bytes that are not UTF-8
        raise SubjectError(f"{token[:40]!r} is not a token made by encode()") from e


def validate_name(what: str, value: str) -> str:
    """Check a fixed grammar part (workspace, env, source, entity, action); return it unchanged."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SubjectError(f"{what} must match [A-Za-z0-9_-]{{1,64}}, got {value!r}")
    return value


def validate_prefix(value: str) -> str:
    """Check a subject prefix: one or more fixed-grammar tokens separated by dots."""
    if not isinstance(value, str) or not value:
        raise SubjectError("subject prefix must be a non-empty string")
    for tok in value.split("."):
        validate_name("subject prefix token", tok)
    return value


def build_subject(namespace: str, source: str, entity: str, keys: Iterable[str], action: str) -> str:
    """Join an already validated namespace (prefix.workspace.env) with the encoded parts of one event.

    At most ``MAX_SUBJECT`` characters: keys beyond what fits are folded into one hashed token (see above).
    """
    tokens = [encode(str(k)) for k in keys]
    fixed = len(namespace) + len(source) + len(entity) + len(action) + 3
    if fixed + sum(len(t) + 1 for t in tokens) > MAX_SUBJECT:
        tokens = fold(tokens, MAX_SUBJECT - fixed)
    return ".".join([namespace, source, entity, *tokens, action])


def fold(tokens: list[str], budget: int) -> list[str]:
    """Keep the first tokens that fit in ``budget`` characters (dots included) with the fold token; hash the rest."""
    room = budget - _FOLD_LEN - 1
    kept = 0
    for token in tokens:
        room -= len(token) + 1
        if room < 0:
            break
        kept += 1
    digest = hashlib.sha256(".".join(tokens[kept:]).encode("ascii")).hexdigest()[:32]
    return [*tokens[:kept], FOLD_MARK + digest]
