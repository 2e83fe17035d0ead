"""The values that cross between the server, its workers and the model.

These are plain, picklable types with no behaviour: the model receives
``UploadedFile`` arguments and may return a ``ReturnedFile`` (or an open file,
which the worker turns into one); a worker hands a finished JSON prediction
back as ``EncodedJSON``, a finished one of moderate size as a
``SharedResult`` (in memory it shares with the server) and a large one as a
``SpooledResult`` (in a file).
"""

from __future__ import annotations

import collections
import dataclasses
import operator
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

UploadedFile = collections.namedtuple(
    "UploadedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file sent to the model: ``filename`` is the path of a temporary copy that
the server removes after the call; ``name`` is the argument it was sent as."""

ReturnedFile = collections.namedtuple(
    "ReturnedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file returned by the model, sent back to the client from ``filename``."""


T = TypeVar("T")


def pickled_by_fields(cls: type[T]) -> type[T]:
    """Make a dataclass pickle as a call of its constructor with its
    fields: a slotted dataclass otherwise pickles through a ``__getstate__``
    that lists its fields again for every message, and these cross between
    the server and its workers for every call."""
    names = tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]
    if not names:
        reduce: Callable[[Any], tuple[Any, ...]] = lambda self: (cls, ())  # noqa: E731
    elif len(names) == 1:
        name = names[0]
        reduce = lambda self: (cls, (getattr(self, name),))  # noqa: E731
    else:
        values = operator.attrgetter(*names)
        reduce = lambda self: (cls, values(self))  # noqa: E731
    cls.__reduce__ = reduce  # type: ignore[assignment, method-assign]
    return cls


@pickled_by_fields
@dataclasses.dataclass(frozen=True)
class EncodedJSON:
    """A prediction already validated and encoded as its JSON answer.

    Workers finish JSON predictions this way so that validation and encoding
    run in parallel in the workers, not on the server's single event loop.
    """

    data: bytes


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class InlineUpload:
    """An uploaded file small enough to travel to the worker inside its call.

    The worker writes it to a file of its own and hands the model an
    ``UploadedFile`` for it, removed after the call, so the server does no
    file work for small uploads.
    """

    name: str
    data: bytes | bytearray
    content_type: str
    original_filename: str


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class StagedUpload:
    """An uploaded file already copied to the worker's own machine (at
    ``path``), as a worker on another machine receives one: the worker hands
    the model an ``UploadedFile`` for it and removes it after the call."""

    name: str
    path: str
    content_type: str
    original_filename: str


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class SpooledResult:
    """A large finished prediction (``EncodedJSON`` when ``is_json``, else
    bytes) that a worker wrote to a file of its scratch directory instead of
    its socket. The server takes the file over: it opens it, removes it, and
    sends it from the kernel's page cache, so the bytes never pass through
    its memory.
    """

    path: str
    size: int
    is_json: bool
    content_type: str | None = None  # of a returned file (from its name)


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class OpenResult:
    """A ``SpooledResult`` the server has opened (and already unlinked):
    whoever holds it sends ``file`` and closes it."""

    file: BinaryIO
    size: int
    is_json: bool
    content_type: str | None = None


@pickled_by_fields
@dataclasses.dataclass(frozen=True, slots=True)
class SharedResult:
    """A finished prediction (``EncodedJSON`` when ``is_json``, else bytes)
    that a worker wrote into ``slot`` of the memory it shares with the
    server (``protocol.ResultMemory``): its first ``size`` bytes."""

    slot: int
    size: int
    is_json: bool


class MappedResult:
    """A ``SharedResult`` as the server holds it: ``view`` of the slot's
    bytes. Whoever holds it sends the bytes, then calls ``release()`` so
    that the slot takes another result; one dropped unreleased is released
    when collected."""

    __slots__ = ("view", "is_json", "_release")

    def __init__(
        self, view: memoryview, is_json: bool, release: Callable[[], None]
    ) -> None:
        self.view = view
        self.is_json = is_json
        self._release: Callable[[], None] | None = release

    @property
    def size(self) -> int:
        return self.view.nbytes

    def release(self) -> None:
        """The bytes have been sent (or are not wanted): free the slot."""
        release, self._release = self._release, None
        if release is not None:
            self.view.release()
            release()

    def __del__(self) -> None:
        self.release()


__all__ = [
    "EncodedJSON",
    "InlineUpload",
    "MappedResult",
    "OpenResult",
    "ReturnedFile",
    "SharedResult",
    "SpooledResult",
    "StagedUpload",
    "UploadedFile",
]
