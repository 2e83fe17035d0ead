"""The outputs of the Open Inference Protocol: how a prediction becomes
output tensors, and the answer that carries them (JSON, or JSON followed by
the tensors' bytes with the binary tensor data extension)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas.api.inference.tensors import (
    BYTES,
    FORMATS,
    InferenceRequest,
    Tensor,
    describe_field,
    flatten,
    invalid,
    is_json_field,
)

# The output of a model without a response schema.
PREDICTIONS = "predictions"
JSON_TYPE = "application/json"


def output_fields(schema: marshmallow.Schema | None) -> dict[str, fields.Field]:
    """The top-level fields of a response schema, by the name they have in
    the answer."""
    if schema is None:
        return {}
    return {
        field.data_key or name: field
        for name, field in schema.fields.items()
        if not field.load_only
    }


def describe_outputs(schema: marshmallow.Schema | None) -> list[dict[str, Any]]:
    """The output tensors of a model's predictions."""
    if schema is None:
        return [{"name": PREDICTIONS, "datatype": BYTES, "shape": [1]}]
    return [describe_field(n, f) for n, f in output_fields(schema).items()]


# -- from a prediction to output tensors ------------------------------------


def _shape_of(value: Any) -> list[int] | None:
    """The shape of a rectangular nested list, or None (ragged, empty
    inner lists)."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = [_shape_of(v) for v in value]
    first = inner[0]
    if first is None or any(s != first for s in inner):
        return None
    return [len(value), *first]


def _fits(datatype: str, data: list[Any]) -> bool:
    if datatype == BYTES:
        return all(isinstance(v, str) for v in data)
    if datatype == "BOOL":
        return all(isinstance(v, bool) for v in data)
    if datatype == "INT64":
        return all(isinstance(v, int) and not isinstance(v, bool) for v in data)
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)


def json_tensor(name: str, value: Any) -> Tensor:
    """A value as one ``BYTES`` element holding its JSON."""
    return Tensor(
        name,
        BYTES,
        [1],
        [json.dumps(value, separators=(",", ":"))],
        {"content_type": JSON_TYPE},
    )


def value_tensor(name: str, field: fields.Field, value: Any) -> Tensor:
    """A top-level value of a prediction as the tensor its field declares,
    or, when it does not fit one (a mapping, a ragged list, a value of
    another type), as JSON."""
    if is_json_field(field):
        return json_tensor(name, value)
    declared = describe_field(name, field)
    dimensions = len(declared["shape"]) if isinstance(field, fields.List) else 0
    shape = _shape_of(value)
    if shape is None or len(shape) != dimensions:
        return json_tensor(name, value)
    data: list[Any] = []
    flatten(value, data)
    if not _fits(declared["datatype"], data):
        return json_tensor(name, value)
    return Tensor(name, declared["datatype"], shape or [1], data)


def prediction_tensors(answer: Any, schema: marshmallow.Schema | None) -> list[Tensor]:
    """The output tensors of a JSON prediction (the answer's JSON, decoded:
    the model's object with a response schema, else ``{"status": "OK",
    "predictions": ...}``)."""
    if schema is None:
        return [json_tensor(PREDICTIONS, answer.get(PREDICTIONS))]
    declared = output_fields(schema)
    tensors = []
    for name, value in answer.items():
        field = declared.get(name)
        if value is None:
            continue  # a tensor has no null
        if field is None:
            tensors.append(json_tensor(name, value))
        else:
            tensors.append(value_tensor(name, field, value))
    return tensors


def raw_tensor(data: bytes, content_type: str) -> Tensor:
    """A file, bytes or text prediction as one ``BYTES`` element."""
    return Tensor(PREDICTIONS, BYTES, [1], [data], {"content_type": content_type})


# -- answering --------------------------------------------------------------


def _pack(tensor: Tensor) -> bytes:
    if tensor.datatype != BYTES:
        return struct.pack(
            f"<{len(tensor.data)}{FORMATS[tensor.datatype]}", *tensor.data
        )
    return b"".join(_length_prefixed(tensor.data))


def _length_prefixed(data: list[Any]) -> Iterator[bytes]:
    for element in data:
        raw = element.encode() if isinstance(element, str) else element
        yield struct.pack("<I", len(raw))
        yield raw


def _json_data(tensor: Tensor) -> list[Any]:
    """A tensor's data as JSON carries it: raw bytes base64-encoded."""
    if tensor.datatype == BYTES and any(isinstance(v, bytes) for v in tensor.data):
        tensor.parameters.setdefault("encoding", "base64")
        return [
            base64.b64encode(v).decode() if isinstance(v, bytes) else v
            for v in tensor.data
        ]
    return tensor.data


def select_outputs(
    tensors: list[Tensor], request: InferenceRequest, known: list[str]
) -> list[tuple[Tensor, bool]]:
    """The outputs the request asked for, each with whether it goes as
    binary data. An output asked for that the model does not declare is a
    ``BadRequest``; one it declares but did not return this time is left
    out."""
    if request.outputs is None:
        return [(t, request.binary_output) for t in tensors]
    produced = {t.name: t for t in tensors}
    unknown = [n for n in request.outputs if n not in produced and n not in known]
    if unknown:
        raise invalid(
            f"No output named {unknown[0]!r}; the outputs: {', '.join(known)}."
        )
    return [
        (produced[name], binary)
        for name, binary in request.outputs.items()
        if name in produced
    ]


def encode_response(
    model: str,
    version: str,
    request_id: str,
    outputs: list[tuple[Tensor, bool]],
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON part when binary data
    follow it (else None)."""
    described = []
    chunks = []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary:
            packed = _pack(tensor)
            chunks.append(packed)
            entry["parameters"] = {**tensor.parameters, "binary_data_size": len(packed)}
        else:
            entry["data"] = _json_data(tensor)
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
        described.append(entry)
    answer: dict[str, Any] = {
        "model_name": model,
        "model_version": version,
        "id": request_id,
        "outputs": described,
    }
    if parameters:
        answer["parameters"] = dict(parameters)
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
