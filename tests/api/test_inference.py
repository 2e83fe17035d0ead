"""The Open Inference Protocol (REST) beside the DEEPaaS API: health,
metadata, inference with JSON and binary tensors, and its errors, each
answer checked against the protocol's published schemas."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest

from tests.api.protocol import (
    binary_request,
    bytes_elements,
    split_answer,
    validate,
    validate_binary_answer,
)

INFER = "/v2/models/tensors/infer"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "tensors")


def tensor(name, datatype, data, shape=None, **parameters):
    entry = {
        "name": name,
        "datatype": datatype,
        "shape": shape if shape is not None else [len(data)],
        "data": data,
    }
    if parameters:
        entry["parameters"] = parameters
    return entry


async def infer(client, body, *, status=200, path=INFER, **kwargs):
    resp = await client.post(path, json=body, **kwargs)
    answer = await resp.json()
    assert resp.status == status, answer
    validate(
        "inference_response" if status == 200 else "inference_error_response", answer
    )
    return answer


def outputs_of(answer):
    return {o["name"]: o for o in answer["outputs"]}


async def test_health_and_readiness(client):
    for path in ("/v2/health/live", "/v2/health/ready"):
        resp = await client.get(path)
        assert resp.status == 200
    assert await (await client.get("/v2/health/live")).json() == {"live": True}
    assert await (await client.get("/v2/health/ready")).json() == {"ready": True}
    for path in ("/v2/models/tensors/ready", "/v2/models/tensors/versions/1/ready"):
        resp = await client.get(path)
        assert resp.status == 200
        assert await resp.json() == {"name": "tensors", "ready": True}
    resp = await client.get("/v2/models/tensors/versions/7/ready")
    assert resp.status == 404
    body = await resp.json()
    validate("metadata_model_error_response", body)
    assert "version '7'" in body["error"]
    resp = await client.get("/v2/models/nope/ready")
    assert resp.status == 404
    assert "No model named 'nope'" in (await resp.json())["error"]


async def test_not_ready_while_the_workers_start(make_client):
    client = await make_client("--model-name", "slow-warm", ready=False)
    resp = await client.get("/v2/health/ready")
    assert resp.status == 503
    assert await resp.json() == {"ready": False}
    resp = await client.get("/v2/models/slow-warm/ready")
    assert resp.status == 503
    assert (await resp.json())["ready"] is False


async def test_server_metadata(client):
    body = await (await client.get("/v2")).json()
    validate("metadata_server_response", body)
    assert body["name"] == "deepaas"
    assert "binary_tensor_data" in body["extensions"]
    assert body["id"] == "v2"  # the DEEPaaS keys stay


async def test_model_metadata_maps_every_argument(client):
    body = await (await client.get("/v2/models/tensors")).json()
    validate("metadata_model_response", body)
    assert body == await (await client.get("/v2/models/tensors/versions/1")).json()
    assert body["id"] == "tensors"  # the DEEPaaS keys stay
    assert body["versions"] == ["1"] and body["platform"] == "deepaas"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in body["inputs"]}
    assert inputs == {
        "label": ("BYTES", [1]),
        "count": ("INT64", [1]),
        "score": ("FP64", [1]),
        "flag": ("BOOL", [1]),
        "values": ("FP64", [-1]),
        "grid": ("INT64", [-1, -1]),
        "options": ("BYTES", [1]),
        "document": ("BYTES", [1]),
        "pages": ("BYTES", [-1]),
        "accept": ("BYTES", [1]),
    }
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in body["outputs"]}
    assert outputs == {
        "label": ("BYTES", [1]),
        "count": ("INT64", [1]),
        "score": ("FP64", [1]),
        "flag": ("BOOL", [1]),
        "values": ("FP64", [-1]),
        "grid": ("INT64", [-1, -1]),
        "options": ("BYTES", [1]),
        "files": ("BYTES", [-1]),
        "ragged": ("INT64", [-1, -1]),
    }


async def test_a_declared_version_is_the_one_served(make_client):
    client = await make_client("--model-name", "module-model")
    body = await (await client.get("/v2/models/module-model")).json()
    assert body["versions"] == [str(body["version"])]
    path = f"/v2/models/module-model/versions/{body['version']}"
    assert (await client.get(path)).status == 200
    assert (await client.get("/v2/models/module-model/versions/1")).status == 404


async def test_infer_with_json_tensors(client):
    document = b"%PDF-1.7 not really\x00\xff"
    answer = await infer(
        client,
        {
            "id": "request-1",
            "inputs": [
                tensor("label", "BYTES", ["cat"]),
                tensor("count", "INT64", [3]),
                tensor("score", "FP32", [0.25]),
                tensor("flag", "BOOL", [True]),
                tensor("values", "FP64", [[1.5, 2.5], [3.0, 4.0]], shape=[2, 2]),
                tensor("grid", "INT32", [1, 2, 3, 4, 5, 6], shape=[2, 3]),
                tensor("options", "BYTES", ['{"a": [1, 2]}']),
                tensor(
                    "document",
                    "BYTES",
                    [base64.b64encode(document).decode()],
                    content_type="application/pdf",
                    filename="paper.pdf",
                ),
            ],
        },
    )
    assert answer["id"] == "request-1"
    assert answer["model_name"] == "tensors" and answer["model_version"] == "1"
    out = outputs_of(answer)
    assert out["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [1],
        "data": ["CAT"],
    }
    assert out["count"]["data"] == [6] and out["count"]["datatype"] == "INT64"
    assert out["score"]["data"] == [0.125]
    assert out["flag"]["data"] == [False]
    # a list argument takes every element, in row-major order
    assert out["values"]["data"] == [3.0, 5.0, 6.0, 8.0]
    # a nested list keeps its shape
    assert out["grid"]["shape"] == [2, 3] and out["grid"]["data"] == [2, 3, 4, 5, 6, 7]
    # an object is JSON in one element
    assert json.loads(out["options"]["data"][0]) == {"seen": {"a": [1, 2]}}
    assert out["options"]["parameters"]["content_type"] == "application/json"
    digest = hashlib.sha256(document).hexdigest()[:16]
    assert out["files"]["data"] == [
        f"paper.pdf:application/pdf:{len(document)}:{digest}"
    ]
    assert out["ragged"]["shape"] == [2, 2]


async def test_a_value_that_is_no_tensor_is_json(client):
    answer = await infer(
        client,
        {"inputs": [tensor("label", "BYTES", ["x"]), tensor("count", "INT64", [7])]},
    )
    ragged = outputs_of(answer)["ragged"]
    assert ragged["datatype"] == "BYTES" and ragged["shape"] == [1]
    assert json.loads(ragged["data"][0]) == [[1], [2, 3]]


async def test_parameters_carry_arguments_and_the_request_id_is_ours(client):
    resp = await client.post(
        INFER,
        json={
            "inputs": [tensor("label", "BYTES", ["from input"])],
            "parameters": {"label": "ignored", "count": 4, "flag": True},
        },
    )
    answer = await resp.json()
    assert resp.status == 200
    out = outputs_of(answer)
    assert out["label"]["data"] == ["FROM INPUT"]  # an input over a parameter
    assert out["count"]["data"] == [8] and out["flag"]["data"] == [False]
    assert answer["id"] == resp.headers["X-Request-Id"]


async def test_binary_inputs_and_outputs(client):
    pages = [b"\x00first page", b"second\xff"]
    body, headers = binary_request(
        {
            "inputs": [
                tensor("label", "BYTES", ["dog"]),
                tensor("values", "FP32", [], shape=[3]),
                tensor("grid", "INT64", [], shape=[2, 2]),
                tensor("pages", "BYTES", [], shape=[2]),
                tensor("flag", "BOOL", [], shape=[1]),
            ],
            "outputs": [
                {"name": "values", "parameters": {"binary_data": True}},
                {"name": "files", "parameters": {"binary_data": True}},
                {"name": "label"},
            ],
        },
        [
            (1, struct.pack("<3f", 0.5, 1.5, -2.0)),
            (2, struct.pack("<4q", 1, 2, 3, -4)),
            (3, bytes_elements(*pages)),
            (4, struct.pack("<?", True)),
        ],
    )
    resp = await client.post(INFER, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/octet-stream"
    header, binary = split_answer(
        await resp.read(), resp.headers.get("Inference-Header-Content-Length")
    )
    validate_binary_answer(header)
    assert [o["name"] for o in header["outputs"]] == ["values", "files", "label"]
    values, files, label = header["outputs"]
    assert "data" not in values and values["parameters"]["binary_data_size"] == 24
    assert struct.unpack("<3d", binary[:24]) == (1.0, 3.0, -4.0)
    rest = binary[24:]
    assert len(rest) == files["parameters"]["binary_data_size"]
    elements = []
    while rest:
        (size,) = struct.unpack_from("<I", rest)
        elements.append(rest[4 : 4 + size].decode())
        rest = rest[4 + size :]
    assert [e.split(":")[0] for e in elements] == ["pages", "pages"]
    assert [int(e.split(":")[2]) for e in elements] == [len(p) for p in pages]
    assert label["data"] == ["DOG"]


async def test_binary_output_for_every_output(client):
    resp = await client.post(
        INFER,
        json={
            "inputs": [tensor("label", "BYTES", ["a"]), tensor("count", "INT64", [5])],
            "parameters": {"binary_data_output": True},
        },
    )
    header, binary = split_answer(
        await resp.read(), resp.headers["Inference-Header-Content-Length"]
    )
    validate_binary_answer(header)
    assert all("data" not in o for o in header["outputs"])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sum(sizes) == len(binary)
    names = [o["name"] for o in header["outputs"]]
    offset = sum(sizes[: names.index("count")])
    assert struct.unpack_from("<q", binary, offset) == (10,)


async def test_a_raw_prediction_is_one_bytes_element(client):
    document = bytes(range(256))
    answer = await infer(
        client,
        {
            "inputs": [
                tensor("label", "BYTES", ["x"]),
                tensor("document", "BYTES", [base64.b64encode(document).decode()]),
                tensor("accept", "BYTES", ["application/pdf"]),
            ]
        },
    )
    (output,) = answer["outputs"]
    assert output["name"] == "predictions" and output["datatype"] == "BYTES"
    assert output["parameters"] == {
        "content_type": "application/pdf",
        "encoding": "base64",
    }
    assert base64.b64decode(output["data"][0]) == document[::-1]


async def test_a_model_without_schema_answers_its_json(make_client):
    client = await make_client("--model-name", "files")
    resp = await client.post(
        "/v2/models/files/infer",
        json={
            "inputs": [
                tensor(
                    "image",
                    "BYTES",
                    [base64.b64encode(b"png").decode()],
                    filename="a.png",
                ),
                tensor("images", "BYTES", ["eA==", "eQ=="]),
            ]
        },
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    validate("inference_response", answer)
    (output,) = answer["outputs"]
    assert output["name"] == "predictions" and output["shape"] == [1]
    assert json.loads(output["data"][0]) == {
        "image": "a.png",
        "images": ["images", "images"],
    }
    metadata = await (await client.get("/v2/models/files")).json()
    assert metadata["outputs"] == [
        {"name": "predictions", "datatype": "BYTES", "shape": [1]}
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("count", "INT64", [-1]),
                ]
            },
            "count: Must be greater",
        ),
        ({"inputs": [tensor("count", "INT64", [1])]}, "label: Missing data"),
        (
            {"inputs": [tensor("label", "BYTES", ["x" * 30])]},
            "label: Longer than maximum",
        ),
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("accept", "BYTES", ["text/html"]),
                ]
            },
            "accept: Must be one of",
        ),
    ],
)
async def test_invalid_arguments_are_a_400(client, body, message):
    answer = await infer(client, body, status=400)
    assert message in answer["error"]
    assert answer["errors"]
    # the worker lives on
    await infer(client, {"inputs": [tensor("label", "BYTES", ["ok"])]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"inputs": "x"}, "must have a list of inputs"),
        ({"inputs": [{"name": "label"}]}, "unknown datatype None"),
        ({"inputs": [tensor("label", "STRING", ["x"])]}, "unknown datatype 'STRING'"),
        (
            {"inputs": [tensor("label", "BYTES", ["x"], shape=[2])]},
            "holds 2 element(s), but 1 were sent",
        ),
        (
            {"inputs": [tensor("label", "BYTES", ["x"], shape=[-1])]},
            "non-negative integers",
        ),
        ({"inputs": [tensor("count", "INT64", [1.5])]}, "must be integers"),
        ({"inputs": [tensor("flag", "BOOL", [1])]}, "must be true or false"),
        ({"inputs": [tensor("label", "BYTES", [1])]}, "must be strings"),
        ({"inputs": [tensor("nope", "BYTES", ["x"])]}, "has no input 'nope'"),
        ({"inputs": [tensor("label", "BYTES", ["x", "y"])]}, "takes one element"),
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("label", "BYTES", ["y"]),
                ]
            },
            "sent twice",
        ),
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("document", "BYTES", ["%%%"]),
                ]
            },
            "base64",
        ),
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("document", "INT64", [1]),
                ]
            },
            "is a file",
        ),
        (
            {
                "inputs": [
                    tensor("label", "BYTES", ["x"]),
                    tensor("options", "BYTES", ["{"]),
                ]
            },
            "as JSON text",
        ),
        (
            {
                "inputs": [tensor("label", "BYTES", ["x"])],
                "outputs": [{"name": "nope"}],
            },
            "No output named 'nope'",
        ),
        ({"inputs": [tensor("label", "BYTES", ["x"])], "id": 5}, "id must be a string"),
        (
            {"inputs": [tensor("label", "BYTES", ["x"])], "parameters": []},
            "parameters must be",
        ),
        (
            {
                "inputs": [tensor("label", "BYTES", ["x"])],
                "parameters": {"binary_data_output": 1},
            },
            "binary_data_output",
        ),
        (
            {
                "inputs": [tensor("label", "BYTES", ["x"])],
                "parameters": {"document": "x"},
            },
            "is a file",
        ),
    ],
)
async def test_malformed_requests_are_a_400(client, body, message):
    answer = await infer(client, body, status=400)
    assert message in answer["error"]


async def test_malformed_bodies_are_a_400(client):
    cases = [
        (b"{not json", {}, "not valid JSON"),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "x"},
            "must be the length",
        ),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "99"},
            "must be the length",
        ),
        (
            b'{"inputs": []}xx',
            {"Inference-Header-Content-Length": "14"},
            "no input claims",
        ),
        (b"[" * 100_000, {}, "not valid JSON"),
    ]
    for body, headers, message in cases:
        resp = await client.post(INFER, data=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 400, answer
        assert message in answer["error"], answer
    deep = (
        b'{"inputs": [{"name": "values", "datatype": "FP64", "shape": [0], "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}]}"
    )
    resp = await client.post(INFER, data=deep)
    assert resp.status == 400
    assert "error" in await resp.json()
    # nested, as deep as the data are, an element is an element
    answer = await infer(
        client, {"inputs": [tensor("label", "BYTES", [[[["deep"]]]], shape=[1])]}
    )
    assert outputs_of(answer)["label"]["data"] == ["DEEP"]


async def test_binary_data_that_does_not_fit(client):
    cases = [
        (
            [tensor("values", "FP64", [], shape=[2])],
            [(0, b"\x00" * 12)],
            "whole number",
        ),
        (
            [tensor("values", "FP64", [], shape=[2])],
            [(0, b"\x00" * 8)],
            "holds 2 element(s)",
        ),
        (
            [tensor("pages", "BYTES", [], shape=[1])],
            [(0, b"\x09\x00\x00\x00abc")],
            "longer than its data",
        ),
        ([tensor("pages", "BYTES", [], shape=[1])], [(0, b"\x01\x00")], "cut short"),
        (
            [tensor("label", "BYTES", [], shape=[1])],
            [(0, bytes_elements(b"\xff\xfe"))],
            "UTF-8",
        ),
    ]
    for inputs, data, message in cases:
        body, headers = binary_request({"inputs": inputs}, data)
        resp = await client.post(INFER, data=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 400, answer
        assert message in answer["error"], answer
    header = {"inputs": [tensor("values", "FP64", [], shape=[1], binary_data_size=64)]}
    del header["inputs"][0]["data"]
    text = json.dumps(header).encode()
    resp = await client.post(
        INFER, data=text + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(text))},
    )  # fmt: skip
    assert resp.status == 400
    assert "beyond the body" in (await resp.json())["error"]


async def test_unknown_model_and_version(client):
    for path in ("/v2/models/nope/infer", "/v2/models/nope/versions/1/infer"):
        resp = await client.post(path, json={"inputs": []})
        assert resp.status == 404
        assert "No model named 'nope'" in (await resp.json())["error"]
    resp = await client.post("/v2/models/tensors/versions/2/infer", json={"inputs": []})
    assert resp.status == 404
    assert "no version '2'" in (await resp.json())["error"]
    answer = await infer(
        client,
        {"inputs": [tensor("label", "BYTES", ["v"])]},
        path="/v2/models/tensors/versions/1/infer",
    )
    assert outputs_of(answer)["label"]["data"] == ["V"]


async def test_a_failing_model_is_a_500_in_the_protocols_shape(make_client):
    client = await make_client("--model-name", "failing")
    resp = await client.post(
        "/v2/models/failing/infer", json={"inputs": [], "parameters": {"mode": "raise"}}
    )
    answer = await resp.json()
    assert resp.status == 500, answer
    validate("inference_error_response", answer)
    assert "the model is unhappy" in answer["error"] and "message" not in answer


async def test_the_body_limit_holds(make_client):
    client = await make_client("--model-name", "tensors", "--client-max-size", "1000")
    resp = await client.post(
        INFER, json={"inputs": [tensor("values", "FP64", [1.0] * 500)]}
    )
    assert resp.status == 413
    assert "error" in await resp.json()


async def test_off_the_protocol_is_absent(make_client):
    client = await make_client("--model-name", "tensors", "--noinference-protocol")
    assert (await client.get("/v2/health/live")).status == 404
    resp = await client.post(INFER, json={"inputs": []})
    assert resp.status == 404
    body = await (await client.get("/v2/models/tensors")).json()
    assert "platform" not in body and "inputs" not in body
    assert "name" not in await (await client.get("/v2/")).json()


async def test_with_predictions_off_there_is_no_inference(make_client):
    client = await make_client("--model-name", "tensors", "--nopredict-endpoint")
    assert (await client.get("/v2/models/tensors/ready")).status == 200
    resp = await client.post(INFER, json={"inputs": []})
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_the_protocol_in_openapi(client):
    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v2/models/tensors/infer"]["post"]
    assert operation["tags"] == ["inference protocol"]
    assert "| `grid` | INT64 | [-1, -1] |" in operation["description"]
    assert "/v2/health/ready" in document["paths"]
    assert document["paths"]["/v2/health/live"]["get"]["security"] == []
    assert "InferenceRequest" in document["components"]["schemas"]
    swagger = await (await client.get("/swagger.json")).json()
    assert "/v2/models/tensors/infer" not in swagger["paths"]


async def test_access_is_that_of_predictions(make_client, tmp_path):
    predictor, trainer = "predict-key-0123456789abc", "train-key-0123456789abcde"
    keys = tmp_path / "api-keys"
    keys.write_text(f"{predictor} predict\n{trainer} train\n")
    client = await make_client("--model-name", "tensors", "--api-keys-file", str(keys))
    body = {"inputs": [tensor("label", "BYTES", ["x"])]}
    # the health of the server is open, as probes are
    assert (await client.get("/v2/health/live")).status == 200
    assert (await client.get("/v2/health/ready")).status == 200
    resp = await client.post(INFER, json=body)
    assert resp.status == 401
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    answer = await resp.json()
    validate("inference_error_response", answer)
    resp = await client.post(
        INFER, json=body, headers={"Authorization": f"Bearer {trainer}"}
    )
    assert resp.status == 403
    assert "error" in await resp.json()
    resp = await client.post(
        INFER, json=body, headers={"Authorization": f"Bearer {predictor}"}
    )
    assert resp.status == 200
    resp = await client.get(
        "/v2/models/tensors/ready", headers={"Authorization": f"Bearer {trainer}"}
    )
    assert resp.status == 200


async def test_calls_are_counted_in_the_metrics(client):
    await infer(client, {"inputs": [tensor("label", "BYTES", ["x"])]})
    metrics = await (await client.get("/metrics")).text()
    lines = [
        line
        for line in metrics.splitlines()
        if 'model="tensors"' in line and 'method="predict"' in line
    ]
    assert lines, "no predict call of model tensors in the metrics"
