"""A model whose arguments and answer take every shape the Open Inference
Protocol maps: text, numbers, flags, lists, a nested list, a JSON object, a
file and several files; a response schema with a field of each kind; and a
raw answer (``accept``)."""

import hashlib

from marshmallow import Schema, fields, validate


class Answer(Schema):
    label = fields.Str(required=True)
    count = fields.Int(required=True)
    score = fields.Float(required=True)
    flag = fields.Bool(required=True)
    values = fields.List(fields.Float(), required=True)
    grid = fields.List(fields.List(fields.Int()), required=True)
    options = fields.Dict(required=True)
    files = fields.List(fields.Str(), required=True)
    ragged = fields.List(fields.List(fields.Int()))


schema = Answer


def get_predict_args():
    return {
        "label": fields.Str(required=True, validate=validate.Length(max=20)),
        "count": fields.Int(load_default=1, validate=validate.Range(min=0)),
        "score": fields.Float(load_default=0.5),
        "flag": fields.Bool(load_default=False),
        "values": fields.List(fields.Float(), load_default=[]),
        "grid": fields.List(fields.List(fields.Int()), load_default=[]),
        "options": fields.Dict(load_default={}),
        "document": fields.Field(
            load_default=None, allow_none=True, metadata={"type": "file"}
        ),
        "pages": fields.List(
            fields.Field(metadata={"type": "file"}),
            load_default=[],
            metadata={"type": "file"},
        ),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(["application/json", "application/pdf"]),
        ),
    }


def _digest(upload):
    with open(upload.filename, "rb") as f:
        data = f.read()
    return (
        f"{upload.original_filename}:{upload.content_type}:{len(data)}:"
        f"{hashlib.sha256(data).hexdigest()[:16]}"
    )


def predict(label, count, score, flag, values, grid, options, document, pages, accept):
    if accept == "application/pdf":
        with open(document.filename, "rb") as f:
            return f.read()[::-1]
    files = [_digest(f) for f in ([document] if document else []) + list(pages)]
    return {
        "label": label.upper(),
        "count": count * 2,
        "score": score / 2,
        "flag": not flag,
        "values": [v * 2 for v in values],
        "grid": [[c + 1 for c in row] for row in grid],
        "options": {"seen": options},
        "files": files,
        "ragged": [[1], [2, 3]] if count == 7 else [[1, 2], [3, 4]],
    }
