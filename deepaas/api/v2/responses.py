"""Schemas of the API's answers, for the spec."""

from __future__ import annotations

from marshmallow import Schema, fields


class Link(Schema):
    rel = fields.Str(required=True)
    href = fields.Str(required=True)
    type = fields.Str()


class Version(Schema):
    version = fields.Str(required=True)
    id = fields.Str(required=True)
    links = fields.List(fields.Nested(Link))


class Versions(Schema):
    versions = fields.List(fields.Nested(Version))
    links = fields.List(fields.Nested(Link))


class ModelMeta(Schema):
    class Meta:
        unknown = "include"

    id = fields.Str(required=True, metadata={"description": "Model identifier"})
    name = fields.Str(required=True, metadata={"description": "Model name"})
    description = fields.Str(metadata={"description": "Model description"})
    license = fields.Str(metadata={"description": "Model license"})
    author = fields.Str(metadata={"description": "Model author"})
    version = fields.Str(metadata={"description": "Model version"})
    url = fields.Str(metadata={"description": "Model url"})
    links = fields.List(fields.Nested(Link))


class ModelList(Schema):
    models = fields.List(fields.Nested(ModelMeta))


class WrappedPrediction(Schema):
    status = fields.Str(required=True, metadata={"description": "Always OK"})
    predictions = fields.Raw(
        required=True, metadata={"description": "What the model returned"}
    )


class TrainingResult(Schema):
    output = fields.Raw(metadata={"description": "What train() returned"})
    finish_date = fields.Str()
    duration = fields.Str(metadata={"description": "H:MM:SS.ffffff"})


class Training(Schema):
    uuid = fields.Str(required=True)
    date = fields.Str(required=True, metadata={"description": "When it started"})
    args = fields.Dict(required=True)
    status = fields.Str(
        required=True,
        metadata={"enum": ["running", "done", "error", "cancelled"]},
    )
    result = fields.Nested(TrainingResult)
    message = fields.Str(metadata={"description": "Why it failed"})


class Error(Schema):
    message = fields.Str(required=True)
    errors = fields.Dict(metadata={"description": "Per-argument messages"})
