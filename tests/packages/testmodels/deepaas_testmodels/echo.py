"""A model of one file argument, answering with the file itself for images
(as the AI4OS demo application does) or with what it knows of it."""

import os

from webargs import fields, validate


def get_predict_args():
    return {
        "image": fields.Field(type="file", location="form", required=True),
        "accept": fields.Str(
            missing="application/json",
            validate=validate.OneOf(["application/json", "image/png", "text/plain"]),
        ),
    }


def predict(image, accept):
    if accept == "image/png":
        return open(image.filename, "rb")
    if accept == "text/plain":
        return f"{image.original_filename}: {os.path.getsize(image.filename)} bytes"
    return {"name": image.original_filename, "size": os.path.getsize(image.filename)}
