"""The benchmark model: one string argument, a small dict back, and a file
argument of which it reads only the size. Written against the documented model
API so that upstream DEEPaaS and deepaas serve it alike."""

import os
import time

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
    return {
        "lines": fields.Int(missing=0, description="Lines to print"),
        "interval": fields.Float(missing=0.05, description="Seconds between lines"),
    }


def train(**kwargs):
    """Print ``lines`` lines, each the time it was printed at."""
    for _ in range(kwargs.get("lines", 0)):
        print(f"at {time.time():.6f}", flush=True)
        time.sleep(kwargs.get("interval", 0.05))
    return {}
