"""Object ids: the DESIGN.md contract between a URL and a path on disk."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.errors import UsageError
from oca.ids import MAX_ID_LEN, BadIdError, check_id, is_valid_id

# Written out again from DESIGN.md on purpose: the contract, not the module's copy of it.
DESIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@pytest.mark.parametrize("value", [
    "a",
    "0",
    "movie.mp4",
    "Title_2024-1080p.v2.m4s",
    "a..b",
    "a-",
    "a.",
    "A" * 128,
    "9" + "._-" * 42 + "x",
])
def test_valid_ids(value):
    assert is_valid_id(value)
    assert check_id(value) is value


def test_max_len_is_128():
    assert MAX_ID_LEN == 128
    assert check_id("x" * 128) == "x" * 128


@pytest.mark.parametrize(("value", "why"), [
    ("", "invalid object id '': must not be empty"),
    ("a" * 129, f"invalid object id '{'a' * 37}...': 129 characters, at most 128"),
    ("../etc/passwd", "invalid object id '../etc/passwd': character '/' not allowed"),
    ("a/b", "invalid object id 'a/b': character '/' not allowed"),
    ("a\\b", "invalid object id 'a\\\\b': character '\\\\' not allowed"),
    (".hidden", "invalid object id '.hidden': must start with a letter or digit"),
    ("..", "invalid object id '..': must start with a letter or digit"),
    ("-x", "invalid object id '-x': must start with a letter or digit"),
    ("_x", "invalid object id '_x': must start with a letter or digit"),
    ("%2e", "invalid object id '%2e': character '%' not allowed"),
    ("a\x00b", "invalid object id 'a\\x00b': character '\\x00' not allowed"),
    ("a\n", "invalid object id 'a\\n': character '\\n' not allowed"),
    ("a b", "invalid object id 'a b': character ' ' not allowed"),
    ("café", "invalid object id 'café': character 'é' not allowed"),
    ("\uff11abc", "invalid object id '\uff11abc': character '\uff11' not allowed"),
    ("a?t=1", "invalid object id 'a?t=1': character '?' not allowed"),
])
def test_invalid_ids_say_why(value, why):
    assert not is_valid_id(value)
    with pytest.raises(BadIdError) as e:
        check_id(value)
    message = str(e.value)
    assert message.startswith(why.split(":")[0])
    assert message == why + (" (A-Z a-z 0-9 . _ -)" if "not allowed" in why else "")


def test_bad_id_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        check_id("a/b")
    assert e.value.exit_code == 2


def test_non_string_is_invalid():
    assert not is_valid_id(None)  # type: ignore[arg-type]
    assert not is_valid_id(b"abc")  # type: ignore[arg-type]
    with pytest.raises(BadIdError):
        check_id(b"abc")  # type: ignore[arg-type]


_ALPHABET = st.sampled_from(
    list("aZ09._-") + ["/", "\\", "\x00", "\n", " ", "%", ":", "é", "\u0130", "\uff10", "~"])


@settings(database=None, max_examples=300)
@given(st.one_of(
    st.text(_ALPHABET, max_size=140),
    st.text(max_size=20),
    st.from_regex(DESIGN_ID, fullmatch=True),
    st.from_regex(DESIGN_ID, fullmatch=True).map(lambda s: s + "\n"),
))
def test_check_id_accepts_exactly_the_design_regex(value):
    expected = DESIGN_ID.fullmatch(value) is not None
    assert is_valid_id(value) is expected
    if expected:
        assert check_id(value) == value
    else:
        with pytest.raises(BadIdError, match=r"^invalid object id "):
            check_id(value)
