"""The Open Inference Protocol spoken to a real ``deepaas-run`` by the
protocol's own clients: Triton's (``tritonclient.http``) and KServe's Python
SDK (``kserve.InferenceRESTClient``), on the built-in demo model and on a
test model with files, lists and a response schema. What they receive is
checked against the protocol's published schemas and KServe's data models."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest import v2_datamodels
from tritonclient.utils import InferenceServerException

from tests import helpers
from tests.api.protocol import validate

pytestmark = pytest.mark.slow  # real deepaas-run processes


@pytest.fixture(scope="module")
def demo() -> Iterator[helpers.Server]:
    with helpers.running_server([], helpers.env_with(None)) as server:
        yield server


@pytest.fixture(scope="module")
def tensors(model_sites) -> Iterator[helpers.Server]:
    env = helpers.env_with(model_sites["testmodels"], DEEPAAS_V2_MODEL="tensors")
    with helpers.running_server([], env) as server:
        yield server


def triton_client(server: helpers.Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_triton_reads_the_metadata_and_readiness(demo):
    client = triton_client(demo)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("deepaas-test")
    assert client.is_model_ready("deepaas-test", "1.0")
    assert not client.is_model_ready("deepaas-test", "2.0")
    server = client.get_server_metadata()
    validate("metadata_server_response", server)
    v2_datamodels.ServerMetadataResponse.model_validate(server)
    model = client.get_model_metadata("deepaas-test")
    validate("metadata_model_response", model)
    v2_datamodels.ModelMetadataResponse.model_validate(model)
    assert model["versions"] == ["1.0"]
    assert model == client.get_model_metadata("deepaas-test", "1.0")
    # and the DEEPaaS keys, as upstream's clients read them
    assert model["id"] == "deepaas-test" and model["license"] == "Apache-2.0"


def test_triton_infers_with_json_and_binary_tensors(demo):
    client = triton_client(demo)
    top_k = triton.InferInput("top_k", [1], "INT64")
    top_k.set_data_from_numpy(np.array([3], dtype=np.int64), binary_data=False)
    weights = triton.InferInput("weights", [3], "FP32")
    weights.set_data_from_numpy(np.array([0.5, 1.5, 2.5], dtype=np.float32))
    label = triton.InferInput("label", [1], "BYTES")
    label.set_data_from_numpy(np.array(["dog"], dtype=np.object_))
    data = triton.InferInput("data", [1], "BYTES")
    payload = bytes(range(256)) * 10
    data.set_data_from_numpy(np.array([payload], dtype=np.object_))
    result = client.infer(
        "deepaas-test",
        [top_k, weights, label, data],
        request_id="triton-1",
        outputs=[
            triton.InferRequestedOutput("predictions", binary_data=True),
            triton.InferRequestedOutput("arguments", binary_data=False),
        ],
    )
    response = result.get_response()
    assert response["id"] == "triton-1" and response["model_version"] == "1.0"
    predictions = json.loads(result.as_numpy("predictions")[0])
    assert [p["label"] for p in predictions] == ["dog", "bird", "cat"]
    arguments = json.loads(result.as_numpy("arguments")[0])
    assert arguments["weights"] == [0.5, 1.5, 2.5]
    assert arguments["data"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert arguments["data"]["size"] == len(payload)


def test_triton_gets_the_protocols_errors(demo):
    client = triton_client(demo)
    top_k = triton.InferInput("top_k", [1], "INT64")
    top_k.set_data_from_numpy(np.array([99], dtype=np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("deepaas-test", [top_k])
    assert caught.value.status() == "400"
    assert "top_k" in caught.value.message()
    unknown = triton.InferInput("nope", [1], "INT64")
    unknown.set_data_from_numpy(np.array([1], dtype=np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("deepaas-test", [unknown])
    assert "has no input 'nope'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model")
    assert "No model named" in caught.value.message()
    # the worker lives on
    top_k.set_data_from_numpy(np.array([1], dtype=np.int64))
    assert client.infer("deepaas-test", [top_k]).as_numpy("status")[0] == b"OK"


def test_triton_with_files_lists_and_a_schema(tensors):
    client = triton_client(tensors)
    metadata = client.get_model_metadata("tensors")
    assert {t["name"]: t["shape"] for t in metadata["inputs"]}["grid"] == [-1, -1]
    label = triton.InferInput("label", [1], "BYTES")
    label.set_data_from_numpy(np.array([b"owl"], dtype=np.object_), binary_data=False)
    grid = triton.InferInput("grid", [2, 2], "INT32")
    grid.set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=np.int32))
    values = triton.InferInput("values", [2], "FP64")
    values.set_data_from_numpy(np.array([0.25, 4.0]), binary_data=False)
    pages = triton.InferInput("pages", [2], "BYTES")
    pages.set_data_from_numpy(np.array([b"\x00one", b"two\xff"], dtype=np.object_))
    result = client.infer(
        "tensors",
        [label, grid, values, pages],
        outputs=[
            triton.InferRequestedOutput(name, binary_data=True)
            for name in ("label", "grid", "values", "files", "flag")
        ],
    )
    assert result.as_numpy("label").tolist() == [b"OWL"]
    grid_out = result.as_numpy("grid")
    assert grid_out.dtype == np.int64 and grid_out.tolist() == [[2, 3], [4, 5]]
    assert result.as_numpy("values").tolist() == [0.5, 8.0]
    assert result.as_numpy("flag").tolist() == [True]
    files = [f.decode().split(":") for f in result.as_numpy("files")]
    assert [(f[0], int(f[2])) for f in files] == [("pages", 4), ("pages", 4)]


def test_the_kserve_client(demo, tensors):
    async def talk() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            base = demo.url
            assert await client.is_server_live(base)
            assert await client.is_server_ready(base)
            assert await client.is_model_ready(base, "deepaas-test")
            top_k = InferInput("top_k", [1], "INT64")
            top_k.set_data_from_numpy(np.array([2], dtype=np.int64))
            data = InferInput("data", [1], "BYTES")
            data.set_data_from_numpy(
                np.array([b"\x89PNG..."], dtype=np.object_), binary_data=True
            )
            request = InferRequest("deepaas-test", [top_k, data], request_id="k-1")
            response = await client.infer(base, request, model_name="deepaas-test")
            assert response.id == "k-1"
            outputs = {o.name: o for o in response.outputs}
            assert json.loads(outputs["arguments"].as_numpy()[0])["data"]["size"] == 7
            assert len(json.loads(outputs["predictions"].as_numpy()[0])) == 2
            # the answer as KServe's data model reads it
            raw = await client._client.post(
                f"{base}/v2/models/deepaas-test/infer",
                json={"inputs": [{"name": "top_k", "datatype": "INT64",
                                  "shape": [1], "data": [1]}]},
            )  # fmt: skip
            v2_datamodels.InferenceResponse.model_validate(raw.json())
            validate("inference_response", raw.json())
            # binary outputs asked for, on the model with a schema
            label = InferInput("label", [1], "BYTES")
            label.set_data_from_numpy(np.array(["ant"], dtype=np.object_))
            request = InferRequest(
                "tensors",
                [label],
                request_outputs=[
                    RequestedOutput("count", parameters={"binary_data": True}),
                    RequestedOutput("label"),
                ],
            )
            response = await client.infer(tensors.url, request, model_name="tensors")
            outputs = {o.name: o for o in response.outputs}
            assert outputs["count"].as_numpy().tolist() == [2]
            assert outputs["label"].as_numpy().tolist() == ["ANT"]
            # an error is an HTTP error carrying the protocol's message
            bad = InferInput("count", [1], "INT64")
            bad.set_data_from_numpy(np.array([-5], dtype=np.int64))
            with pytest.raises(Exception, match="Must be greater"):
                await client.infer(
                    tensors.url, InferRequest("tensors", [label, bad]),
                    model_name="tensors",
                )  # fmt: skip
        finally:
            await client.close()

    asyncio.run(talk())
