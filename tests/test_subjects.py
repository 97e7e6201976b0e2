"""Subject grammar and the token encoding of user-controlled names: injective, safe, bounded, reversible."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from databricks_nats.errors import DatabricksNatsError, SubjectError
from databricks_nats.model.subjects import (
    FOLD_MARK,
    MAX_SUBJECT,
    MAX_TOKEN,
    build_subject,
    decode,
    encode,
    validate_name,
    validate_prefix,
)

# Full Unicode without surrogates (hypothesis' default), control characters included.
ANY_TEXT = st.text(st.characters(codec=None))
# Lone surrogates too: Python strings can hold them (e.g. os.fsdecode of undecodable file names).
WITH_SURROGATES = st.text(st.one_of(st.characters(codec=None), st.characters(categories=["Cs"])))
CONTROL_AND_PUNCT = st.text(st.sampled_from([*"\x00\x01\x1f\x7f\t\n\r .*>%~-_aZ09", "\u0085", "\u2028", "\ufeff"]))
HASHED = re.compile(rf"^[A-Za-z0-9_%-]{{{MAX_TOKEN - 33}}}~[0-9a-f]{{32}}$")
UNSAFE = set(".*>") | set(string.whitespace)

SMALL = settings(max_examples=200, deadline=None)


def _assert_safe(token: str) -> None:
    assert token, "a token is never empty"
    assert len(token) <= MAX_TOKEN
    assert not (set(token) & UNSAFE), token
    assert all(ch.isprintable() and not ch.isspace() for ch in token), token
    assert token.isascii(), token


def _is_hashed(token: str) -> bool:
    return "~" in token and token != "~e"


@SMALL
@given(ANY_TEXT)
def test_encode_is_safe_for_any_text(name: str) -> None:
    """Every token is non-empty, at most MAX_TOKEN long, ASCII, without '.', '*', '>', whitespace or controls."""
    _assert_safe(encode(name))


@SMALL
@given(WITH_SURROGATES)
def test_encode_is_safe_and_reversible_with_lone_surrogates(name: str) -> None:
    """Names holding lone surrogates still encode to safe tokens that decode back (when not hashed)."""
    token = encode(name)
    _assert_safe(token)
    if not _is_hashed(token):
        assert decode(token) == name


@SMALL
@given(st.one_of(ANY_TEXT, CONTROL_AND_PUNCT))
def test_decode_reverses_encode_for_non_hashed_tokens(name: str) -> None:
    """decode(encode(x)) == x whenever the token is not the hashed form of a long name."""
    token = encode(name)
    if _is_hashed(token):
        assert HASHED.fullmatch(token), token
    else:
        assert decode(token) == name


@SMALL
@given(ANY_TEXT, ANY_TEXT)
def test_encode_is_injective_on_pairs(a: str, b: str) -> None:
    """Two different names never encode to the same token."""
    assume(a != b)
    assert encode(a) != encode(b)


@SMALL
@given(CONTROL_AND_PUNCT, CONTROL_AND_PUNCT)
def test_encode_is_injective_on_tricky_alphabet(a: str, b: str) -> None:
    """Names built from separators, wildcards, '%', '~' and controls never collide with each other."""
    assume(a != b)
    assert encode(a) != encode(b)


@SMALL
@given(ANY_TEXT, st.sampled_from(["", ".", "%", "~", "~e", "%25", "\x00", " ", "a"]))
def test_encode_is_injective_on_near_neighbours(a: str, suffix: str) -> None:
    """A name and the same name with a short (possibly escape-like) suffix never collide."""
    b = a + suffix
    assume(a != b)
    assert encode(a) != encode(b)
    assert encode(suffix + a) != encode(a)


@SMALL
@given(st.text(st.characters(codec=None), min_size=MAX_TOKEN, max_size=400), st.text(min_size=1, max_size=20))
def test_long_names_sharing_a_prefix_get_distinct_hashed_tokens(prefix: str, tail: str) -> None:
    """Long names that only differ after the kept prefix still get different (hashed) tokens."""
    a, b = prefix + tail, prefix + tail + "x"
    ta, tb = encode(a), encode(b)
    assert _is_hashed(ta)
    assert _is_hashed(tb)
    assert ta != tb
    assert ta[: MAX_TOKEN - 33] == tb[: MAX_TOKEN - 33]
    _assert_safe(ta)
    _assert_safe(tb)


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("main.ml.churn", "main%2Eml%2Echurn"),
        ("", "~e"),
        ("*", "%2A"),
        (">", "%3E"),
        ("%", "%25"),
        ("~", "%7E"),
        ("~e", "%7Ee"),
        ("a b", "a%20b"),
        ("\n", "%0A"),
        ("é", "%C3%A9"),
        ("run-1_A", "run-1_A"),
    ],
)
def test_encode_examples(name: str, token: str) -> None:
    """Known names encode to the documented percent-encoded tokens and decode back."""
    assert encode(name) == token
    assert decode(token) == name


def test_ten_thousand_char_names_are_hashed_and_bounded() -> None:
    """A 10k-character name becomes a hashed token of exactly MAX_TOKEN characters, with a stable hash."""
    long_plain = "a" * 10_000
    long_dotted = "x." * 5_000
    for name in (long_plain, long_dotted, "é" * 10_000, "\x00" * 10_000):
        token = encode(name)
        assert len(token) == MAX_TOKEN
        assert HASHED.fullmatch(token), token
        _assert_safe(token)
        assert encode(name) == token  # deterministic
    assert encode(long_plain) != encode(long_plain[:-1] + "b")
    assert encode(long_plain) != encode(long_plain + "a")


def test_hashed_tokens_refuse_to_decode() -> None:
    """decode of a hashed long-name token raises SubjectError instead of returning a wrong name."""
    with pytest.raises(SubjectError):
        decode(encode("n" * 500))


def test_token_length_boundary() -> None:
    """An encoding of exactly MAX_TOKEN characters is kept as is; one character more is hashed."""
    at_cap = "a" * MAX_TOKEN
    assert encode(at_cap) == at_cap
    over = "a" * (MAX_TOKEN + 1)
    assert _is_hashed(encode(over))
    assert len(encode(over)) == MAX_TOKEN
    # 32 dots encode to 96 characters: at the cap, not hashed, still reversible.
    assert decode(encode("." * 32)) == "." * 32
    assert _is_hashed(encode("." * 33))


NAME_TOKEN = r"[A-Za-z0-9_-]{1,64}"
KEY_TOKEN = rf"(?:~e|[A-Za-z0-9_%-]{{1,{MAX_TOKEN}}}|[A-Za-z0-9_%-]{{{MAX_TOKEN - 33}}}~[0-9a-f]{{32}})"


@SMALL
@given(
    prefix=st.lists(st.from_regex(NAME_TOKEN, fullmatch=True), min_size=1, max_size=3).map(".".join),
    workspace=st.from_regex(NAME_TOKEN, fullmatch=True),
    env=st.from_regex(NAME_TOKEN, fullmatch=True),
    source=st.from_regex(NAME_TOKEN, fullmatch=True),
    entity=st.lists(st.from_regex(NAME_TOKEN, fullmatch=True), min_size=1, max_size=2).map(".".join),
    keys=st.lists(st.one_of(ANY_TEXT, st.text(min_size=90, max_size=300)), max_size=4),
    action=st.from_regex(NAME_TOKEN, fullmatch=True),
)
def test_build_subject_matches_grammar(
    prefix: str, workspace: str, env: str, source: str, entity: str, keys: list[str], action: str
) -> None:
    """build_subject yields prefix.workspace.env.source.entity.{key}.action with every key as one encoded token."""
    namespace = ".".join((validate_prefix(prefix), validate_name("workspace", workspace), validate_name("env", env)))
    subject = build_subject(namespace, source, entity, keys, action)
    head = rf"^{re.escape(namespace)}\.{re.escape(source)}\.{re.escape(entity)}"
    grammar = rf"{head}(?:\.{KEY_TOKEN})*\.{re.escape(action)}$"
    assert re.fullmatch(grammar, subject), subject
    tokens = subject.split(".")
    fixed = len(namespace.split(".")) + 1 + len(entity.split("."))
    assert len(tokens) == fixed + len(keys) + 1
    key_tokens = tokens[fixed:-1]
    assert key_tokens == [encode(k) for k in keys]
    for tok in tokens:
        _assert_safe(tok)
    for key, tok in zip(keys, key_tokens, strict=True):
        if not _is_hashed(tok):
            assert decode(tok) == key


FOLD_TOKEN = re.compile(rf"^{re.escape(FOLD_MARK)}[0-9a-f]{{32}}$")
MANY_KEYS = st.lists(st.one_of(st.text(max_size=12), st.text(min_size=90, max_size=200)), min_size=0, max_size=40)


@SMALL
@given(keys=MANY_KEYS)
def test_build_subject_is_bounded_and_folds_only_what_does_not_fit(keys: list[str]) -> None:
    """Issue 13 item 6: a subject is at most MAX_SUBJECT characters; when the keys do not fit, the first ones that
    do are kept as they are and the rest become one last token ~f<32 hex>; otherwise nothing changes."""
    namespace, head = "dbx.ws.dev", "dbx.ws.dev.custom.thing"
    subject = build_subject(namespace, "custom", "thing", keys, "happened")
    assert len(subject) <= MAX_SUBJECT
    tokens = subject[len(head) + 1 :].split(".")[:-1]
    encoded = [encode(k) for k in keys]
    unfolded = ".".join([head, *encoded, "happened"])
    if len(unfolded) <= MAX_SUBJECT:
        assert subject == unfolded
    else:
        assert FOLD_TOKEN.match(tokens[-1]), tokens[-1]
        assert tokens[:-1] == encoded[: len(tokens) - 1]
        assert len(tokens) - 1 < len(keys)
    for tok in subject.split("."):
        _assert_safe(tok)


@SMALL
@given(a=MANY_KEYS, b=MANY_KEYS)
def test_build_subject_is_injective_with_folding(a: list[str], b: list[str]) -> None:
    """Different key lists give different subjects, folded or not (hash collisions aside)."""
    assume(a != b)
    assert build_subject("dbx.ws.dev", "s", "e", a, "x") != build_subject("dbx.ws.dev", "s", "e", b, "x")


@SMALL
@given(st.one_of(ANY_TEXT, CONTROL_AND_PUNCT, st.text(min_size=90)))
def test_no_encoded_token_looks_like_a_fold_token(name: str) -> None:
    """encode never starts a token with the fold mark, so a folded subject cannot equal an unfolded one."""
    assert not encode(name).startswith(FOLD_MARK)


def test_build_subject_of_1500_keys_folds_into_one_hashed_token() -> None:
    """The report's event: 1,500 keys (a 7,912-character subject before) now gives a bounded subject; a change
    in any folded key changes it."""
    keys = [f"key{i}" for i in range(1500)]
    subject = build_subject("dbx.ws.dev", "custom", "thing", keys, "happened")
    assert len(subject) <= MAX_SUBJECT
    tokens = subject.split(".")
    assert tokens[5:8] == ["key0", "key1", "key2"]
    assert FOLD_MARK in tokens[-2]
    changed = build_subject("dbx.ws.dev", "custom", "thing", [*keys[:-1], "other"], "happened")
    assert changed != subject
    assert changed.split(".")[:-2] == tokens[:-2]


def test_build_subject_example() -> None:
    """A registered-model subject keeps the dotted Unity Catalog name inside one token."""
    subject = build_subject("dbx.123.prod", "mlflow", "model", ["main.ml.churn"], "version_created")
    assert subject == "dbx.123.prod.mlflow.model.main%2Eml%2Echurn.version_created"
    assert build_subject("dbx.ws.dev", "custom", "thing", [], "done") == "dbx.ws.dev.custom.thing.done"
    assert build_subject("dbx.ws.dev", "s", "e", ["", 7], "a") == "dbx.ws.dev.s.e.~e.7.a"


@pytest.mark.parametrize("good", ["a", "A-Z_09", "x" * 64, "prod", "1234567890"])
def test_validate_name_accepts_plain_tokens(good: str) -> None:
    """validate_name returns plain [A-Za-z0-9_-]{1,64} tokens unchanged."""
    assert validate_name("env", good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "a.b", "a b", "*", ">", "a*", "a>", "x" * 65, "é", "tab\t", "nl\n", "a%2E", "~e", None, 7, b"bytes", ["a"]],
)
def test_validate_name_rejects_bad_values(bad: object) -> None:
    """validate_name raises SubjectError (a DatabricksNatsError) naming the part for anything but a plain token."""
    with pytest.raises(SubjectError, match="env") as info:
        validate_name("env", bad)  # type: ignore[arg-type]
    assert isinstance(info.value, DatabricksNatsError)


@pytest.mark.parametrize("good", ["dbx", "dbx.team", "a.b.c", "org-1.ml_events"])
def test_validate_prefix_accepts_dotted_tokens(good: str) -> None:
    """validate_prefix accepts one or more plain tokens joined by single dots."""
    assert validate_prefix(good) == good


@pytest.mark.parametrize("bad", ["", ".", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a.b c", "dbx.é", None, 3])
def test_validate_prefix_rejects_bad_values(bad: object) -> None:
    """validate_prefix raises SubjectError for empty tokens, wildcards, whitespace and non-strings."""
    with pytest.raises(SubjectError):
        validate_prefix(bad)  # type: ignore[arg-type]


@SMALL
@given(ANY_TEXT)
def test_validated_names_are_always_safe_tokens(value: str) -> None:
    """Whatever validate_name accepts is already a safe subject token that encodes to itself."""
    try:
        validate_name("x", value)
    except SubjectError:
        return
    _assert_safe(value)
    assert encode(value) == value
