"""ModelWrapper: one loaded model seen from the server.

It reads what the model declares (metadata, arguments, response schema) once,
in the server process, and runs ``predict``/``train`` through an executor whose
workers hold the model itself.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow

from deepaas import exceptions
from deepaas.model.v2.arguments import Arguments, read_declaration

UploadedFile = collections.namedtuple(
    "UploadedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file sent to the model: ``filename`` is the path of a temporary copy that
the server removes after the call; ``name`` is the argument it was sent as."""

ReturnedFile = collections.namedtuple(
    "ReturnedFile", ("name", "filename", "content_type", "original_filename")
)
"""A file returned by the model, sent back to the client from ``filename``."""

JSON_MEDIA_TYPES = frozenset({"application/json", "*/*"})


@dataclasses.dataclass(frozen=True)
class EncodedJSON:
    """A prediction already validated and encoded as its JSON answer.

    Workers finish JSON predictions this way so that validation and encoding
    run in parallel in the workers, not on the server's single event loop.
    """

    data: bytes


def is_raw_result(result: Any, accept: str | None) -> bool:
    """True when a prediction is sent as it is rather than as JSON: a returned
    file, bytes, or text for a non-JSON ``accept``."""
    if isinstance(result, ReturnedFile | bytes | bytearray | memoryview):
        return True
    return bool(accept) and accept not in JSON_MEDIA_TYPES and isinstance(result, str)


def prediction_body(name: str, schema: marshmallow.Schema | None, result: Any) -> Any:
    """The body for a prediction ``result`` (to be encoded with ``dumps``).

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
    """``result`` as it goes to the client: raw, or ``EncodedJSON``."""
    if is_raw_result(result, accept):
        return result
    return EncodedJSON(dumps(prediction_body(name, schema, result)).encode())


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


def _leaf(value: Any) -> Any:
    if isinstance(value, UploadedFile | ReturnedFile):
        return value.original_filename
    return str(value)


def dumps(body: Any) -> str:
    """JSON text of ``body``, what JSON cannot encode given as its ``str()``.

    One pass in the C encoder in the common case; ``jsonable`` only for the odd
    body (keys that are not strings or numbers).
    """
    try:
        return json.dumps(body, default=_leaf)
    except (TypeError, ValueError):
        return json.dumps(jsonable(body))


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


class ModelWrapper:
    """One model: what it declares, and its calls through ``executor``."""

    def __init__(self, name: str, model: Any, executor: Any) -> None:
        self.name = name
        self.executor = executor
        self.metadata = self._read_metadata(model)
        # get_test_args is what older model packages call get_predict_args.
        predict_getter = getattr(model, "get_predict_args", None) or getattr(
            model, "get_test_args", None
        )
        self.predict_arguments: Arguments = read_declaration(
            name, "get_predict_args", predict_getter
        )
        self.train_arguments: Arguments = read_declaration(
            name, "get_train_args", getattr(model, "get_train_args", None)
        )
        self.response_schema = response_schema_of(name, model)
        # Told (model name, method, seconds, error or None) after every call.
        self.observer: Callable[[str, str, float, BaseException | None], None] | None
        self.observer = None

    async def _call(self, method: str, kwargs: dict[str, Any], **options: Any) -> Any:
        observer = self.observer
        if observer is None:
            return await self.executor.call(method, kwargs, **options)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await self.executor.call(method, kwargs, **options)
        except BaseException as exc:
            error = exc
            raise
        finally:
            observer(self.name, method, time.perf_counter() - started, error)

    def _read_metadata(self, model: Any) -> dict[str, Any]:
        getter = getattr(model, "get_metadata", None)
        if getter is None:
            return {
                "id": self.name,
                "name": self.name,
                "description": (
                    "No description: the model does not implement get_metadata()."
                ),
            }
        try:
            meta = getter()
        except NotImplementedError:
            return {"id": self.name, "name": self.name, "description": ""}
        except Exception as exc:
            raise exceptions.ModelLoadError(
                f"Model {self.name!r}: get_metadata() raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(meta, Mapping):
            raise exceptions.ModelLoadError(
                f"Model {self.name!r}: get_metadata() returned a "
                f"{type(meta).__name__}, not a dict"
            )
        return jsonable(dict(meta))

    @property
    def accept_choices(self) -> list[str]:
        """Media types predict can answer with (from an ``accept`` argument)."""
        return [str(c) for c in self.predict_arguments.choices("accept") or []]

    async def predict(
        self,
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
    ) -> Any:
        """Run ``predict`` in a worker; its result as it goes to the client
        (``EncodedJSON`` for JSON answers, when the executor finishes them)."""
        return await self._call(
            "predict",
            kwargs,
            timeout=timeout,
            queue_timeout=queue_timeout,
            finish_prediction=True,
        )

    async def train(
        self, kwargs: dict[str, Any], *, log_path: str | None = None
    ) -> Any:
        """Run ``train`` in a worker (output to ``log_path``); its raw result."""
        return await self._call("train", kwargs, log_path=log_path)

    def prediction_body(self, result: Any) -> Any:
        """The JSON body for a raw prediction ``result`` (see ``prediction_body``)."""
        return prediction_body(self.name, self.response_schema, result)
