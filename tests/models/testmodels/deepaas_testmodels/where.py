"""A model that says where its uploaded file is and what it holds, for
predictions and trainings alike."""

import hashlib
import os

from webargs import fields


def _args():
    return {
        "data": fields.Field(type="file", location="form", required=True),
        # a path to hard-link the upload to, as a model that keeps it would
        "link_to": fields.Str(missing=None, allow_none=True),
    }


get_predict_args = get_train_args = _args


def _describe(data):
    with open(data.filename, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "directory": os.path.dirname(data.filename),
        "name": os.path.basename(data.filename),
        "size": os.path.getsize(data.filename),
        "inode": os.stat(data.filename).st_ino,
        "sha256": digest,
    }


def predict(data, link_to=None):
    if link_to:
        os.link(data.filename, link_to)
    return _describe(data)


def train(data, link_to=None):
    return _describe(data)
