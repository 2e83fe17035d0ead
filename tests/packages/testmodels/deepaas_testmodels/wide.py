"""A model of every kind of argument a client can get wrong: files, a list
of files, lists, a dict, a nested object, and a field class of the model's
own that fails with something other than a ValidationError (as a hastily
written one does). It answers with what it received, reading no file."""

import os

from marshmallow import Schema
from webargs import fields


class Point(Schema):
    x = fields.Float(required=True)
    y = fields.Float(required=True)
    tags = fields.List(fields.Str(), load_default=[])


class Celsius(fields.Field):
    """Degrees given as text: ``float()`` raises ValueError (not a
    ValidationError) for anything else, and TypeError for a non-string."""

    def _deserialize(self, value, attr, data, **kwargs):
        return float(value.strip().rstrip("C"))


def get_predict_args():
    return {
        "image": fields.Field(type="file", location="form", required=False),
        "images": fields.List(
            fields.Field(type="file", location="form"),
            location="form",
            load_default=[],
        ),
        "numbers": fields.List(fields.Int(), load_default=[]),
        "options": fields.Dict(keys=fields.Str(), load_default={}),
        "point": fields.Nested(Point, required=False),
        "label": fields.Str(load_default=""),
        "temperature": Celsius(required=False),
    }


def predict(image=None, images=(), **kwargs):
    files = [image] if image is not None else []
    files += list(images)
    return {
        "files": [
            {"name": f.original_filename, "size": os.path.getsize(f.filename)}
            for f in files
        ],
        "numbers": kwargs["numbers"],
        "label": kwargs["label"],
        "temperature": kwargs.get("temperature"),
    }
