"""The values that cross between the server, its workers and the model.

These are plain, picklable types with no behaviour: the model receives
``UploadedFile`` arguments and may return a ``ReturnedFile`` (or an open file,
which the worker turns into one); a worker hands a finished JSON prediction
back as ``EncodedJSON``.
"""

from __future__ import annotations

import collections
import dataclasses

UploadedFile = collections.namedtuple(
    "UploadedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file sent to the model: ``filename`` is the path of a temporary copy that
the server removes after the call; ``name`` is the argument it was sent as."""

ReturnedFile = collections.namedtuple(
    "ReturnedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file returned by the model, sent back to the client from ``filename``."""


@dataclasses.dataclass(frozen=True)
class EncodedJSON:
    """A prediction already validated and encoded as its JSON answer.

    Workers finish JSON predictions this way so that validation and encoding
    run in parallel in the workers, not on the server's single event loop.
    """

    data: bytes


__all__ = ["EncodedJSON", "ReturnedFile", "UploadedFile"]
