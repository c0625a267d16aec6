"""Properties of the name rules (``ledger.values.display_name`` / ``name_key``): accepted names are NFKC and free
of control and invisible characters, the key is stable, and look-alikes share it."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ledger import values
from ledger.errors import ValidationError

INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@given(st.text(max_size=120))
def test_an_accepted_name_is_nfkc_trimmed_and_has_no_invisible_characters(text):
    try:
        name = values.profile_name(text)
    except ValidationError as error:
        assert error.field == "name"
        return
    assert name == unicodedata.normalize("NFKC", name) == name.strip() and 1 <= len(name) <= values.NAME_MAX
    assert not any(unicodedata.category(ch) in INVISIBLE for ch in name)
    assert "/" not in name and name not in (".", ".."), "a profile name stands in URL paths"
    assert values.profile_name(name) == name


@given(st.text(max_size=60))
def test_the_key_is_stable(text):
    key = values.name_key(text)
    assert values.name_key(key) == key


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
def test_fullwidth_and_case_variants_of_an_ascii_name_share_its_key(name):
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) for ch in name)
    assert values.name_key(fullwidth) == values.name_key(name) == values.name_key(name.swapcase())


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60))
def test_the_ascii_shortcut_gives_the_key_the_full_rules_give(text):
    assert values.name_key(text) == values._unicode_name_key(text)
