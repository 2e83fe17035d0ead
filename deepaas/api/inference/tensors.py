"""Tensors of the Open Inference Protocol, and how a model's declared
arguments and results map to them.

Every declared predict argument is an input tensor of the same name: ``BOOL``
for a flag, ``INT64`` for an integer, ``FP64`` for any other number and
``BYTES`` for the rest (text, a file's bytes, a JSON object); a scalar has
shape ``[1]``, a list ``[-1]`` (one ``-1`` more per nested list). Outputs
come from the response schema the same way, one per top-level field; a model
without one has a single ``BYTES`` output, ``predictions``, holding its JSON
prediction (or the raw bytes of a file or bytes prediction).

Tensor data come as JSON (nested or flat, row-major) or, with the binary
tensor data extension, as little-endian bytes after the JSON header (a
``BYTES`` element as a 4-byte length and its bytes). Nothing here reads a
request or runs a model: it converts.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import struct
from typing import Any

from marshmallow import fields

from deepaas import exceptions
from deepaas.model.v2.arguments import Arguments, is_file_field

# The fixed-size datatypes, by their struct format character.
FORMATS = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
BYTES = "BYTES"
DATATYPES = frozenset({*FORMATS, BYTES})
FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = frozenset(FORMATS) - FLOATS - {"BOOL"}

# The request header giving the length of the JSON part of a body whose
# tensors follow it as bytes (binary tensor data extension); the answer
# carries it when it does the same.
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclasses.dataclass
class Tensor:
    """A tensor as read from a request or made for an answer: its data
    flat, in row-major order (``bytes`` or ``str`` elements for ``BYTES``)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class InferenceRequest:
    """What an inference request asks."""

    id: str | None
    parameters: dict[str, Any]
    inputs: list[Tensor]
    # the outputs asked for, by name, each as binary data or not; None: all
    outputs: dict[str, bool] | None
    binary_output: bool  # the default for outputs not named


def invalid(message: str) -> exceptions.BadRequest:
    return exceptions.BadRequest(message)


# -- what a model's declarations are as tensors -----------------------------


def datatype_of(field: fields.Field) -> str:
    """The datatype of a scalar field's values."""
    if isinstance(field, fields.Boolean):
        return "BOOL"
    if isinstance(field, fields.Integer):
        return "INT64"
    if isinstance(field, fields.Number):
        return "FP64"
    return BYTES


def is_json_field(field: fields.Field) -> bool:
    """Whether a field's values are objects (or lists of them), which go
    as one ``BYTES`` element holding their JSON rather than as a tensor."""
    while isinstance(field, fields.List) and field.inner is not None:
        field = field.inner
    return isinstance(field, fields.Mapping | fields.Nested | fields.Tuple)


def describe_field(
    name: str, field: fields.Field, *, file: bool = False
) -> dict[str, Any]:
    """A field as a tensor of model metadata: name, datatype and shape."""
    if is_json_field(field):
        return {"name": name, "datatype": BYTES, "shape": [1]}
    shape: list[int] = []
    while isinstance(field, fields.List) and field.inner is not None:
        shape.append(-1)
        field = field.inner
    datatype = BYTES if file or is_file_field(field) else datatype_of(field)
    return {"name": name, "datatype": datatype, "shape": shape or [1]}


def describe_inputs(arguments: Arguments) -> list[dict[str, Any]]:
    """The input tensors of a model's predict arguments."""
    return [
        describe_field(name, field, file=name in arguments.file_names)
        for name, field in arguments.fields.items()
    ]


# -- reading a request ------------------------------------------------------


def flatten(data: Any, into: list[Any]) -> None:
    if isinstance(data, list):
        for item in data:
            flatten(item, into)
    else:
        into.append(data)


def _count(shape: list[int]) -> int:
    return math.prod(shape)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{where}: parameters must be a JSON object.")
    return value


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise invalid(f"{where}: shape must be a list of non-negative integers.")
    return value


def _check_json_elements(data: list[Any], datatype: str, where: str) -> None:
    """Each JSON element fits ``datatype``."""
    if datatype == BYTES:
        fits = all(isinstance(v, str) for v in data)
        kind = "strings"
    elif datatype == "BOOL":
        fits = all(isinstance(v, bool) for v in data)
        kind = "true or false"
    elif datatype in INTEGERS:
        fits = all(isinstance(v, int) and not isinstance(v, bool) for v in data)
        kind = "integers"
    else:
        fits = all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)
        kind = "numbers"
    if not fits:
        raise invalid(f"{where}: a {datatype} tensor's data must be {kind}.")


def _unpack(datatype: str, raw: bytes | memoryview, where: str) -> list[Any]:
    """The elements of a tensor sent as bytes."""
    if datatype == BYTES:
        elements: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise invalid(f"{where}: a BYTES element's length is cut short.")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise invalid(f"{where}: a BYTES element is longer than its data.")
            elements.append(bytes(raw[offset : offset + length]))
            offset += length
        return elements
    code = FORMATS[datatype]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise invalid(
            f"{where}: {len(raw)} bytes are not a whole number of {datatype} "
            f"elements ({size} bytes each)."
        )
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


def _read_input(
    value: Any, index: int, binary: memoryview, offset: int
) -> tuple[Tensor, int]:
    """One input tensor of the JSON header, its data taken from ``binary``
    (from ``offset``) when it says so; the tensor and the next offset."""
    if not isinstance(value, dict):
        raise invalid(f"inputs[{index}] must be a JSON object.")
    name = value.get("name")
    if not isinstance(name, str):
        raise invalid(f"inputs[{index}] must have a name.")
    where = f"Input {name!r}"
    datatype = value.get("datatype")
    if datatype not in DATATYPES:
        raise invalid(
            f"{where}: unknown datatype {datatype!r}; one of "
            f"{', '.join(sorted(DATATYPES))} is expected."
        )
    shape = _shape(value.get("shape"), where)
    parameters = _parameters(value.get("parameters"), where)
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid(f"{where}: binary_data_size must be a byte count.")
        if offset + size > len(binary):
            raise invalid(
                f"{where}: its {size} bytes of binary data go beyond the body."
            )
        data = _unpack(datatype, binary[offset : offset + size], where)
        offset += size
    else:
        if "data" not in value:
            raise invalid(f"{where} has no data.")
        data = []
        try:
            flatten(value["data"], data)
        except RecursionError:
            raise invalid(f"{where}: its data are nested too deeply.") from None
        _check_json_elements(data, datatype, where)
    if len(data) != _count(shape):
        raise invalid(
            f"{where}: shape {shape} holds {_count(shape)} element(s), but "
            f"{len(data)} were sent."
        )
    return Tensor(name, datatype, shape, data, parameters), offset


def read_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """The inference request in ``body``: JSON, or with the binary tensor
    data extension, a JSON header of ``header_length`` bytes followed by
    the tensors' bytes."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise invalid(
                f"{HEADER_LENGTH} must be the length of the body's JSON part, at "
                f"most {len(body)} bytes; it is {header_length!r}."
            )
        header, binary = view[:length], view[length:]
    try:
        request = json.loads(bytes(header))
    except (ValueError, RecursionError) as exc:
        raise exceptions.BadRequest(
            f"The inference request is not valid JSON: {exc}"
        ) from None
    if not isinstance(request, dict):
        raise invalid("The inference request must be a JSON object.")
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise invalid("The inference request must have a list of inputs.")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise invalid("The inference request's id must be a string.")
    parameters = _parameters(request.get("parameters"), "The inference request")
    tensors: list[Tensor] = []
    offset = 0
    for index, value in enumerate(inputs):
        tensor, offset = _read_input(value, index, binary, offset)
        if any(t.name == tensor.name for t in tensors):
            raise invalid(f"Input {tensor.name!r} is sent twice.")
        tensors.append(tensor)
    if offset != len(binary):
        raise invalid(
            f"{len(binary) - offset} byte(s) of binary data follow the inputs "
            "that no input claims."
        )
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise invalid("binary_data_output must be true or false.")
    return InferenceRequest(
        request_id,
        parameters,
        tensors,
        _requested_outputs(request.get("outputs"), binary_output),
        binary_output,
    )


def _requested_outputs(value: Any, binary_output: bool) -> dict[str, bool] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid("outputs must be a list of objects naming an output.")
    wanted: dict[str, bool] = {}
    for index, output in enumerate(value):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise invalid(f"outputs[{index}] must be an object with a name.")
        parameters = _parameters(output.get("parameters"), f"Output {name!r}")
        binary = parameters.get("binary_data", binary_output)
        if not isinstance(binary, bool):
            raise invalid(f"Output {name!r}: binary_data must be true or false.")
        wanted[name] = binary
    return wanted


# -- from tensors to a model's arguments ------------------------------------


def _nest(data: list[Any], shape: list[int]) -> list[Any]:
    """Flat row-major ``data`` as nested lists of ``shape``."""
    if len(shape) <= 1:
        return data
    step = _count(shape[1:])
    return [_nest(data[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _list_shape(shape: list[int], field: fields.Field) -> list[int]:
    """The shape a list argument takes a tensor's data in: as many
    dimensions as the argument has lists, the first ones of a tensor with
    more taken as one."""
    depth = 0
    while isinstance(field, fields.List) and field.inner is not None:
        depth += 1
        field = field.inner
    if len(shape) <= depth:
        return shape
    inner = shape[len(shape) - depth + 1 :]
    return [_count(shape) // max(_count(inner), 1), *inner]


def _file_bytes(tensor: Tensor, element: Any) -> bytes:
    if isinstance(element, bytes):
        return element
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(
            f"Input {tensor.name!r} is a file: send its bytes base64-encoded in "
            "JSON, or as binary data."
        ) from None


def _text(tensor: Tensor, element: Any) -> Any:
    if not isinstance(element, bytes):
        return element
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise invalid(
            f"Input {tensor.name!r} is text: its bytes must be UTF-8."
        ) from None


def _json_value(tensor: Tensor, text: Any) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise invalid(f"Input {tensor.name!r} takes its value as JSON text.") from None


@dataclasses.dataclass(frozen=True)
class FileInput:
    """A file an input tensor carries: the argument, its bytes, and what the
    tensor's parameters say of it."""

    name: str
    data: bytes
    content_type: str
    filename: str


def to_arguments(
    request: InferenceRequest, arguments: Arguments, model: str
) -> tuple[dict[str, Any], dict[str, list[FileInput]]]:
    """The model's arguments from an inference request's inputs (and its
    parameters, for arguments no input gives): values not yet loaded
    through the schema, and the files, by argument."""
    declared = arguments.fields
    values: dict[str, Any] = {}
    files: dict[str, list[FileInput]] = {}
    for tensor in request.inputs:
        field = declared.get(tensor.name)
        if field is None:
            names = ", ".join(declared) or "none"
            raise invalid(
                f"Model {model!r} has no input {tensor.name!r}; its inputs: {names}."
            )
        as_json = is_json_field(field)
        is_list = isinstance(field, fields.List) and not as_json
        if not is_list and len(tensor.data) != 1:
            raise invalid(
                f"Input {tensor.name!r} takes one element (shape [1]); "
                f"{len(tensor.data)} were sent."
            )
        if tensor.name in arguments.file_names:
            if tensor.datatype != BYTES:
                raise invalid(f"Input {tensor.name!r} is a file: a BYTES tensor.")
            content_type = tensor.parameters.get("content_type")
            filename = tensor.parameters.get("filename")
            files[tensor.name] = [
                FileInput(
                    tensor.name,
                    _file_bytes(tensor, element),
                    content_type
                    if isinstance(content_type, str)
                    else "application/octet-stream",
                    filename if isinstance(filename, str) else tensor.name,
                )  # fmt: skip
                for element in tensor.data
            ]
            continue
        data = tensor.data
        if tensor.datatype == BYTES:
            data = [_text(tensor, element) for element in data]
            if as_json:
                data = [_json_value(tensor, element) for element in data]
        if is_list:
            values[tensor.name] = _nest(data, _list_shape(tensor.shape, field))
        else:
            values[tensor.name] = data[0]
    for name, value in request.parameters.items():
        if name in declared and name not in values and name not in files:
            if name in arguments.file_names:
                raise invalid(f"Argument {name!r} is a file: send it as an input.")
            values[name] = value
    return values, files
