"""Checking answers against the Open Inference Protocol's published schemas
(``tests/data/open_inference_rest.yaml``, the protocol's OpenAPI document as
kserve/open-inference-protocol publishes it) and building binary requests."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator

SPEC = Path(__file__).parent.parent / "data" / "open_inference_rest.yaml"
_COMPONENTS = yaml.safe_load(SPEC.read_text())["components"]


def validate(kind: str, body: Any) -> None:
    """Fail unless ``body`` is a valid ``kind`` (a schema of the protocol's
    components: ``inference_response``, ``metadata_model_response``...)."""
    schema = {"$ref": f"#/components/schemas/{kind}", "components": _COMPONENTS}
    OAS30Validator(schema).validate(body)


def validate_binary_answer(header: dict[str, Any]) -> None:
    """Check the JSON part of an answer with binary data: the extension
    replaces an output's ``data`` by its bytes after the JSON, which the
    base protocol's schema does not know of; the rest must be valid."""
    outputs = [
        {**o, "data": []} if "binary_data_size" in o.get("parameters", {}) else o
        for o in header["outputs"]
    ]
    validate("inference_response", {**header, "outputs": outputs})


def binary_request(
    header: dict[str, Any], tensors: list[tuple[int, bytes]]
) -> tuple[bytes, dict[str, str]]:
    """A body with the binary tensor data extension: ``header``, whose
    inputs at the given indexes get ``binary_data_size``, then their bytes."""
    for index, data in tensors:
        header["inputs"][index].setdefault("parameters", {})["binary_data_size"] = len(
            data
        )
        header["inputs"][index].pop("data", None)
    text = json.dumps(header).encode()
    body = text + b"".join(data for _, data in tensors)
    return body, {
        "Inference-Header-Content-Length": str(len(text)),
        "Content-Type": "application/octet-stream",
    }


def bytes_elements(*elements: bytes) -> bytes:
    """``BYTES`` elements as binary data: each a 4-byte length and itself."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def split_answer(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """An answer's JSON and the binary data after it."""
    if header_length is None:
        return json.loads(body), b""
    length = int(header_length)
    return json.loads(body[:length]), body[length:]
