"""Reading a model's arguments out of a request: the multipart form and the
merge of every place an argument may come from.

The server and its workers share this: the server reads a form as its body
streams in; a worker reads the whole body of a small prediction that the
server forwarded unread (``RawForm``), so that the event loop, which every
request shares, does not spend its time on it. Either way the same parser,
the same limits and the same merge give the same arguments and the same
errors. Nothing here knows about aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import marshmallow
import multipart
from multidict import MultiDict
from webargs.multidictproxy import MultiDictProxy

from deepaas import exceptions
from deepaas.model.v2.arguments import (
    ANY_MEDIA_TYPE,
    MULTI_VALUED,
    Arguments,
    choices_of,
)
from deepaas.model.v2.filenames import safe_filename
from deepaas.model.v2.types import InlineUpload

# A part's header lines: as long as a request's header line may be, and a few
# more of them than the three a form part uses.
PART_HEADER_SIZE = 8190
PART_HEADER_COUNT = 16


class FieldsTooLarge(exceptions.DeepaasError):
    """The text fields of a form hold more bytes than may be kept in memory."""

    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"The form's fields exceed {limit} bytes.")
        self.limit = limit


class Part(Protocol):
    """Where the content of one file part goes."""

    def write(self, data: bytes | memoryview) -> None: ...

    def close(self) -> Any: ...

    def abandon(self) -> None: ...


class MemoryPart:
    """A file part kept in memory, to travel inside a call (or, in a worker,
    to be written to a file of its own)."""

    def __init__(self, segment: multipart.MultipartSegment) -> None:
        self.segment = segment
        self.data = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.data += data

    def close(self) -> InlineUpload:
        content_type = self.segment.header("Content-Type", "application/octet-stream")
        return InlineUpload(
            self.segment.name, self.data, content_type, self.segment.filename or ""
        )

    def abandon(self) -> None:
        self.data = bytearray()


def boundary_of(content_type: str) -> str:
    """The boundary a multipart Content-Type names."""
    boundary = multipart.parse_options_header(content_type)[1].get("boundary")
    if not boundary:
        raise exceptions.BadRequest(
            "The request body is not valid multipart/form-data: the Content-Type "
            "header names no boundary."
        )
    return str(boundary)


class FormReader:
    """A multipart/form-data body pushed through in pieces: text fields kept
    (within ``max_memory`` bytes), each file part handed to a ``Part`` made
    by ``new_file``, at most ``max_parts`` parts (0: no limit)."""

    def __init__(
        self,
        boundary: str,
        new_file: Callable[[multipart.MultipartSegment], Part],
        *,
        max_parts: int = 0,
        max_memory: int = 0,
    ) -> None:
        self.values: MultiDict[str] = MultiDict()
        self.files: dict[str, list[Any]] = {}
        self._new_file = new_file
        self._max_parts = max_parts
        self._max_memory = max_memory
        self._parser = multipart.PushMultipartParser(
            boundary,
            max_header_size=PART_HEADER_SIZE,
            max_header_count=PART_HEADER_COUNT,
        )
        self._parts = 0
        self._in_memory = 0  # bytes of the text fields
        self._segment: multipart.MultipartSegment | None = None
        self._text = bytearray()
        self._file: Part | None = None

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Take the next piece of the body."""
        try:
            for event in self._parser.parse(chunk):
                if event is None:
                    self._end_part()
                elif isinstance(event, multipart.MultipartSegment):
                    self._start_part(event)
                elif self._file is not None:
                    self._file.write(event)
                else:
                    self._in_memory += len(event)
                    if self._max_memory and self._in_memory > self._max_memory:
                        raise FieldsTooLarge(self._max_memory)
                    self._text += event
        except multipart.MultipartError as exc:
            raise _malformed(exc) from None

    def close(self) -> tuple[MultiDict[str], dict[str, list[Any]]]:
        """The text fields and the files (by name) of a body that has ended."""
        try:
            self._parser.close()  # a body that ends early is not valid
        except multipart.MultipartError as exc:
            raise _malformed(exc) from None
        return self.values, self.files

    def abandon(self) -> None:
        """Give up on the body: a file part being written is closed."""
        if self._file is not None:
            self._file.abandon()
            self._file = None

    def _start_part(self, segment: multipart.MultipartSegment) -> None:
        self._parts += 1
        if self._max_parts and self._parts > self._max_parts:
            raise exceptions.TooManyParts(self._max_parts)
        if (segment.content_type or "").startswith("multipart/"):
            raise exceptions.BadRequest("Nested multipart bodies are not accepted.")
        self._segment = segment
        if segment.filename is not None:
            segment.filename = safe_filename(segment.filename)
            self._file = self._new_file(segment)

    def _end_part(self) -> None:
        segment = self._segment
        assert segment is not None
        if self._file is not None:
            self.files.setdefault(segment.name, []).append(self._file.close())
            self._file = None
        else:
            self.values.add(segment.name, _decode(segment, self._text))
            self._text = bytearray()
        self._segment = None


def read_whole_form(
    body: bytes,
    boundary: str,
    new_file: Callable[[multipart.MultipartSegment], Part],
    *,
    max_parts: int = 0,
) -> tuple[MultiDict[str], dict[str, list[Any]]]:
    """The text fields and files of a complete multipart body."""
    reader = FormReader(boundary, new_file, max_parts=max_parts)
    try:
        reader.feed(body)
        return reader.close()
    finally:
        reader.abandon()


def _malformed(exc: multipart.MultipartError) -> exceptions.BadRequest:
    return exceptions.BadRequest(
        f"The request body is not valid multipart/form-data: {exc.args[0]}."
    )


def _decode(segment: multipart.MultipartSegment, data: bytearray) -> str:
    charset = segment.charset or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        raise exceptions.BadRequest(
            f"Part {segment.name!r} names an unknown charset: {charset}"
        ) from None
    except ValueError:  # a codec that takes no error handler (idna), or fails
        raise exceptions.BadRequest(
            f"Part {segment.name!r} cannot be read as {charset} text."
        ) from None


def values_of(
    multidict: MultiDict[str], schema: marshmallow.Schema
) -> Mapping[str, Any]:
    """A form's (or query string's) values as the schema reads them: every
    value of a list argument, the first of any other."""
    return MultiDictProxy(multidict, schema, known_multi_fields=MULTI_VALUED)


def parse_accept(header: str) -> list[str]:
    """Media types of an Accept header, most preferred first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        media_type, *params = (p.strip() for p in item.split(";"))
        if not media_type:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media_type.lower()))
    return [media_type for _, _, media_type in sorted(ranked)]


def accept_from_header(header: str | None, choices: list[str]) -> str | None:
    """The declared ``accept`` choice an Accept header asks for.

    None when the header leaves it to the default: absent, a wildcard comes
    first, or it names only types the model lacks (upstream DEEPaaS never read
    the header, so its clients may send anything there).
    """
    if not header:
        return None
    wanted = parse_accept(header)
    for media_type in wanted:
        if media_type == "*/*":
            return None
        if media_type.endswith("/*"):
            prefix = media_type[:-1]
            match = next((c for c in choices if c.lower().startswith(prefix)), None)
        else:
            match = next((c for c in choices if c.lower() == media_type), None)
        if match is not None:
            return match
    return None


def merge_arguments(
    arguments: Arguments,
    query: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    body_is_text: bool = True,
    files: Mapping[str, list[Any]] | None = None,
    accept_header: str | None = None,
    strict: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The declared arguments of the query string, the body and its files
    (the query string wins, as upstream), not yet loaded through the
    schema; and the names of those the model does not declare, in order.

    Text for a ``Dict`` argument is read as JSON, a single value for a
    ``List`` one is a list of one; ``accept`` comes from the Accept header
    when the arguments leave it out. A value (not a file) for a file
    argument is ignored, or with ``strict`` refused.
    """
    declared, file_names = arguments.fields, arguments.file_names
    merged: dict[str, Any] = {}
    texts: set[str] = set()
    ignored: dict[str, None] = {}
    for source, is_text in ((query, True), (body, body_is_text)):
        for name in source:
            if name in merged:
                continue
            if name not in declared:
                ignored.setdefault(name, None)
                continue
            value = source[name]
            if name in file_names:
                if value in ("", [""]):  # an empty form field: no file
                    continue
                if not strict:  # upstream ignores a value for a file, too
                    ignored.setdefault(name, None)
                    continue
                raise exceptions.InvalidArguments(
                    {
                        name: [
                            "Send this argument as a file (a multipart part "
                            "with a filename)."
                        ]
                    }
                )
            merged[name] = value
            if is_text:
                texts.add(name)
    for name in texts & arguments.dict_names:
        merged[name] = _json_object(name, merged[name])
    for name in arguments.list_names.difference(texts).intersection(merged):
        # {"values": 1.5} is a list of one, as upstream reads it
        if not isinstance(merged[name], list | tuple):
            merged[name] = [merged[name]]
    for name, parts in (files or {}).items():
        if name not in declared:
            ignored.setdefault(name, None)
        else:
            merged[name] = _files_of(arguments, name, parts)
    _resolve_accept(arguments, merged, accept_header)
    return merged, list(ignored)


def refuse_unknown(names: Iterable[str]) -> exceptions.InvalidArguments:
    """The 422 for arguments a model does not declare (strict arguments)."""
    return exceptions.InvalidArguments({n: ["Unknown field."] for n in names})


def _json_object(name: str, value: Any) -> Any:
    """A mapping argument given as text is a JSON object."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise exceptions.InvalidArguments(
            {name: [f"Not a valid JSON object: {exc}"]}
        ) from None
    except RecursionError:
        raise exceptions.InvalidArguments(
            {name: ["Not a valid JSON object: nested too deeply to be read."]}
        ) from None


def _files_of(arguments: Arguments, name: str, parts: list[Any]) -> Any:
    """The uploaded files of one argument: a list for a ``List`` field,
    else exactly one file."""
    if name not in arguments.file_names:
        raise exceptions.InvalidArguments(
            {name: ["This argument takes a value, not a file."]}
        )
    if name in arguments.list_names:
        return list(parts)
    if len(parts) > 1:
        raise exceptions.InvalidArguments(
            {name: [f"One file is expected; {len(parts)} were sent."]}
        )
    return parts[0]


def _resolve_accept(
    arguments: Arguments, merged: dict[str, Any], header: str | None
) -> None:
    """``accept`` from the Accept header when the arguments leave it out.
    An ``accept`` argument of ``*/*`` reaches the model as it is, as
    upstream passes it (its choices always take it)."""
    field = arguments.fields.get("accept")
    if field is None or "accept" in merged:
        return
    choices = [str(c) for c in choices_of(field) or [] if c != ANY_MEDIA_TYPE]
    accept = accept_from_header(header, choices)
    if accept is not None:
        merged["accept"] = accept
