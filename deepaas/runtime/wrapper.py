"""ModelWrapper: one model as the server serves it.

It pairs what the model declares (``ModelDeclaration``) with the executor whose
workers hold the model itself, and tells an optional observer how every call
went. ``UploadedFile`` and ``ReturnedFile`` are importable from here too, as
model packages written for DEEPaaS expect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.types import ReturnedFile, UploadedFile
from deepaas.runtime.executor import Executor, ItemStream, ProgressCallback
from deepaas.runtime.protocol import FormResult, RawForm

CallObserver = Callable[[str, str, float, BaseException | None], None]
"""Told (model name, method, seconds, error or None) after every call."""


class ModelWrapper:
    """A served model: its declaration, and its calls through its executor."""

    def __init__(
        self,
        declaration: ModelDeclaration,
        executor: Executor,
        observer: CallObserver | None = None,
    ) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self.executor = executor
        self._observer = observer

    async def _call(self, method: str, kwargs: dict[str, Any], **options: Any) -> Any:
        observer = self._observer
        if observer is None:
            return await self.executor.call(method, kwargs, **options)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            result = await self.executor.call(method, kwargs, **options)
            if isinstance(result, FormResult):
                error = result.error  # raised by the caller
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            observer(self.name, method, time.perf_counter() - started, error)

    def predict(
        self,
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        validate: bool = False,
        on_progress: ProgressCallback | None = None,
        items: ItemStream | None = None,
    ) -> Awaitable[Any]:
        """Run ``predict`` in a worker; its result as it goes to the client:
        ``EncodedJSON``, or a raw file, bytes or text. With ``validate`` the
        worker validates ``kwargs`` first (arguments parsed, not yet loaded
        through their schema). (The call's own coroutine, not one more
        around it: this runs for every prediction.)"""
        return self._call(
            "predict",
            kwargs,
            timeout=timeout,
            queue_timeout=queue_timeout,
            finish_prediction=True,
            validate=validate,
            on_progress=on_progress,
            items=items,
        )

    async def predict_form(
        self,
        form: RawForm,
        *,
        timeout: float | None = None,
        queue_timeout: float | None = None,
    ) -> FormResult:
        """Run ``predict`` in a worker that reads its arguments out of
        ``form`` (the executor ``reads_forms``); the result as ``predict``
        returns it, or the error the call ended with, with what the form
        told."""
        result: FormResult = await self._call(
            "predict",
            {},
            timeout=timeout,
            queue_timeout=queue_timeout,
            finish_prediction=True,
            form=form,
        )
        return result

    async def train(
        self,
        kwargs: dict[str, Any],
        *,
        log_path: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        """Run ``train`` in a worker (output to ``log_path``); its raw result."""
        return await self._call(
            "train", kwargs, log_path=log_path, on_progress=on_progress
        )


__all__ = ["CallObserver", "ModelWrapper", "ReturnedFile", "UploadedFile"]
