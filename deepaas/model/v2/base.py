"""BaseModel: the contract a model entry point implements.

Inheriting from it is optional; a module or any object with these methods works
the same. It exists so that class-based models can declare what they provide
and have their editor check it.
"""

from __future__ import annotations

import abc
from typing import Any


class BaseModel(abc.ABC):
    """Base class for models served by deepaas.

    ``schema`` may be set to a ``marshmallow.Schema`` subclass, or to a dict of
    fields, describing what ``predict()`` returns; the API then validates every
    prediction against it and publishes it in the spec. With ``schema = None``
    predictions are wrapped as ``{"status": "OK", "predictions": ...}``.
    """

    schema: Any = None

    @abc.abstractmethod
    def get_metadata(self) -> dict[str, Any]:
        """Return the model's metadata: at least ``name`` and ``description``,
        and when known ``author``, ``license``, ``url``, ``version``."""

    @abc.abstractmethod
    def warm(self) -> None:
        """Load and prepare the model; called once in every worker before
        it serves calls."""

    @abc.abstractmethod
    def get_predict_args(self) -> dict[str, Any]:
        """Return the webargs/marshmallow fields ``predict()`` accepts, by name."""

    @abc.abstractmethod
    def predict(self, **kwargs: Any) -> Any:
        """Run a prediction with the parsed arguments and return its result."""

    @abc.abstractmethod
    def get_train_args(self) -> dict[str, Any]:
        """Return the webargs/marshmallow fields ``train()`` accepts, by name."""

    @abc.abstractmethod
    def train(self, **kwargs: Any) -> Any:
        """Run a training with the parsed arguments and return its result."""
