"""The Accept header, read the way predict reads it."""

from __future__ import annotations

import pytest

from deepaas.runtime.forms import accept_from_header, parse_accept

CHOICES = ["application/json", "image/png", "text/plain"]


@pytest.mark.parametrize(
    ("header", "ranked"),
    [
        ("image/png", ["image/png"]),
        ("text/plain;q=0.5, image/png", ["image/png", "text/plain"]),
        ("a/b;q=0.5, c/d;q=0.5, e/f;q=0.9", ["e/f", "a/b", "c/d"]),  # ties keep order
        ("image/png;q=0, text/plain", ["text/plain"]),  # q=0: not wanted
        ("image/png;q=high", []),  # a q that is no number counts as 0
        ("IMAGE/PNG ; Q=1", ["image/png"]),
        (" , ,", []),
    ],
)
def test_parse_accept_ranks_by_quality(header, ranked):
    assert parse_accept(header) == ranked


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),
        ("", None),
        ("*/*", None),  # the default
        ("image/png", "image/png"),
        ("image/*", "image/png"),
        ("text/html;q=0.9, text/plain;q=0.1", "text/plain"),
        ("*/*, image/png;q=0.5", None),  # a wildcard first leaves the default
        ("image/png;q=0", None),  # nothing wanted: the default
    ],
)
def test_accept_from_header_picks_a_declared_choice(header, chosen):
    assert accept_from_header(header, CHOICES) == chosen


def test_an_accept_header_the_model_cannot_answer_leaves_the_default():
    assert accept_from_header("video/mp4, audio/*", CHOICES) is None
