"""Upload file names as a client sent them, made safe to pass on and to use.

A multipart part's ``filename`` is whatever the client wrote: it may hold a
NUL byte (which no system call takes), control characters (which forge log
lines), path separators (which name other directories) or thousands of
characters. The name is made safe once, where a form is read (on the server
or in the worker), so that the model's ``original_filename`` and the
extension of the temporary file it gets come from the same clean name.
"""

from __future__ import annotations

import os
import unicodedata

MAX_NAME_BYTES = 255  # the longest file name most file systems take
MAX_SUFFIX = 16  # characters of the extension kept on a temporary file
# Categories dropped from a name: control, format (bidirectional overrides
# that make a name read backwards), surrogates, unassigned and private use.
DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Co"})


def safe_filename(name: str | None) -> str:
    """``name`` without a directory part (``/`` or ``\\``), control and
    invisible characters, and cut to ``MAX_NAME_BYTES`` in UTF-8 keeping its
    extension; ``""`` when nothing is left (or there was no name)."""
    if not name:
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name.isascii() and name.isprintable():
        name = name.strip()  # the usual name: nothing of it to drop
    else:
        name = "".join(
            c for c in name if unicodedata.category(c) not in DROPPED_CATEGORIES
        ).strip()
    if name in (".", ".."):
        return ""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, ext = os.path.splitext(name)
    ext = ext if len(ext.encode("utf-8")) <= MAX_SUFFIX * 4 else ""
    room = MAX_NAME_BYTES - len(ext.encode("utf-8"))
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore") + ext


def upload_suffix(name: str | None) -> str:
    """The extension to give a temporary file holding an upload named
    ``name``: letters, digits, ``_`` and ``-`` after the dot, at most
    ``MAX_SUFFIX`` characters in all; ``""`` for anything else (an odd
    extension is not worth a file the model cannot open)."""
    ext = os.path.splitext(safe_filename(name))[1]
    if not 1 < len(ext) <= MAX_SUFFIX:
        return ""
    if not all(c.isalnum() or c in "_-" for c in ext[1:]):
        return ""
    return ext
