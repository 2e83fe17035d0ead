"""A module-style model written the way upstream DEEPaaS documents it."""

import os

from webargs import fields, validate

WARMED = {"pid": None}


def get_metadata():
    return {
        "name": "module-model",
        "description": "A module entry point with old-style arguments",
        "author": "tests",
        "version": "0.1",
    }


def warm():
    WARMED["pid"] = os.getpid()


def get_predict_args():
    return {
        "text": fields.Str(
            required=False,
            missing="foo",
            enum=["foo", "bar", "baz"],
            description="A choice of words",
        ),
        "count": fields.Int(
            missing=1, validate=validate.Range(min=1, max=10), description="How many"
        ),
        "ratio": fields.Float(missing=0.5),
        "flag": fields.Bool(missing=False),
        "numbers": fields.List(fields.Float(), missing=[1.0, 2.0]),
        "link": fields.Url(required=False, missing=None, allow_none=True),
        "mode": fields.Str(
            missing="a", validate=validate.OneOf(["a", "b"]), description="A mode"
        ),
        "data": fields.Field(
            description="Data file",
            required=False,
            missing=None,
            type="file",
            location="form",
        ),
    }


def predict(**kwargs):
    upload = kwargs.pop("data")
    result = {"args": kwargs, "warmed_in": WARMED["pid"], "pid": os.getpid()}
    if upload is not None:
        with open(upload.filename, "rb") as f:
            content = f.read()
        result["file"] = {
            "name": upload.name,
            "path": upload.filename,
            "content_type": upload.content_type,
            "original_filename": upload.original_filename,
            "size": len(content),
            "head": content[:32].decode("latin-1"),
            "exists_during_call": os.path.exists(upload.filename),
        }
    return result


def get_train_args():
    return {
        "epochs": fields.Int(required=True, description="Epochs"),
        "lr": fields.Float(missing=0.1),
        "options": fields.Dict(missing={}, description="Extra settings"),
    }


def train(**kwargs):
    result = {"trained_epochs": kwargs["epochs"], "lr": kwargs["lr"]}
    if kwargs["options"]:
        result["options"] = kwargs["options"]
    return result
