"""The payload benchmark model: uploads, binary and JSON outputs, JSON inputs.

Written against the documented model API, so that upstream DEEPaaS and deepaas
serve it alike. ``kind`` picks the workload:

- ``stat``: the size of the uploaded ``data`` file (its bytes are not read);
- ``png``: a 1 MiB PNG image, as bytes (with ``accept=image/png``);
- ``file``: the same image, as an open file (with ``accept=image/png``): the
  file ``DEEPAAS_BENCH_IMAGE`` names, which holds ``IMAGE``;
- ``bytes``: ``count`` zero bytes (with ``accept=image/png``);
- ``floats``: ``count`` floats, as JSON;
- ``sum``: the count and sum of the ``values`` sent.
"""

import os
import random
import struct
import zlib

from webargs import fields, validate

SIDE = 512  # a 512 x 512 RGBA image: 1 MiB of pixels


def _png(side: int) -> bytes:
    """A valid PNG of random pixels (which do not compress: about 1 MiB)."""
    noise = random.Random(0).randbytes(side * side * 4)
    rows = b"".join(
        b"\x00" + noise[y * side * 4 : (y + 1) * side * 4] for y in range(side)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


IMAGE = _png(SIDE)
# The harness writes IMAGE to a file of its own and names it here.
IMAGE_PATH = os.environ.get("DEEPAAS_BENCH_IMAGE", "")
_RNG = random.Random(1)
FLOATS = [_RNG.random() for _ in range(100_000)]


def get_metadata():
    return {"name": "bench-payload", "description": "Payload benchmark model"}


def warm():
    pass


def get_predict_args():
    return {
        "kind": fields.Str(
            missing="stat",
            validate=validate.OneOf(["stat", "png", "file", "bytes", "floats", "sum"]),
        ),
        "data": fields.Field(type="file", location="form", missing=None),
        "values": fields.List(fields.Float(), missing=[]),
        "count": fields.Int(missing=100_000),
        "accept": fields.Str(
            missing="application/json",
            validate=validate.OneOf(["application/json", "image/png"]),
        ),
    }


def predict(kind, data, values, count, accept):
    if kind == "png":
        return IMAGE
    if kind == "file":
        return open(IMAGE_PATH, "rb")
    if kind == "bytes":
        return bytes(count)
    if kind == "floats":
        return {"values": FLOATS[:count]}
    if kind == "sum":
        return {"count": len(values), "sum": sum(values)}
    return {"size": os.path.getsize(data.filename) if data is not None else None}


def get_train_args():
    return {}


def train(**kwargs):
    return {}
