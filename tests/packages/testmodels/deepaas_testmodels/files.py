"""A model that takes one file, several files, and can answer with the upload
itself (as the AI4OS demo application does for images)."""

from webargs import fields, validate


def get_predict_args():
    return {
        "image": fields.Field(
            type="file", location="form", required=False, missing=None
        ),
        "images": fields.List(
            fields.Field(type="file", location="form"),
            location="form",
            required=False,
            missing=[],
        ),
        "accept": fields.Str(
            missing="application/json",
            validate=validate.OneOf(["application/json", "image/*"]),
        ),
    }


def predict(image=None, images=(), accept="application/json"):
    if accept == "image/*" and image is not None:
        return open(image.filename, "rb")
    return {
        "image": image.original_filename if image else None,
        "images": [i.original_filename for i in images],
    }
