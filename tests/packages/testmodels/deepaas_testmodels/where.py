"""A model that says where its uploaded file is and what it holds, for
predictions and trainings alike."""

import hashlib
import os

from webargs import fields


def _args():
    return {
        "data": fields.Field(type="file", location="form", required=True),
        # hard-link the upload to <its path>.kept, as a model that keeps it
        # would, and say where that is
        "keep": fields.Bool(missing=False),
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


def predict(data, keep=False):
    result = _describe(data)
    if keep:
        result["kept"] = data.filename + ".kept"
        os.link(data.filename, result["kept"])
    return result


def train(data, keep=False):
    return _describe(data)
