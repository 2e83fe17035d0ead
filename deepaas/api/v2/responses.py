"""Schemas of the API's answers, for the spec.

Their names are upstream DEEPaaS's (``Location``, ``Failure``, ``Prediction``,
``Training``, ``TrainingList``, ...), so that clients generated from either
spec keep compiling; what is new here is additional fields and schemas.
"""

from __future__ import annotations

from marshmallow import Schema, fields


class Location(Schema):
    rel = fields.Str(required=True)
    href = fields.Url(required=True, relative=True)
    type = fields.Str()


class Version(Schema):
    version = fields.Str(required=True)
    id = fields.Str(required=True)
    links = fields.List(fields.Nested(Location))


class Versions(Schema):
    versions = fields.List(fields.Nested(Version))
    links = fields.List(fields.Nested(Location))


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
    links = fields.List(fields.Nested(Location))


class ModelList(Schema):
    models = fields.List(fields.Nested(ModelMeta))


class Prediction(Schema):
    status = fields.Str(required=True, metadata={"description": "Always OK"})
    predictions = fields.Raw(
        required=True, metadata={"description": "What the model returned"}
    )


class TrainingResult(Schema):
    output = fields.Raw(metadata={"description": "What train() returned"})
    finish_date = fields.Str()
    duration = fields.Str(metadata={"description": "H:MM:SS.ffffff"})


class Training(Schema):
    uuid = fields.UUID(required=True, metadata={"description": "Training identifier"})
    date = fields.DateTime(required=True, metadata={"description": "When it started"})
    args = fields.Dict(required=True)
    status = fields.Str(
        required=True,
        metadata={"enum": ["running", "done", "error", "cancelled"]},
    )
    result = fields.Nested(TrainingResult)
    message = fields.Str(metadata={"description": "Why it failed"})
    owner = fields.Str(metadata={"description": "Who started it (authentication on)"})
    progress = fields.Float(
        metadata={"description": "While it runs: the fraction done, as the model said"}
    )
    progress_message = fields.Str(
        metadata={"description": "While it runs: what the model last said of it"}
    )


class TrainingList(Schema):
    """Upstream's name for a list of trainings (the list endpoint answers a
    JSON array of ``Training``, here as upstream)."""

    trainings = fields.List(fields.Nested(Training))


class JobLinks(Schema):
    self = fields.Str(required=True, metadata={"description": "This job"})
    result = fields.Str(metadata={"description": "Its result, once done"})


class Job(Schema):
    """An asynchronous prediction (sent with ``Prefer: respond-async``)."""

    id = fields.Str(required=True, metadata={"description": "Job identifier"})
    model = fields.Str(required=True)
    status = fields.Str(
        required=True,
        metadata={"enum": ["running", "done", "error", "cancelled", "interrupted"]},
    )
    date = fields.Str(required=True, metadata={"description": "When it was sent"})
    args = fields.Dict(required=True)
    finish_date = fields.Str()
    duration = fields.Str(metadata={"description": "H:MM:SS.ffffff"})
    message = fields.Str(metadata={"description": "Why it failed or stopped"})
    error_status = fields.Int(
        metadata={"description": "The status a synchronous call would have had"}
    )
    owner = fields.Str(metadata={"description": "Who sent it (authentication on)"})
    result_type = fields.Str(metadata={"description": "The result's media type"})
    result_size = fields.Int(metadata={"description": "The result's size in bytes"})
    progress = fields.Float(
        metadata={"description": "While it runs: the fraction done, as the model said"}
    )
    progress_message = fields.Str(
        metadata={"description": "While it runs: what the model last said of it"}
    )
    result = fields.Raw(
        metadata={"description": "The result, when JSON of at most 4 MiB"}
    )
    links = fields.Nested(JobLinks, required=True)


class Failure(Schema):
    message = fields.Str(required=True, metadata={"description": "Failure message"})
    errors = fields.Dict(metadata={"description": "Per-argument messages"})
