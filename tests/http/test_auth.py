"""Signed URL tokens (oca/http/auth.py): the ``?t=<expires>.<mac>`` contract of DESIGN.md.

Expected MACs are computed here with hmac directly from the contract's message form,
not with the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from oca.errors import ConfigError
from oca.http.auth import (
    MAX_EXPIRES,
    MIN_KEY_BYTES,
    VIEWER,
    Signer,
    TokenChecker,
    load_key,
    signed_url,
)
from oca.ids import BadIdError

KEY = b"4f1c0a9e7d3b2a68c5e4f1d0b9a87c6e"  # hex text, used as its ASCII bytes
FILL_KEY = b"e8a1f0c3b5d7e9f1a3c5e7f9b1d3f5a7"
OID = "title-1234.h264.1080p.mp4"
NOW = 1_700_000_000
EXPIRES = NOW + 3600


def mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def viewer_token(object_id: str = OID, expires: int | str = EXPIRES, key: bytes = KEY) -> str:
    return f"{expires}.{mac(key, f'{object_id}|{expires}')}"


@pytest.fixture
def checker() -> TokenChecker:
    return TokenChecker(KEY)


# -- signing -------------------------------------------------------------------

def test_sign_known_answer():
    assert Signer(KEY).token(OID, EXPIRES) == viewer_token()
    # A fixed vector, so a change of message form cannot hide behind the helper above.
    assert Signer(b"0123456789abcdef").token("a", 1) == (
        "1." + hmac.new(b"0123456789abcdef", b"a|1", hashlib.sha256).hexdigest())


def test_token_shape():
    expires, _, digest = Signer(KEY).token(OID, EXPIRES).partition(".")
    assert expires == str(EXPIRES)
    assert len(digest) == 64 and digest == digest.lower()
    int(digest, 16)


def test_signer_viewer_scope_is_the_contract_form():
    assert Signer(KEY).token(OID, EXPIRES) == Signer(KEY, VIEWER).token(OID, EXPIRES)
    assert Signer(KEY, VIEWER).token(OID, EXPIRES) == viewer_token()


def test_other_scope_signs_scope_prefixed_message():
    assert Signer(FILL_KEY, "fill").token(OID, EXPIRES) == (
        f"{EXPIRES}." + mac(FILL_KEY, f"fill|{OID}|{EXPIRES}"))


@pytest.mark.parametrize("expires", [-1, MAX_EXPIRES + 1, 1.5, True, "1700000000"])
def test_sign_refuses_bad_expires(expires):
    with pytest.raises(ValueError):
        Signer(KEY).token(OID, expires)


@pytest.mark.parametrize("object_id", ["", "../etc/passwd", "a|b", "é.mp4", "a" * 129])
def test_sign_refuses_bad_id(object_id):
    with pytest.raises(BadIdError):
        Signer(KEY).token(object_id, EXPIRES)


@pytest.mark.parametrize("key", [b"", b"x" * (MIN_KEY_BYTES - 1), "a" * 32])
def test_short_or_text_key_refused(key):
    with pytest.raises(ValueError):
        Signer(key)
    with pytest.raises(ValueError):
        TokenChecker(key)


@pytest.mark.parametrize("scope", ["", "Fill", "fill|x", "a b", "x" * 33, None])
def test_bad_scope_refused(scope):
    with pytest.raises(ValueError):
        TokenChecker(KEY, scope)


def test_signed_url():
    url = signed_url("http://cdn.example:8080/", OID, KEY, 3600, NOW)
    assert url == f"http://cdn.example:8080/o/{OID}?t={viewer_token()}"


def test_signed_url_rounds_expiry_down():
    assert signed_url("http://h", OID, KEY, 59.9, NOW + 0.5).endswith(
        "?t=" + viewer_token(expires=NOW + 60))


@pytest.mark.parametrize("ttl, now", [(0, NOW), (-1, NOW), (float("nan"), NOW), (1, -1),
                                      (1, float("nan")), (MAX_EXPIRES, NOW)])
def test_signed_url_refuses_bad_ttl_or_now(ttl, now):
    with pytest.raises(ValueError):
        signed_url("http://h", OID, KEY, ttl, now)


# -- checking ------------------------------------------------------------------

def test_valid_token(checker):
    assert checker.check(OID, "t=" + viewer_token(), NOW)


def test_expiry_boundary(checker):
    q = "t=" + viewer_token()
    assert checker.check(OID, q, EXPIRES)  # expires == now: still good
    assert checker.check(OID, q, EXPIRES + 0.0)
    assert not checker.check(OID, q, EXPIRES + 0.001)
    assert not checker.check(OID, q, EXPIRES + 1)


def test_missing_token(checker):
    for query in (None, "", "t=", "t", "x=1", "foo=1&bar=2", "tt=" + viewer_token(),
                  "at=" + viewer_token(), "T=" + viewer_token(), "x=1&T=" + viewer_token()):
        assert not checker.check(OID, query, NOW), query


def test_other_parameters_before_and_after(checker):
    token = viewer_token()
    for query in (f"foo=1&t={token}", f"t={token}&foo=1", f"a=1&b=&t={token}&c=3",
                  f"at=x&t={token}", f"t={token}&"):
        assert checker.check(OID, query, NOW), query


def test_first_t_parameter_counts(checker):
    good, bad = viewer_token(), viewer_token(expires=EXPIRES + 1)[:-1] + "0"
    assert checker.check(OID, f"t={good}&t={bad}", NOW)
    assert not checker.check(OID, f"t={bad}&t={good}", NOW)
    assert not checker.check(OID, f"x=1&t=&t={good}", NOW)


def test_not_percent_decoded(checker):
    expires, _, digest = viewer_token().partition(".")
    assert not checker.check(OID, f"t={expires}%2E{digest}", NOW)
    assert not checker.check(OID, f"%74={expires}.{digest}", NOW)


def flip(text: str, i: int) -> str:
    c = text[i]
    return text[:i] + ("1" if c != "1" else "2") + text[i + 1:]


def test_tampering_each_part(checker):
    token = viewer_token()
    expires, _, digest = token.partition(".")
    assert not checker.check("title-1234.h264.1080p.mp5", "t=" + token, NOW)  # other object
    assert not checker.check(OID.upper(), "t=" + token, NOW)
    assert not checker.check(OID, f"t={EXPIRES + 1}.{digest}", NOW)  # extended expiry
    assert not checker.check(OID, f"t=0{expires}.{digest}", NOW)  # same number, other digits
    for i in (0, 31, 63):
        assert not checker.check(OID, f"t={expires}.{flip(digest, i)}", NOW), i
    assert not checker.check(OID, f"t={expires}.{digest[:-1]}", NOW)
    assert not checker.check(OID, f"t={expires}.{digest}0", NOW)
    assert not checker.check(OID, f"t={expires}{digest}", NOW)
    assert not checker.check(OID, f"t={expires}.{digest}.", NOW)
    assert not checker.check(OID, f"t={digest}.{expires}", NOW)
    assert not checker.check(OID, f"t=.{digest}", NOW)
    assert not checker.check(OID, "t=" + viewer_token(key=b"another key of 32 bytes........"),
                             NOW)


def test_uppercase_hex_refused(checker):
    expires, _, digest = viewer_token().partition(".")
    assert digest != digest.upper()
    assert not checker.check(OID, f"t={expires}.{digest.upper()}", NOW)


def test_leading_zeros_are_part_of_the_signed_text(checker):
    # The MAC covers the digits as written; a signer never writes leading zeros, but a
    # token that does is still well formed and verifies when signed over those digits.
    assert checker.check(OID, "t=" + viewer_token(expires=f"0{EXPIRES}"), NOW)


def test_huge_and_odd_expires(checker):
    assert checker.check(OID, "t=" + viewer_token(expires=MAX_EXPIRES), NOW)
    assert checker.check(OID, "t=" + Signer(KEY).token(OID, MAX_EXPIRES), NOW)
    for expires in ("1" * 13, "9" * 400, "-1", "+1700003600", " 1700003600", "1_700_003_600",
                    "1700003600.0", "0x65530510", "1e12", "", "١٧٠٠٠٠٣٦٠٠"):
        assert not checker.check(OID, "t=" + viewer_token(expires=expires), NOW), expires


def test_non_ascii_never_raises(checker):
    expires, _, digest = viewer_token().partition(".")
    for query in (f"t={expires}.{digest[:-1]}é", f"t=é.{digest}", "t=\udc80", "é=1&t=x",
                  f"t={expires}.{'é' * 64}", "\x00", f"t={expires}.{digest}\x00"):
        assert not checker.check(OID, query, NOW), query
    assert checker.check(OID, f"é=1&t={viewer_token()}&ü=2", NOW)
    for object_id in ("é", "\udc80", "title|1"):
        assert not checker.check(object_id, "t=" + viewer_token(), NOW)
        assert not checker.check(object_id, "t=" + viewer_token(object_id=object_id), NOW)


def test_long_query_never_raises(checker):
    assert not checker.check(OID, "x=" + "a" * 100_000 + "&t=" + "9" * 100_000, NOW)
    assert checker.check(OID, "x=" + "a" * 100_000 + "&t=" + viewer_token(), NOW)


def test_scope_separation():
    viewer, fill = TokenChecker(KEY), TokenChecker(FILL_KEY, "fill")
    fill_token = Signer(FILL_KEY, "fill").token(OID, EXPIRES)
    viewer_tok = Signer(KEY).token(OID, EXPIRES)
    assert fill.check(OID, "t=" + fill_token, NOW)
    assert viewer.check(OID, "t=" + viewer_tok, NOW)
    assert not viewer.check(OID, "t=" + fill_token, NOW)
    assert not fill.check(OID, "t=" + viewer_tok, NOW)


def test_scope_separation_holds_under_one_key():
    # Even if an operator gave both scopes the same key file, the messages differ.
    viewer, fill = TokenChecker(KEY), TokenChecker(KEY, "fill")
    fill_token = Signer(KEY, "fill").token(OID, EXPIRES)
    viewer_tok = Signer(KEY).token(OID, EXPIRES)
    assert fill_token != viewer_tok
    assert not viewer.check(OID, "t=" + fill_token, NOW)
    assert not fill.check(OID, "t=" + viewer_tok, NOW)
    # The only viewer message that reads as a fill message ("fill|<id>|<expires>") is
    # that of an id with a '|' in it: the signer refuses such an id, the checker too.
    with pytest.raises(BadIdError):
        Signer(KEY).token(f"fill|{OID}", EXPIRES)
    crafted = viewer_token(object_id=f"fill|{OID}")
    assert fill.check(OID, "t=" + crafted, NOW)  # why the signer must refuse it
    assert not viewer.check(f"fill|{OID}", "t=" + crafted, NOW)


def test_checker_is_reusable(checker):
    # The keyed HMAC state is copied per check, never consumed.
    for i in range(3):
        assert checker.check(OID, "t=" + viewer_token(), NOW), i
        assert not checker.check(OID, "t=" + viewer_token()[:-1] + "x", NOW), i
    assert checker.check("other", "t=" + viewer_token(object_id="other"), NOW)


# -- key file ------------------------------------------------------------------

def test_load_key_strips_one_newline(tmp_path: Path):
    f = tmp_path / "key"
    f.write_bytes(KEY + b"\n")
    assert load_key(f) == KEY
    f.write_bytes(KEY + b"\n\n")
    assert load_key(f) == KEY + b"\n"
    f.write_bytes(KEY)
    assert load_key(f) == KEY
    raw = bytes(range(256))
    f.write_bytes(raw)
    assert load_key(f) == raw


def test_load_key_too_short(tmp_path: Path):
    f = tmp_path / "key"
    f.write_bytes(b"1234567\n")
    with pytest.raises(ConfigError) as e:
        load_key(f)
    assert str(e.value).startswith(f"key file {f}: 7 bytes, at least 16 needed")
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match="0 bytes, at least 16 needed"):
        load_key(f)
    f.write_bytes(b"x" * 15 + b"\n")
    with pytest.raises(ConfigError, match="15 bytes"):
        load_key(f)
    f.write_bytes(b"x" * 16 + b"\n")
    assert load_key(f) == b"x" * 16


def test_load_key_missing(tmp_path: Path):
    f = tmp_path / "nope"
    with pytest.raises(ConfigError) as e:
        load_key(f)
    assert str(e.value) == f"key file {f}: cannot read: No such file or directory"


def test_load_key_is_a_directory(tmp_path: Path):
    with pytest.raises(ConfigError, match=f"key file {tmp_path}: cannot read: Is a directory"):
        load_key(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_load_key_unreadable(tmp_path: Path):
    f = tmp_path / "key"
    f.write_bytes(KEY)
    f.chmod(0)
    with pytest.raises(ConfigError, match=f"key file {f}: cannot read: Permission denied"):
        load_key(f)
