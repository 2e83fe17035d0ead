"""Reading a model's arguments from a request, with webargs.

``ArgumentParser`` adds one location to webargs' aiohttp parser, ``model``: the
query string, a urlencoded or multipart form, a JSON object body and uploaded
file parts, merged (body over query). File parts are streamed to temporary
files; ``parse_arguments`` returns them, as an ``Uploads``, with the
arguments, and the caller owns them from then on. Validation errors become
``InvalidArguments`` naming every bad field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import marshmallow
from aiohttp import hdrs, web
from webargs import core
from webargs.aiohttpparser import AIOHTTPParser

from deepaas import exceptions
from deepaas.api import keys
from deepaas.api import uploads as uploads_mod
from deepaas.model.v2.arguments import (
    Arguments,
    by_field,
    load_arguments,
    unreadable_argument,
)
from deepaas.runtime import forms
from deepaas.runtime.protocol import RawForm

LOCATION = "model"
IGNORED_HEADER = "Deepaas-Ignored-Arguments"
HEADER_SAFE = "!#$&'()*+-./:;<=>?@[]^_`{|}~"  # printable ASCII but "%" and ","
LOG = logging.getLogger(__name__)


def _unknown_charset(request: web.Request) -> exceptions.BadRequest:
    return exceptions.BadRequest(
        f"The request body names an unknown charset: {request.charset}"
    )


class ArgumentParser(AIOHTTPParser):
    """webargs' aiohttp parser with the ``model`` location."""

    __location_map__ = {
        **AIOHTTPParser.__location_map__,
        LOCATION: "load_model_arguments",
    }

    def __init__(
        self,
        client_max_size: int = 0,
        *,
        strict: bool = False,
        max_parts: int = 0,
        max_memory: int = 0,
        body_timeout: float = 0,
        spool: uploads_mod.MemorySpool | None = None,
    ) -> None:
        super().__init__(unknown=marshmallow.RAISE)
        self.spool = spool  # where small uploads may go, or None for disk
        self.client_max_size = client_max_size
        self.max_parts = max_parts  # of a multipart body; 0 for no limit
        self.max_memory = max_memory  # of its fields held in memory
        self.body_timeout = body_timeout  # seconds; 0 for none
        self.strict = strict  # unknown arguments are a 422, not ignored

    @staticmethod
    def query_arguments(request: web.Request, arguments: Arguments) -> dict[str, Any]:
        """The query string's arguments as webargs' proxy reads them (every
        value of a name that takes several, the first of any other)."""
        query = request.query
        if not query:
            return {}
        multiple = arguments.multiple_keys
        values: dict[str, Any] = {}
        for name in query.keys():  # (a repeated name comes again)
            if name not in values:
                values[name] = query.getall(name) if name in multiple else query[name]
        return values

    async def parse_arguments(
        self, request: web.Request, arguments: Arguments, *, short_lived: bool = True
    ) -> tuple[dict[str, Any], uploads_mod.Uploads, bool]:
        """Keyword arguments for the model, files included, the uploaded files
        they point at, and whether the arguments were validated here.

        A ``short_lived`` call (a prediction answered at once, not a job
        nor a training) may keep its files in memory, and its arguments are
        merged here but loaded through their schema by the worker that runs
        it: the workers do that in parallel, where the event loop, which
        every request shares, would do it alone (validating 100,000 floats
        takes a few hundred milliseconds; the few arguments of a small
        prediction still cost it a good share of its time). An invalid one
        is a 422 all the same, once a worker has looked at it.
        The caller owns the returned ``Uploads`` and removes them when the
        model is done with them; when parsing fails they are already gone.
        """
        spool = (
            self.spool
            if short_lived and not request.headers.get(hdrs.CONTENT_ENCODING)
            else None
        )
        # The request holds them too: its metrics count the bytes received.
        uploads = request[keys.UPLOADS] = uploads_mod.Uploads(
            spool, request.content_length
        )
        try:
            if short_lived:
                merged = await self.load_model_arguments(request, arguments)
                return merged, uploads, False
            merged = await self.load_model_arguments(request, arguments)
            # webargs' parse() would go the long way to this same load.
            parsed = load_arguments(arguments.schema, merged, unknown=marshmallow.RAISE)
        except marshmallow.ValidationError as exc:
            uploads.cleanup()
            raise exceptions.InvalidArguments(by_field(exc.messages)) from None
        except BaseException:
            uploads.cleanup()
            raise
        return dict(parsed), uploads, True

    async def read_form(
        self, request: web.Request
    ) -> tuple[RawForm, uploads_mod.Uploads] | None:
        """A small prediction form, read whole but not parsed: the worker
        that runs the prediction reads the arguments out of it
        (``deepaas.runtime.forms``), so that the event loop, which every request
        shares, leaves that work to the workers. The form, with the
        ``Uploads`` that hold its room in memory; None when this request's
        arguments are read here (``parse_arguments``): not a multipart body
        of known length that travels inside the call (``INLINE_MAX``, room
        in the memory spool), or one whose fields could exceed the limit on
        memory.
        """
        length = request.content_length
        if (
            self.spool is None
            or length is None
            or length > uploads_mod.INLINE_MAX
            or (self.max_memory and length > self.max_memory)
            or request.headers.get(hdrs.CONTENT_ENCODING)
            or not uploads_mod.is_multipart(request)
        ):
            return None
        uploads = uploads_mod.Uploads(self.spool, length)
        if not uploads.travels_inline():  # no room in memory
            return None
        request[keys.UPLOADS] = uploads
        try:
            boundary = forms.boundary_of(request.headers[hdrs.CONTENT_TYPE])
            if uploads_mod.content_length_over(request, self.client_max_size):
                raise uploads_mod.too_large(self.client_max_size)
            async with self._body_time_limit(request):
                body = await request.read()
        except BaseException:
            uploads.cleanup()
            raise
        form = RawForm(
            body,
            boundary,
            tuple(request.query.items()),
            request.headers.get(hdrs.ACCEPT),
            self.strict,
            self.max_parts,
        )
        return form, uploads

    async def read_body(self, request: web.Request) -> bytes:
        """A request's whole body, within the size and time limits of the
        bodies read into memory."""
        if uploads_mod.content_length_over(request, self.client_max_size):
            raise uploads_mod.too_large(self.client_max_size)
        async with self._body_time_limit(request):
            return await request.read()

    def _process_location_data(
        self,
        location_data: Any,
        schema: marshmallow.Schema,
        req: web.Request,
        location: str,
        unknown: str | None,
        validators: Any,
    ) -> Any:
        """webargs' loading through the schema, where a field that fails
        with anything but a ``ValidationError`` is a 422 naming it."""
        try:
            return super()._process_location_data(
                location_data, schema, req, location, unknown, validators
            )
        except (marshmallow.ValidationError, exceptions.DeepaasError):
            raise
        except web.HTTPException:
            raise
        except Exception as exc:
            LOG.warning("Arguments that cannot be loaded: %r", exc)
            raise unreadable_argument(schema, location_data, exc) from None

    async def load_model_arguments(
        self, request: web.Request, arguments: Arguments
    ) -> dict[str, Any]:
        """Merge every place a model argument may come from."""
        schema = arguments.schema
        if uploads_mod.content_length_over(request, self.client_max_size):
            raise uploads_mod.too_large(self.client_max_size)
        files: Mapping[str, Any] = {}
        body: Mapping[str, Any] = {}
        body_is_json = False
        if not request.body_exists:
            pass  # arguments in the query string only: nothing to read
        elif uploads_mod.is_multipart(request):
            values, files = await uploads_mod.read_multipart(
                request,
                request[keys.UPLOADS],
                uploads_mod.Limits(
                    self.client_max_size,
                    self.max_parts,
                    self.max_memory,
                    self.body_timeout,
                ),
            )
            body = self._makeproxy(values, schema)
        else:
            json_body = await self.load_json(request, schema)
            if json_body is core.missing:
                body = await self.load_form(request, schema)
            elif isinstance(json_body, Mapping):
                body = json_body
                body_is_json = True
            else:
                raise exceptions.InvalidArguments(
                    {"_body": ["A JSON body must be an object of arguments."]}
                )
        merged, ignored = forms.merge_arguments(
            arguments,
            self.query_arguments(request, arguments),
            body,
            body_is_text=not body_is_json,
            files=files,
            accept_header=request.headers.get(hdrs.ACCEPT),
            strict=self.strict,
        )
        if ignored:
            self._ignore(request, ignored)
        return merged

    def _ignore(self, request: web.Request, names: list[str]) -> None:
        """Arguments the model does not declare: a 422 when strict, else
        ignored, and named in the answer's ``Deepaas-Ignored-Arguments``."""
        if self.strict:
            raise forms.refuse_unknown(names)
        LOG.debug(
            "Ignoring %d argument(s) the model does not declare: %s",
            len(names),
            ", ".join(names[: exceptions.MAX_REPORTED]),
        )
        request[keys.IGNORED_ARGUMENTS] = names

    async def load_json(self, req: web.Request, schema: marshmallow.Schema) -> Any:
        """The JSON body; what cannot be read as JSON is a ``BadRequest``."""
        try:
            async with self._body_time_limit(req):
                return await super().load_json(req, schema)
        except LookupError:
            raise _unknown_charset(req) from None
        except RecursionError:
            raise exceptions.InvalidJSON(
                "The JSON body is nested too deeply to be read."
            ) from None
        except ValueError as exc:  # an integer beyond Python's digit limit
            raise exceptions.InvalidJSON(
                f"The request body is not valid JSON: {exc}"
            ) from None

    async def load_form(self, req: web.Request, schema: marshmallow.Schema) -> Any:
        """The urlencoded form body."""
        try:
            async with self._body_time_limit(req):
                return await super().load_form(req, schema)
        except LookupError:
            raise _unknown_charset(req) from None
        except ValueError:  # a charset that cannot decode it (idna, say)
            raise exceptions.BadRequest(
                f"The form cannot be read as {req.charset} text."
            ) from None

    @contextlib.asynccontextmanager
    async def _body_time_limit(self, request: web.Request) -> AsyncIterator[None]:
        """A body read into memory takes at most ``body_timeout`` seconds (no
        timer for one that has arrived whole already, as most small ones)."""
        if not self.body_timeout or request.content.is_eof():
            yield
            return
        try:
            async with asyncio.timeout(self.body_timeout):
                yield
        except TimeoutError:
            raise exceptions.RequestTimeout(self.body_timeout) from None

    def _handle_invalid_json_error(  # type: ignore[override]
        self, error: Exception, req: web.Request, *args: Any, **kwargs: Any
    ) -> typing.NoReturn:
        raise exceptions.InvalidJSON(f"The request body is not valid JSON: {error}")

    def handle_error(  # type: ignore[override]
        self,
        error: marshmallow.ValidationError,
        req: web.Request,
        schema: marshmallow.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> typing.NoReturn:
        messages = error.messages
        # webargs keys the messages by location; one location says nothing.
        if isinstance(messages, dict) and len(messages) == 1:
            (location,) = messages
            if location in self.__location_map__:
                messages = messages[location]
        if not isinstance(messages, dict):
            messages = {"_schema": messages}
        raise exceptions.InvalidArguments(messages)


PARSER: web.AppKey[ArgumentParser] = web.AppKey("deepaas_parser")


def add_ignored_arguments_header(
    request: web.Request, response: web.StreamResponse
) -> None:
    """Name the arguments the request's parsing ignored in its answer."""
    ignored = request.get(keys.IGNORED_ARGUMENTS)
    if ignored:
        # Names come from the client: percent-encoded, so that nothing in
        # them (control characters, commas) can break the header.
        shown = [
            urllib.parse.quote(name, safe=HEADER_SAFE)
            for name in ignored[: exceptions.MAX_REPORTED]
        ]
        if len(ignored) > len(shown):
            shown.append(f"(and {len(ignored) - len(shown)} more)")
        response.headers[IGNORED_HEADER] = ", ".join(shown)
