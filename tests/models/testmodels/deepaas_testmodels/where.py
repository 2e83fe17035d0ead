"""A model that says where its uploaded file is and what it holds, for
predictions and trainings alike."""

import hashlib
import os

from webargs import fields


def _args():
    return {"data": fields.Field(type="file", location="form", required=True)}


get_predict_args = get_train_args = _args


def _describe(data):
    with open(data.filename, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "directory": os.path.dirname(data.filename),
        "name": os.path.basename(data.filename),
        "size": os.path.getsize(data.filename),
        "sha256": digest,
    }


def predict(data):
    return _describe(data)


def train(data):
    return _describe(data)
