"""The key format alone: no database involved."""

from __future__ import annotations

import string

import pytest

from apikeys import keyformat


def test_built_key_has_the_documented_shape_and_parses_back():
    raw = keyformat.build(keyformat.new_lookup_id())
    prefix, lookup_id, secret, check = raw.split("_")
    assert prefix == "bh"
    assert len(lookup_id) == 8 and len(secret) >= 32 and len(check) == 6
    assert set(lookup_id + secret + check) <= set(string.ascii_letters + string.digits)
    parsed = keyformat.parse(raw)
    assert parsed is not None
    assert (parsed.lookup_id, parsed.secret) == (lookup_id, secret)


def test_every_single_character_typo_is_caught_by_the_checksum():
    raw = keyformat.build("Ex4mple0", "0123456789abcdefghijklmnopqrstuv")
    for position, char in enumerate(raw):
        if char == "_":
            continue
        replacement = "A" if char != "A" else "B"
        typo = raw[:position] + replacement + raw[position + 1 :]
        assert keyformat.parse(typo) is None, f"typo at {position} accepted"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "bh_",
        "not a key",
        "gh_Ex4mple0_0123456789abcdefghijklmnopqrstuv_2UoHu7",  # wrong product prefix
        "bh_Ex4mple0_0123456789abcdefghijklmnopqrstuv_2UoHu7 ",  # trailing space
        "bh_Ex4mple0_0123456789abcdefghijklmnopqrstu_2UoHu7",  # secret too short
        "bh_Ex4mple0_0123456789abcdefghijklmnopqrst-v_2UoHu7",  # not base62
        "bh_Ex4mple0_0123456789abcdefghijklmnopqrstuv_2UoHu7" * 1000,
    ],
)
def test_malformed_keys_do_not_parse(raw):
    assert keyformat.parse(raw) is None


def test_the_example_in_the_docstring_is_valid():
    assert keyformat.parse("bh_Ex4mple0_0123456789abcdefghijklmnopqrstuv_2UoHu7") is not None


def test_secrets_and_lookup_ids_are_random():
    keys = {keyformat.build(keyformat.new_lookup_id()) for _ in range(500)}
    assert len({k.split("_")[1] for k in keys}) == 500
    assert len({k.split("_")[2] for k in keys}) == 500


def test_digest_is_an_hmac_under_the_secret_key(settings):
    raw = keyformat.build(keyformat.new_lookup_id())
    settings.SECRET_KEY = "one-secret"
    first = keyformat.digest(raw)
    assert len(first) == 64 and int(first, 16) >= 0
    assert raw not in first
    settings.SECRET_KEY = "another-secret"
    assert keyformat.digest(raw) != first
    assert keyformat.digest(raw, secret="one-secret") == first


def test_display_prefix_never_reveals_the_secret():
    raw = keyformat.build("Ex4mple0")
    shown = keyformat.display_prefix("Ex4mple0")
    assert shown == "bh_Ex4mple0_…"
    assert raw.split("_")[2] not in shown
