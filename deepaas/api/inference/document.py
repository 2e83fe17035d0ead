"""The Open Inference Protocol's routes as OpenAPI 3 paths and schemas, for
``/openapi.json`` (under their own tag), each model's tensors in its
operations' descriptions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepaas.api import keys
from deepaas.api.inference import model_version, outputs, tensors

TAG = "inference protocol"
TAG_DESCRIPTION = (
    "The Open Inference Protocol (REST, also called the V2 inference protocol "
    "of KServe and Triton): each predict argument is an input tensor of the "
    "same name."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PARAMETERS = {"type": "object", "additionalProperties": True}
_TENSOR = {
    "name": {"type": "string"},
    "datatype": {"type": "string", "enum": sorted(tensors.DATATYPES)},
    "shape": {"type": "array", "items": {"type": "integer"}},
}

SCHEMAS: dict[str, Any] = {
    "InferenceTensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": _TENSOR,
    },
    "InferenceInput": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            **_TENSOR,
            "parameters": _PARAMETERS,
            "data": {
                "type": "array",
                "items": {},
                "description": "The elements, flat or nested, in row-major "
                "order; absent when `parameters.binary_data_size` says how "
                "many bytes after the JSON hold them.",
            },
        },
    },
    "InferenceRequestedOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "inputs": {"type": "array", "items": _ref("InferenceInput")},
            "outputs": {"type": "array", "items": _ref("InferenceRequestedOutput")},
        },
    },
    "InferenceOutput": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            **_TENSOR,
            "parameters": _PARAMETERS,
            "data": {"type": "array", "items": {}},
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "outputs": {"type": "array", "items": _ref("InferenceOutput")},
        },
    },
    "InferenceError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "InferenceLive": {
        "type": "object",
        "properties": {"live": {"type": "boolean"}},
    },
    "InferenceReady": {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}},
    },
    "InferenceModelReady": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("InferenceError", description)


_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The model's version (its metadata's, or 1).",
}


def _table(described: list[dict[str, Any]]) -> str:
    rows = [f"| `{t['name']}` | {t['datatype']} | {t['shape']} |" for t in described]
    return "\n".join(["| tensor | datatype | shape |", "|---|---|---|", *rows])


def _infer(name: str, version: str, inputs: list[Any], outputs: list[Any]) -> Any:
    description = (
        f"Inputs of model {name} (version {version}):\n\n{_table(inputs)}\n\n"
        f"Outputs:\n\n{_table(outputs)}\n\nWith the binary tensor data "
        f"extension, the body is the JSON request followed by the tensors' "
        f"bytes, and `{tensors.HEADER_LENGTH}` gives the JSON's length."
    )
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "tags": [TAG],
        "summary": f"Infer with model {name}",
        "description": description,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("InferenceRequest")},
                "application/octet-stream": binary,
            },
        },
        "responses": {
            "200": {
                "description": "The outputs (as binary data after the JSON "
                "when asked for)",
                "content": {
                    "application/json": {"schema": _ref("InferenceResponse")},
                    "application/octet-stream": binary,
                },
            },
            "400": _error("An invalid request or invalid arguments"),
            "404": _error("No such model or version"),
            "413": _error("Request body too large"),
            "500": _error("The model failed"),
            "503": _error("No worker became free in time, or too many wait"),
            "504": _error("The prediction ran out of time"),
        },
    }


def _get(summary: str, schema: str, *, public: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [TAG],
        "summary": summary,
        "responses": {
            "200": _json(schema, "Yes"),
            "503": _json(schema, "No"),
        },
    }
    if public:
        operation["security"] = []  # open without credentials
    return operation


def paths(app: web.Application, base: str) -> dict[str, Any]:
    """The protocol's part of the OpenAPI 3 document: ``paths``,
    ``schemas`` and ``tag``."""
    documented: dict[str, Any] = {
        f"{base}/v2/health/live": {
            "get": _get("Whether the server is live", "InferenceLive", public=True)
        },
        f"{base}/v2/health/ready": {
            "get": _get("Whether every model is ready", "InferenceReady", public=True)
        },
    }
    predicts = app[keys.SETTINGS].server.predict_endpoint
    for model in app[keys.MODELS].values():
        declaration = model.declaration
        name, version = model.name, model_version(declaration)
        prefix = f"{base}/v2/models/{name}"
        ready = _get(f"Whether model {name} is ready", "InferenceModelReady")
        documented[f"{prefix}/ready"] = {"get": ready}
        documented[f"{prefix}/versions/{{version}}/ready"] = {
            "parameters": [_VERSION],
            "get": ready,
        }
        documented[f"{prefix}/versions/{{version}}"] = {
            "parameters": [_VERSION],
            "get": {
                "tags": [TAG],
                "summary": f"Describe model {name} (as GET {prefix}/ does)",
                "responses": {
                    "200": {
                        "description": "The model's metadata",
                        "content": {"application/json": {"schema": _ref("ModelMeta")}},
                    },
                    "404": _error("No such version"),
                },
            },
        }
        if not predicts:
            continue
        infer = _infer(
            name,
            version,
            tensors.describe_inputs(declaration.predict_arguments),
            outputs.describe_outputs(declaration.response_schema),
        )
        documented[f"{prefix}/infer"] = {"post": infer}
        documented[f"{prefix}/versions/{{version}}/infer"] = {
            "parameters": [_VERSION],
            "post": infer,
        }
    return {
        "paths": documented,
        "schemas": SCHEMAS,
        "tag": {"name": TAG, "description": TAG_DESCRIPTION},
    }
