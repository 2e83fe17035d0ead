"""Class-style models with response schemas (a dict and a Schema subclass)."""

import marshmallow
from marshmallow import fields

from deepaas.model.v2.base import BaseModel


class ClassModel(BaseModel):
    schema = {
        "status": fields.Str(required=True, description="Model status"),
        "predictions": fields.List(
            fields.Nested(
                {
                    "label": fields.Str(required=True),
                    "probability": fields.Float(required=True),
                }
            ),
            required=True,
        ),
    }

    def __init__(self):
        self.instances = 1

    def get_metadata(self):
        return {"name": "class-model", "description": "A class entry point"}

    def warm(self):
        pass

    def get_predict_args(self):
        return {
            "label": fields.Str(missing="cat"),
            "valid": fields.Bool(missing=True),
        }

    def predict(self, **kwargs):
        if not kwargs["valid"]:
            return {"status": "OK", "predictions": [{"label": 42}]}
        return {
            "status": "OK",
            "predictions": [{"label": kwargs["label"], "probability": 0.9}],
        }

    def get_train_args(self):
        return {}

    def train(self, **kwargs):
        return "trained"


class Prediction(marshmallow.Schema):
    label = fields.Str(required=True)
    probability = fields.Float(required=True)


class Response(marshmallow.Schema):
    status = fields.Str(required=True)
    predictions = fields.List(fields.Nested(Prediction))


class SchemaClassModel(ClassModel):
    schema = Response

    def get_metadata(self):
        return {"name": "schema-class", "description": "Schema subclass"}
