"""The benchmark model: one string argument, a small dict back, and a file
argument of which it reads only the size. Written against the documented model
API so that upstream DEEPaaS and deepaas serve it alike."""

import os

from webargs import fields


def get_metadata():
    return {"name": "bench", "description": "Benchmark model"}


def warm():
    pass


def get_predict_args():
    return {
        "text": fields.Str(missing="hello", description="Some text"),
        "data": fields.Field(
            type="file", location="form", missing=None, description="A file"
        ),
    }


def predict(**kwargs):
    upload = kwargs.get("data")
    size = os.path.getsize(upload.filename) if upload is not None else None
    return {"text": kwargs["text"], "length": len(kwargs["text"]), "size": size}


def get_train_args():
    return {}


def train(**kwargs):
    return {}
