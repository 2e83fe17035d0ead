"""Versions, models, spec, UI, debug, base path and endpoint toggles."""

from __future__ import annotations

import pytest


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "module-model")


async def test_versions(client):
    body = await (await client.get("/")).json()
    assert body["versions"] == [
        {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}],
        }
    ]
    assert body["links"] == [
        {"rel": "help", "type": "text/html", "href": "/api"},
        {"rel": "describedby", "type": "application/json", "href": "/swagger.json"},
    ]


async def test_v2_version(client):
    for path in ("/v2/", "/v2"):
        body = await (await client.get(path)).json()
        assert body == {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}],
            # the Open Inference Protocol's server metadata
            "name": "deepaas",
            "extensions": ["binary_tensor_data", "parameters"],
        }


async def test_models_list_and_one(client):
    listed = await (await client.get("/v2/models")).json()
    assert len(listed["models"]) == 1
    model = listed["models"][0]
    assert model["id"] == "module-model"
    assert model["links"] == [{"rel": "self", "href": "/v2/models/module-model"}]
    assert model["description"] == "A module entry point with old-style arguments"
    assert model["author"] == "tests"
    one = await (await client.get("/v2/models/module-model")).json()
    # one model's object: the listed one, and the Open Inference Protocol's
    # keys (which the listing leaves out)
    protocol = {"versions", "platform", "inputs", "outputs"}
    assert {k: v for k, v in one.items() if k not in protocol} == model
    assert protocol <= one.keys() and not protocol & model.keys()


async def test_unknown_model_is_404(client):
    resp = await client.get("/v2/models/nope/")
    assert resp.status == 404
    assert "nope" in (await resp.json())["message"]


async def test_unknown_path_is_json_404(client):
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert (await resp.json())["message"] == "Not Found"


async def test_several_models_are_served_together(make_client):
    client = await make_client(ready=False)  # described before they warm up
    names = {
        m["id"] for m in (await (await client.get("/v2/models/")).json())["models"]
    }
    assert {"module-model", "class-model", "failing", "minimal"} <= names


class TestSpec:
    async def spec(self, client):
        resp = await client.get("/swagger.json")
        assert resp.status == 200
        return await resp.json()

    async def test_is_swagger_2(self, client):
        spec = await self.spec(client)
        assert spec["swagger"] == "2.0"
        assert spec["info"]["title"]

    async def test_predict_parameters(self, client):
        spec = await self.spec(client)
        params = {
            p["name"]: p
            for p in spec["paths"]["/v2/models/module-model/predict/"]["post"][
                "parameters"
            ]
        }
        assert params["text"] == {
            "in": "query",
            "name": "text",
            "type": "string",
            "required": False,
            "default": "foo",
            "enum": ["foo", "bar", "baz"],
            "description": "A choice of words",
        }
        assert params["count"]["minimum"] == 1 and params["count"]["maximum"] == 10
        assert params["count"]["type"] == "integer"
        assert params["flag"]["type"] == "boolean"
        assert params["numbers"]["type"] == "array"
        assert params["data"]["in"] == "formData"
        assert params["data"]["type"] == "file"
        assert params["data"]["description"] == "Data file"

    async def test_every_endpoint_is_documented_once(self, client):
        paths = (await self.spec(client))["paths"]
        assert set(paths) == {
            "/",
            "/v2/",
            "/v2/models/",
            "/v2/models/module-model/",
            "/v2/models/module-model/predict/",
            "/v2/models/module-model/predict/{id}",
            "/v2/models/module-model/predict/{id}/result",
            "/v2/models/module-model/predict/{id}/events",
            "/v2/models/module-model/train/",
            "/v2/models/module-model/train/{uuid}",
            "/v2/models/module-model/train/{uuid}/log",
            "/v2/models/module-model/train/{uuid}/events",
        }
        train = paths["/v2/models/module-model/train/"]
        assert set(train) == {"get", "post"}
        assert set(paths["/v2/models/module-model/train/{uuid}"]) == {"get", "delete"}
        (epochs,) = [p for p in train["post"]["parameters"] if p["name"] == "epochs"]
        assert epochs["required"] is True and epochs["in"] == "query"

    async def test_produces_from_accept_choices(self, make_client):
        client = await make_client("--model-name", "accept-model")
        spec = await self.spec(client)
        post = spec["paths"]["/v2/models/accept-model/predict/"]["post"]
        assert post["produces"] == [
            "application/zip",
            "image/png",
            "application/json",
            "*/*",
            "text/event-stream",  # for a predict() that streams its items
            "application/x-ndjson",
        ]

    async def test_response_schema_definition(self, make_client):
        client = await make_client("--model-name", "class-model")
        spec = await self.spec(client)
        definition = spec["definitions"]["ModelPredictionResponse"]
        assert set(definition["properties"]) == {"status", "predictions"}
        post = spec["paths"]["/v2/models/class-model/predict/"]["post"]
        assert post["responses"]["200"]["schema"] == {
            "$ref": "#/definitions/ModelPredictionResponse"
        }

    async def test_schema_subclass_definition(self, make_client):
        client = await make_client("--model-name", "schema-class")
        spec = await self.spec(client)
        assert "ModelPredictionResponse" in spec["definitions"]

    async def test_model_without_schema_has_no_prediction_definition(self, client):
        spec = await self.spec(client)
        assert "ModelPredictionResponse" not in spec["definitions"]


async def test_swagger_ui_served_locally(client):
    for path in ("/api", "/ui", "/api/"):
        resp = await client.get(path)
        assert resp.status == 200
        html = await resp.text()
        assert "/swagger.json" in html
        assert "http" not in html.split("<body>")[1].replace("http-equiv", "")
    resp = await client.get("/static/swagger/swagger-ui-bundle.js")
    assert resp.status == 200


async def test_doc_endpoint_off(make_client):
    client = await make_client("--model-name", "minimal", "--nodoc-endpoint")
    assert (await client.get("/api")).status == 404
    assert (await client.get("/swagger.json")).status == 200
    links = (await (await client.get("/")).json())["links"]
    assert [link["rel"] for link in links] == ["describedby"]


async def test_predict_endpoint_off_is_absent_from_routes_and_spec(make_client):
    client = await make_client("--model-name", "module-model", "--nopredict-endpoint")
    resp = await client.post("/v2/models/module-model/predict/")
    assert resp.status == 404
    paths = (await (await client.get("/swagger.json")).json())["paths"]
    assert not any(p.endswith("/predict/") for p in paths)
    assert "/v2/models/module-model/train/" in paths


async def test_train_endpoint_off_is_absent_from_routes_and_spec(make_client):
    client = await make_client("--model-name", "module-model", "--notrain-endpoint")
    resp = await client.post("/v2/models/module-model/train/?epochs=1")
    assert resp.status == 404
    paths = (await (await client.get("/swagger.json")).json())["paths"]
    assert not any("/train" in p for p in paths)


async def test_base_path_prefixes_everything(make_client):
    client = await make_client("--model-name", "module-model", "--base-path", "/x/y/")
    body = await (await client.get("/x/y/")).json()
    assert body["links"][1]["href"] == "/x/y/swagger.json"
    assert body["versions"][0]["links"][0]["href"] == "/x/y/v2/"
    resp = await client.post("/x/y/v2/models/module-model/predict?count=2")
    assert (await resp.json())["predictions"]["args"]["count"] == 2
    paths = (await (await client.get("/x/y/swagger.json")).json())["paths"]
    assert "/x/y/v2/models/module-model/predict/" in paths
    html = await (await client.get("/x/y/api")).text()
    assert "/x/y/swagger.json" in html and "/x/y/static/swagger" in html
    assert (await client.get("/v2/models/")).status == 404
    models = await (await client.get("/x/y/v2/models/")).json()
    assert models["models"][0]["links"][0]["href"] == "/x/y/v2/models/module-model"


async def test_debug_endpoint_off_is_404(client):
    resp = await client.get("/v2/debug/")
    assert resp.status == 404
    assert "message" in await resp.json()


async def test_debug_endpoint_captures_output_and_logs(make_client):
    client = await make_client("--model-name", "failing", "--debug-endpoint")
    await client.post("/v2/models/failing/predict/?mode=raise")
    print("printed by the server")
    resp = await client.get("/v2/debug")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "printed by the server" in text
    assert "the model is unhappy" in text
