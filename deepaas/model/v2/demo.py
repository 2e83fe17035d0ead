"""The built-in demo model, served as ``deepaas-test`` when no model is installed.

It exercises the whole contract: arguments of every kind, a file, an ``accept``
argument with JSON and PNG answers, a response schema, a training that takes a
few seconds, and ``predict_batch``, which deepaas calls with the predictions
that wait together under load (upstream DEEPaaS calls ``predict`` alone).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from marshmallow import Schema, fields, validate

from deepaas.model.v2.base import BaseModel
from deepaas.reports import progress

LOG = logging.getLogger(__name__)

# A 1x1 transparent PNG, the picture the demo returns for accept=image/png.
PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
    "60e6kgAAAABJRU5ErkJggg=="
)


class DemoPrediction(Schema):
    label = fields.Str(required=True, metadata={"description": "Predicted label"})
    probability = fields.Float(required=True, metadata={"description": "Its score"})


class DemoResponse(Schema):
    status = fields.Str(required=True, metadata={"description": "Always OK"})
    predictions = fields.List(fields.Nested(DemoPrediction), required=True)
    arguments = fields.Dict(
        required=True, metadata={"description": "The arguments as the model saw them"}
    )


class DemoModel(BaseModel):
    """A model that shows what deepaas does, without any learning."""

    schema = DemoResponse

    def get_metadata(self) -> dict[str, Any]:
        return {
            "name": "deepaas-test",
            "description": "Built-in demo model of deepaas: echoes its arguments "
            "and returns a fixed prediction. Install a model package to serve "
            "a real one.",
            "author": "deepaas developers",
            "license": "Apache-2.0",
            "version": "1.0",
            "url": "https://github.com/deepaas/deepaas",
        }

    def warm(self) -> None:
        LOG.info("Demo model warmed in process %d", os.getpid())

    def get_predict_args(self) -> dict[str, Any]:
        return {
            "label": fields.Str(
                load_default="cat",
                validate=validate.OneOf(["cat", "dog", "bird"]),
                metadata={"description": "Label the demo predicts"},
            ),
            "top_k": fields.Int(
                load_default=1,
                validate=validate.Range(min=1, max=5),
                metadata={"description": "How many predictions to return"},
            ),
            "threshold": fields.Float(
                load_default=0.5, metadata={"description": "A score threshold"}
            ),
            "verbose": fields.Bool(
                load_default=False, metadata={"description": "Describe the file"}
            ),
            "weights": fields.List(
                fields.Float(),
                load_default=[1.0],
                metadata={"description": "A list of numbers"},
            ),
            "url": fields.Url(
                load_default=None,
                allow_none=True,
                metadata={"description": "URL of data to predict on"},
            ),
            "stream": fields.Bool(
                load_default=False,
                metadata={
                    "description": "Make the predictions one by one: sent as "
                    "they come to a client accepting text/event-stream or "
                    "application/x-ndjson, else answered as one list"
                },
            ),
            "data": fields.Field(
                load_default=None,
                allow_none=True,
                metadata={
                    "type": "file",
                    "location": "form",
                    "description": "A file to predict on",
                },
            ),
            "accept": fields.Str(
                load_default="application/json",
                validate=validate.OneOf(["application/json", "image/png"]),
                metadata={"description": "Media type of the answer"},
            ),
        }

    def predict(self, **kwargs: Any) -> Any:
        if kwargs["accept"] == "image/png":
            return PNG_PIXEL
        shown = {k: v for k, v in kwargs.items() if k != "data"}
        upload = kwargs.get("data")
        if upload is not None:
            with open(upload.filename, "rb") as f:
                content = f.read()
            shown["data"] = {
                "filename": upload.original_filename,
                "content_type": upload.content_type,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        labels = [kwargs["label"], "dog", "bird", "cat", "fish"]
        predictions = [
            {"label": label, "probability": round(1.0 / (rank + 1), 4)}
            for rank, label in enumerate(dict.fromkeys(labels))
        ][: kwargs["top_k"]]
        if kwargs.get("stream"):
            return self._one_by_one(predictions, shown)
        return {"status": "OK", "predictions": predictions, "arguments": shown}

    @staticmethod
    def _one_by_one(
        predictions: list[dict[str, Any]], shown: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """A streaming model: each prediction as soon as it is made (here,
        a fifth of a second apart)."""
        for prediction in predictions:
            time.sleep(0.2)
            yield {"status": "OK", "predictions": [prediction], "arguments": shown}

    def predict_batch(self, calls: list[dict[str, Any]]) -> list[Any]:
        """Several predictions at once, as a model on an accelerator would run
        them: one call, one result per prediction, in order. A prediction
        that cannot be made gets its exception in its place, and fails alone.
        """
        results: list[Any] = []
        for kwargs in calls:
            try:
                results.append(self.predict(**kwargs))
            except Exception as exc:
                results.append(exc)
        return results

    def get_train_args(self) -> dict[str, Any]:
        return {
            "epochs": fields.Int(
                load_default=3,
                validate=validate.Range(min=1, max=100),
                metadata={"description": "Number of epochs (one second each)"},
            ),
            "learning_rate": fields.Float(
                load_default=0.01, metadata={"description": "Learning rate"}
            ),
        }

    def train(self, **kwargs: Any) -> dict[str, Any]:
        losses = []
        loss = 1.0
        epochs = kwargs["epochs"]
        for epoch in range(epochs):
            time.sleep(1)
            loss *= 1 - min(0.9, kwargs["learning_rate"] * 10)
            losses.append(round(loss, 6))
            LOG.info("epoch %d: loss %.6f", epoch + 1, loss)
            # what the training JSON shows while it runs
            progress(
                (epoch + 1) / epochs, f"epoch {epoch + 1} of {epochs}: loss {loss:.6f}"
            )
        return {"epochs": kwargs["epochs"], "final_loss": losses[-1], "losses": losses}
