"""The rewrites between apispec's output and valid Swagger 2.0 / OpenAPI 3.0."""

from __future__ import annotations

import pytest
from marshmallow import Schema

from deepaas.api.spec import fix_swagger2, schema_namer, to_openapi3


def swagger_with(parameter: dict) -> dict:
    return {"paths": {"/p": {"post": {"parameters": [parameter]}}}}


def test_an_object_query_parameter_becomes_a_json_string_in_swagger2():
    spec = swagger_with(
        {
            "in": "query",
            "name": "options",
            "type": "object",
            "additionalProperties": {},
            "default": {"a": 1},
            "description": "Options",
        }
    )
    fix_swagger2(spec)
    (parameter,) = spec["paths"]["/p"]["post"]["parameters"]
    assert parameter == {
        "in": "query",
        "name": "options",
        "type": "string",
        "format": "json",
        "default": '{"a": 1}',
        "description": "Options (a JSON object)",
    }


def test_a_null_default_is_no_default_in_swagger2():
    spec = swagger_with({"in": "query", "name": "n", "type": "string", "default": None})
    fix_swagger2(spec)
    assert "default" not in spec["paths"]["/p"]["post"]["parameters"][0]


def test_body_parameters_are_left_alone():
    parameter = {"in": "body", "name": "b", "type": "object"}
    spec = swagger_with(dict(parameter))
    fix_swagger2(spec)
    assert spec["paths"]["/p"]["post"]["parameters"] == [parameter]


def test_openapi3_form_parameters_become_a_multipart_body():
    operation = {
        "parameters": [
            {"in": "query", "name": "q", "schema": {"type": "integer"}},
            {
                "in": "formData",
                "name": "image",
                "required": True,
                "description": "An image",
                "schema": {"type": "file"},
            },
        ],
        "produces": ["application/json"],
        "consumes": ["multipart/form-data"],
        "responses": {"200": {"description": "ok"}},
    }
    spec = {"paths": {"/p": {"post": operation}}}
    result = to_openapi3(spec)["paths"]["/p"]["post"]
    assert [p["name"] for p in result["parameters"]] == ["q"]
    body = result["requestBody"]
    assert body["required"] is True
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["image"]
    assert schema["properties"]["image"] == {
        "type": "string",
        "format": "binary",
        "description": "An image",
    }
    assert "produces" not in result and "consumes" not in result
    assert spec["paths"]["/p"]["post"]["parameters"][1]["in"] == "formData"  # a copy


def test_openapi3_success_content_follows_produces_and_errors_stay_json():
    error_content = {"application/json": {"schema": {"$ref": "#/e"}}}
    operation = {
        "produces": ["application/json", "image/png", "text/plain"],
        "responses": {
            "200": {"content": {"application/json": {"schema": {"$ref": "#/p"}}}},
            "422": {"content": dict(error_content)},
        },
    }
    result = to_openapi3({"paths": {"/p": {"post": operation}}})
    responses = result["paths"]["/p"]["post"]["responses"]
    assert responses["200"]["content"] == {
        "application/json": {"schema": {"$ref": "#/p"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "text/plain": {"schema": {"type": "string"}},
    }
    assert responses["422"]["content"] == error_content


def test_an_object_query_parameter_is_json_content_in_openapi3():
    operation = {
        "parameters": [
            {"in": "query", "name": "o", "schema": {"type": "object"}},
        ],
        "responses": {},
    }
    result = to_openapi3({"paths": {"/p": {"post": operation}}})
    (parameter,) = result["paths"]["/p"]["post"]["parameters"]
    assert parameter["content"] == {"application/json": {"schema": {"type": "object"}}}
    assert "schema" not in parameter


def make_schema(name: str) -> type[Schema]:
    return type(name, (Schema,), {})


def test_schema_names_are_unique_per_document():
    first, second, third = (make_schema("ModelPredictionResponse") for _ in range(3))
    other = make_schema("TrainingSchema")
    resolve = schema_namer({second: "plants"})
    assert resolve(first) == "ModelPredictionResponse"
    assert resolve(first()) == "ModelPredictionResponse"  # instances too
    assert resolve(second) == "ModelPredictionResponse-plants"
    assert resolve(third) == "ModelPredictionResponse2"
    assert resolve(other) == "Training"
    assert resolve(second) == "ModelPredictionResponse-plants"  # stable


@pytest.mark.parametrize("count", [2, 5])
def test_unowned_clashes_get_numbers(count):
    resolve = schema_namer({})
    schemas = [make_schema("Clash") for _ in range(count)]
    names = [resolve(s) for s in schemas]
    assert names == ["Clash"] + [f"Clash{n}" for n in range(2, count + 1)]
