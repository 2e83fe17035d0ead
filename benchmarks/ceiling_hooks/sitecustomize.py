"""What-if variants of deepaas for benchmarks/upload_ceiling.py, switched on by
``DEEPAAS_CEILING`` in the environment of a deepaas-run started with this
directory on its PYTHONPATH (Python imports ``sitecustomize`` at start-up, in
the server and in its workers alike). Without that variable nothing changes.

- ``forward``: the server reads a prediction's multipart body whole and hands
  it to the benchmark model unparsed (as ``values``); no form is read, no
  argument validated, no file written. What the server costs when it does
  nothing with the body but carry it to a worker.
- ``parse-in-worker``: the same server, and the worker reads the form itself
  (the same multipart parser), writes the file, validates the arguments
  through the model's schema and calls the model with them. What the server
  and the workers cost when reading forms moves into the workers.

These are measurements of what a design would cost, not features: errors,
limits, the Accept header and the ignored-arguments header are left out.
"""

from __future__ import annotations

import os

VARIANT = os.environ.get("DEEPAAS_CEILING", "")
RAW = "_raw_form"


def _server() -> None:
    from deepaas.api import keys
    from deepaas.api import parser as parser_mod
    from deepaas.api import uploads as uploads_mod

    original = parser_mod.ArgumentParser.parse_arguments

    async def parse_arguments(self, request, arguments, *, short_lived=True):  # type: ignore[no-untyped-def]
        if not (short_lived and uploads_mod.is_multipart(request)):
            return await original(self, request, arguments, short_lived=short_lived)
        body = await request.read()
        uploads = request[keys.UPLOADS] = uploads_mod.Uploads(None, len(body))
        if VARIANT == "forward":
            kwargs = {"kind": "stat", "data": None, "values": body,
                      "count": 0, "accept": "application/json"}  # fmt: skip
            return kwargs, uploads, True
        return {RAW: body}, uploads, True

    parser_mod.ArgumentParser.parse_arguments = parse_arguments  # type: ignore[method-assign]


def _worker() -> None:
    import multipart

    from deepaas.model.v2 import worker as worker_mod
    from deepaas.model.v2.arguments import read_declaration
    from deepaas.model.v2.types import InlineUpload

    original = worker_mod.LoadedModel._arguments

    def _arguments(self, call, files):  # type: ignore[no-untyped-def]
        body = call.kwargs.get(RAW)
        if body is None:
            return original(self, call, files)
        boundary = body[2 : body.index(b"\r\n")].decode()
        parser = multipart.PushMultipartParser(boundary)
        merged: dict[str, object] = {}
        segment, data = None, bytearray()
        for event in parser.parse(body):
            if event is None:
                assert segment is not None
                if segment.filename is not None:
                    content_type = segment.header("Content-Type", "")
                    merged[segment.name] = InlineUpload(
                        segment.name, data, content_type, segment.filename
                    )
                else:
                    merged[segment.name] = data.decode()
                segment, data = None, bytearray()
            elif isinstance(event, multipart.MultipartSegment):
                segment = event
            else:
                data += event
        parser.close()
        declared = self._declared.get(call.method)
        if declared is None:
            declared = self._declared[call.method] = read_declaration(
                self.name,
                "get_predict_args",
                self.model.get_predict_args,
                any_media_type=True,
            )
        return declared.schema.load(files.written(merged))

    worker_mod.LoadedModel._arguments = _arguments  # type: ignore[method-assign]


if VARIANT in ("forward", "parse-in-worker"):
    _server()
    if VARIANT == "parse-in-worker":
        _worker()
