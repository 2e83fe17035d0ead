"""Swagger 2.0 and OpenAPI 3.0, from the same declarations, both valid."""

from __future__ import annotations

import pytest
from aiohttp_apigami.constants import SWAGGER_DICT
from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator

from deepaas import config
from deepaas.api import get_app, keys

METHODS = {"get", "post", "put", "delete", "patch"}
# Described in the OpenAPI 3 document only (the Open Inference Protocol)
PROTOCOL_TAG = "inference protocol"


def operations(spec: dict, *, protocol: bool = False) -> dict[tuple[str, str], dict]:
    """The operations of a document, those of the Open Inference Protocol
    left out (or, with ``protocol``, only those)."""
    return {
        (path, method): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS and (PROTOCOL_TAG in operation.get("tags", ())) == protocol
    }


@pytest.fixture(scope="module")
def every_model(testmodels_installed, tmp_path_factory) -> tuple[dict, dict]:
    """The two documents of an app serving every test model (and their odd
    declarations), as built; the app is not started."""
    state = tmp_path_factory.mktemp("state")
    app = get_app(config.build_config(["--state-dir", str(state)]))
    return app[SWAGGER_DICT], app[keys.OPENAPI3]


async def documents(client, base: str = "") -> tuple[dict, dict]:
    swagger = await client.get(f"{base}/swagger.json")
    openapi = await client.get(f"{base}/openapi.json")
    assert swagger.status == openapi.status == 200
    assert openapi.content_type == "application/json"
    return await swagger.json(), await openapi.json()


async def test_served_documents_are_the_built_ones(make_client):
    client = await make_client("--model-name", "accept-model", ready=False)
    swagger, openapi = await documents(client)
    assert swagger == client.app[SWAGGER_DICT]
    assert openapi == client.app[keys.OPENAPI3]
    assert "/v2/models/accept-model/predict/" in swagger["paths"]


def test_both_documents_validate(every_model):
    swagger, openapi = every_model
    assert swagger["swagger"] == "2.0"
    assert openapi["openapi"].startswith("3.0.")
    OpenAPIV2SpecValidator(swagger).validate()
    OpenAPIV30SpecValidator(openapi).validate()


def test_same_operations_in_both(every_model):
    swagger, openapi = every_model
    ops2, ops3 = operations(swagger), operations(openapi)
    assert ops2.keys() == ops3.keys()
    assert len(ops2) > 20
    for key, op2 in ops2.items():
        op3 = ops3[key]
        assert op3.get("summary") == op2.get("summary"), key
        assert set(op3["responses"]) == set(op2["responses"]), key
        names2 = {p["name"] for p in op2.get("parameters", []) if p["in"] != "formData"}
        names3 = {p["name"] for p in op3.get("parameters", [])}
        assert names3 == names2, key
        form2 = {p["name"] for p in op2.get("parameters", []) if p["in"] == "formData"}
        body = op3.get("requestBody", {}).get("content", {})
        form3 = set(
            body.get("multipart/form-data", {}).get("schema", {}).get("properties", {})
        )
        assert form3 == form2, key


def test_files_are_a_multipart_body(every_model):
    _, openapi = every_model
    operation = openapi["paths"]["/v2/models/failing/predict/"]["post"]
    assert not [p for p in operation["parameters"] if p["in"] == "formData"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["data"]["type"] == "string"
    assert schema["properties"]["data"]["format"] == "binary"
    assert "produces" not in operation and "consumes" not in operation


def test_media_types_a_model_answers_with(every_model):
    swagger, openapi = every_model
    path = "/v2/models/accept-model/predict/"
    produces = swagger["paths"][path]["post"]["produces"]
    content = openapi["paths"][path]["post"]["responses"]["200"]["content"]
    assert set(content) == set(produces) - {"*/*"} | (
        {"*/*"} if "*/*" in produces else set()
    )
    assert content["application/json"]["schema"]["$ref"].startswith(
        "#/components/schemas/"
    )
    assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}


async def test_under_a_base_path(make_client):
    client = await make_client("--model-name", "minimal", "--base-path", "x")
    swagger, openapi = await documents(client, "/x")
    assert operations(openapi).keys() == operations(swagger).keys()
    assert all(path.startswith("/x/") for path in openapi["paths"])
    assert operations(openapi, protocol=True)
    assert (await client.get("/openapi.json")).status == 404


async def test_mapping_arguments_are_json_in_the_query(every_model, make_client):
    swagger, openapi = every_model
    path = "/v2/models/module-model/train/"
    (param2,) = [
        p
        for p in swagger["paths"][path]["post"]["parameters"]
        if p["name"] == "options"
    ]
    assert param2["type"] == "string" and param2["default"] == "{}"
    (param3,) = [
        p
        for p in openapi["paths"][path]["post"]["parameters"]
        if p["name"] == "options"
    ]
    assert param3["content"]["application/json"]["schema"]["type"] == "object"
    # and the server reads them so
    client = await make_client("--model-name", "module-model", ready=False)
    resp = await client.post(path + '?epochs=1&options={"a":%201}')
    assert resp.status == 200
    assert (await resp.json())["args"]["options"] == {"a": 1}


@pytest.mark.parametrize("bad", ["{nope", "[1,%202]", "3"])
async def test_a_mapping_argument_that_is_no_json_object_is_422(make_client, bad):
    client = await make_client("--model-name", "module-model", ready=False)
    path = "/v2/models/module-model/train/"
    resp = await client.post(path + f"?epochs=1&options={bad}")
    assert resp.status == 422
    body = await resp.json()
    assert "options" in body["errors"]


def test_models_response_schemas_get_their_own_names(every_model):
    swagger, openapi = every_model
    names2, names3 = set(swagger["definitions"]), set(openapi["components"]["schemas"])
    assert names2 == {n for n in names3 if not n.startswith("Inference")}
    # a dict declared by one model, a Schema class of the same name by another
    assert {"ModelPredictionResponse", "ModelPredictionResponse-schema-class"} <= names2
    path = "/v2/models/schema-class/predict/"
    answer = swagger["paths"][path]["post"]["responses"]["200"]["schema"]
    assert answer == {"$ref": "#/definitions/ModelPredictionResponse-schema-class"}
