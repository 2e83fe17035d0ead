"""A model answering in several media types through an accept argument."""

import os
import tempfile

from webargs import fields, validate

STATIC_DIR = tempfile.mkdtemp(prefix="accept-model-")
PNG_PATH = os.path.join(STATIC_DIR, "result.png")
with open(PNG_PATH, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n-fake-png-")


def get_metadata():
    return {"name": "accept-model", "description": "Returns files"}


def get_predict_args():
    return {
        "accept": fields.Str(
            description="Media type(s) that is/are acceptable for the response.",
            missing="application/zip",
            validate=validate.OneOf(
                ["application/zip", "image/png", "application/json"]
            ),
        ),
    }


def predict(**args):
    if args["accept"] == "image/png":
        return open(PNG_PATH, "rb")
    if args["accept"] == "application/json":
        return {"some": "json"}
    return b"PK\x05\x06" + b"\x00" * 18
