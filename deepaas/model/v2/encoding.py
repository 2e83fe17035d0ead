"""How a model's results become what the client receives.

A prediction is either sent raw (a returned file, bytes, or text for a
non-JSON ``accept``) or as JSON: validated against the model's response schema
when it declares one, else wrapped as ``{"status": "OK", "predictions": ...}``.
Workers run this (``finish_prediction``) so that the server only forwards
bytes. A prediction JSON cannot encode is an error naming its type; for the
records the server keeps (training arguments and outputs, metadata),
``jsonable`` makes any value fit.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any

import marshmallow

from deepaas import exceptions
from deepaas.model.v2.types import EncodedJSON, ReturnedFile, UploadedFile

JSON_MEDIA_TYPES = frozenset({"application/json", "*/*"})


def is_raw_result(result: Any, accept: str | None) -> bool:
    """True when a prediction is sent as it is rather than as JSON: a returned
    file, bytes, or text for a non-JSON ``accept``."""
    if isinstance(result, ReturnedFile | bytes | bytearray | memoryview):
        return True
    return bool(accept) and accept not in JSON_MEDIA_TYPES and isinstance(result, str)


def prediction_body(name: str, schema: marshmallow.Schema | None, result: Any) -> Any:
    """The JSON body for a prediction ``result``.

    With a response schema the result is validated and sent as is; without
    one it is wrapped as ``{"status": "OK", "predictions": result}``.
    """
    if schema is None:
        return {"status": "OK", "predictions": result}
    if not isinstance(result, Mapping):
        raise exceptions.InvalidResponse(
            name, f"expected an object, got {type(result).__name__}"
        )
    errors = schema.validate(result)
    if errors:
        raise exceptions.InvalidResponse(name, errors)
    return result


def finish_prediction(
    name: str, schema: marshmallow.Schema | None, result: Any, accept: str | None
) -> Any:
    """``result`` as it goes to the client: raw, or ``EncodedJSON``.

    Raises ``InvalidResponse`` when the result fails the response schema or
    holds what JSON cannot encode.
    """
    if is_raw_result(result, accept):
        return result
    body = prediction_body(name, schema, result)
    try:
        return EncodedJSON(json.dumps(body).encode())
    except (TypeError, ValueError) as exc:
        raise exceptions.PredictionNotJSON(name, exc) from None


def jsonable(value: Any) -> Any:
    """``value`` if JSON can encode it, else its ``str()`` (recursively for
    containers, so one odd leaf does not hide the rest)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, UploadedFile | ReturnedFile):
        return value.original_filename
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def response_schema_of(name: str, model: Any) -> marshmallow.Schema | None:
    """The model's response schema as an instance named
    ``ModelPredictionResponse``, or None when it has none."""
    declared = getattr(model, "schema", None)
    if declared is None:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            if isinstance(declared, Mapping):
                schema_cls = marshmallow.Schema.from_dict(
                    dict(declared), name="ModelPredictionResponse"
                )
            elif isinstance(declared, type) and issubclass(
                declared, marshmallow.Schema
            ):
                schema_cls = type("ModelPredictionResponse", (declared,), {})
            else:
                raise TypeError(
                    f"it is a {type(declared).__name__}; it must be a "
                    "marshmallow.Schema subclass or a dict of fields"
                )
            return schema_cls()
        except Exception as exc:
            raise exceptions.ModelLoadError(
                f"Model {name!r} has an invalid response schema: {exc}"
            ) from exc


# Media types a browser runs (scripts, documents that may hold scripts).
ACTIVE_MEDIA_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
        "multipart/x-mixed-replace",
    }
)


def is_active_media_type(content_type: str) -> bool:
    """Whether a browser opening an answer of ``content_type`` would run
    what it holds (HTML, SVG, any XML, JavaScript)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ACTIVE_MEDIA_TYPES or media_type.endswith("+xml")


def raw_answer_headers(content_type: str) -> dict[str, str]:
    """The headers of a model's answer sent as it is: an active type is
    sandboxed, so that a page the model returned (or an upload it echoes)
    cannot run scripts as this server's origin."""
    headers = {"Content-Type": content_type}
    if is_active_media_type(content_type):
        headers["Content-Security-Policy"] = "sandbox"
    return headers
