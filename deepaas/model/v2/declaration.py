"""What a model declares: its metadata, its arguments and its response schema.

A ``ModelDeclaration`` is read once, in the server (or command-line) process,
from the model object the entry point gives. It runs nothing: the model's calls
run in workers, through the executor of a served model (``ModelWrapper``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import marshmallow

from deepaas import exceptions
from deepaas.model.loading import ModelSpec
from deepaas.model.v2.arguments import ANY_MEDIA_TYPE, Arguments, read_declaration
from deepaas.model.v2.encoding import jsonable, response_schema_of


@dataclasses.dataclass(frozen=True)
class ModelDeclaration:
    """One model's declarations, and where its workers load it from."""

    spec: ModelSpec
    metadata: dict[str, Any]
    predict_arguments: Arguments
    train_arguments: Arguments
    response_schema: marshmallow.Schema | None
    implements: frozenset[str]  # of predict, train and predict_batch: what it has

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def accept_choices(self) -> list[str]:
        """Media types predict can answer with (from an ``accept`` argument)."""
        return [
            str(c)
            for c in self.predict_arguments.choices("accept") or []
            if c != ANY_MEDIA_TYPE
        ]

    @classmethod
    def read(cls, spec: ModelSpec, model: Any) -> ModelDeclaration:
        """Read what ``model`` (loaded from ``spec``) declares.

        Raises ``ModelLoadError`` naming the model when a declaration is
        invalid.
        """
        # get_test_args is what older model packages call get_predict_args.
        predict_getter = getattr(model, "get_predict_args", None) or getattr(
            model, "get_test_args", None
        )
        return cls(
            spec=spec,
            metadata=read_metadata(spec.name, model),
            predict_arguments=read_declaration(
                spec.name, "get_predict_args", predict_getter, any_media_type=True
            ),
            train_arguments=read_declaration(
                spec.name, "get_train_args", getattr(model, "get_train_args", None)
            ),
            response_schema=response_schema_of(spec.name, model),
            implements=frozenset(
                m
                for m in ("predict", "train", "predict_batch")
                if callable(getattr(model, m, None))
            ),
        )

    def require(self, method: str) -> None:
        """Raise ``NotImplementedByModel`` (501) unless the model has ``method``."""
        if method not in self.implements:
            raise exceptions.NotImplementedByModel(
                f"Model {self.name!r} does not implement {method}().",
                exc_type="AttributeError",
            )


def read_metadata(name: str, model: Any) -> dict[str, Any]:
    """The model's ``get_metadata()``, or a stand-in when it has none."""
    getter = getattr(model, "get_metadata", None)
    if getter is None:
        return {
            "id": name,
            "name": name,
            "description": "No description: the model does not implement "
            "get_metadata().",
        }
    try:
        meta = getter()
    except NotImplementedError:
        return {"id": name, "name": name, "description": ""}
    except Exception as exc:
        raise exceptions.ModelLoadError(
            f"Model {name!r}: get_metadata() raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(meta, Mapping):
        raise exceptions.ModelLoadError(
            f"Model {name!r}: get_metadata() returned a {type(meta).__name__}, "
            "not a dict"
        )
    result: dict[str, Any] = jsonable(dict(meta))
    return result
