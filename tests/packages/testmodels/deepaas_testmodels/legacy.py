"""An older model: get_test_args instead of get_predict_args, no train args."""

from webargs import fields


def get_metadata():
    return {"name": "legacy", "description": "Old names"}


def get_test_args():
    return {"word": fields.Str(missing="old")}


def get_train_args():
    raise NotImplementedError


def predict(**kwargs):
    return kwargs["word"]
