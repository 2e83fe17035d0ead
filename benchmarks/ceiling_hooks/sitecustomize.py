"""What-if variants of deepaas for benchmarks/upload_ceiling.py, switched on by
``DEEPAAS_CEILING`` in the environment of a deepaas-run started with this
directory on its PYTHONPATH (Python imports ``sitecustomize`` at start-up, in
the server and in its workers alike). Without that variable nothing changes.

- ``forms-in-server``: the server reads every prediction form itself, as it
  did before small forms were left to the workers: what that move saves.
- ``forward``: the server reads a prediction's multipart body whole and hands
  it to the benchmark model unparsed (as ``values``); no form is read, no
  argument validated, no file written. What the server costs when it does
  nothing with the body but carry it to a worker.

These are measurements of what a design would cost, not features: errors,
limits, the Accept header and the ignored-arguments header are left out of
``forward``.
"""

from __future__ import annotations

import os

VARIANT = os.environ.get("DEEPAAS_CEILING", "")
RAW = "_raw_form"


def _server() -> None:
    from deepaas.api import keys
    from deepaas.api import parser as parser_mod
    from deepaas.api import uploads as uploads_mod

    async def read_form(self, request):  # type: ignore[no-untyped-def]
        return None  # every form is read by the server

    parser_mod.ArgumentParser.read_form = read_form  # type: ignore[method-assign]
    if VARIANT != "forward":
        return
    original = parser_mod.ArgumentParser.parse_arguments

    async def parse_arguments(self, request, arguments, *, short_lived=True):  # type: ignore[no-untyped-def]
        if not (short_lived and uploads_mod.is_multipart(request)):
            return await original(self, request, arguments, short_lived=short_lived)
        body = await request.read()
        uploads = request[keys.UPLOADS] = uploads_mod.Uploads(None, len(body))
        kwargs = {"kind": "stat", "data": None, "values": body,
                  "count": 0, "accept": "application/json"}  # fmt: skip
        return kwargs, uploads, True

    parser_mod.ArgumentParser.parse_arguments = parse_arguments  # type: ignore[method-assign]


if VARIANT in ("forward", "forms-in-server"):
    _server()
