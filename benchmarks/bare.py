"""The ceilings: bare aiohttp handlers doing only the HTTP side of each payload
workload, with no model, no worker and no disk.

- POST /upload reads a multipart body chunk by chunk with aiohttp's own
  reader (``await request.multipart()``, then ``part.read_chunk(65536)`` until
  empty, for each part) and answers its size as a small JSON object;
- POST /png answers the benchmark model's 1 MiB PNG from memory;
- POST /file answers the same image from its file (aiohttp's FileResponse);
- POST /json-in parses a JSON body of floats and answers their count and sum;
- POST /json-out answers the model's 100,000 floats as JSON.

    python benchmarks/bare.py PORT   # with the benchmark model importable
"""

from __future__ import annotations

import os
import sys

from aiohttp import BodyPartReader, web
from deepaas_bench_model import payload

CHUNK = 65536


async def upload(request: web.Request) -> web.Response:
    reader = await request.multipart()
    size = 0
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
    return web.json_response({"status": "OK", "predictions": {"size": size}})


async def png(request: web.Request) -> web.Response:
    return web.Response(body=payload.IMAGE, content_type="image/png")


async def file(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.environ["DEEPAAS_BENCH_IMAGE"])


async def json_in(request: web.Request) -> web.Response:
    values = (await request.json())["values"]
    return web.json_response(
        {"status": "OK", "predictions": {"count": len(values), "sum": sum(values)}}
    )


async def json_out(request: web.Request) -> web.Response:
    return web.json_response(
        {"status": "OK", "predictions": {"values": payload.FLOATS}}
    )


def main() -> None:
    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/upload", upload)
    app.router.add_post("/png", png)
    app.router.add_post("/file", file)
    app.router.add_post("/json-in", json_in)
    app.router.add_post("/json-out", json_out)
    app.router.add_get("/ready", lambda request: web.Response(text="ok"))
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None
    )


if __name__ == "__main__":
    main()
