"""Upload file names made safe: what is dropped, what is kept."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepaas.model.v2.filenames import (
    DROPPED_CATEGORIES,
    MAX_NAME_BYTES,
    safe_filename,
    upload_suffix,
)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("photo.png", "photo.png"),
        ("  spaced name.jpg ", "spaced name.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\scan.tif", "scan.tif"),
        ("a\x00b.txt", "ab.txt"),
        ("line\r\nbreak.csv", "linebreak.csv"),
        ("del\x7f.bin", "del.bin"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override
        ("données.csv", "données.csv"),
        ("..", ""),
        (".", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_a_name_keeps_what_is_safe(sent, kept):
    assert safe_filename(sent) == kept


def test_a_long_name_is_cut_keeping_its_extension():
    name = safe_filename("é" * 300 + ".jpeg")
    assert name.endswith(".jpeg")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


def by_character(name: str) -> str:
    """What safe_filename keeps of a name that is not too long, character by
    character (the rule its quicker path for plain names must agree with)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(
        c for c in name if unicodedata.category(c) not in DROPPED_CATEGORIES
    ).strip()
    return "" if kept in (".", "..") else kept


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text(st.characters(max_codepoint=127), max_size=60))
def test_every_name_is_cleaned_by_the_same_rule(name):
    assert safe_filename(name) == by_character(name)


@pytest.mark.parametrize(
    ("sent", "suffix"),
    [("a.png", ".png"), ("a.tar.gz", ".gz"), ("a.p n g", ""), ("noext", ""),
     ("a." + "x" * 20, ""), ("a.ok_-1", ".ok_-1")],
)  # fmt: skip
def test_a_temporary_files_suffix_is_a_plain_extension(sent, suffix):
    assert upload_suffix(sent) == suffix
