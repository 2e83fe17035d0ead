"""One model call from the command line, shared by deepaas-cli and
deepaas-predict: choosing the model, handing it local files, running the call
in a worker (as the server does) or in process, and the exit status of each
way it can fail."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import sys
from typing import Any, TextIO

import tqdm

from deepaas import exceptions, reports
from deepaas.model import loading
from deepaas.model.v2.types import UploadedFile
from deepaas.runtime.executor import ProgressCallback
from deepaas.runtime.local import LocalExecutor
from deepaas.runtime.protocol import Answer, Call
from deepaas.runtime.worker import LoadedModel

EXIT_OK, EXIT_MODEL_ERROR, EXIT_BAD_ARGUMENTS, EXIT_WORKER_DIED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """A mistake on the command line, reported with exit status 2."""


def choose_model(model_name: str | None) -> tuple[loading.ModelSpec, Any]:
    """The one model to run; several installed and none chosen is an error."""
    if not model_name:
        installed = loading.installed_names()
        if len(installed) > 1:
            raise UsageError(
                "Several models are installed; choose one with --model-name or "
                f"DEEPAAS_V2_MODEL: {', '.join(installed)}."
            )
    models = loading.load_models(model_name)
    return next(iter(models.values()))


def uploaded_copy(name: str, path: str, workdir: str) -> UploadedFile:
    """A local file given as argument ``name``, as the model receives an
    upload: a copy in ``workdir`` (the model may consume it)."""
    if not os.path.isfile(path):
        raise exceptions.InvalidArguments({name: [f"No such file: {path}"]})
    copy = os.path.join(workdir, f"{name}-{os.path.basename(path)}")
    shutil.copyfile(path, copy)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return UploadedFile(name, copy, content_type, os.path.basename(path))


class ProgressDisplay:
    """Shows a call's progress reports (``deepaas.progress``) on standard
    error: a progress bar on a terminal, else a plain line whenever the
    percentage or the message changes."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.bar: tqdm.tqdm[Any] | None = None
        self._shown: tuple[int | None, str | None] = (None, None)
        self._message: str | None = None
        self._percent: int | None = None

    def __call__(self, fraction: float | None, message: str | None) -> None:
        if fraction is not None:
            self._percent = round(fraction * 100)
        if message is not None:
            self._message = message
        if self.stream.isatty():
            self._draw()
        elif (self._percent, self._message) != self._shown:
            self._shown = (self._percent, self._message)
            done = f"{self._percent}%" if self._percent is not None else "..."
            words = f" {self._message}" if self._message else ""
            print(f"{self.what}: {done}{words}", file=self.stream, flush=True)

    def _draw(self) -> None:
        if self.bar is None:
            try:
                columns, lines = os.get_terminal_size(self.stream.fileno())
            except (OSError, ValueError):
                columns = lines = 0
            self.bar = tqdm.tqdm(
                total=100,
                file=self.stream,
                # a terminal that does not tell its size (0 x 0) shows no
                # bar at all unless told one
                ncols=columns or 80,
                nrows=lines or 24,
                desc=self.what,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}",
            )
        if self._percent is not None:
            self.bar.update(self._percent - self.bar.n)
        if self._message is not None:
            self.bar.set_postfix_str(self._message, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


async def run_in_worker(
    spec: loading.ModelSpec,
    method: str | None,
    kwargs: dict[str, Any],
    on_progress: ProgressCallback | None = None,
) -> Any:
    """Warm the model in a spawned worker (as the server does), then call it.

    Cancelled (Ctrl-C) while loading, warming or calling, the worker is
    stopped at once.
    """
    executor = LocalExecutor(spec, 1, warm=True)
    try:
        await executor.start()
        if method is None:
            return None
        return await executor.call(method, kwargs, on_progress=on_progress)
    finally:
        await executor.stop()


def run_in_process(
    spec: loading.ModelSpec,
    model: Any,
    method: str | None,
    kwargs: dict[str, Any],
    on_progress: ProgressCallback | None = None,
) -> Any:
    """Warm the model and call it right here, as a worker would."""
    loaded = LoadedModel(spec.name, model, warm=True)
    if method is None:
        return None
    reports.install(on_progress)
    try:
        reply = loaded.run(Call(method, kwargs))
    finally:
        reports.install(None)
    if isinstance(reply, Answer):
        return reply.value
    raise reply.error.to_exception()


def run(
    spec: loading.ModelSpec,
    model: Any,
    method: str | None,
    kwargs: dict[str, Any],
    *,
    in_worker: bool = True,
) -> Any:
    """The result of ``method`` (None: only warm the model), its progress
    shown on standard error."""
    display = ProgressDisplay(method or "warm")
    try:
        if in_worker:
            return asyncio.run(run_in_worker(spec, method, kwargs, display))
        return run_in_process(spec, model, method, kwargs, display)
    finally:
        display.close()


def report(prog: str, what: str, exc: BaseException, *, debug: bool) -> int:
    """Say on standard error why ``what`` failed; the exit status for it."""
    if isinstance(exc, exceptions.InvalidArguments):
        for field, messages in sorted(exc.errors.items()):
            text = (
                messages if isinstance(messages, str) else " ".join(map(str, messages))
            )
            print(f"{prog}: --{field}: {text}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    if isinstance(exc, UsageError):
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, exceptions.WorkerDied):
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return EXIT_WORKER_DIED
    if isinstance(exc, exceptions.ModelCallError):
        if debug and exc.traceback:
            print(exc.traceback, file=sys.stderr, end="")
        print(f"{prog}: {what} failed: {exc.message}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    if isinstance(exc, exceptions.DeepaasError):
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    raise exc


# What report() knows how to say.
REPORTED = (UsageError, KeyboardInterrupt, exceptions.DeepaasError)
