"""Turning results into what the client receives."""

from __future__ import annotations

import json

import pytest
from marshmallow import Schema, fields

from deepaas import exceptions
from deepaas.model.v2.encoding import (
    finish_prediction,
    is_raw_result,
    jsonable,
    prediction_body,
    response_schema_of,
)
from deepaas.model.v2.types import EncodedJSON, ReturnedFile, UploadedFile

UPLOAD = UploadedFile("data", "/tmp/x", "image/png", "cat.png")


class Odd:
    def __str__(self) -> str:
        return "odd!"


def test_a_prediction_json_cannot_encode_is_an_error_naming_the_type():
    with pytest.raises(exceptions.InvalidResponse) as info:
        finish_prediction("m", None, {"v": Odd()}, None)
    assert "Odd is not JSON serializable" in info.value.message
    assert "'m'" in info.value.message


def test_file_tuples_in_a_prediction_are_lists_as_json_makes_every_tuple():
    finished = finish_prediction("m", None, [UPLOAD], None)
    assert json.loads(finished.data)["predictions"] == [list(UPLOAD)]


def test_jsonable_keeps_the_rest_when_one_leaf_is_odd_and_names_files():
    assert jsonable({"a": (1, Odd()), 2: UPLOAD}) == {"a": [1, "odd!"], "2": "cat.png"}


@pytest.mark.parametrize(
    ("result", "accept", "raw"),
    [
        (b"png", None, True),
        (ReturnedFile(None, "/tmp/a", None, "a"), "application/json", True),
        ("text", "text/plain", True),
        ("text", "application/json", False),
        ("text", "*/*", False),
        ("text", None, False),
        ({"a": 1}, "image/png", False),
    ],
)
def test_is_raw_result(result, accept, raw):
    assert is_raw_result(result, accept) is raw


def test_finish_prediction_wraps_json_and_passes_raw_results():
    finished = finish_prediction("m", None, [1, 2], None)
    assert isinstance(finished, EncodedJSON)
    assert json.loads(finished.data) == {"status": "OK", "predictions": [1, 2]}
    assert finish_prediction("m", None, b"raw", "image/png") == b"raw"


class Answer(Schema):
    label = fields.Str(required=True)


def test_a_response_schema_validates_and_sends_the_result_as_is():
    schema = Answer()
    assert prediction_body("m", schema, {"label": "cat"}) == {"label": "cat"}
    with pytest.raises(exceptions.InvalidResponse) as info:
        prediction_body("m", schema, {"label": 3})
    assert "label" in info.value.message
    with pytest.raises(exceptions.InvalidResponse) as info:
        prediction_body("m", schema, ["not", "an", "object"])
    assert "expected an object, got list" in info.value.message


def test_response_schemas_are_named_model_prediction_response():
    class FromClass:
        schema = Answer

    class FromDict:
        schema = {"label": fields.Str()}

    class Neither:
        schema = 42

    for model in (FromClass, FromDict):
        schema = response_schema_of("m", model)
        assert type(schema).__name__ == "ModelPredictionResponse"
    assert response_schema_of("m", object()) is None
    with pytest.raises(exceptions.ModelLoadError) as info:
        response_schema_of("m", Neither)
    assert "it is a int" in info.value.message
